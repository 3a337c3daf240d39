"""`fxp val RUN_DIR [data.path=DIR] [--split valid|test] [--json]`: evaluate a saved run without retraining.

The run's exported learner goes over labelled data (its own validation split, or new data in the same layout): the
loss and metrics it was trained with, the kind's `evaluate` numbers and `plots`, all written to RUN_DIR/eval/<stamp>/
(metrics.json, per_class.csv where the kind has per-class numbers, and the PNGs; a new folder each time) and printed
as a table beside the values the run recorded for the epoch its model holds.
"""
from __future__ import annotations

import csv
import io
import json
import math
from datetime import datetime
from pathlib import Path

from fxp.commands import Parser, saved_run_arguments
from fxp.console import console, number
from fxp.runs import baseline_cell, baselines, not_beaten, read_metrics, read_summary
from fxp.saved import SPLITS
from fxp.writer import write_atomic

EVAL = "eval"
PER_CLASS = "per_class.csv"


def parser() -> Parser:
    p = Parser(prog="fxp val", description="Evaluate a saved run on its validation split or on new labelled data in "
                                           "the same layout, without retraining; writes RUN_DIR/eval/<stamp>/.")
    saved_run_arguments(p, "where the data is and its layout: data.path=DIR, task.valid=NAME, ...")
    p.add_argument("--split", choices=SPLITS, default="valid",
                   help="valid: the data's validation split (default); test: every labelled item of the data")
    p.add_argument("--json", action="store_true", help="print metrics.json instead of the table")
    return p


def main(args: list[str]) -> int:
    opts = parser().parse_intermixed_args(args)
    from fxp import saved

    run = saved.open_run(Path(opts.run_dir), "fxp val", opts.trust, writes=True)
    run.one_learner(f"cannot be evaluated yet: fxp val takes {', '.join(saved.one_learner_kinds())} runs")
    result, dest = evaluate(run, run.config(opts.overrides), opts.split)
    if opts.json:
        print(json.dumps(result, indent=2))
    else:
        show(result, dest)
    return 0


def evaluate(run, cfg, split: str) -> tuple[dict, Path]:
    """Metrics, the kind's evaluation and plots of the saved run's learner (a fxp.saved.SavedRun) on `split` of the
    data `cfg` points at, written to a new eval folder."""
    from fxp import saved

    run_dir, kind, dev = run.path, run.kind, saved.device(cfg)
    learn = saved.labelled(run.learner(dev), kind, cfg, split, dev, run_dir)
    names = ["valid_loss", *(m.name for m in learn.metrics)]
    values = [_plain(v) for v in learn.validate()]
    evaluation = kind.evaluate(learn, cfg)
    dest = new_folder(run_dir / EVAL)
    kind.plots(learn, cfg, dest, evaluation)
    result = {"run": str(run_dir.resolve()), "split": split, "data": cfg.data.path, "items": len(learn.dls.valid_ds),
              "metrics": dict(zip(names, values)), "trained": trained(run_dir, names),
              "baselines": kind.baseline(learn, cfg),  # after validate: a baseline goes through the same metrics
              "evaluation": json.loads(json.dumps(evaluation, default=_plain))}
    write_atomic(dest / "metrics.json", json.dumps(result, indent=2))
    if result["evaluation"].get("per_class"):
        write_atomic(dest / PER_CLASS, per_class_csv(result["evaluation"]["per_class"]))
    return result, dest


def per_class_csv(rows: dict) -> str:
    "The kind's per-class numbers ({class: {column: value}}) as a CSV, a row per class (empty cells for None)."
    out = io.StringIO()
    columns = list(next(iter(rows.values())))
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["class", *columns])
    writer.writerows([name, *("" if v[c] is None else v[c] for c in columns)] for name, v in rows.items())
    return out.getvalue()


def _plain(v):
    "A number as JSON takes it (tensors and numpy scalars as floats; NaN as null)."
    try:
        v = float(v)
    except (TypeError, ValueError):
        return str(v)
    return v if math.isfinite(v) else None


def trained(run_dir: Path, names: list[str]) -> dict:
    "The values the run recorded for the epoch its model holds (summary.json's model_epoch), to compare with."
    rows, epoch = read_metrics(run_dir), read_summary(run_dir).get("model_epoch")
    if not rows:
        return {}
    row = rows[epoch - 1] if isinstance(epoch, int) and 0 < epoch <= len(rows) else rows[-1]
    return {n: row[n] for n in names if isinstance(row.get(n), float)}


def new_folder(parent: Path) -> Path:
    "parent/<stamp>, made now; a second evaluation in the same second gets <stamp>-1, -2, ...: none is overwritten."
    stamp, i = datetime.now().strftime("%Y-%m-%d_%H-%M-%S"), 0
    parent.mkdir(parents=True, exist_ok=True)
    while True:
        dest = parent / (stamp if i == 0 else f"{stamp}-{i}")
        try:
            dest.mkdir()
            return dest
        except FileExistsError:
            i += 1


def show(result: dict, dest: Path) -> None:
    from rich.table import Table

    out = console()
    out.print(f"{result['run']}: {result['split']} split of {result['data'] or 'the task data'}, "
              f"{result['items']} items")
    table, base = Table(), baselines({"baselines": result["baselines"]})
    for col in ("metric", "now", "in training", *(["baseline"] if base else [])):
        table.add_column(col, justify="left" if col == "metric" else "right")
    for name, value in result["metrics"].items():
        cells = [number(value), number(result["trained"].get(name)), *([baseline_cell(base, name)] if base else [])]
        table.add_row(name, *cells)
    for name, value in result["evaluation"].items():
        if isinstance(value, (int, float)):
            table.add_row(name, number(value), "", *([""] if base else []))
    out.print(table)
    for line in not_beaten(result["metrics"], base):
        out.print(line, highlight=False)
    if (dest / PER_CLASS).is_file():
        out.print(f"per class ({', '.join(next(iter(result['evaluation']['per_class'].values())))}): "
                  f"{dest / PER_CLASS}")
    out.print(f"written to {dest}")
