"""The run-folder format, in one place: its file names, the one writer (`Run`), and the readers every command goes
through (metrics.csv, summary.json, config.yaml, a run or sweep job as a row), with the rules for a run's status, its
monitor metric and best values, and a sweep's best job.

Light imports only (the stdlib and yaml; omegaconf when a run is written): `fxp runs` reads run folders without
torch. It imports no command and no report: what a run adds as it ends (its diagnosis) comes in as `Run(finish=...)`.
"""
from __future__ import annotations

import csv
import errno
import hashlib
import io
import json
import math
import os
import platform
import re
import signal
import subprocess
import threading
import time
import traceback
from contextlib import contextmanager
from datetime import datetime
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Optional

import yaml

from fxp.errors import Diverged, FxpError, Pruned, describe

CONFIG, OVERRIDES, METRICS, SUMMARY, LOG = "config.yaml", "overrides.yaml", "metrics.csv", "summary.json", "train.log"
MODEL, CHECKPOINTS, PLOTS = "model.pkl", "checkpoints", "plots"
LAST = "last"  # checkpoints/last.pth (what `fxp resume` continues from) and last.json (where that is, readable light)
PICKLES = "pickles.json"  # the SHA-256 of each pickle fxp wrote into the folder (model.pkl), checked before loading
TRACKERS = "trackers.json"  # the tracker runs (MLflow, W&B ids) a run or sweep logs to: fxp resume goes on in them
SWEEP_CSV, BEST = "sweep.csv", "best.json"  # a sweep folder's own files (fxp.sweeps writes them)
SWEEP_JSON = "sweep.json"  # a sweep's record of the jobs it runs, written as it starts (fxp.sweeps.record)
SWEEP_FILES = ("multirun.yaml", SWEEP_JSON, SWEEP_CSV, BEST)  # Hydra writes multirun.yaml in every sweep folder
NOT_STARTED = "not started"  # a job a sweep's record lists that has no folder: the sweep stopped before it
ATTEMPT_LOG = re.compile(r"train\.\w+-\d+\.log")  # train.failed-1.log: the log of a sweep job's earlier attempt
NOT_METRICS = {"stage", "epoch", "lr", "time"}
LOWER_IS_BETTER = ("loss", "error", "mse", "mae", "rmse", "rmspe", "perplexity")
STATUSES = ("completed", "pruned", "failed", "interrupted", "diverged", "running", "killed", "stale", "incomplete",
            NOT_STARTED)  # pruned: an Optuna trial its study's pruner stopped early (fxp.trials); not a failure
