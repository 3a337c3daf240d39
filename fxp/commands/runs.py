"""`fxp runs [DIR]`: the runs under DIR (default ./outputs) as a table, newest first; a sweep is one row.

Reads run folders only through fxp.runs (which says how a half-written run shows: `incomplete`, `stale`), with
light imports: no torch.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

from fxp import groups
from fxp.commands import Parser
from fxp.console import console, number
from fxp.errors import FxpError
from fxp.runs import (
    NOT_STARTED,
    STATUSES,
    first_line,
    is_run,
    is_sweep,
    iso,
    lower_is_better,
    read_run,
    started,
)

STATUS_STYLE = {"completed": "green", "pruned": "blue", "failed": "red", "diverged": "red", "interrupted": "yellow",
                "running": "cyan", "killed": "magenta", "stale": "magenta", "incomplete": "dim"}
ERROR_WORDS = 8  # of a failed run's error, in its status cell (--json has the whole first line)
PIPED_WIDTH = 120  # piped with no COLUMNS (`fxp runs | less`, `> runs.txt`): as wide as a usual terminal
# The table's columns in order, each with its justification (a new column: here and in `cells`).
COLUMNS = {"run": "left", "task": "left", "overrides": "left", "metric": "left", "final": "right", "best": "right",
           "epochs": "right", "time": "right", "status": "left"}
# Where the table is wider than the console, its columns are cut back to a common width (the widest first, as rich
# does), except WHOLE ones, and none narrower than its floor: a run id whole (a sweep's `[3 jobs]` goes under it), a
# CUT column's CUT_MIN characters (its cells on one line ending in `…`; --wide: whole, wrapped), else the column's
# longest word up to WORD_MAX characters (a longer word is folded).
WHOLE, CUT = {"final", "best", "time"}, {"overrides"}
CUT_MIN, WORD_MAX = 10, 12
# Where not even the floors fit (a long run id, a baseline beside the metric, a narrow terminal), these columns are
# left out, in this order, before any word is folded; a line under the table names them (--wide shows every column).
SPARE = ("epochs", "time", "best", "task")


def parser() -> Parser:
    p = Parser(prog="fxp runs", description="The runs under DIR as a table, newest first; a sweep is one row "
                                            "with its best job; `fxp runs SWEEP_DIR` lists its jobs. Runs that "
                                            "differ only in their seed (a seed group, a sweep's seeds) are one row: "
                                            "each metric's mean ± std (n).")
    p.add_argument("dir", nargs="?", default="outputs", metavar="DIR", help="a folder of runs, a sweep or a run")
    p.add_argument("--sort", metavar="METRIC", help="best value of METRIC first (its monitor mode, else "
                                                    "ascending for losses and errors, descending for the rest)")
    p.add_argument("--task", metavar="NAME", help="only runs of this task")
    p.add_argument("--status", choices=STATUSES, help="only runs with this status (a sweep: any of its jobs)")
    p.add_argument("--wide", action="store_true", help="every cell whole (long overrides, errors) instead of cut to "
                                                       "the width with ...; piped: one line per row however long")
    p.add_argument("--members", "-a", action="store_true", help="each run of a group (a seed group, a sweep's "
                                                                   "seeds) on a row of its own")
    p.add_argument("--json", action="store_true", help="a JSON list of dicts instead of the table")
    return p


def main(args: list[str]) -> int:
    opts = parser().parse_args(args)
    root = Path(opts.dir)
    if not root.is_dir():
        raise FxpError(f"fxp runs: no folder {root}; runs land in ./outputs (fxp train), or give their folder: "
                       f"fxp runs DIR")
    sweep, group = is_sweep(root), groups.is_group(root)
    found = collect(root, opts.members)
    rows = [r for r in found if matches(r, opts.task, opts.status)]
    if opts.sort:
        rows = sort_by(rows, opts.sort, root)
    elif not (sweep or group):
        rows.sort(key=lambda r: r["started"], reverse=True)
    if opts.json:
        print(json.dumps(rows, indent=2))
    elif rows:
        title = sweep_title(root) if sweep else group_title(root) if group else f"runs in {root}"
        print_table(rows, title, opts.wide)
    else:
        print(empty_hint(root, found, opts))
    return 0


# --- runs and sweeps as rows -----------------------------------------------------------------------------------


def collect(root: Path, members: bool = False) -> list[dict]:
    """A row per run, group or sweep under root; a sweep folder gives its jobs (those that differ only in their seed
    as one row, unless `members`), a group folder its members, a run folder itself."""
    if is_sweep(root):
        jobs = groups.jobs(root)
        return groups.expanded(jobs) if members else groups.grouped(jobs)
    if groups.is_group(root):
        return groups.read_group(root, root)["members"]
    if is_run(root):
        return [read_run(root, root.parent)]
    return list(_rows_under(root, root, members))


def _rows_under(folder: Path, root: Path, members: bool):
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            if groups.is_group(sub):  # before runs: a group folder may be a run too (a cross-validation's)
                group = [groups.read_group(sub, root)]
                yield from groups.expanded(group) if members else group
            elif is_run(sub):
                yield read_run(sub, root)
            elif is_sweep(sub):
                yield read_sweep(sub, root)
            else:
                yield from _rows_under(sub, root, members)
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
    """A sweep as one row: its best job's metric (jobs that differ only in their seed: their mean, fxp.groups.best),
    every job's status (those its record lists and it never started: `not started`), the overrides that vary as
    `k=a,b`."""
    jobs = groups.jobs(path)
    begun = [j for j in jobs if j["status"] != NOT_STARTED]
    best = groups.best(jobs) or {}
    return dict(run=path.relative_to(root).as_posix(), kind="sweep",
                task=", ".join(dict.fromkeys(j["task"] for j in begun)) or "-",
                overrides=groups.joined([j["overrides"] for j in jobs]), metric=best.get("metric"),
                mode=best.get("mode"), final=best.get("final"), best=best.get("best"), epochs=best.get("epochs"),
                wall_time_s=round(sum(j["wall_time_s"] or 0 for j in jobs), 3), status=groups.status(jobs),
                started=iso(started(path)), jobs=len(jobs), jobs_started=len(begun), best_job=best.get("run"),
                spread=best.get("spread"), job_status=dict(Counter(j["status"] for j in jobs)),
                best_metrics=_best_over(groups.grouped(jobs)))


def _best_over(jobs: list[dict]) -> dict:
    "Each metric's best value over the completed jobs (a group: its mean), for --sort."
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


def print_table(rows: list[dict], title: str, wide: bool = False) -> None:
    cut = set() if wide else CUT
    out = console() if wide else console(PIPED_WIDTH)
    body = [dict(zip(COLUMNS, cells(r))) for r in rows]
    shown = list(COLUMNS)
    table = _table(shown, body, cut)
    while not fit(table, shown, out, cut, last_resort=wide or not _spare(shown)):
        shown.remove(_spare(shown))
        table = _table(shown, body, cut)
    out.print(title, style="table.title", highlight=False, soft_wrap=True)  # whole, however narrow the table
    out.print(table)
    if hidden := [name for name in COLUMNS if name not in shown]:
        out.print(f"left out for the width: {', '.join(hidden)} (--wide shows every column)", style="dim",
                  highlight=False)


def _spare(shown: list[str]) -> str | None:
    "The next column to leave out where the table does not fit."
    return next((name for name in SPARE if name in shown), None)


def _table(shown: list[str], body: list[dict], cut: set):
    "A table of the `shown` columns of `body`'s rows, a CUT column's cells on one line."
    from rich.table import Table
    from rich.text import Text

    table = Table()
    for name in shown:
        table.add_column(Text(name, no_wrap=True, overflow="ellipsis"), justify=COLUMNS[name], no_wrap=name in WHOLE,
                         overflow="fold")
    for row in body:
        table.add_row(*(_cut(row[name]) if name in cut else row[name] for name in shown))
    return table


def _cut(cell):
    "A cell on one line, ending in `…` where its column is narrower (the column still narrows: it is not no_wrap)."
    from rich.text import Text

    text = cell if isinstance(cell, Text) else Text(cell)
    text.no_wrap, text.overflow = True, "ellipsis"
    return text


def fit(table, shown: list[str], out, cut: set, last_resort: bool = True) -> bool:
    """Cut a table wider than the console back to it, each column to `cut_back`'s width, as its max_width; False,
    leaving it as it is, where even the floors do not fit and this is not the `last_resort` (a column can be left out
    instead). Rich alone would narrow the widest columns first, folding run ids and words; it does so here only as
    the last resort (and never the run ids)."""
    from rich.measure import Measurement

    unbounded = out.options.update_width(1_000_000)
    flex = {name: column for name, column in zip(shown, table.columns) if name not in WHOLE}
    sizes = {name: [Measurement.get(out, unbounded, c) for c in (col.header, *col.cells)] for name, col in flex.items()}
    natural = {name: max(s.maximum for s in sizes[name]) for name in flex}
    floor = {name: _floor(name, sizes[name], cut) for name in flex}
    room = out.width - (Measurement.get(out, unbounded, table).maximum - sum(natural.values()))
    # a sweep's `[3 jobs]` beside its id if there is room, else under it; where the floors do not fit, the cut columns
    # go below theirs, then the others but the status words (words folded); where not even run ids fit, rich narrows
    # the others as it can
    tries = [(floor, natural["run"]), (floor, floor["run"]), ({**floor, **dict.fromkeys(cut, 1)}, floor["run"])]
    if last_resort:
        tries.append(({**dict.fromkeys(floor, 1), "status": floor["status"]}, floor["run"]))
    widths = next(filter(None, (cut_back(natural, f, room, run) for f, run in tries)), None)
    if widths is None and not last_resort:
        return False
    widths = widths or {**floor, "run": natural["run"]}
    for name, column in flex.items():
        column.max_width = widths[name]
    flex["run"].no_wrap = widths["run"] == natural["run"]
    return True


def _floor(name: str, sizes: list, cut: set) -> int:
    "How narrow a column may get: a cut one CUT_MIN characters, run ids whole, the others their longest word or less."
    longest_word = max(s.minimum for s in sizes)
    if name in cut:
        return min(CUT_MIN, max(s.maximum for s in sizes))
    return longest_word if name == "run" else min(longest_word, WORD_MAX)


def cut_back(natural: dict, floor: dict, room: int, run: int) -> dict | None:
    "Each column's width, `run` for the run ids', the others cut back to the widest common level that fits `room`."
    for level in range(max(natural.values()), 0, -1):
        widths = {n: run if n == "run" else max(floor[n], min(natural[n], level)) for n in natural}
        if sum(widths.values()) <= room:
            return widths
    return None


def cells(r: dict) -> list:
    "The table cells of a row, as they are (the console prints no markup); the status coloured."
    from rich.text import Text

    sweep, lr_find, shown = r["kind"] == "sweep", r["kind"] == "lr-find", r["kind"] == "show"
    run = f"{r['run']}  [{_jobs(r)}]" if sweep else f"{r['run']}  [{r['kind']}]" if lr_find or shown else r["run"]
    if r["kind"] == "group":
        run = f"{r['run']}  [{len(r['members'])} {groups.NOUNS[r['group']]}]"
    best = _value(r, "best") + (f" ({_job_word(r['best_job'])} {r['best_job']})"
                                if sweep and r["best_job"] is not None else "")
    overrides = " ".join(o for o in r["overrides"] if not o.startswith("task="))  # the task has its column
    metric = r["metric"] or "-"
    if r.get("baseline") is not None:
        metric += f" ({_number(r['baseline'])} for {r['baseline_of']})"
    epochs = str(r["epochs"] or 0)
    if r.get("model_epoch") and r["model_epoch"] != r["epochs"]:
        epochs += f" (model.pkl: {r['model_epoch']})"
    final = _value(r, "final")
    if lr_find:  # no epochs: what it found instead (the valley, as trainer.lr=find picks; --json has them all)
        valley = (r.get("suggested_lrs") or {}).get("valley")
        metric, final, best, epochs = "suggested lr (valley)", _number(valley), "-", "-"
    if shown:  # a batch and the DataBlock summary, nothing trained
        metric, final, best, epochs = "batch: plots/batch.png", "-", "-", "-"
    status = r["status"] + (f": {first_line(r['error'], ERROR_WORDS)}" if r.get("error") else "")
    return [run, r["task"], overrides, metric, final, best, epochs, _duration(r["wall_time_s"]),
            Text(status, style=STATUS_STYLE.get(r["status"], "default"))]


def _jobs(sweep: dict) -> str:
    "`3 jobs`, or `2 of 3 jobs` for a sweep stopped before its last ones."
    begun, n = sweep["jobs_started"], sweep["jobs"]
    return f"{begun} of {n} jobs" if begun < n else f"{n} jobs"


def _value(row: dict, which: str) -> str:
    "A row's final or best value of its metric: a group's (or a sweep's best group's) as `mean ± std (n=N)`."
    spread = (row.get("spread") or {}).get(which, {}).get(row["metric"])
    return (groups.cell(spread) or "-") if spread is not None else _number(row[which])


def _job_word(jobs: str) -> str:
    return "jobs" if "," in jobs else "job"


def sweep_title(root: Path) -> str:
    jobs = groups.jobs(root)
    best = groups.best(jobs)
    waiting = sum(j["status"] == NOT_STARTED for j in jobs)
    head = f"sweep {root}: {len(jobs)} jobs" + (f" ({waiting} {NOT_STARTED})" if waiting else "")
    return (f"{head}, best {_job_word(best['run'])} {best['run']} ({best['metric']} {_value(best, 'best')})" if best
            else head)


def group_title(root: Path) -> str:
    "`seeds group DIR: 3 seeds, completed; accuracy 0.917 ± 0.013 (n=3) (final), 0.920 ± 0.010 (n=3) (best)`."
    group = groups.read_group(root, root)
    return (f"{group['group']} group {root}: {len(group['members'])} {groups.NOUNS[group['group']]}, "
            f"{group['status']}; {group['metric']} {_value(group, 'final')} (final), {_value(group, 'best')} (best)")


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
