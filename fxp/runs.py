"""The one writer of run folders: config.yaml, overrides.yaml, summary.json, and the traceback in train.log.

Light imports only: `fxp runs` and the CLI read run folders without torch.
"""
from __future__ import annotations

import csv
import json
import math
import platform
import subprocess
import time
import traceback
from importlib import metadata
from pathlib import Path

from omegaconf import OmegaConf

from fxp.errors import Diverged, FxpError

SUMMARY, METRICS, CONFIG, LOG = "summary.json", "metrics.csv", "config.yaml", "train.log"
NOT_METRICS = {"stage", "epoch", "lr", "time"}
LOWER_IS_BETTER = ("loss", "error", "mse", "mae", "rmse", "rmspe", "perplexity")


class Run:
    "A run folder: claimed once (never overwritten), its summary.json written whatever happens."

    def __init__(self, path: Path, cfg, overrides: list[str], task: str):
        self.path, self.cfg, self.overrides, self.task = Path(path).resolve(), cfg, overrides, task
        self.info: dict = {}  # extra summary fields set while training (device, lr_found, ...)
        self.status = "running"

    def __enter__(self) -> "Run":
        self.path.mkdir(parents=True, exist_ok=True)
        try:
            with open(self.path / CONFIG, "x") as f:
                f.write(OmegaConf.to_yaml(self.cfg, resolve=True))
        except FileExistsError:
            raise FxpError(f"{self.path} already holds a run; choose a new folder (hydra.run.dir=...)") from None
        (self.path / "overrides.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(list(self.overrides))))
        self.start = time.time()
        self.write_summary()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.status = status_of(exc)
        if exc is not None:
            self.info["error"] = str(exc) if isinstance(exc, FxpError) else f"{exc_type.__name__}: {exc}"
            with open(self.path / LOG, "a") as f:
                f.write("".join(traceback.format_exception(exc_type, exc, tb)))
        if read_metrics(self.path):
            self.add_diagnosis()
        self.write_summary()
        return False

    def add_diagnosis(self) -> None:
        "What the curves say (fxp diagnose), in summary.json and plots/diagnosis.png; never in the way of the summary."
        from fxp import diagnose

        try:
            self.info["diagnosis"] = diagnose.diagnose(self.path, status=self.status)
            diagnose.plot(self.path, self.info["diagnosis"], self.path / diagnose.PLOT)
        except Exception as e:  # the run's own outcome matters more than its diagnosis
            self.info["diagnosis"] = {"error": f"{type(e).__name__}: {e}"}

    def write_summary(self) -> None:
        rows = read_metrics(self.path)
        summary = dict(
            status=self.status, task=self.task, overrides=list(self.overrides),
            final_metrics=final_metrics(rows), best_metrics=best_metrics(rows, self.cfg.task.monitor),
            epochs=len(rows), wall_time_s=round(time.time() - self.start, 3),
            seed=self.cfg.trainer.seed, versions=versions(), git_commit=git_commit(), **self.info)
        tmp = self.path / (SUMMARY + ".tmp")
        tmp.write_text(json.dumps(summary, indent=2, default=str))
        tmp.replace(self.path / SUMMARY)


def status_of(exc) -> str:
    if exc is None:
        return "completed"
    if isinstance(exc, Diverged):
        return "diverged"
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    return "failed"


def read_metrics(path: Path) -> list[dict]:
    "Rows of a run's metrics.csv as dicts of floats (empty if none yet)."
    f = Path(path) / METRICS
    if not f.is_file():
        return []
    with open(f, newline="") as fh:
        return [{k: _num(v) for k, v in row.items()} for row in csv.DictReader(fh)]


def _num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return v


def final_metrics(rows: list[dict]) -> dict:
    "The last epoch's losses and metrics."
    return {k: v for k, v in rows[-1].items() if k not in NOT_METRICS} if rows else {}


def lower_is_better(name: str, monitor=None) -> bool:
    if monitor is not None and name == monitor.metric:
        return monitor.mode == "min"
    return any(w in name for w in LOWER_IS_BETTER)


def best_metrics(rows: list[dict], monitor=None) -> dict:
    "Each metric's best value over the epochs (NaN never counts as best)."
    best = {}
    for name in (rows[0] if rows else {}):
        vals = [r[name] for r in rows if isinstance(r[name], float) and not math.isnan(r[name])]
        if name not in NOT_METRICS and vals:
            best[name] = min(vals) if lower_is_better(name, monitor) else max(vals)
    return best


def versions() -> dict:
    out = {"python": platform.python_version()}
    for pkg in ("fxp", "fastai", "torch", "torchvision", "hydra-core"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def git_commit() -> str | None:
    "The commit of the project the run was started from (the working directory's repository)."
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None