STAMP = re.compile(r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d")  # outputs/<task>/<stamp>_<uid>
STALE_AFTER_S = 3600  # a run without a heartbeat (older fxp) whose files stopped changing: `stale`
HEARTBEAT_S = 60  # a running run touches its summary.json this often; one silent for DEAD_AFTER_BEATS of them: killed
DEAD_AFTER_BEATS = 10
HOST = platform.node()
# A run's baselines are summary.json's `baselines` ({metric: {value, by}}: the kind's `baseline`, fxp.baselines);
# the keys older runs (and the text kind's language-model step) hold them in: key -> (the metric, who reaches it).
BASELINES = {"accuracy_majority": ("accuracy", "the majority label"), "mse_train_mean": ("mse", "the training mean"),
             "perplexity_unigram": ("perplexity", "unigram frequencies"), "psnr_input": ("psnr", "the input itself")}
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: 20x faster than OmegaConf.load


class Run:
    """A run folder, owned by one process at a time: claimed only if new or empty (never overwritten), or reopened by
    `fxp resume` (`resume`: what the resume is, recorded in summary.json's `resumes`). summary.json names the owner
    (pid, host) and is touched every HEARTBEAT_S while the run lives; its final status is written whatever ends it."""

    def __init__(self, path: Path, cfg, overrides: list[str], task: str, finish: Optional[Callable] = None,
                 resume: Optional[dict] = None):
        self.path, self.cfg, self.overrides, self.task = Path(path).resolve(), cfg, overrides, task
        self.finish = finish  # finish(run) as the run ends, whatever its status, before the last summary
        self.resume = resume
        self.info: dict = {}  # extra summary fields set while training (device, lr_found, ...)
        self.status = "running"
        self._lock_fd, self._stop = None, threading.Event()

    def __enter__(self) -> "Run":
        try:
            with signals_deferred():  # a Ctrl-C now acts once the folder is claimed and its summary written
                if self.resume is not None:
                    self._lock()
                    self._reopen()
                else:
                    self._claim()
                    self._lock()
                self.process = dict(pid=os.getpid(), host=HOST, start=_proc_start(os.getpid()),
                                    heartbeat_s=HEARTBEAT_S)
                self._versions, self._commit = versions(), git_commit()
                self.write_summary()
                threading.Thread(target=self._heartbeat, name="fxp-heartbeat", daemon=True).start()
        except KeyboardInterrupt as e:
            if self._lock_fd is not None:  # the run is open: end it as interrupted
                self.__exit__(type(e), e, e.__traceback__)
            raise
        return self

    def _claim(self) -> None:
        from omegaconf import OmegaConf

        check_claimable(self.path)
        text = OmegaConf.to_yaml(self.cfg, resolve=True)  # before anything is written: it may fail
        self.path.mkdir(parents=True, exist_ok=True)
        tmp = self.path / (CONFIG + ".tmp")
        tmp.write_text(text)
        try:  # the claim: config.yaml appears whole, and only if no other process made it first
            try:
                os.link(tmp, self.path / CONFIG)
            except FileExistsError:
                raise
            except OSError:  # a file system without hard links
                with open(self.path / CONFIG, "x") as f:
                    f.write(text)
        except FileExistsError:
            raise FxpError(f"{self.path} already holds a run; choose a new folder (hydra.run.dir=...)") from None
        finally:
            tmp.unlink()
        write_atomic(self.path / OVERRIDES, OmegaConf.to_yaml(OmegaConf.create(list(self.overrides))))
        self.start = time.time()

    def _reopen(self) -> None:
        "`fxp resume`: the summary's fields kept (its wall time goes on), the resume added to `resumes`."
        from omegaconf import OmegaConf

        clean_temp(self.path)  # a kill's leftovers (summary.json.tmp, last.pth.tmp): the folder is this process's now
        old = read_summary(self.path)
        self.info = {k: v for k, v in old.items() if k not in OWN_FIELDS}
        self.info["resumes"] = [*old.get("resumes", []), self.resume]
        if self.resume.get("extend"):  # the new stage is part of the run's config from now on
            write_atomic(self.path / CONFIG, OmegaConf.to_yaml(self.cfg, resolve=True))
        before = old.get("wall_time_s") or 0.0
        if old.get("status") == "running":  # killed: it ran until its last heartbeat
            before = max(before, _last_write(self.path) - started(self.path))
        self.start = time.time() - before

    def _lock(self) -> None:
        "An exclusive lock on the folder for as long as this process has the run (freed by the OS if it dies)."
        try:
            import fcntl
        except ImportError:  # no flock (Windows): the pid in summary.json still tells
            self._lock_fd = -1
            return
        fd = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EAGAIN, errno.EACCES):
                raise FxpError(f"{self.path} is in use by another fxp process; wait for it to end") from None
            fd = -1  # a file system without flock
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is not None and self._lock_fd >= 0:
            os.close(self._lock_fd)
        self._lock_fd = None

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                os.utime(self.path / SUMMARY)
            except OSError:
                pass

    def __exit__(self, exc_type, exc, tb) -> bool:
        with signals_deferred(drop=True):  # more Ctrl-C while the run ends must not leave it `running`
            self._stop.set()
            self.status = status_of(exc)
            if isinstance(exc, Pruned):
                self.info["pruned"] = str(exc)
            elif exc is not None:
                self.info["error"] = str(exc) if isinstance(exc, FxpError) else describe(exc)
                try:
                    with open(self.path / LOG, "a") as f:
                        f.write("".join(traceback.format_exception(exc_type, exc, tb)))
                except OSError:
                    pass
            try:
                self.write_summary()  # the final status first, whatever the finish does
                if self.finish is not None:
                    self.finish(self)  # e.g. the diagnosis (fxp.diagnose.finish), into self.info
                    self.write_summary()
                clean_temp(self.path)  # what kills of this run's earlier processes left
            except Exception:
                if exc is None:
                    raise
            finally:
                self._unlock()
        return False

    def write_summary(self) -> None:
        rows = read_metrics(self.path)
        summary = dict(
            status=self.status, task=self.task, overrides=list(self.overrides),
            final_metrics=final_metrics(rows), best_metrics=best_metrics(rows, self.cfg.task.monitor),
            epochs=len(rows), wall_time_s=round(time.time() - self.start, 3),
            seed=self.cfg.trainer.seed, versions=self._versions, git_commit=self._commit, **self.info)
        if self.status == "running":
            summary["process"] = self.process
        text = json.dumps(summary, indent=2, default=str)
        try:
            write_atomic(self.path / SUMMARY, text)
        except OSError as e:
            if e.errno != errno.ENOSPC or not (self.path / SUMMARY).is_file():
                raise
            with open(self.path / SUMMARY, "r+") as f:  # a full disk: over the old summary, in its own blocks
                f.write(text)
                f.truncate()


