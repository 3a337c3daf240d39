"""`task.kind` → the module under `fxp/tasks/` that knows that kind.

A kind module is a protocol, not a class: it declares `Task` (its config schema; light imports only), an
optional `check(task)`, and `dls(cfg, device)`, `learner(cfg, dls)`, `plots(learn, cfg, dest)` and
`predict(learn, cfg, inputs)`; it imports fastai inside those functions, so listing and validating stay fast.
`plots` may return a dict of extra summary.json fields (e.g. multilabel's best threshold).

A kind that trains in steps (ULMFiT's language model then classifier; a GAN's generator and critic pre-training)
also declares `train(cfg, run)`: it builds each step's learner with `fxp.train.setup/attach/fit` (earlier steps
write into subfolders of the run) and returns the learner that `fxp predict` uses, which the core exports.
"""
from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

from fxp import tasks
from fxp.errors import ConfigError


def kinds() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(tasks.__path__) if not m.name.startswith("_"))


def kind_module(kind: str) -> ModuleType:
    if kind not in kinds():
        raise ConfigError(f"task.kind={kind!r} is not a known kind; choose from: {', '.join(kinds())}")
    return importlib.import_module(f"fxp.tasks.{kind}")
