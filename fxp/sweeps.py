"""A sweep folder's own files: `sweep.json` (its identity and the jobs it is to run), `sweep.csv` (a row per job) and
`best.json` (the best job by `task.monitor`); and what `fxp resume SWEEP_DIR` does with them.

A Hydra callback (`SweepFiles`, in conf/config.yaml) writes sweep.json as the sweep starts, so a sweep stopped between
jobs still shows those it never started, and rewrites sweep.csv and best.json from the job folders' summary.json as
each job ends, under a file lock, so they stay current whichever launcher runs the jobs (in-process, joblib workers,
submitit processes) and a failed job is a row too. Light imports only.

A sweep claims its folder before its first job (`claim`): a new or empty folder, taken atomically, so a rerun or a
second sweep with the same `hydra.sweep.dir` is refused in one line instead of mixing its jobs with the first's.
A sweep whose jobs did not all complete goes on to its last job, then exits 1 saying how many did not; with
`sweep.fail_fast=true` it stops at its first failed job instead (exit 1). Ctrl-C (SIGINT, to the process or its
group) or SIGTERM stops it at once: the running jobs end `interrupted` with their checkpoints, no further job starts,
and one line says that `fxp resume SWEEP_DIR` continues it (exit 130).

Resuming a sweep. sweep.json records the sweep's `identity` (`identity(config)`: the sweeper's kind and what it runs,
with a hash), the command's overrides (`overrides`, `hydra_overrides`) and the folder it was started from (`cwd`).
`fxp resume SWEEP_DIR` launches that command again from that folder into SWEEP_DIR (`relaunch`, `resuming`), with the
Hydra override `+hydra.job.env_set.FXP_SWEEP_RESUME=1` (`=retry-failed` with --retry-failed): resume mode. Hydra sets
it in each job's environment wherever the launcher runs the job; the sweep's own process (its callbacks, its sweeper)
reads it with `resume_mode(config)`. In resume mode the claim takes the existing folder, the identity is checked
against the recorded one (`check_identity`: a change is refused in one line naming it), and each job looks at its
folder before it trains (`before_job`): completed, pruned or diverged: left alone, its result returned as it is;
interrupted or killed with a checkpoint: resumed from it (fxp.resume, as `fxp resume RUN_DIR`); never started, or
killed before its first checkpoint: started; failed: left alone, or with retry-failed started again in its folder, the
failed attempt's train.log kept as train.failed-1.log. Job numbers and folders are kept, so sweep.csv and best.json
end as the uninterrupted sweep's would.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode

from fxp import groups, trials
from fxp.errors import FxpError, SweepStopped
from fxp.resume import resumable
from fxp.runs import (
    ATTEMPT_LOG,
    BEST,
    LOG,
    NOT_STARTED,
    SWEEP_CSV,
    SWEEP_JSON,
    csv_text,
    is_run,
    last_checkpoint,
    read_json,
)
from fxp.writer import locked, write_atomic

LOCK = ".sweep.lock"  # the sweep's claim on its folder, then the lock its files are rewritten under
STOP = ".sweep.stop"  # {"why": "interrupted" | "failed", "job": N}: the sweep was stopped; no further job starts
RESUME = "FXP_SWEEP_RESUME"  # resume mode: "1", or "retry-failed" (see the module's docstring)
RETRY = "retry-failed"
KEPT = ("completed", "pruned", "diverged")  # a job that ended as it would again: a resume leaves it alone
ENDED = ("completed", "pruned")  # a job that did what the sweep asked (pruned: its Optuna search stopped it early)


def csv_row(job: dict) -> dict:
    "job, status, overrides, final_<metric>..., best_<metric>..., epochs, wall_time_s."
    return {"job": job["run"], "status": job["status"], "overrides": " ".join(job["overrides"]),
            **{f"final_{k}": v for k, v in job["final_metrics"].items()},
            **{f"best_{k}": v for k, v in job["best_metrics"].items()},
            "epochs": job["epochs"], "wall_time_s": job["wall_time_s"]}


def csv_rows(table: list[dict]) -> list[dict]:
    """sweep.csv's rows, a row per job; a job that is one of a recipe's seeds (a sweep over trainer.seed), or is a seed
    group itself (trainer.seeds), also gets the recipe's `group` (its jobs), `n` and the monitor's mean and std."""
    jobs, of = {id(j) for j in table}, {}
    for g in groups.grouped(table):
        for j in ([g] if id(g) in jobs else g["members"]) if g["kind"] == "group" else []:
            of[id(j)] = g
    return [{**csv_row(j), **group_columns(of[id(j)])} if id(j) in of else csv_row(j) for j in table]


def group_columns(group: dict) -> dict:
    metric, spread = group["metric"], group["spread"]
    return {"group": group["run"], "n": group["n"],
            **{f"{stat}_{when}_{metric}": spread[when].get(metric, {}).get(stat)
               for when in ("best", "final") for stat in ("mean", "std")}}


def best_of(sweep_dir: Path, table: list[dict]) -> dict | None:
    """best.json's content: the best completed job by task.monitor, in its direction; jobs that differ only in their
    seed are one recipe, judged by its mean once all of them completed (fxp.groups.best): its `jobs`, `std` and `n`."""
    best = groups.best(table)
    if best is None:
        return None
    out = {"job": best["run"], "metric": best["metric"], "mode": best["mode"], "value": best["best"],
           "overrides": best["overrides"], "path": str(Path(sweep_dir) / best["run"])}
    if best["kind"] != "group":
        return out
    spread = best["spread"]["best"][best["metric"]]
    jobs = [best["run"]] if "," not in best["run"] else best["run"].split(",")  # a seed group, or seeds of a sweep
    return {**out, "path": str(Path(sweep_dir) / jobs[0]), "jobs": jobs, "std": spread["std"], "n": spread["n"]}


def update(sweep_dir: Path) -> None:
    "Rewrite sweep.csv and best.json from the job folders (one writer at a time), each written whole."
    sweep_dir = Path(sweep_dir)
    with locked(sweep_dir / LOCK):
        table = groups.jobs(sweep_dir, planned=False)
        write_atomic(sweep_dir / SWEEP_CSV, csv_text(csv_rows(table)))
        best = best_of(sweep_dir, table)
        if best is not None:
            write_atomic(sweep_dir / BEST, json.dumps(best, indent=2))


def claim(sweep_dir: Path, resume: bool = False) -> None:
    """Take `sweep_dir` for a new sweep: created, or empty, and its claim file created exclusively (two sweeps started
    at once into one folder: one gets it). A folder that holds anything is refused in one line (exit 2). `resume`:
    the folder of the sweep being resumed, as it is."""
    sweep_dir = Path(sweep_dir)
    if resume:
        if not (sweep_dir / SWEEP_JSON).is_file():
            _exit(2, f"{sweep_dir} holds no sweep to resume (no {SWEEP_JSON}); fxp runs lists the sweeps")
        return
    try:
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if not any(sweep_dir.iterdir()):
            with open(sweep_dir / LOCK, "x"):
                return
    except FileExistsError:
        pass  # another sweep claimed it between the two lines
    except OSError as e:
        _exit(2, f"cannot create the sweep folder {sweep_dir}: {e.strerror}; choose another hydra.sweep.dir")
    held = sorted(p.name for p in sweep_dir.iterdir() if p.name != LOCK)
    what = f"files ({', '.join(held[:4])}{', ...' if len(held) > 4 else ''})" if held else "another sweep's claim"
    _exit(2, f"{sweep_dir} already holds {what}: a sweep writes into a new or empty folder; choose another "
             f"hydra.sweep.dir (or leave it out for outputs/multirun/<stamp>), or finish the sweep there with "
             f"fxp resume {sweep_dir}")


def _exit(code: int, message: str) -> None:
    "End the sweep with one line (raised through Hydra, which would print an exception in many lines)."
    print(f"fxp: error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(code)


def record(sweep_dir: Path, config) -> None:
    """sweep.json, before the first job starts: the jobs the sweep is to run (`fxp runs` shows those it never started),
    its identity, and the command that started it, from where (what `fxp resume SWEEP_DIR` launches again)."""
    hydra_overrides = [o for o in config.hydra.overrides.hydra if not o.startswith(("hydra.sweep.dir=", "hydra.mode="))]
    out = {**plan(config), "identity": identity(config), "overrides": list(config.hydra.overrides.task),
           "hydra_overrides": hydra_overrides, "cwd": os.getcwd()}
    write_atomic(Path(sweep_dir) / SWEEP_JSON, json.dumps(out, indent=2))


def plan(config) -> dict:
    """The jobs of the sweep `config` (the multirun's config, as Hydra saves it in multirun.yaml) starts: with Hydra's
    basic sweeper, each job's overrides as that sweeper splits the sweep (its own function); with one that counts its
    trials (Optuna's `n_trials`), how many, their values picked as they run; else nothing known."""
    sweeper = config.hydra.sweeper
    jobs = grid(config)
    if jobs is not None:
        return {"jobs": len(jobs), "job_overrides": jobs}
    trials = sweeper.get("n_trials")
    return {"jobs": trials} if isinstance(trials, int) and not isinstance(trials, bool) else {}


def grid(config) -> list[list[str]] | None:
    "Each job's overrides, as Hydra's basic sweeper splits the sweep (its own function); None for another sweeper."
    sweeper = config.hydra.sweeper
    if not str(sweeper.get("_target_")).endswith(".BasicSweeper"):
        return None
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    swept = [f"{k}={v}" for k, v in (sweeper.get("params") or {}).items()] + list(config.hydra.overrides.task)
    try:
        batches = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(swept), None)
    except HydraException:  # glob() needs Hydra's config loader; a bad sweep: the sweeper itself says what is wrong
        return None
    return [list(job) for batch in batches for job in batch]


def identity(config) -> dict:
    """What a resume must run again as it was: the sweeper's kind and what it runs, and a hash of these. The basic
    sweeper: each job's overrides, those a resume may change aside (fxp.resume.RESUMABLE: where the data is, the
    device, threads, loggers). Optuna: its search space, sampler and seed. Another sweeper: its name."""
    sweeper = config.hydra.sweeper
    target = str(sweeper.get("_target_"))
    jobs = grid(config)
    if jobs is not None:
        out = {"sweeper": "basic", "jobs": [[o for o in job if not resumable(_key(o))] for job in jobs]}
    elif trials.is_optuna(sweeper):
        search = trials.identity(config)
        out = {"sweeper": "optuna", **search, "fixed": [o for o in search["fixed"] if not resumable(_key(o))]}
    else:
        out = {"sweeper": target}
    return identity_hash(out)


def identity_hash(identity: dict) -> dict:
    "The identity with its hash (of its canonical JSON)."
    text = json.dumps({k: v for k, v in identity.items() if k != "hash"}, sort_keys=True)
    return {**identity, "hash": hashlib.sha256(text.encode()).hexdigest()[:16]}


def _key(override: str) -> str:
    return override.lstrip("+~").partition("=")[0]


def check_identity(sweep_dir: Path, config) -> None:
    "In resume mode: the sweep to run is the one sweep.json records, else one line naming what changed (exit 2)."
    recorded = read_json(Path(sweep_dir) / SWEEP_JSON)
    what = changed(recorded.get("identity") or {}, identity(config))
    if what:
        given = [o for o in config.hydra.overrides.task if o not in (recorded.get("overrides") or [])]
        extra = f" (with {' '.join(given)})" if given else ""
        _exit(2, f"fxp resume: the sweep in {sweep_dir} would change{extra}: {what}; a resume runs the sweep as it "
                 f"started (a new sweep in a new folder runs others)")


def changed(old: dict, new: dict) -> str:
    "What differs between two identities, in words ('' if nothing)."
    if old.get("hash") == new.get("hash"):
        return ""
    for key in dict.fromkeys([*old, *new]):
        a, b = old.get(key), new.get(key)
        if key == "hash" or a == b:
            continue
        if key == "jobs" and isinstance(a, list) and isinstance(b, list):
            return jobs_changed(a, b)
        return f"its {key} was {a}, now {b}"
    return "its hash differs"


def jobs_changed(old: list, new: list) -> str:
    "The first job that differs, or how many jobs there were."
    for i, (a, b) in enumerate(zip(old, new)):
        if a != b:
            return f"job {i} was {' '.join(a) or '(no overrides)'}, now {' '.join(b) or '(no overrides)'}"
    return f"it had {len(old)} jobs, now {len(new)}"


def resume_mode(config) -> str | None:
    "The sweep's resume mode (None: a new sweep), as the sweep's process reads it (its jobs: $FXP_SWEEP_RESUME)."
    return (config.hydra.job.get("env_set") or {}).get(RESUME)


def relaunch(sweep_dir: Path, overrides: list[str], retry_failed: bool) -> list[str]:
    """The `fxp train` arguments that continue the sweep in `sweep_dir`: its command again, the `overrides` given to
    `fxp resume` after it, in resume mode. One line if it cannot be resumed: a sweep of an older fxp (no command
    recorded), one still running, one with nothing left to do."""
    sweep_dir = Path(sweep_dir)
    rec = read_json(sweep_dir / SWEEP_JSON)
    if not isinstance(rec.get("overrides"), list) or not isinstance(rec.get("identity"), dict):
        raise FxpError(f"fxp resume: {sweep_dir / SWEEP_JSON} does not record the command that started the sweep (a "
                       f"sweep of an older fxp): it cannot be resumed; resume its jobs one by one (fxp resume "
                       f"{sweep_dir}/N)")
    jobs = groups.jobs(sweep_dir)
    busy = [j["run"] for j in jobs if j["status"] == "running"]
    if busy:
        raise FxpError(f"fxp resume: {sweep_dir} is still running (job {busy[0]}); nothing to resume")
    if not any(j["status"] not in KEPT and (retry_failed or j["status"] != "failed") for j in jobs):
        statuses = [j["status"] for j in jobs]
        counts = ", ".join(f"{statuses.count(s)} {s}" for s in dict.fromkeys(statuses))
        retry = " (--retry-failed reruns the failed ones)" if "failed" in statuses else ""
        raise FxpError(f"fxp resume: every job of {sweep_dir} ended ({counts}): nothing to resume{retry}")
    mode = RETRY if retry_failed else "1"
    return ["-m", *rec["overrides"], *rec.get("hydra_overrides", []), *overrides, f"hydra.sweep.dir={sweep_dir}",
            f"+hydra.job.env_set.{RESUME}={mode}"]


@contextmanager
def resuming(sweep_dir: Path):
    "In the folder the sweep was started from (its overrides' relative paths are relative to it), if it still is."
    cwd = read_json(Path(sweep_dir) / SWEEP_JSON).get("cwd")
    before = os.getcwd()
    if isinstance(cwd, str) and Path(cwd).is_dir():
        os.chdir(cwd)
    try:
        yield
    finally:
        os.chdir(before)


# --- a job of the sweep ------------------------------------------------------------------------------------------


def before_job(job_dir: Path, sweep_dir: Path) -> str:
    """What a job does as it starts: `skip` (the sweep was stopped: no further job starts), `start`, or in resume mode
    what its folder says: `keep` (it ended as it would again: KEPT; failed, unless retry-failed), `resume`
    (interrupted or killed, from its checkpoint), `start` (never started; failed with retry-failed, or stopped before
    its first checkpoint: its folder set aside first, `set_aside`). A job that is a seed group (trainer.seeds) and did
    not complete is trained again whole."""
    if (sweep_dir / STOP).exists():
        discard(job_dir)
        return "skip"
    mode = os.environ.get(RESUME)
    if not mode or not (is_run(job_dir) or groups.is_group(job_dir)):
        return "start"
    row = groups.row(job_dir, sweep_dir)
    status = row["status"]
    if status in KEPT or (status == "failed" and mode != RETRY):
        return "keep"
    if row["kind"] == "group":
        set_aside(job_dir, "unfinished")
        return "start"
    if status != "failed" and last_checkpoint(job_dir) is not None:
        return "resume"
    set_aside(job_dir, status)
    return "start"


def kept_line(job_dir: Path, sweep_dir: Path) -> str:
    row = groups.row(job_dir, sweep_dir)
    return f"job {row['run']} ({' '.join(row['overrides'])}): {row['status']}, left as it is"


def set_aside(job_dir: Path, status: str) -> None:
    """A job started again from nothing: its folder emptied, the attempt's train.log kept as train.<status>-<n>.log
    (and earlier attempts' logs); this job's log lines go to a new train.log."""
    _close_log(job_dir / LOG, detach=False)
    n = 1 + sum(1 for p in job_dir.iterdir() if ATTEMPT_LOG.fullmatch(p.name))
    if (job_dir / LOG).is_file():
        (job_dir / LOG).rename(job_dir / f"train.{status}-{n}.log")
    for p in job_dir.iterdir():
        if not ATTEMPT_LOG.fullmatch(p.name):
            shutil.rmtree(p) if p.is_dir() else p.unlink()


def discard(job_dir: Path) -> None:
    "The folder Hydra made for a job that does not start, if it holds nothing (an empty train.log at most)."
    _close_log(job_dir / LOG, detach=True)
    if job_dir.is_dir() and all(p.name == LOG and not p.stat().st_size for p in job_dir.iterdir()):
        shutil.rmtree(job_dir)


def _close_log(file: Path, detach: bool) -> None:
    """Hydra's job log handler on `file` closed (a FileHandler opens its file again at its next line), or `detach`ed
    from the root logger."""
    root = logging.getLogger()
    for h in root.handlers[:]:
        if isinstance(h, logging.FileHandler) and Path(h.baseFilename) == file.absolute():
            if detach:
                root.removeHandler(h)
            h.close()


def interrupted(sweep_dir: Path, job_dir: Path, in_process: bool) -> float:
    """A Ctrl-C or SIGTERM ended the job (`interrupted`, its checkpoint kept): the sweep stops. Jobs run in the sweep's
    process: at once, one line saying how to go on (SweepStopped); in other processes (joblib): no further job starts,
    and the sweep's process says so as the launcher returns."""
    stop(sweep_dir, "interrupted", job_dir.name)
    discard(job_dir)  # stopped before its run began: not started
    update(sweep_dir)
    if not in_process:
        return math.nan
    point = last_checkpoint(job_dir) if is_run(job_dir) else None
    kept = (f"its checkpoint after stage {point['stage']} epoch {point['epoch']} is kept" if point
            else "no epoch of it had ended")
    raise SweepStopped(f"interrupted at job {job_dir.name} ({kept}); the sweep stopped, no further job starts: "
                       f"fxp resume {sweep_dir} continues it")


def failed_fast(sweep_dir: Path, job_dir: Path, in_process: bool) -> None:
    "A job failed and sweep.fail_fast is set: no further job starts; in the sweep's process, the sweep ends now."
    stop(sweep_dir, "failed", job_dir.name)
    if in_process:
        update(sweep_dir)
        _exit(*halt(sweep_dir))


def stop(sweep_dir: Path, why: str, job: str | None = None) -> None:
    "The sweep's stop, the first one kept (a later one is its consequence)."
    if not (sweep_dir / STOP).exists():
        write_atomic(sweep_dir / STOP, json.dumps({"why": why, "job": job}))


def halt(sweep_dir: Path) -> tuple[int, str]:
    "The exit code and line of a stopped sweep."
    why = read_json(sweep_dir / STOP)
    statuses = [j["status"] for j in groups.jobs(sweep_dir)]
    left = statuses.count(NOT_STARTED)
    if why.get("why") == "failed":
        return 1, (f"job {why.get('job')} failed and sweep.fail_fast=true: the sweep stopped ({plural_jobs(left)} not "
                   f"started); fxp resume {sweep_dir} --retry-failed runs it again and goes on")
    stopped = plural_jobs(statuses.count("interrupted"))
    return 130, (f"interrupted: the sweep stopped ({stopped} interrupted, {left} not started): "
                 f"fxp resume {sweep_dir} continues it")


def plural_jobs(n: int) -> str:
    return f"{n} job" if n == 1 else f"{n} jobs"


@contextmanager
def signals_while_running(worker: bool):
    """A job in a launcher's worker process (joblib's): Ctrl-C and SIGTERM interrupt it while it runs, and are ignored
    once it ended, so that a worker waiting for its next job outlives them (else the launcher's pool breaks and kills
    the workers whose jobs are still writing their status); the sweep's process stops the sweep."""
    main = threading.current_thread() is threading.main_thread()
    if worker and main:
        signal.signal(signal.SIGINT, _interrupt)
        signal.signal(signal.SIGTERM, _interrupt)  # KeyboardInterrupt, as Ctrl-C
    try:
        yield
    finally:
        if worker and main:
            for s in (signal.SIGINT, signal.SIGTERM):
                signal.signal(s, signal.SIG_IGN)


def _interrupt(signum, frame) -> None:
    "A job's Ctrl-C or SIGTERM in a worker: KeyboardInterrupt, where Python does not swallow it (raise_when_safe)."
    raise_when_safe(frame, signum, KeyboardInterrupt)


def raise_when_safe(frame, signum: int, exc: BaseException | type) -> None:
    """Raise `exc` from a signal handler; but where the signal came while a weakref callback of the import system ran
    (its module locks'), Python would print the exception as "ignored" and go on as if no signal had come: there the
    same signal is sent again a moment later, when the callback has returned."""
    if frame is not None and frame.f_code.co_filename.startswith("<frozen importlib"):
        threading.Timer(0.05, os.kill, (os.getpid(), signum)).start()
        return
    raise exc


def in_process(hc) -> bool:
    "Whether the launcher runs the jobs in the sweep's own process (Hydra's basic launcher)."
    return str(hc.launcher.get("_target_", "")).endswith(".BasicLauncher")


def on_signal(sweep_dir: Path, jobs_here: bool):
    """The sweep's process's SIGINT and SIGTERM handler: the sweep stops. Jobs run here: a KeyboardInterrupt, which
    the running job ends with. Jobs run in worker processes: SIGTERM passed on to them (a Ctrl-C reached them as it
    reached this process, their group's), and the launcher waited for as they end; a second Ctrl-C stops it at once
    (its workers then end where they stand: `killed`, which a resume goes on from as well)."""
    seen = []

    def handler(signum, frame):
        stop(sweep_dir, "interrupted")
        if jobs_here or (seen and signum == signal.SIGINT):
            raise_when_safe(frame, signum,
                            SweepStopped(f"interrupted; the sweep stopped: fxp resume {sweep_dir} continues it"))
        if not seen and signum == signal.SIGTERM:
            for pid in children():
                os.kill(pid, signal.SIGTERM)
        seen.append(signum)
    return handler


def children() -> list[int]:
    "This process's child processes (the launcher's workers), from /proc; none where there is no /proc."
    me, out = str(os.getpid()), []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if stat.read_text().rsplit(")", 1)[1].split()[1] == me:  # the field after the state: the parent's pid
                out.append(int(stat.parent.name))
        except (OSError, IndexError):
            pass
    return out


class SweepFiles(Callback):
    """Claim the sweep folder before the first job and record the jobs it is to run (resume mode: check it is the sweep
    recorded), and stop the sweep on Ctrl-C or SIGTERM; keep sweep.csv and best.json current as jobs end; at the end of
    a sweep, say how it went in one line, and exit 1 if any job did not complete (130 if it was interrupted)."""

    def on_multirun_start(self, config, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir).absolute()
        resume = resume_mode(config) is not None
        if trials.is_optuna(config.hydra.sweeper):
            try:
                trials.check(config, resume)
            except FxpError as e:
                _exit(2, str(e))
        claim(sweep_dir, resume)
        if resume:
            check_identity(sweep_dir, config)
            (sweep_dir / STOP).unlink(missing_ok=True)  # its jobs may start again
        else:
            record(sweep_dir, config)
        handler = on_signal(sweep_dir, in_process(config.hydra))
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, handler)
    def on_job_end(self, config, job_return=None, **kwargs) -> None:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            update(Path(config.hydra.sweep.dir))

    def on_multirun_end(self, config, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        update(sweep_dir)
        print(report_line(sweep_dir), flush=True)
        if (sweep_dir / STOP).exists():
            _exit(*halt(sweep_dir))
        statuses = [job["status"] for job in groups.jobs(sweep_dir, planned=False)]
        missed = [s for s in statuses if s not in ENDED]
        if missed:
            counts = ", ".join(f"{missed.count(s)} {s}" for s in dict.fromkeys(missed))
            _exit(1, f"{len(missed)} of {len(statuses)} jobs did not complete ({counts}); the sweep went on with the "
                     f"others; each job's error: fxp runs {sweep_dir}")


def job_resources(hc) -> dict:
    """What a job of a local parallel sweep (the joblib launcher) gets to itself: a GPU, `pool[job number % len(pool)]`
    as its CUDA_VISIBLE_DEVICES (the pool: the GPUs the sweep was started with, CUDA_VISIBLE_DEVICES or every GPU
    nvidia-smi lists), and its share of the cores as torch threads (`num_threads`, cores // parallel jobs) unless
    trainer.num_threads sets them. {} for any other job. CUDA reads CUDA_VISIBLE_DEVICES once per process: a joblib
    worker that already used a GPU keeps it for its later jobs (the summary records the one it has)."""
    if hc.mode != RunMode.MULTIRUN or "joblib" not in str(hc.launcher.get("_target_", "")):
        return {}
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    n_jobs = hc.launcher.get("n_jobs") or -1
    parallel = min(cores, n_jobs if n_jobs > 0 else cores + 1 + n_jobs)  # joblib: -1 all cores, -2 all but one
    out = {"job": hc.job.num, "num_threads": max(1, cores // max(parallel, 1))}
    pool = [g for g in os.environ.setdefault(GPU_POOL, ",".join(_gpus())).split(",") if g]
    if pool:
        if not _cuda_started():
            os.environ["CUDA_VISIBLE_DEVICES"] = pool[hc.job.num % len(pool)]
        out["CUDA_VISIBLE_DEVICES"] = os.environ["CUDA_VISIBLE_DEVICES"]
    return out


GPU_POOL = "FXP_GPU_POOL"  # a joblib worker's GPUs as its first job found them, before that job narrowed them


def _gpus() -> list[str]:
    "The GPUs this process may use, without starting CUDA (which would fix them for the process)."
    given = os.environ.get("CUDA_VISIBLE_DEVICES")
    if given is not None:
        return [g.strip() for g in given.split(",") if g.strip()]
    if not shutil.which("nvidia-smi"):
        return []
    try:
        listed = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], capture_output=True,
                                text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in listed.splitlines() if line.strip().isdigit()]


def _cuda_started() -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and torch.cuda.is_initialized()


def report_line(sweep_dir: Path) -> str:
    "e.g. `sweep of 4 jobs: 3 completed, 1 failed; best job 2 (accuracy 0.9250): outputs/multirun/...`"
    statuses = [job["status"] for job in groups.jobs(sweep_dir)]
    counts = ", ".join(f"{statuses.count(s)} {s}" for s in dict.fromkeys(statuses))
    best = read_json(sweep_dir / BEST)
    value = (f"{best['metric']} {groups.cell(dict(mean=best['value'], std=best['std'], n=best['n']))}" if "n" in best
             else f"{best['metric']} {best['value']:.4f}" if best else "")
    jobs = "jobs" if len(best.get("jobs", [])) > 1 else "job"
    where = f"best {jobs} {best['job']} ({value}): {best['path']}" if best else f"no job completed: {sweep_dir}"
    return f"sweep of {len(statuses)} jobs: {counts}; {where}"
