"""train.log's handler (Hydra's job logging, conf/hydra/job_logging/fxp.yaml), and the same logging for a run that
trains outside a Hydra job (`fxp resume`, a rank of a distributed run): `logging_to`."""
from __future__ import annotations

import logging
import sys
from contextlib import contextmanager
from pathlib import Path


class LogFile(logging.FileHandler):
    """A FileHandler that, when the file cannot be written (a full disk), says so in one line on stderr, once, and
    drops the lines after it: logging's default prints a traceback for every record, dozens of lines before the
    run's own one-line error (which names the cause)."""

    failed = False

    def handleError(self, record: logging.LogRecord) -> None:
        e = sys.exc_info()[1]
        if not isinstance(e, OSError):  # a bad log call (its arguments): logging's own report
            return super().handleError(record)
        self._warn(e)

    def close(self) -> None:
        try:
            super().close()
        except OSError as e:  # the last lines could not be flushed
            self._warn(e)

    def _warn(self, e: OSError) -> None:
        if not self.failed:
            self.failed = True
            print(f"fxp: warning: cannot write {self.baseFilename} ({e.strerror or e}); its next lines are dropped",
                  file=sys.stderr)


@contextmanager
def logging_to(file: Path):
    "`file` (a run's train.log) gets the log lines while the block runs, formatted as Hydra's job logging writes them."
    from omegaconf import OmegaConf

    from fxp import config

    fmt = OmegaConf.load(config.conf_dir() / "hydra" / "job_logging" / "fxp.yaml").formatters.simple.format
    handler = LogFile(file)
    handler.setFormatter(logging.Formatter(fmt))
    root, level = logging.getLogger(), logging.getLogger().level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()
        root.setLevel(level)
