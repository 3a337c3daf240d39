"""The run-folder format, in one place: its file names, and the readers every command goes through (metrics.csv,
summary.json, config.yaml, a run or sweep job as a row), with the rules for a run's status (its liveness), its monitor
metric and best values, and a sweep's best job. The writer (`Run`, write_atomic, ...) is fxp.writer.

Light imports only (the stdlib and yaml): `fxp runs` reads run folders without torch. It imports no command, no
report, and not the writer.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
import re
import time
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import yaml

CONFIG, OVERRIDES, METRICS, SUMMARY, LOG = "config.yaml", "overrides.yaml", "metrics.csv", "summary.json", "train.log"
MODEL, CHECKPOINTS, PLOTS = "model.pkl", "checkpoints", "plots"
LAST = "last"  # checkpoints/last.pth (what `fxp resume` continues from) and last.json (where that is, readable light)
PROFILE, TRACE, TOP_OPS = "profile", "train.pt.trace.json", "top_ops.txt"  # trainer.profile's folder and its files
PICKLES = "pickles.json"  # the SHA-256 of each pickle fxp wrote into the folder (model.pkl), checked before loading
EXPLAIN, EXPLAINED = "explain", "explained.csv"  # fxp explain's explain/<stamp>/ folders, each listing its files
TOP_LOSS = "top loss"  # explained.csv's `why` of a validation item explained as one of the top losses
TRACKERS = "trackers.json"  # the tracker runs (MLflow, W&B ids) a run or sweep logs to: fxp resume goes on in them
SWEEP_CSV, BEST = "sweep.csv", "best.json"  # a sweep folder's own files (fxp.sweeps writes them)
SWEEP_JSON = "sweep.json"  # a sweep's record of the jobs it runs, written as it starts (fxp.sweeps.record)
SWEEP_FILES = ("multirun.yaml", SWEEP_JSON, SWEEP_CSV, BEST)  # Hydra writes multirun.yaml in every sweep folder
NOT_STARTED = "not started"  # a job a sweep's record lists that has no folder: the sweep stopped before it
ATTEMPT_LOG = re.compile(r"train\.\w+-\d+\.log")  # train.failed-1.log: the log of a sweep job's earlier attempt
TIMES = ("data_s", "step_s")  # of an epoch's training seconds: waiting for batches, and forward/backward/step
NOT_METRICS = {"stage", "epoch", "lr", "time", *TIMES}
LOWER_IS_BETTER = ("loss", "error", "mse", "mae", "rmse", "rmspe", "perplexity")
STATUSES = ("completed", "pruned", "failed", "interrupted", "diverged", "running", "killed", "stale", "incomplete",
            NOT_STARTED)  # pruned: an Optuna trial its study's pruner stopped early (fxp.trials); not a failure
STAMP = re.compile(r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d")  # outputs/<task>/<stamp>_<uid>
STALE_AFTER_S = 3600  # a run without a heartbeat (older fxp) whose files stopped changing: `stale`
HEARTBEAT_S = 60  # a running run touches its summary.json this often; one silent for DEAD_AFTER_BEATS of them: killed
DEAD_AFTER_BEATS = 10
HOST = platform.node()
# A run's baselines are summary.json's `baselines` ({metric: {value, by}}: the kind's `baseline`, fxp.baselines; a
# step's in its own summary). Run folders of earlier fxp versions hold them in these keys, read here only for them (no
# kind writes them): key -> (the metric, who reaches it).
BASELINES = {"accuracy_majority": ("accuracy", "the majority label"), "mse_train_mean": ("mse", "the training mean"),
             "perplexity_unigram": ("perplexity", "unigram frequencies"), "psnr_input": ("psnr", "the input itself")}
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: 20x faster than OmegaConf.load


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


def read_explained(path: Path) -> tuple[Path | None, list[dict]]:
    """The newest explain/<stamp>/ folder of a run that lists its files (explained.csv), and its rows; (None, []).
    Newest by the time its list was written: two explains within a second have stamps that do not sort by time."""
    for folder in sorted((Path(path) / EXPLAIN).glob("*/"), key=_written_at, reverse=True):
        try:
            with open(folder / EXPLAINED, newline="", errors="replace") as fh:
                return folder, list(csv.DictReader(fh))
        except (OSError, csv.Error):
            continue
    return None, []


def _written_at(folder: Path) -> int:
    try:
        return (folder / EXPLAINED).stat().st_mtime_ns
    except OSError:
        return 0


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
                model_epoch=_of(int, summary.get("model_epoch")), seed=_of(int, summary.get("seed")), epochs=epochs,
                wall_time_s=wall, status=status,
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
                baseline=None, baseline_of=None, model_epoch=None, seed=None, epochs=0, wall_time_s=None,
                status=NOT_STARTED, error=None, suggested_lrs=None, started="", final_metrics={}, best_metrics={})


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
    """Where a run's newest checkpoint stands (its last.json, of the run folder, of a step's or a cross-validation
    fold's, or of a fold's step): step, stage, epoch within the stage, epochs in all, and `folder`; None before the
    first epoch ended."""
    path = Path(path)
    found = []
    for f in [path / CHECKPOINTS / f"{LAST}.json", *path.glob(f"*/{CHECKPOINTS}/{LAST}.json"),
              *path.glob(f"*/*/{CHECKPOINTS}/{LAST}.json")]:
        point = read_json(f)
        if isinstance(point, dict) and point and f.with_suffix(".pth").is_file():
            found.append({**point, "folder": str(f.parent.parent)})
    return max(found, key=lambda c: c.get("time", 0), default=None)


def csv_line(row: dict, header: bool = False) -> str:
    "One metrics.csv row (with the header line first when `header`)."
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(row))
    if header:
        w.writeheader()
    w.writerow(row)
    return buf.getvalue()


def csv_text(rows: list[dict]) -> str:
    "The rows as CSV, their columns in order of appearance (a job's metrics may differ from another's)."
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(dict.fromkeys(k for row in rows for k in row)))
    w.writeheader()
    w.writerows(rows)
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
