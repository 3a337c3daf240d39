"""`fxp runs [DIR]`: the runs under DIR (default ./outputs) as a table, newest first; a sweep is one row.

Reads run folders only (summary.json, config.yaml, overrides.yaml, metrics.csv), with light imports: no torch.
Half-written runs show as they are: a folder without summary.json is `incomplete`; a `running` run whose files
have not changed for STALE_AFTER_S (or three of its epochs, if longer) is `stale`: its process most likely died.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import yaml

from fxp.errors import FxpError
from fxp.runs import CONFIG, LOG, METRICS, NOT_METRICS, SUMMARY, best_metrics, lower_is_better, read_metrics

STAMP = re.compile(r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d")
STALE_AFTER_S = 3600
STATUSES = ("completed", "failed", "interrupted", "diverged", "running", "stale", "incomplete")
SWEEP_FILES = ("multirun.yaml", "sweep.csv", "best.json")  # Hydra writes multirun.yaml in every sweep folder
STATUS_STYLE = {"completed": "green", "failed": "red", "diverged": "red", "interrupted": "yellow",
                "running": "cyan", "stale": "magenta", "incomplete": "dim"}
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: 20x faster than OmegaConf.load


class Parser(argparse.ArgumentParser):
    "argparse whose usage errors are one FxpError line (exit 2) instead of a usage block."

    def error(self, message):
        raise FxpError(f"{self.prog}: {message} (see {self.prog} --help)")


def parser() -> Parser:
    p = Parser(prog="fxp runs", description="The runs under DIR as a table, newest first; a sweep is one row "
                                            "with its best job; `fxp runs SWEEP_DIR` lists its jobs.")
    p.add_argument("dir", nargs="?", default="outputs", metavar="DIR", help="a folder of runs, a sweep or a run")
    p.add_argument("--sort", metavar="METRIC", help="best value of METRIC first (its monitor mode, else "
                                                    "ascending for losses and errors, descending for the rest)")
    p.add_argument("--task", metavar="NAME", help="only runs of this task")
    p.add_argument("--status", choices=STATUSES, help="only runs with this status (a sweep: any of its jobs)")
    p.add_argument("--json", action="store_true", help="a JSON list of dicts instead of the table")
    return p


def main(args: list[str]) -> int:
    opts = parser().parse_args(args)
    root = Path(opts.dir)
    if not root.is_dir():
        raise FxpError(f"fxp runs: no folder {root}; runs land in ./outputs (fxp train), or give their folder: "
                       f"fxp runs DIR")
    sweep = is_sweep(root)
    found = collect(root)
    rows = [r for r in found if matches(r, opts.task, opts.status)]
    if opts.sort:
        rows = sort_by(rows, opts.sort, root)
    elif not sweep:
        rows.sort(key=lambda r: r["started"], reverse=True)
    if opts.json:
        print(json.dumps(rows, indent=2))
    elif rows:
        print_table(rows, title=sweep_title(root, found) if sweep else f"runs in {root}")
    else:
        print(empty_hint(root, found, opts))
    return 0


# --- finding and reading run folders ------------------------------------------------------------------------


def is_run(path: Path) -> bool:
    return any((path / name).is_file() for name in (SUMMARY, CONFIG, METRICS))


def job_dirs(path: Path) -> list[Path]:
    "A sweep's job folders (0, 1, 2, ...) in job order."
    return sorted((p for p in path.iterdir() if p.name.isdigit() and p.is_dir()), key=lambda p: int(p.name))


def is_sweep(path: Path) -> bool:
    return any((path / name).is_file() for name in SWEEP_FILES) or any(map(is_run, job_dirs(path)))


def collect(root: Path) -> list[dict]:
    "A row per run or sweep under root; a sweep folder gives its jobs, a run folder itself."
    if is_sweep(root):
        return [read_run(p, root) for p in job_dirs(root)]
    if is_run(root):
        return [read_run(root, root.parent)]
    return list(_rows_under(root, root))


def _rows_under(folder: Path, root: Path):
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if is_run(sub):
            yield read_run(sub, root)
        elif is_sweep(sub):
            yield read_sweep(sub, root)
        else:
            yield from _rows_under(sub, root)


def read_run(path: Path, root: Path) -> dict:
    "One run folder as a row; a run still going (or dead) is read from its metrics.csv."
    summary = _read_json(path / SUMMARY)
    monitor = read_monitor(path)
    status = summary.get("status", "incomplete")
    if status in ("running", "incomplete"):
        rows, last_write = read_metrics(path), _last_write(path)
        final = {k: v for k, v in rows[-1].items() if k not in NOT_METRICS} if rows else {}
        best, epochs, wall = best_metrics(rows, monitor), len(rows), last_write - _started(path)
        if status == "running" and time.time() - last_write > _stale_after(rows):
            status = "stale"
    else:
        final, best = summary.get("final_metrics", {}), summary.get("best_metrics", {})
        epochs, wall = summary.get("epochs", 0), summary.get("wall_time_s")
    final, best = _finite(final), _finite(best)
    overrides = summary["overrides"] if "overrides" in summary else _read_overrides(path)
    return dict(run=path.relative_to(root).as_posix(), kind="run", task=summary.get("task") or _task_of(path),
                overrides=overrides, metric=monitor.metric, mode=monitor.mode, final=final.get(monitor.metric),
                best=best.get(monitor.metric), epochs=epochs, wall_time_s=wall, status=status,
                started=_iso(_started(path)), final_metrics=final, best_metrics=best)


def read_sweep(path: Path, root: Path) -> dict:
    "A sweep as one row: its best job's metric, every job's status, the overrides that vary as `k=a,b`."
    jobs = [read_run(p, path) for p in job_dirs(path)]
    best = best_job(jobs) or {}
    return dict(run=path.relative_to(root).as_posix(), kind="sweep",
                task=", ".join(dict.fromkeys(j["task"] for j in jobs)), overrides=sweep_overrides(jobs),
                metric=best.get("metric"), mode=best.get("mode"), final=best.get("final"), best=best.get("best"),
                epochs=best.get("epochs"), wall_time_s=round(sum(j["wall_time_s"] or 0 for j in jobs), 3),
                status=sweep_status(jobs), started=_iso(_started(path)), jobs=len(jobs), best_job=best.get("run"),
                job_status=dict(Counter(j["status"] for j in jobs)), best_metrics=_best_over(jobs))


def best_job(jobs: list[dict]) -> dict | None:
    "The completed job with the best value of the monitor metric, in its mode (fxp.sweeps' best.json rule)."
    scored = [j for j in jobs if j["status"] == "completed" and j["best"] is not None]
    if not scored:
        return None
    pick = min if scored[0]["mode"] == "min" else max
    return pick(scored, key=lambda j: j["best"])


def sweep_overrides(jobs: list[dict]) -> list[str]:
    "Each override key once: `k=v` where all jobs agree, `k=a,b,c` for what the sweep varied."
    values: dict[str, list[str]] = {}
    for job in jobs:
        for o in job["overrides"]:
            key, _, value = o.partition("=")
            values.setdefault(key, [])
            if value not in values[key]:
                values[key].append(value)
    return [f"{k}={','.join(v)}" for k, v in values.items()]


def sweep_status(jobs: list[dict]) -> str:
    "The jobs' common status, else the count of each (`3 completed, 1 failed`)."
    counts = Counter(j["status"] for j in jobs)
    if len(counts) == 1:
        return next(iter(counts))
    return ", ".join(f"{n} {s}" for s, n in counts.most_common()) or "empty"


def _best_over(jobs: list[dict]) -> dict:
    "Each metric's best value over the completed jobs, for --sort."
    out = {}
    for job in (j for j in jobs if j["status"] == "completed"):
        monitor = SimpleNamespace(metric=job["metric"], mode=job["mode"])
        for name, value in job["best_metrics"].items():
            if value is None:
                continue
            better = min if lower_is_better(name, monitor) else max
            out[name] = value if name not in out else better(out[name], value)
    return out


def read_monitor(path: Path) -> SimpleNamespace:
    "The run's main metric and direction (config.yaml's task.monitor); valid_loss/min if unreadable."
    try:
        cfg = yaml.load((path / CONFIG).read_text(), Loader=YAML_LOADER)
        monitor = cfg["task"]["monitor"]
        return SimpleNamespace(metric=str(monitor["metric"]), mode=str(monitor["mode"]))
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return SimpleNamespace(metric="valid_loss", mode="min")


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _read_overrides(path: Path) -> list[str]:
    try:
        return [str(o) for o in yaml.load((path / "overrides.yaml").read_text(), Loader=YAML_LOADER) or []]
    except (OSError, yaml.YAMLError, TypeError):
        return []


def _task_of(path: Path) -> str:
    "Without summary.json: the folder the run sits in (runs land in outputs/<task>/<stamp>)."
    return path.parent.name if STAMP.match(path.name) else "?"


def _started(path: Path) -> float:
    "When the run started: its folder's stamp, else when config.yaml (the first file written) was written."
    stamp = STAMP.match(path.name)
    if stamp:
        return datetime.strptime(stamp.group(), "%Y-%m-%d_%H-%M-%S").timestamp()
    first = path / CONFIG
    return (first if first.exists() else path).stat().st_mtime


def _last_write(path: Path) -> float:
    files = [path / SUMMARY, path / METRICS, path / LOG, path / "checkpoints" / "last.pth", path / CONFIG]
    return max([f.stat().st_mtime for f in files if f.exists()] or [path.stat().st_mtime])


def _stale_after(rows: list[dict]) -> float:
    longest_epoch = max((r["time"] for r in rows if isinstance(r.get("time"), float)), default=0.0)
    return max(STALE_AFTER_S, 3 * longest_epoch)


def _finite(metrics: dict) -> dict:
    "Numeric metrics; NaN and inf as None, so --json is strict JSON."
    return {k: (v if math.isfinite(v) else None) for k, v in metrics.items() if isinstance(v, (int, float))}


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts).isoformat(timespec="seconds")


# --- filtering, sorting, printing ------------------------------------------------------------------------------


def matches(row: dict, task: str | None, status: str | None) -> bool:
    tasks = row["task"].split(", ")
    statuses = row.get("job_status") or {row["status"]: 1}
    return (task is None or task in tasks) and (status is None or status in statuses)


def sort_by(rows: list[dict], metric: str, root: Path) -> list[dict]:
    "Rows with the best `metric` first (newest first among equals); rows without it last."
    known = sorted({m for r in rows for m in r["best_metrics"]})
    if metric not in known:
        raise FxpError(f"fxp runs --sort: no run under {root} has a metric {metric!r}; "
                       f"choose from: {', '.join(known) or '(none yet)'}")
    modes = {r["metric"]: r["mode"] for r in rows}
    lower = modes[metric] == "min" if metric in modes else lower_is_better(metric)
    rows = sorted(rows, key=lambda r: r["started"], reverse=True)
    have = [r for r in rows if r["best_metrics"].get(metric) is not None]
    missing = [r for r in rows if r["best_metrics"].get(metric) is None]
    return sorted(have, key=lambda r: r["best_metrics"][metric], reverse=not lower) + missing


def print_table(rows: list[dict], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for name, justify in (("run", "left"), ("task", "left"), ("overrides", "left"), ("metric", "left"),
                          ("final", "right"), ("best", "right"), ("epochs", "right"), ("time", "right"),
                          ("status", "left")):
        table.add_column(name, justify=justify, overflow="fold")
    for r in rows:
        table.add_row(*cells(r))
    console = Console()
    if not console.is_terminal:  # piped: one line per run, whole cells, for grep and scripts
        console.width = 10_000
    console.print(table)


def cells(r: dict) -> list[str]:
    sweep = r["kind"] == "sweep"
    run = f"{r['run']}  [{r['jobs']} jobs]" if sweep else r["run"]
    best = _number(r["best"]) + (f" (job {r['best_job']})" if sweep and r["best_job"] is not None else "")
    overrides = " ".join(o for o in r["overrides"] if not o.startswith("task="))  # the task has its column
    status = r["status"]
    return [run, r["task"], overrides, r["metric"] or "-", _number(r["final"]), best, str(r["epochs"] or 0),
            _duration(r["wall_time_s"]), f"[{STATUS_STYLE.get(status, 'default')}]{status}[/]"]


def sweep_title(root: Path, jobs: list[dict]) -> str:
    best = best_job(jobs)
    head = f"sweep {root}: {len(jobs)} jobs"
    return f"{head}, best job {best['run']} ({best['metric']} {_number(best['best'])})" if best else head


def empty_hint(root: Path, found: list[dict], opts) -> str:
    if not found:
        return f"no runs in {root} yet (train one: fxp train)"
    wanted = " ".join(f"--{k} {v}" for k, v in (("task", opts.task), ("status", opts.status)) if v)
    tasks = sorted({t for r in found for t in r["task"].split(", ")})
    statuses = sorted({s for r in found for s in (r.get("job_status") or {r["status"]: 1})})
    return (f"no runs in {root} match {wanted}; tasks there: {', '.join(tasks)}; "
            f"statuses: {', '.join(statuses)}")


def _number(v) -> str:
    return "-" if v is None else f"{v:.4g}"


def _duration(seconds) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}m{s:02d}s" if m < 60 else f"{m // 60}h{m % 60:02d}m"
