"A step of a kind's recipe as data: what `fxp.train.run_steps` builds, fits and records, one after the other."
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional


@dataclass
class Step:
    """One learner of a kind's recipe, trained with `stages`. `dls(ctx)` and `learner(dls, ctx)` build it; `ctx`
    holds the device, the step's folder (`path`) and the learners of earlier steps (`done`, by name). `after(learn,
    ctx)` may save what later steps read (an encoder) and return fields for the step's summary."""
    name: str
    dls: Callable
    learner: Callable
    folder: Optional[str] = None  # a subfolder of the run for an earlier step; None: the run folder (the last step)
    stages: Any = None  # None: trainer.stages
    monitor: Any = None  # None: task.monitor
    about: str = ""  # a line announcing the step, on the console and in train.log
    after: Optional[Callable] = None
    exports: bool = False  # the learner model.pkl holds (fxp predict); default: the last step's
    ignore_warnings: tuple = ()  # message regexes a library warns with during this step's fit, known to be moot
    fresh: bool = True  # its model starts untrained, so model.init applies; False: it is made of earlier steps' models
