"""`fxp compare RUN... | SWEEP_DIR [--html FILE]`: runs side by side: each metric's final and best values with their
difference to the first run, and only the config keys that differ; `--html FILE`: a self-contained page with the
curves of every run overlaid, one plot per metric, and the same tables."""
from __future__ import annotations

import sys
from pathlib import Path

from fxp import reports
from fxp.commands import Parser
from fxp.console import console, number
from fxp.errors import FxpError
from fxp.runs import baseline_cell, baselines, read_summary


def main(args: list[str]) -> int:
    p = Parser(prog="fxp compare", description="Compare runs: final and best metrics with their difference to the "
                                               "first run, the config keys that differ; --html: a page with the "
                                               "curves overlaid.")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders, or one sweep folder (its jobs)")
    p.add_argument("--html", metavar="FILE", help="also write a self-contained HTML page (curves, tables) to FILE")
    opts = p.parse_intermixed_args(args)
    folders = reports.runs_of(opts.runs, "fxp compare")
    if len(folders) < 2:
        raise FxpError(f"fxp compare: {len(folders)} run to compare; give two run folders or more, or a sweep folder")
    names = reports.labels(folders)
    out = console()
    tasks = list(dict.fromkeys(t for t in (read_summary(f).get("task") for f in folders) if isinstance(t, str)))
    if len(tasks) > 1:
        print(f"fxp compare: warning: these runs are of different tasks ({', '.join(tasks)}): their metrics are not "
              f"measured on the same data", file=sys.stderr)
    for i, (name, folder) in enumerate(zip(names, folders)):
        out.print(f"{name}: {folder}" + ("  (the differences are to this run)" if i == 0 else ""), highlight=False,
                  soft_wrap=True)
    out.print(metrics_table(reports.metric_table(folders), names, [baselines(read_summary(f)) for f in folders]))
    diff = reports.config_diff(folders)
    out.print(diff_table(diff, names) if diff else "config: the same in every run", highlight=False)
    if opts.html:
        dest = reports.write(Path(opts.html), reports.page(f"fxp compare: {len(folders)} runs",
                                                           reports.comparison(folders)), "fxp compare")
        out.print(f"page: {dest}", highlight=False, soft_wrap=True)
    return 0


def metrics_table(rows: list[dict], names: list[str], base: list[dict]):
    "The metrics table; `base`: each run's baselines (fxp.runs.baselines), a column where any run has one."
    from rich.table import Table

    table, shown = Table(title="metrics"), any(base)
    for col in ("metric", "run", "final", "Δ final", "best", "Δ best", *(["baseline"] if shown else [])):
        table.add_column(col, justify="left" if col in ("metric", "run") else "right")
    for r in rows:
        table.add_row(r["metric"] if r["run"] == 0 else "", names[r["run"]], number(r["final"]),
                      delta(r["d_final"], r["lower"]), number(r["best"]), delta(r["d_best"], r["lower"]),
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