OWN_FIELDS = {"status", "task", "overrides", "final_metrics", "best_metrics", "epochs", "wall_time_s", "seed",
              "versions", "git_commit", "process", "error", "resumes"}  # what write_summary sets itself


def check_claimable(path: Path) -> None:
    """A run is written only into a new or empty folder (its train.log aside: empty, or the one this process logs into,
    which Hydra opened and imports may have written to, e.g. matplotlib's first font cache; and the logs of a sweep
    job's earlier attempts, ATTEMPT_LOG): one line if not."""
    path = Path(path)
    if not path.exists():
        return
    if not path.is_dir():
        raise FxpError(f"{path} is a file, not a folder; choose a new folder for the run (hydra.run.dir=...)")
    own = logged_into()
    taken = sorted(p.name for p in path.iterdir() if not ATTEMPT_LOG.fullmatch(p.name)
                   and not (p.name == LOG and (p.stat().st_size == 0 or p.resolve() in own)))
    if taken:
        what = ("a run (fxp resume continues it)" if (path / CONFIG).exists() else "a sweep" if is_sweep(path)
                else f"{len(taken)} file(s) or folder(s), e.g. {taken[0]}")
        raise FxpError(f"{path} is not empty: it holds {what}; a run is written only into a new or empty folder "
                       f"(hydra.run.dir=...)")


def logged_into() -> set[Path]:
    "The files this process's logging writes into (Hydra's job log: the run's train.log)."
    import logging

    return {Path(h.baseFilename).resolve() for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)}


@contextmanager
def locked(path: Path):
    "One process at a time: a sweep's jobs in parallel updating the sweep's files, or making a shared tracker store."
    import fcntl  # POSIX; imported here so the run-folder readers still load where it is absent

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def write_atomic(path: Path, data, fsync: bool = False) -> None:
    """`path` written whole or not at all: `data` (text, bytes, or a function that writes the file at the path it is
    given) goes to a temporary file beside it, renamed over it once complete; a kill at any moment leaves the old or
    the new file. `fsync` (checkpoints, model.pkl): on disk before the rename, so a power cut cannot tear them."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        if callable(data):
            _written_by(data, tmp)
        else:
            with open(tmp, "w", newline="") if isinstance(data, str) else open(tmp, "wb") as f:
                f.write(data)
        if fsync:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_pickle(path: Path, write: Callable, fsync: bool = False) -> None:
    """`path` written whole by `write(tmp)` (as write_atomic), its SHA-256 recorded in the folder's pickles.json: added
    before the file takes its name, the old file's dropped after, so the record holds the file's hash whenever a kill
    comes. fxp loads a pickle only if it matches (loading one runs whatever code it holds: fxp.saved.verified)."""
    path = Path(path)
    digest = []

    def recorded(tmp: Path) -> None:
        write(tmp)
        digest.append(sha256(tmp))
        _record(path, [digest[0], *read_json(path.parent / PICKLES).get(path.name, [])], fsync)

    write_atomic(path, recorded, fsync)
    _record(path, digest, fsync)


def _record(path: Path, digests: list[str], fsync: bool) -> None:
    record = read_json(path.parent / PICKLES)
    record[path.name] = list(dict.fromkeys(digests))
    write_atomic(path.parent / PICKLES, json.dumps(record, indent=2), fsync)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):  # hashlib.file_digest is Python 3.11+
            h.update(block)
    return h.hexdigest()


def clean_temp(path: Path) -> None:
    """The temporary files a kill left in a run folder (write_atomic's `NAME.tmp`: in the folder, its steps' folders
    and their checkpoints/ and plots/), removed as the run is reopened or ends, while no other process writes there."""
    path = Path(path)
    try:
        runs = [path, *(d for d in path.iterdir() if d.is_dir() and is_run(d))]
        for folder in [d / sub for d in runs for sub in ("", CHECKPOINTS, PLOTS)]:
            for tmp in folder.glob("*.tmp"):
                tmp.unlink(missing_ok=True)
    except OSError:  # a folder fxp cannot change (read-only): its leftovers stay, as harmless as before
        pass


def _written_by(write: Callable, tmp: Path) -> None:
    """`write(tmp)`; where it fails on a full disk with an error that hides why (torch.save's zip writer: "unexpected
    pos 64 vs 0"), the error is the disk's: OSError ENOSPC naming the file, the original chained to it."""
    try:
        write(tmp)
    except OSError:
        raise
    except Exception as e:
        if not _full(tmp.parent):
            raise
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp)) from e


