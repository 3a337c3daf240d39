"""A sweep folder's own files: `sweep.json` (the jobs it is to run), `sweep.csv` (a row per job) and `best.json` (the
best job by `task.monitor`).

A Hydra callback (`SweepFiles`, in conf/config.yaml) writes sweep.json as the sweep starts, so a sweep stopped between
jobs still shows those it never started, and rewrites sweep.csv and best.json from the job folders' summary.json as
each job ends, under a file lock, so they stay current whichever launcher runs the jobs (in-process, joblib workers,
submitit processes) and a failed job is a row too. Light imports only.

A sweep claims its folder before its first job (`claim`): a new or empty folder, taken atomically, so a rerun or a
second sweep with the same `hydra.sweep.dir` is refused in one line instead of mixing its jobs with the first's.
A sweep whose jobs did not all complete goes on to its last job, then exits 1 saying how many did not.

`fxp resume SWEEP_DIR` runs the sweep's command again in its folder with RESUME=1 in the environment (`resuming`):
the folder is not claimed again and its record stands; an Optuna search goes on with its study (fxp.trials).
"""
from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode

from fxp.errors import FxpError
from fxp.runs import BEST, SWEEP_CSV, SWEEP_JSON, best_job, locked, read_jobs, read_json, write_atomic

RESUME = "FXP_SWEEP_RESUME"  # "1": the sweep goes on in its folder (fxp resume SWEEP_DIR)
LOCK = ".sweep.lock"  # the sweep's claim on its folder, then the lock its files are rewritten under
ENDED = ("completed", "pruned")  # a job that did what the sweep asked (pruned: its search stopped it early)


def csv_row(job: dict) -> dict:
    "job, status, overrides, final_<metric>..., best_<metric>..., epochs, wall_time_s."
    return {"job": job["run"], "status": job["status"], "overrides": " ".join(job["overrides"]),
            **{f"final_{k}": v for k, v in job["final_metrics"].items()},
            **{f"best_{k}": v for k, v in job["best_metrics"].items()},
            "epochs": job["epochs"], "wall_time_s": job["wall_time_s"]}


def best_of(sweep_dir: Path, table: list[dict]) -> dict | None:
    "best.json's content: the best completed job by task.monitor, in its direction (fxp.runs.best_job)."
    best = best_job(table)
    if best is None:
        return None
    return {"job": best["run"], "metric": best["metric"], "mode": best["mode"], "value": best["best"],
            "overrides": best["overrides"], "path": str(Path(sweep_dir) / best["run"])}


def update(sweep_dir: Path) -> None:
    "Rewrite sweep.csv and best.json from the job folders (one writer at a time), each written whole."
    sweep_dir = Path(sweep_dir)
    with locked(sweep_dir / LOCK):
        table = read_jobs(sweep_dir)
        write_atomic(sweep_dir / SWEEP_CSV, csv_text([csv_row(job) for job in table]))
        best = best_of(sweep_dir, table)
        if best is not None:
            write_atomic(sweep_dir / BEST, json.dumps(best, indent=2))


def csv_text(rows: list[dict]) -> str:
    "The rows as CSV, their columns in order of appearance (a job's metrics may differ from another's)."
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(dict.fromkeys(k for row in rows for k in row)))
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def resuming() -> bool:
    "Whether this sweep goes on in the folder of one that stopped (fxp resume SWEEP_DIR)."
    return os.environ.get(RESUME) == "1"


def claim(sweep_dir: Path) -> None:
    """Take `sweep_dir` for a new sweep: created, or empty, and its claim file created exclusively (two sweeps started
    at once into one folder: one gets it). A folder that holds anything is refused in one line (exit 2)."""
    sweep_dir = Path(sweep_dir)
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
             f"hydra.sweep.dir (or leave it out for outputs/multirun/<stamp>), or continue a job there with "
             f"fxp resume {sweep_dir}/N")


def _exit(code: int, message: str) -> None:
    "End the sweep with one line (raised through Hydra, which would print an exception in many lines)."
    print(f"fxp: error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(code)


def record(sweep_dir: Path, config) -> None:
    "sweep.json: the jobs the sweep is to run, before the first starts (`fxp runs` shows those it never started)."
    write_atomic(Path(sweep_dir) / SWEEP_JSON, json.dumps(plan(config), indent=2))


def plan(config) -> dict:
    """The jobs of the sweep `config` (the multirun's config, as Hydra saves it in multirun.yaml) starts: with Hydra's
    basic sweeper, each job's overrides as that sweeper splits the sweep (its own function); with one that counts its
    trials (Optuna's `n_trials`), how many, their values picked as they run; else nothing known."""
    sweeper = config.hydra.sweeper
    if str(sweeper.get("_target_")).endswith(".BasicSweeper"):
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
        from hydra.core.override_parser.overrides_parser import OverridesParser
        from hydra.errors import HydraException

        swept = [f"{k}={v}" for k, v in (sweeper.get("params") or {}).items()] + list(config.hydra.overrides.task)
        try:
            batches = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(swept), None)
        except HydraException:  # glob() needs Hydra's config loader; a bad sweep: the sweeper itself says what is wrong
            return {}
        jobs = [list(job) for batch in batches for job in batch]
        return {"jobs": len(jobs), "job_overrides": jobs}
    trials = sweeper.get("n_trials")
    return {"jobs": trials} if isinstance(trials, int) and not isinstance(trials, bool) else {}


class SweepFiles(Callback):
    """Claim the sweep folder before the first job and record the jobs it is to run; keep sweep.csv and best.json
    current as jobs end; at the end of a sweep, say how it went in one line, and exit 1 if any job did not complete."""

    def on_multirun_start(self, config, **kwargs) -> None:
        from fxp import trials

        if trials.is_optuna(config.hydra.sweeper):
            try:
                trials.check(config, resuming())
            except FxpError as e:
                _exit(2, str(e))
        if not resuming():
            claim(Path(config.hydra.sweep.dir))
            record(Path(config.hydra.sweep.dir), config)

    def on_job_end(self, config, job_return=None, **kwargs) -> None:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            update(Path(config.hydra.sweep.dir))

    def on_multirun_end(self, config, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        update(sweep_dir)
        print(report_line(sweep_dir), flush=True)
        statuses = [job["status"] for job in read_jobs(sweep_dir)]
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
    statuses = [job["status"] for job in read_jobs(sweep_dir)]
    counts = ", ".join(f"{statuses.count(s)} {s}" for s in dict.fromkeys(statuses))
    best = read_json(sweep_dir / BEST)
    where = (f"best job {best['job']} ({best['metric']} {best['value']:.4f}): {best['path']}" if best
             else f"no job completed: {sweep_dir}")
    return f"sweep of {len(statuses)} jobs: {counts}; {where}"
