"""`fxp runs [DIR]`: the runs under DIR (default ./outputs) as a table, newest first; a sweep is one row.

Reads run folders only through fxp.runs (which says how a half-written run shows: `incomplete`, `stale`), with
light imports: no torch.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

from fxp.commands import Parser, console, number
from fxp.errors import FxpError
from fxp.runs import (STATUSES, best_job, first_line, is_run, is_sweep, iso, lower_is_better, read_jobs, read_run,
                      started)

STATUS_STYLE = {"completed": "green", "failed": "red", "diverged": "red", "interrupted": "yellow",
                "running": "cyan", "killed": "magenta", "stale": "magenta", "incomplete": "dim"}
ERROR_WORDS = 8  # of a failed run's error, in its status cell (--json has the whole first line)


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


# --- runs and sweeps as rows -----------------------------------------------------------------------------------


def collect(root: Path) -> list[dict]:
    "A row per run or sweep under root; a sweep folder gives its jobs, a run folder itself."
    if is_sweep(root):
        return read_jobs(root)
    if is_run(root):
        return [read_run(root, root.parent)]
    return list(_rows_under(root, root))


def _rows_under(folder: Path, root: Path):
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            if is_run(sub):
                yield read_run(sub, root)
            elif is_sweep(sub):
                yield read_sweep(sub, root)
            else:
                yield from _rows_under(sub, root)
        except Exception as e:  # one folder fxp cannot read (permissions, files of odd shapes): flagged, not fatal
            yield unreadable_row(sub, root, e)


def unreadable_row(path: Path, root: Path, e: Exception) -> dict:
    "A folder that could not be read, as a row saying why."
    try:
        when = iso(path.stat().st_mtime)
    except OSError:
        when = ""
    return dict(run=path.relative_to(root).as_posix(), kind="run", task="?", overrides=[], metric=None, mode=None,
                final=None, best=None, baseline=None, model_epoch=None, epochs=0, wall_time_s=None,
                status="incomplete", error=f"unreadable: {type(e).__name__}: {first_line(e)}", started=when,
                final_metrics={}, best_metrics={})


def read_sweep(path: Path, root: Path) -> dict:
    "A sweep as one row: its best job's metric, every job's status, the overrides that vary as `k=a,b`."
    jobs = read_jobs(path)
    best = best_job(jobs) or {}
    return dict(run=path.relative_to(root).as_posix(), kind="sweep",
                task=", ".join(dict.fromkeys(j["task"] for j in jobs)), overrides=sweep_overrides(jobs),
                metric=best.get("metric"), mode=best.get("mode"), final=best.get("final"), best=best.get("best"),
                epochs=best.get("epochs"), wall_time_s=round(sum(j["wall_time_s"] or 0 for j in jobs), 3),
                status=sweep_status(jobs), started=iso(started(path)), jobs=len(jobs), best_job=best.get("run"),
                job_status=dict(Counter(j["status"] for j in jobs)), best_metrics=_best_over(jobs))


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
    from rich.table import Table

    table = Table()
    for name, justify in (("run", "left"), ("task", "left"), ("overrides", "left"), ("metric", "left"),
                          ("final", "right"), ("best", "right"), ("epochs", "right"), ("time", "right"),
                          ("status", "left")):
        table.add_column(name, justify=justify, overflow="fold")
    for r in rows:
        table.add_row(*cells(r))
    out = console()
    out.print(title, style="table.title", highlight=False, soft_wrap=True)  # whole, however narrow the table
    out.print(table)


def cells(r: dict) -> list:
    "The table cells of a row, as they are (the console prints no markup); the status coloured."
    from rich.text import Text

    sweep, lr_find, shown = r["kind"] == "sweep", r["kind"] == "lr-find", r["kind"] == "show"
    run = f"{r['run']}  [{r['jobs']} jobs]" if sweep else f"{r['run']}  [{r['kind']}]" if lr_find or shown else r["run"]
    best = _number(r["best"]) + (f" (job {r['best_job']})" if sweep and r["best_job"] is not None else "")
    overrides = " ".join(o for o in r["overrides"] if not o.startswith("task="))  # the task has its column
    metric = r["metric"] or "-"
    if r.get("baseline") is not None:
        metric += f" ({_number(r['baseline'])} for {r['baseline_of']})"
    epochs = str(r["epochs"] or 0)
    if r.get("model_epoch") and r["model_epoch"] != r["epochs"]:
        epochs += f" (model.pkl: {r['model_epoch']})"
    final = _number(r["final"])
    if lr_find:  # no epochs: what it found instead (the valley, as trainer.lr=find picks; --json has them all)
        valley = (r.get("suggested_lrs") or {}).get("valley")
        metric, final, best, epochs = "suggested lr (valley)", _number(valley), "-", "-"
    if shown:  # a batch and the DataBlock summary, nothing trained
        metric, final, best, epochs = "batch: plots/batch.png", "-", "-", "-"
    status = r["status"] + (f": {first_line(r['error'], ERROR_WORDS)}" if r.get("error") else "")
    return [run, r["task"], overrides, metric, final, best, epochs, _duration(r["wall_time_s"]),
            Text(status, style=STATUS_STYLE.get(r["status"], "default"))]


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
    return number(v)


def _duration(seconds) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}m{s:02d}s" if m < 60 else f"{m // 60}h{m % 60:02d}m"
