"""The run-folder format, in one place: its file names, the one writer (`Run`), and the readers every command goes
through (metrics.csv, summary.json, config.yaml, a run or sweep job as a row), with the rules for a run's status, its
monitor metric and best values, and a sweep's best job.

Light imports only (the stdlib and yaml; omegaconf when a run is written): `fxp runs` reads run folders without
torch. It imports no command and no report: what a run adds as it ends (its diagnosis) comes in as `Run(finish=...)`.
"""
from __future__ import annotations

import csv
import json
import math
import platform
import re
import subprocess
import time
import traceback
from datetime import datetime
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Optional

import yaml

from fxp.errors import Diverged, FxpError

CONFIG, OVERRIDES, METRICS, SUMMARY, LOG = "config.yaml", "overrides.yaml", "metrics.csv", "summary.json", "train.log"
MODEL, CHECKPOINTS, PLOTS = "model.pkl", "checkpoints", "plots"
SWEEP_CSV, BEST = "sweep.csv", "best.json"  # a sweep folder's own files (fxp.sweeps writes them)
SWEEP_FILES = ("multirun.yaml", SWEEP_CSV, BEST)  # Hydra writes multirun.yaml in every sweep folder
NOT_METRICS = {"stage", "epoch", "lr", "time"}
LOWER_IS_BETTER = ("loss", "error", "mse", "mae", "rmse", "rmspe", "perplexity")
STATUSES = ("completed", "failed", "interrupted", "diverged", "running", "stale", "incomplete")
STAMP = re.compile(r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d")  # outputs/<task>/<stamp>_<uid>
STALE_AFTER_S = 3600
# The baselines fxp computes as a run ends (summary.json keys, a step's under its name: summary["lm"]): what a trivial
# predictor reaches on the valid set, the metric it is the floor of, and who reaches it.
BASELINES = {"accuracy_majority": ("accuracy", "the majority label"), "mse_train_mean": ("mse", "the training mean"),
             "perplexity_unigram": ("perplexity", "unigram frequencies"), "psnr_input": ("psnr", "the input itself")}
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: 20x faster than OmegaConf.load


class Run:
    "A run folder: claimed once (never overwritten), its summary.json written whatever happens."

    def __init__(self, path: Path, cfg, overrides: list[str], task: str, finish: Optional[Callable] = None):
        self.path, self.cfg, self.overrides, self.task = Path(path).resolve(), cfg, overrides, task
        self.finish = finish  # finish(run) as the run ends, whatever its status, before the last summary
        self.info: dict = {}  # extra summary fields set while training (device, lr_found, ...)
        self.status = "running"

    def __enter__(self) -> "Run":
        from omegaconf import OmegaConf

        self.path.mkdir(parents=True, exist_ok=True)
        try:
            with open(self.path / CONFIG, "x") as f:
                f.write(OmegaConf.to_yaml(self.cfg, resolve=True))
        except FileExistsError:
            raise FxpError(f"{self.path} already holds a run; choose a new folder (hydra.run.dir=...)") from None
        (self.path / OVERRIDES).write_text(OmegaConf.to_yaml(OmegaConf.create(list(self.overrides))))
        self.start = time.time()
        self.write_summary()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.status = status_of(exc)
        if exc is not None:
            self.info["error"] = str(exc) if isinstance(exc, FxpError) else f"{exc_type.__name__}: {exc}"
            with open(self.path / LOG, "a") as f:
                f.write("".join(traceback.format_exception(exc_type, exc, tb)))
        try:
            if self.finish is not None:
                self.finish(self)  # e.g. the diagnosis (fxp.diagnose.finish), into self.info
        finally:
            self.write_summary()
        return False

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

# --- reading a run folder --------------------------------------------------------------------------------------


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


def read_json(path: Path) -> dict:
    "A JSON file of a run or sweep folder (summary.json, best.json); {} if missing or half-written."
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}


def read_summary(path: Path) -> dict:
    return read_json(Path(path) / SUMMARY)


def read_config(path: Path) -> dict:
    "The run's config.yaml as plain data (resolved when written); {} if unreadable."
    try:
        return yaml.load((Path(path) / CONFIG).read_text(), Loader=YAML_LOADER) or {}
    except (OSError, yaml.YAMLError):
        return {}


def read_overrides(path: Path) -> list[str]:
    try:
        return [str(o) for o in yaml.load((Path(path) / OVERRIDES).read_text(), Loader=YAML_LOADER) or []]
    except (OSError, yaml.YAMLError, TypeError):
        return []


def read_monitor(path: Path) -> SimpleNamespace:
    "The run's main metric and direction (config.yaml's task.monitor); valid_loss/min if unreadable."
    try:
        monitor = read_config(path)["task"]["monitor"]
        return SimpleNamespace(metric=str(monitor["metric"]), mode=str(monitor["mode"]))
    except (KeyError, TypeError):
        return SimpleNamespace(metric="valid_loss", mode="min")


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


