"""A sweep folder's own files: `sweep.csv` (a row per job) and `best.json` (the best job by `task.monitor`).

A Hydra callback (`SweepFiles`, in conf/config.yaml) rewrites both from the job folders' summary.json as each job
ends, under a file lock, so they stay current whichever launcher runs the jobs (in-process, joblib workers,
submitit processes) and a failed job is a row too. Light imports only.
"""
from __future__ import annotations

import csv
import fcntl
import json
import math
from contextlib import contextmanager
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import OmegaConf

from fxp.runs import CONFIG, SUMMARY

SWEEP_CSV, BEST = "sweep.csv", "best.json"


def job_dirs(sweep_dir: Path) -> list[Path]:
    "The sweep's job folders (those a job has claimed), in job-number order."
    dirs = [d for d in Path(sweep_dir).iterdir() if d.is_dir() and (d / CONFIG).is_file()]
    return sorted(dirs, key=lambda d: (not d.name.isdigit(), int(d.name) if d.name.isdigit() else 0, d.name))


def read_summary(job_dir: Path) -> dict:
    "A job's summary.json; a job that has not written one yet is `running`."
    try:
        return json.loads((job_dir / SUMMARY).read_text())
    except (OSError, ValueError):
        return {"status": "running"}


def monitor_of(job_dir: Path) -> tuple[str, str]:
    mon = OmegaConf.load(job_dir / CONFIG).task.monitor
    return mon.metric, mon.mode


def rows(sweep_dir: Path) -> list[dict]:
    "A dict per job: job, status, overrides, final_<metric>, best_<metric>..., epochs, wall_time_s."
    out = []
    for d in job_dirs(sweep_dir):
        s = read_summary(d)
        row = {"job": d.name, "status": s.get("status"), "overrides": " ".join(s.get("overrides", []))}
        row.update({f"final_{k}": v for k, v in (s.get("final_metrics") or {}).items()})
        row.update({f"best_{k}": v for k, v in (s.get("best_metrics") or {}).items()})
        row.update(epochs=s.get("epochs"), wall_time_s=s.get("wall_time_s"))
        out.append(row)
    return out


def best_job(sweep_dir: Path, table: list[dict]) -> dict | None:
    "The completed job with the best value of the monitored metric, in the monitor's direction."
    dirs = {d.name: d for d in job_dirs(sweep_dir)}
    candidates = []
    for row in table:
        metric, mode = monitor_of(dirs[row["job"]])
        value = row.get(f"best_{metric}")
        if row["status"] == "completed" and isinstance(value, (int, float)) and math.isfinite(value):
            candidates.append((value if mode == "min" else -value, row, metric, mode))
    if not candidates:
        return None
    _, row, metric, mode = min(candidates, key=lambda c: c[0])
    return {"job": row["job"], "metric": metric, "mode": mode, "value": row[f"best_{metric}"],
            "overrides": row["overrides"].split(), "path": str(dirs[row["job"]])}


def update(sweep_dir: Path) -> None:
    "Rewrite sweep.csv and best.json from the job folders (one writer at a time)."
    sweep_dir = Path(sweep_dir)
    with _locked(sweep_dir / ".sweep.lock"):
        table = rows(sweep_dir)
        columns = list(dict.fromkeys(k for row in table for k in row))
        _write_atomic(sweep_dir / SWEEP_CSV, lambda f: _write_csv(f, table, columns))
        best = best_job(sweep_dir, table)
        if best is not None:
            _write_atomic(sweep_dir / BEST, lambda f: f.write(json.dumps(best, indent=2)))


def _write_csv(f, table: list[dict], columns: list[str]) -> None:
    w = csv.DictWriter(f, fieldnames=columns)
    w.writeheader()
    w.writerows(table)


def _write_atomic(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        write(f)
    tmp.replace(path)


@contextmanager
def _locked(path: Path):
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class SweepFiles(Callback):
    "Keep sweep.csv and best.json current as jobs end; at the end of a sweep, say how it went in one line."

    def on_job_end(self, config, job_return=None, **kwargs) -> None:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            update(Path(config.hydra.sweep.dir))

    def on_multirun_end(self, config, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        update(sweep_dir)
        print(report_line(sweep_dir), flush=True)


def report_line(sweep_dir: Path) -> str:
    "e.g. `sweep of 4 jobs: 3 completed, 1 failed; best job 2 (accuracy 0.9250): outputs/multirun/...`"
    statuses = [row["status"] for row in rows(sweep_dir)]
    counts = ", ".join(f"{statuses.count(s)} {s}" for s in dict.fromkeys(statuses))
    best_file = sweep_dir / BEST
    best = json.loads(best_file.read_text()) if best_file.is_file() else None
    where = (f"best job {best['job']} ({best['metric']} {best['value']:.4f}): {best['path']}" if best
             else f"no job completed: {sweep_dir}")
    return f"sweep of {len(statuses)} jobs: {counts}; {where}"
