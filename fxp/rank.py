"""One rank of a run over several processes (`trainer.devices`; fxp.distributed launches them):
`python -m fxp.rank SPEC` trains the job SPEC holds. Rank 0 writes the run folder and hands its summary fields back; a
rank that fails writes its line and traceback for the launching process (torchrun's launcher then stops the other
ranks)."""
from __future__ import annotations

import json
import os
import sys
import time
import traceback
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from fxp import config, train
from fxp.distributed import INFO, JOB, alone, as_rank, rank
from fxp.errors import FxpError
from fxp.logfile import logging_to
from fxp.runs import LOG
from fxp.schema import Config
from fxp.writer import write_atomic


@dataclass
class RankRun:
    "What the training code uses of a Run in a rank: the folder (rank 0 writes it), the summary fields, the resume."
    path: Path
    cfg: object
    resume: dict | None = None
    info: dict = field(default_factory=dict)


def main(spec: Path) -> int:
    """A rank: train the job in `spec`; rank 0 hands its summary fields back, a failing rank its line and traceback
    (the launcher then stops the other ranks)."""
    job = json.loads((spec / JOB).read_text())
    try:
        config.register()
        cfg = config.validate(OmegaConf.merge(config.schema_node(Config), job["cfg"]))
        run = RankRun(Path(job["path"]), cfg, job["resume"])
        as_rank(cfg)
        with logging_to(run.path / LOG) if rank() == 0 else silent():  # the other ranks report nothing
            learn = train.trained(cfg, run, resume=job["resume"] is not None)
            if alone():  # rank 0, now the one process left
                train.conclude(learn, cfg, run)
        if rank() == 0:
            write_atomic(spec / INFO, json.dumps(run.info, default=str))
        return 0
    except KeyboardInterrupt:
        return 130
    except BaseException as e:
        text = " ".join(part.strip() for part in str(e).splitlines())  # fastai's wrap puts the cause on line 2
        line = text if isinstance(e, FxpError) else f"{type(e).__name__}: {text}"
        # whole: the launcher stops the other ranks as one fails, and reads each rank's line once they are gone
        write_atomic(spec / f"error.{rank()}.json", json.dumps(dict(rank=rank(), line=line, time=time.time(),
                                                                    traceback=traceback.format_exc())))
        return 1


@contextmanager
def silent():
    "No console output (the epoch lines, a resume's note): rank 0's are the run's."
    with open(os.devnull, "w") as null, redirect_stdout(null):
        yield


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