def baselines(summary: dict) -> dict:
    "{metric: (value, who reaches it)} for the metrics of a summary (a run's, or a step's) fxp has a baseline of."
    out = {}
    for key, (metric, who) in BASELINES.items():
        value = summary.get(key) if isinstance(summary, dict) else None
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[metric] = (float(value), who)
    if "accuracy" in out:
        out["error_rate"] = (1 - out["accuracy"][0], out["accuracy"][1])
    return out


def first_line(text, words: int = 0) -> str:
    "A message's first line (its first `words` words, `...` if cut): what a table shows of an error."
    line = (str(text or "").strip().splitlines() or [""])[0]
    cut = line.split()
    return " ".join(cut[:words]) + " ..." if words and len(cut) > words else line


# --- runs and sweeps as rows (fxp runs, sweep.csv, best.json) --------------------------------------------------------


def is_run(path: Path) -> bool:
    return any((path / name).is_file() for name in (SUMMARY, CONFIG, METRICS))


def job_dirs(path: Path) -> list[Path]:
    "A sweep's job folders (0, 1, 2, ...) in job order."
    return sorted((p for p in path.iterdir() if p.name.isdigit() and p.is_dir()), key=lambda p: int(p.name))


def is_sweep(path: Path) -> bool:
    return any((path / name).is_file() for name in SWEEP_FILES) or any(map(is_run, job_dirs(path)))


def read_run(path: Path, root: Path) -> dict:
    """One run folder as a row (`run` relative to root); a run still going (or dead) is read from its metrics.csv.

    A folder without summary.json is `incomplete`; a `running` run whose files have not changed for STALE_AFTER_S
    (or three of its epochs, if longer) is `stale`: its process most likely died.
    """
    summary = read_summary(path)
    monitor = read_monitor(path)
    status = summary.get("status", "incomplete")
    if status in ("running", "incomplete"):
        rows, last_write = read_metrics(path), _last_write(path)
        final, best, epochs = final_metrics(rows), best_metrics(rows, monitor), len(rows)
        wall = last_write - started(path)
        if status == "running" and time.time() - last_write > _stale_after(rows):
            status = "stale"
    else:
        final, best = summary.get("final_metrics", {}), summary.get("best_metrics", {})
        epochs, wall = summary.get("epochs", 0), summary.get("wall_time_s")
    final, best = _finite(final), _finite(best)
    overrides = summary["overrides"] if "overrides" in summary else read_overrides(path)
    baseline = baselines(summary).get(monitor.metric, (None, None))
    return dict(run=path.relative_to(root).as_posix(), kind="lr-find" if "suggested_lrs" in summary else "run",
                task=summary.get("task") or _task_of(path), overrides=overrides, metric=monitor.metric,
                mode=monitor.mode, final=final.get(monitor.metric), best=best.get(monitor.metric),
                baseline=baseline[0], baseline_of=baseline[1], model_epoch=summary.get("model_epoch"), epochs=epochs,
                wall_time_s=wall, status=status, error=first_line(summary.get("error")) or None,
                suggested_lrs=summary.get("suggested_lrs"), started=iso(started(path)), final_metrics=final,
                best_metrics=best)


def read_jobs(sweep_dir: Path) -> list[dict]:
    "Each job folder of a sweep as a row (a job still going is `running`), in job order."
    return [read_run(d, sweep_dir) for d in job_dirs(sweep_dir)]


def best_job(jobs: list[dict]) -> dict | None:
    "The completed job with the best value of the monitor metric, in its mode (best.json's and `fxp runs`' rule)."
    scored = [j for j in jobs if j["status"] == "completed" and j["best"] is not None]
    if not scored:
        return None
    pick = min if scored[0]["mode"] == "min" else max
    return pick(scored, key=lambda j: j["best"])


def _task_of(path: Path) -> str:
    "Without summary.json: the folder the run sits in (runs land in outputs/<task>/<stamp>)."
    return path.parent.name if STAMP.match(path.name) else "?"


def started(path: Path) -> float:
    "When the run started: its folder's stamp, else when config.yaml (the first file written) was written."
    stamp = STAMP.match(path.name)
    if stamp:
        return datetime.strptime(stamp.group(), "%Y-%m-%d_%H-%M-%S").timestamp()
    first = path / CONFIG
    return (first if first.exists() else path).stat().st_mtime


def _last_write(path: Path) -> float:
    files = [path / SUMMARY, path / METRICS, path / LOG, path / CHECKPOINTS / "last.pth", path / CONFIG]
    return max([f.stat().st_mtime for f in files if f.exists()] or [path.stat().st_mtime])


def _stale_after(rows: list[dict]) -> float:
    longest_epoch = max((r["time"] for r in rows if isinstance(r.get("time"), float)), default=0.0)
    return max(STALE_AFTER_S, 3 * longest_epoch)


def _finite(metrics: dict) -> dict:
    "Numeric metrics; NaN and inf as None, so --json is strict JSON."
    return {k: (v if math.isfinite(v) else None) for k, v in metrics.items() if isinstance(v, (int, float))}


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts).isoformat(timespec="seconds")


# --- what a run records about where it ran ---------------------------------------------------------------------------


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