def _full(folder: Path) -> bool:
    "No block left on `folder`'s file system for this user (root also gets the blocks reserved for it)."
    try:
        st = os.statvfs(folder)
    except OSError:
        return False
    return (st.f_bfree if os.geteuid() == 0 else st.f_bavail) * st.f_frsize < FULL_BELOW


FULL_BELOW = 1 << 16  # bytes: less than a write's buffer is left


@contextmanager
def signals_deferred(drop: bool = False):
    """SIGINT and SIGTERM held back while files are committed (a checkpoint, the run's status): a Ctrl-C or SIGTERM
    then acts as soon as they are whole; `drop`: ignored (the run is ending anyway). Main thread only, as signals."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got = []
    old = {s: signal.signal(s, lambda n, _: got.append(n)) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, signal.SIG_DFL if handler is None else handler)
        if got and not drop:
            handler = old[got[0]]
            if callable(handler):
                handler(got[0], None)  # Python's SIGINT handler, fxp's SIGTERM one: KeyboardInterrupt
            elif handler == signal.SIG_DFL:
                os.kill(os.getpid(), got[0])


def status_of(exc) -> str:
    if exc is None:
        return "completed"
    if isinstance(exc, Diverged):
        return "diverged"
    if isinstance(exc, Pruned):
        return "pruned"
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    return "failed"

# --- reading a run folder --------------------------------------------------------------------------------------


def read_metrics(path: Path) -> list[dict]:
    "Rows of a run's metrics.csv as dicts of floats (empty if none yet or not a CSV; undecodable bytes replaced)."
    f = Path(path) / METRICS
    if not f.is_file():
        return []
    try:
        with open(f, newline="", errors="replace") as fh:
            return [{k: _num(v) for k, v in row.items() if isinstance(k, str)} for row in csv.DictReader(fh)]
    except (OSError, csv.Error):
        return []


def _num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return v


def read_json(path: Path) -> dict:
    "A JSON object of a run or sweep folder (summary.json, best.json); {} if missing, half-written or not an object."
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, ValueError):  # ValueError: not JSON, or not UTF-8
        return {}
    return value if isinstance(value, dict) else {}


def read_summary(path: Path) -> dict:
    return read_json(Path(path) / SUMMARY)


def read_config(path: Path) -> dict:
    "The run's config.yaml as plain data (resolved when written); {} if unreadable."
    try:
        value = yaml.load((Path(path) / CONFIG).read_text(), Loader=YAML_LOADER)
    except (OSError, ValueError, yaml.YAMLError):  # ValueError: not UTF-8
        return {}
    return value if isinstance(value, dict) else {}


def read_overrides(path: Path) -> list[str]:
    try:
        return [str(o) for o in yaml.load((Path(path) / OVERRIDES).read_text(), Loader=YAML_LOADER) or []]
    except (OSError, ValueError, yaml.YAMLError, TypeError):
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
    if not isinstance(summary, dict):
        return {}
    out = {metric: (float(summary[key]), who) for key, (metric, who) in BASELINES.items() if _real(summary.get(key))}
    if "accuracy" in out:
        out["error_rate"] = (1 - out["accuracy"][0], out["accuracy"][1])
    for metric, entry in (summary.get("baselines") if isinstance(summary.get("baselines"), dict) else {}).items():
        if isinstance(entry, dict) and _real(entry.get("value")):
            out[metric] = (float(entry["value"]), str(entry.get("by") or "a constant"))
    return out


def baseline_cell(base: dict, metric: str) -> str:
    "A metric's baseline as a table shows it: `0.775 (the majority label '<50k')`; '' if none."
    value, who = base.get(metric, (None, None))
    return f"{value:.4g} ({who})" if value is not None else ""


def not_beaten(values: dict, base: dict, monitor=None) -> list[str]:
    "A line for each metric of `values` that does not beat its baseline ({metric: (value, who)}): the model lost."
    lines = []
    for metric, value in values.items():
        if metric in base and _real(value):
            floor, who = base[metric]
            if not (value < floor if lower_is_better(metric, monitor) else value > floor):
                lines.append(f"{metric} {value:.4g} does not beat its baseline, {floor:.4g} for {who}")
    return lines


def _real(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


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
    summary, bad = read_summary(path), unreadable(path)  # a summary.json that is no summary reads as {}
    monitor = read_monitor(path)
    status = summary.get("status") if isinstance(summary.get("status"), str) else "incomplete"
    if status in ("running", "incomplete"):
        rows, last_write = read_metrics(path), _last_write(path)
        final, best, epochs = final_metrics(rows), best_metrics(rows, monitor), len(rows)
        wall = last_write - started(path)
        if status == "running":
            status = liveness(summary, last_write, rows)
    else:
        final, best = _of(dict, summary.get("final_metrics")), _of(dict, summary.get("best_metrics"))
        epochs, wall = _of(int, summary.get("epochs")) or 0, _of(float, summary.get("wall_time_s"))
    final, best = _finite(final), _finite(best)
    overrides = summary["overrides"] if isinstance(summary.get("overrides"), list) else read_overrides(path)
    baseline = baselines(summary).get(monitor.metric, (None, None))
    lrs = _of(dict, summary.get("suggested_lrs")) if "suggested_lrs" in summary else None
    kind = "lr-find" if lrs is not None else "show" if "shown" in summary else "run"  # fxp show: data, no training
    return dict(run=path.relative_to(root).as_posix(), kind=kind,
                task=_of(str, summary.get("task")) or _task_of(path), overrides=[str(o) for o in overrides],
                metric=monitor.metric, mode=monitor.mode, final=final.get(monitor.metric),
                best=best.get(monitor.metric), baseline=baseline[0], baseline_of=baseline[1],
                model_epoch=_of(int, summary.get("model_epoch")), epochs=epochs, wall_time_s=wall, status=status,
                error=bad or first_line(_of(str, summary.get("error"))) or None, suggested_lrs=lrs,
                started=iso(started(path)), final_metrics=final, best_metrics=best)


def unreadable(path: Path) -> str:
    "What is wrong with a run folder's summary.json or config.yaml, if one is there but unreadable; else ''."
    path = Path(path)
    try:
        value = json.loads((path / SUMMARY).read_bytes())
        if not isinstance(value, dict):
            what = {type(None): "null", list: "list", str: "string", bool: "boolean"}.get(type(value), "number")
            return f"unreadable {SUMMARY}: a JSON {what}, not a summary"
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as e:
        return f"unreadable {SUMMARY}: {type(e).__name__}"
    if (path / CONFIG).is_file() and not read_config(path):
        return f"unreadable {CONFIG}"
    return ""


def _of(kind: type, value):
    "`value` if it is a `kind` (int and float: a number, not a bool), else None: a field of a hand-edited summary."
    if kind in (int, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        return (int(value) if kind is int else float(value)) if ok and (kind is float or value == int(value)) else None
    return value if isinstance(value, kind) else None


def read_jobs(sweep_dir: Path) -> list[dict]:
    "Each job folder of a sweep as a row (a job still going is `running`), in job order."
    return [read_run(d, sweep_dir) for d in job_dirs(sweep_dir)]


def sweep_jobs(sweep_dir: Path) -> list[dict]:
    """Every job of a sweep as a row, in job order: its folder's (read_jobs), or a `not started` row with its
    overrides for a job the sweep's record (sweep.json) lists and that has no folder (a sweep stopped between jobs)."""
    jobs = {j["run"]: j for j in read_jobs(sweep_dir)}
    for num, overrides in enumerate(planned_jobs(sweep_dir)):
        jobs.setdefault(str(num), not_started_row(str(num), overrides))
    return sorted(jobs.values(), key=lambda j: int(j["run"]))


