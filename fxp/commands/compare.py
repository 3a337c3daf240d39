"""`fxp compare RUN... | GROUP_DIR | SWEEP_DIR [--members] [--html FILE]`: runs side by side: each metric's final and
best values with their difference to the first run, and only the config keys that differ; `--html FILE`: a
self-contained page with the curves of every run overlaid, one plot per metric, and the same tables. Runs that differ
only in their seed (a seed group, a sweep's seeds: fxp.groups) are one line, `0.972 ± 0.004 (n=3)`, their curves a mean
with a band; `--members`: each run on its own."""
from __future__ import annotations

import os
import sys
from pathlib import Path

from fxp import reports
from fxp.commands import Parser
from fxp.console import console, number
from fxp.errors import FxpError
from fxp.runs import baseline_cell, read_summary


def main(args: list[str]) -> int:
    p = Parser(prog="fxp compare", description="Compare runs: final and best metrics with their difference to the "
                                               "first run, the config keys that differ; --html: a page with the "
                                               "curves overlaid. Runs that differ only in their seed (a seed group, "
                                               "a sweep's seeds) are one line: mean ± std (n).")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders, group folders, or one sweep folder (its jobs)")
    p.add_argument("--members", "-a", action="store_true", help="each run of a group on a line of its own")
    p.add_argument("--html", metavar="FILE", help="also write a self-contained HTML page (curves, tables) to FILE")
    opts = p.parse_intermixed_args(args)
    entries = reports.entries_of(opts.runs, "fxp compare", opts.members)
    if sum(map(len, entries)) < 2:
        raise FxpError(f"fxp compare: {sum(map(len, entries))} run to compare; give two run folders or more, a group "
                       f"folder or a sweep folder")
    names = reports.labels(entries)
    out = console()
    tasks = list(dict.fromkeys(t for e in entries for t in (read_summary(f).get("task") for f in e)
                               if isinstance(t, str)))
    if len(tasks) > 1:
        print(f"fxp compare: warning: these runs are of different tasks ({', '.join(tasks)}): their metrics are not "
              f"measured on the same data", file=sys.stderr)
    for i, (name, entry) in enumerate(zip(names, entries)):
        where = (f"{entry[0]}" if len(entry) == 1 else
                 f"{os.path.commonpath(entry)} ({len(entry)} runs that differ only in their seed: their mean ± std)")
        out.print(f"{name}: {where}" + ("  (the differences are to this one)" if i == 0 else ""), highlight=False,
                  soft_wrap=True)
    out.print(metrics_table(reports.metric_table(entries), names, list(map(reports.entry_baselines, entries))))
    diff = reports.config_diff(entries)
    if len(entries) > 1:
        out.print(diff_table(diff, names) if diff else "config: the same in every run", highlight=False)
    if any(len(e) > 1 for e in entries):
        out.print("a group's numbers are those of its completed runs; --members shows each run", highlight=False)
    if opts.html:
        dest = reports.write(Path(opts.html), reports.page(f"fxp compare: {len(entries)} runs",
                                                           reports.comparison(entries)), "fxp compare")
        out.print(f"page: {dest}", highlight=False, soft_wrap=True)
    return 0


def metrics_table(rows: list[dict], names: list[str], base: list[dict]):
    "The metrics table; `base`: each run's baselines (fxp.runs.baselines), a column where any run has one."
    from rich.table import Table

    table, shown = Table(title="metrics"), any(base)
    for col in ("metric", "run", "final", "Δ final", "best", "Δ best", *(["baseline"] if shown else [])):
        table.add_column(col, justify="left" if col in ("metric", "run") else "right")
    for r in rows:
        table.add_row(r["metric"] if r["run"] == 0 else "", names[r["run"]], reports.value_cell(r, "final"),
                      delta(r["d_final"], r["lower"]), reports.value_cell(r, "best"), delta(r["d_best"], r["lower"]),
                      *([baseline_cell(base[r["run"]], r["metric"])] if shown else []),
                      end_section=r["run"] == len(names) - 1)
    return table


def delta(d, lower: bool):
    "A difference to the first run, green where better, red where worse."
    from rich.text import Text

    if d is None:
        return ""
    better = d < 0 if lower else d > 0
    return Text(("+" if d >= 0 else "") + number(d), style="" if d == 0 else "green" if better else "red")


def diff_table(diff: dict, names: list[str]):
    from rich.table import Table

    table = Table(title="config keys that differ")
    for col in ("key", *names):
        table.add_column(col, overflow="fold")
    for key, values in diff.items():
        table.add_row(key, *map(reports.shown, values))
    return table
