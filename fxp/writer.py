"""The run-folder writer: `Run` (a folder claimed by one process, its summary written whatever ends it, a heartbeat
while it lives, Ctrl-C held back while files are committed), and the helpers every file fxp writes goes through:
`write_atomic` (whole or not at all, a full disk named as such), `write_pickle` (with its SHA-256 in pickles.json),
`locked`, `signals_deferred`, `clean_temp`. The format it writes (file names, summary fields) is fxp.runs'.

Light imports only (the stdlib; omegaconf when a run is claimed): it imports no command and no report: what a run adds
as it ends (its diagnosis) comes in as `Run(finish=...)`.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import platform
import signal
import subprocess
import threading
import time
import traceback
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Callable, Optional

from fxp.errors import Diverged, FxpError, Pruned, describe
from fxp.runs import (
    ATTEMPT_LOG,
    CHECKPOINTS,
    CONFIG,
    HEARTBEAT_S,
    HOST,
    LOG,
    METRICS,
    OVERRIDES,
    PICKLES,
    PLOTS,
    SUMMARY,
    _last_write,
    _proc_start,
    best_metrics,
    final_metrics,
    is_run,
    is_sweep,
    read_json,
    read_metrics,
    read_summary,
    started,
)


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

    def results(self) -> tuple[dict, dict, int]:
        "The final and best metrics and the epochs so far, from metrics.csv (a group's from its members: fxp.cv)."
        rows = read_metrics(self.path)
        return final_metrics(rows), best_metrics(rows, self.cfg.task.monitor), len(rows)

    def write_summary(self) -> None:
        final, best, epochs = self.results()
        summary = dict(
            status=self.status, task=self.task, overrides=list(self.overrides),
            final_metrics=final, best_metrics=best, epochs=epochs, wall_time_s=round(time.time() - self.start, 3),
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