def planned_jobs(sweep_dir: Path) -> list[list[str]]:
    """Each job's overrides as the sweep's record (sweep.json) lists them ([] for a job whose sweeper picks its values
    as it runs, e.g. an Optuna trial); none without a record (a sweep of an older fxp, or a sweeper fxp cannot
    foresee)."""
    record = read_json(Path(sweep_dir) / SWEEP_JSON)
    listed = record.get("job_overrides")
    if isinstance(listed, list) and all(isinstance(o, list) for o in listed):
        return [[str(x) for x in o] for o in listed]
    n = _of(int, record.get("jobs")) or 0
    return [[] for _ in range(n)]


def not_started_row(num: str, overrides: list[str]) -> dict:
    "A sweep's job that has no folder yet, as a row (the fields of read_run's, empty)."
    return dict(run=num, kind="run", task="-", overrides=overrides, metric=None, mode=None, final=None, best=None,
                baseline=None, baseline_of=None, model_epoch=None, epochs=0, wall_time_s=None, status=NOT_STARTED,
                error=None, suggested_lrs=None, started="", final_metrics={}, best_metrics={})


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
    files = [path / SUMMARY, path / METRICS, path / LOG, path / CHECKPOINTS / f"{LAST}.pth", path / CONFIG]
    return max([f.stat().st_mtime for f in files if f.exists()] or [path.stat().st_mtime])


