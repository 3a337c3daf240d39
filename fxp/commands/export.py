"""`fxp export RUN_DIR --format onnx|torchscript [data.path=DIR] [--items N]`: the run's model as a plain file that
needs no fastai (RUN_DIR/export/onnx/model.onnx or export/torchscript/model.pt) and model.json beside it: the inputs,
the classes, the preprocessing that makes an input (resize, scale, normalization statistics; a table's category codes,
fill values and column statistics), what the output is (a multi-label model's thresholds), and the parity check: the
exported file's outputs against the learner's own predictions on N validation items.

One folder per format, so exporting the other format keeps this one's model.json; the pair is written in a temporary
folder renamed into place once both files are complete, so a kill never leaves a model without its model.json.

What the model takes (its kind's INPUT) decides how it exports: one image batch (the image kinds), or a table's
categorical codes and continuous values (tabular). The exported model ends in the learner's activation (its loss
function's: softmax, sigmoid or none), so its outputs are what `fxp predict` reads: probabilities for classes.
"""
from __future__ import annotations

from pathlib import Path

from fxp import exporting, saved
from fxp.commands import Parser, saved_run_arguments
from fxp.console import console
from fxp.errors import FxpError


def parser() -> Parser:
    p = Parser(prog="fxp export", description="Export a run's model as ONNX or TorchScript with model.json (classes, "
                                              "preprocessing, a parity check against the learner).")
    saved_run_arguments(p, "where the validation data is, if it moved: data.path=DIR")
    p.add_argument("--format", required=True, choices=tuple(exporting.FORMATS), help="onnx or torchscript")
    p.add_argument("--items", type=int, default=32, metavar="N", help="validation items of the parity check (32)")
    return p


def main(args: list[str]) -> int:
    opts = parser().parse_intermixed_args(args)
    if opts.items < 2:
        raise FxpError("fxp export: --items must be 2 or more (the exported batch size stays free)")
    if opts.format == "onnx":
        exporting.need_onnx()
    run = saved.open_run(Path(opts.run_dir), "fxp export", opts.trust, writes=True)
    run.one_learner("cannot be exported: fxp export takes image and tabular runs")
    takes = exporting.exported_input(run)
    cfg = run.config(opts.overrides)
    import torch

    cpu = torch.device("cpu")
    learn = saved.labelled(run.learner(cpu), run.kind, cfg, "valid", cpu, run.path, limit=opts.items)
    dest = run.path / exporting.EXPORT / opts.format
    with exporting.folder_whole(dest) as tmp:
        meta = exporting.export_model(learn, cfg, run, tmp, opts.format, opts.items, takes)
    show(meta, dest)
    return 0 if meta["parity"]["passed"] else 1


def show(meta: dict, dest: Path) -> None:
    p = meta["parity"]
    agree = "" if p["argmax_agreement"] is None else f", argmax_agreement {p['argmax_agreement']:.4f}"
    verdict = "passed" if p["passed"] else f"FAILED (tolerance {p['tolerance']:g})"
    out = console()
    out.print(f"wrote {dest / meta['file']} and {dest / 'model.json'}")
    out.print(f"parity on {p['items']} validation items: max_abs_diff {p['max_abs_diff']:.3g}{agree}: {verdict}")
