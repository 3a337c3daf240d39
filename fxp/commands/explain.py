"""`fxp explain RUN_DIR [INPUT...] [KEY=VALUE...] [--method cam|gradcam] [--target LABEL] [--layer NAME]`: what the
run's model looks at, from its model.pkl on the CPU, written to RUN_DIR/explain/<stamp>/ with explained.csv listing it.

The run's kind says how (its `explain`, fxp.dispatch): image and audio classifiers draw CAM / Grad-CAM heatmaps
(fxp.heatmaps), a text classifier highlights words by occlusion, a tabular model ranks its columns by permutation
importance. With no INPUT, the labelled validation split (where the run's data is, or KEY=VALUE says) gives the items:
a few spread over it and the top losses.
"""
from __future__ import annotations

import contextlib
import csv
import inspect
import io
import json
import secrets
import shutil
import time
from pathlib import Path

from fxp.commands import Parser
from fxp.console import console
from fxp.errors import FxpError
from fxp.runs import EXPLAIN, EXPLAINED, first_line
from fxp.writer import write_atomic

OPTIONS = ("method", "target", "layer")  # fxp explain's options, each a keyword argument of a kind's `explain`
TAKES = ("data.", "task.")  # what says where a saved run's validation data is (its layout, never its model)


def parser() -> Parser:
    from fxp.heatmaps import METHODS

    p = Parser(prog="fxp explain", description="What a run's model looks at: CAM / Grad-CAM heatmaps over images and "
                                               "spectrograms, word occlusion for texts, permutation importance for "
                                               "tables; written to RUN_DIR/explain/<stamp>/.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a completed run folder (fxp runs lists them)")
    p.add_argument("inputs", nargs="*", default=[], metavar="INPUT",
                   help="image or sound files (or folders), texts or .txt files; none: validation items and the top "
                        "losses. KEY=VALUE (data.path=DIR, ...): where the validation data is, if it moved")
    p.add_argument("--method", choices=METHODS, help=f"heatmaps: {' or '.join(METHODS)} (default {METHODS[0]})")
    p.add_argument("--target", metavar="LABEL", help="explain this class instead of the predicted ones")
    p.add_argument("--layer", metavar="NAME", help="Grad-CAM's layer, a name of model.named_modules() (default: the "
                                                   "one the global pool reads)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON instead of the table")
    p.add_argument("--trust", action="store_true", help="load a model.pkl that does not match the hash the run "
                                                        "recorded (it runs any code it holds)")
    return p


def main(args: list[str]) -> int:
    opts = parser().parse_intermixed_args(args)
    from fxp import saved

    run = saved.open_run(Path(opts.run_dir), "fxp explain", opts.trust, writes=True)
    explain = explained_by(run)
    options = {o: getattr(opts, o) for o in OPTIONS if getattr(opts, o) is not None}
    check_options(explain, options, run.written.task.kind)
    inputs, overrides = split_inputs(opts.inputs)
    learn, cfg = learner(run, inputs, overrides)
    if inputs:
        budget(run, learn, inputs)
    with new_folder(run.path / EXPLAIN) as dest:
        rows = explained(explain, learn, cfg, inputs, dest, options)
        write_atomic(dest / EXPLAINED, as_csv(rows))
    if opts.json:
        print(json.dumps(rows, indent=2))
    else:
        show(rows, dest)
    return 0


@contextlib.contextmanager
def new_folder(parent: Path):
    "parent/<stamp>_<hex>, made now and removed again if what writes in it fails (a kill leaves no explained.csv)."
    dest = parent / f"{time.strftime('%Y-%m-%d_%H-%M-%S')}_{secrets.token_hex(3)}"
    dest.mkdir(parents=True)
    try:
        yield dest
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise


def explained(explain, learn, cfg, inputs: list[str], dest: Path, options: dict) -> list[dict]:
    "The kind's rows; a failure the kind did not foresee (a model of a form it cannot explain) is one line."
    try:
        return explain(learn, cfg, inputs, dest, **options)
    except FxpError:
        raise
    except Exception as e:
        raise FxpError(f"fxp explain: explaining with this run's model failed: {type(e).__name__}: "
                       f"{first_line(e)}") from e


def explained_by(run):
    """The kind's `explain` if the run's kind has one and it takes every option given; else one line naming the kinds
    that are explained."""
    from fxp import dispatch

    kind = run.written.task.kind
    if not hasattr(run.kind, "explain"):
        takers = [k for k in dispatch.kinds() if hasattr(dispatch.kind_module(k), "explain")]
        raise FxpError(f"fxp explain: {kind} runs have no explanation yet; fxp explain takes {', '.join(takers)} runs")
    return run.kind.explain


def check_options(explain, options: dict, kind: str) -> None:
    "Each option given is a keyword argument of the kind's `explain`; else one line with those it takes."
    takes = [p for p in inspect.signature(explain).parameters if p in OPTIONS]
    for o in options:
        if o not in takes:
            raise FxpError(f"fxp explain: --{o} is not an option of {kind} runs (they take "
                           f"{', '.join(f'--{t}' for t in takes) or 'no option'})")


def split_inputs(args: list[str]) -> tuple[list[str], list[str]]:
    "The inputs, and the KEY=VALUE overrides among them (a key fxp explain takes: data.*, task.*, ...)."
    from fxp.saved import taken

    def override(a: str) -> bool:
        key, eq, _ = a.partition("=")
        return bool(eq) and " " not in key and taken(key.lstrip("+~"), TAKES)

    return [a for a in args if not override(a)], [a for a in args if override(a)]



def learner(run, inputs: list[str], overrides: list[str]):
    """The run's learner on the CPU and its config: with the labelled validation split where no input is given and
    the kind trains one learner (its data rebuilt), else as exported (the inputs are read by the kind)."""
    import torch

    from fxp import saved

    cpu = torch.device("cpu")
    if inputs or not hasattr(run.kind, "dls"):
        if overrides:
            kind = run.written.task.kind
            why = "when INPUTs are given" if inputs else f"for {kind} runs (they train in steps: give INPUTs)"
            raise FxpError(f"fxp explain: {overrides[0]}: no validation data is read {why}")
        return run.learner(cpu), run.written
    cfg = run.config(overrides, TAKES)
    return saved.labelled(run.learner(cpu), run.kind, cfg, "valid", cpu, run.path), cfg


def budget(run, learn, inputs: list[str]) -> None:
    "Input images as fxp predict takes them: within the run's pixel budget (by their headers), at its training size."
    from fxp.dispatch import declared
    from fxp.predicting import check_pixels, image_inputs, pixel_budget, resize_to_training_size

    if declared(run.kind, "INPUT") == "image":
        check_pixels(image_inputs(inputs), pixel_budget(learn))
        resize_to_training_size(learn)


def as_csv(rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]) if rows else [], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def show(rows: list[dict], dest: Path) -> None:
    from rich.table import Table

    table = Table()
    for key in rows[0] if rows else []:
        table.add_column(key, overflow="fold")
    for row in rows:
        table.add_row(*(str(v) for v in row.values()))
    out = console()
    out.print(table)
    out.print(f"written to {dest}")