def liveness(summary: dict, last_write: float, rows: list[dict]) -> str:
    """A `running` summary's true status: `killed` when its process is gone (this host: the pid, checked against its
    start time; another host: no heartbeat for DEAD_AFTER_BEATS beats), else `running`. A run written by an older
    fxp (no process recorded) is `stale` once its files stopped changing for STALE_AFTER_S or three epochs."""
    proc = summary.get("process")
    if not isinstance(proc, dict):
        return "stale" if time.time() - last_write > _stale_after(rows) else "running"
    if proc.get("host") == HOST and isinstance(proc.get("pid"), int):
        return "running" if alive(proc["pid"], proc.get("start")) else "killed"
    beat = proc.get("heartbeat_s") or HEARTBEAT_S
    return "killed" if time.time() - last_write > DEAD_AFTER_BEATS * beat else "running"


def alive(pid: int, start: str | None = None) -> bool:
    "Whether process `pid` lives (not a zombie) and is the one that started at `start` (not a reused pid)."
    stat = _proc_stat(pid)
    if stat is not None:
        return stat[0] != "Z" and (start is None or stat[19] == start)
    if Path("/proc/self/stat").is_file():  # Linux, and no such process
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, not ours
        return True
    return True


def _proc_stat(pid: int) -> list[str] | None:
    "The fields of /proc/PID/stat after the command name (state first, start time 20th), None if none."
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _proc_start(pid: int) -> str | None:
    stat = _proc_stat(pid)
    return stat[19] if stat else None


def last_checkpoint(path: Path) -> dict | None:
    """Where a run's newest checkpoint stands (its last.json, of the run folder or of a step's): step, stage, epoch
    within the stage, epochs in all, and `folder`; None before the first epoch ended."""
    path = Path(path)
    found = []
    for f in [path / CHECKPOINTS / f"{LAST}.json", *path.glob(f"*/{CHECKPOINTS}/{LAST}.json")]:
        point = read_json(f)
        if isinstance(point, dict) and point and f.with_suffix(".pth").is_file():
            found.append({**point, "folder": str(f.parent.parent)})
    return max(found, key=lambda c: c.get("time", 0), default=None)


def truncate_metrics(path: Path, n: int) -> None:
    "Keep metrics.csv's first `n` rows (those a checkpoint holds; the rest are retrained); none: no file."
    f = Path(path) / METRICS
    if not f.is_file():
        return
    lines = f.read_text().splitlines(keepends=True)
    if n == 0:
        f.unlink()
    elif len(lines) > n + 1:
        write_atomic(f, "".join(lines[:n + 1]))


def csv_line(row: dict, header: bool = False) -> str:
    "One metrics.csv row (with the header line first when `header`)."
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(row))
    if header:
        w.writeheader()
    w.writerow(row)
    return buf.getvalue()


def _stale_after(rows: list[dict]) -> float:
    longest_epoch = max((r["time"] for r in rows if isinstance(r.get("time"), float)), default=0.0)
    return max(STALE_AFTER_S, 3 * longest_epoch)


def _finite(metrics: dict) -> dict:
    "Numeric metrics; NaN and inf as None, so --json is strict JSON."
    return {str(k): (v if math.isfinite(v) else None) for k, v in (metrics or {}).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


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
