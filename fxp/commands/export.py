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

from fxp import bundle, card, exportbench, exporting, saved
from fxp.commands import Parser, saved_run_arguments
from fxp.console import console, number
from fxp.errors import FxpError


def parser() -> Parser:
    p = Parser(prog="fxp export", description="Export a run's model (ONNX, TorchScript or int8 ONNX) with model.json "
                                              "(classes, preprocessing, a parity check against the learner); --bench: "
                                              "every format's size, parity, metric and latency; --format app: a "
                                              "Gradio app folder. MODEL_CARD.md is written beside the model.")
    saved_run_arguments(p, "where the validation data is, if it moved: data.path=DIR")
    p.add_argument("--format", choices=(*exporting.FORMATS, "app"), help="onnx, torchscript, onnx-int8 (onnxruntime's "
                                                                         "dynamic int8 quantisation) or app")
    p.add_argument("--bench", action="store_true", help="export every format and measure each on the validation "
                                                        "split: export/bench.csv")
    p.add_argument("--items", type=int, default=32, metavar="N", help="validation items of the parity check (32)")
    p.add_argument("--timed", type=int, default=exportbench.TIMED, metavar="N",
                   help=f"--bench: timed runs per batch size, after a warm-up; their median ({exportbench.TIMED})")
    return p


def main(args: list[str]) -> int:
    opts = parser().parse_intermixed_args(args)
    check(opts)
    run = saved.open_run(Path(opts.run_dir), "fxp export", opts.trust, writes=True)
    run.one_learner("cannot be exported: fxp export takes image and tabular runs")
    takes = exporting.exported_input(run)
    if opts.format == "app":
        bundle.takes_images(takes)
    cfg = run.config(opts.overrides)
    import torch

    cpu = torch.device("cpu")
    limit = None if opts.bench or opts.format == "app" else opts.items  # the bench and the app: the whole valid split
    learn = saved.labelled(run.learner(cpu), run.kind, cfg, "valid", cpu, run.path, limit=limit)
    if opts.bench:
        code = bench(learn, cfg, run, takes, opts)
    elif opts.format == "app":
        code = app(learn, cfg, run, takes, opts)
    else:
        dest = run.path / exporting.EXPORT / opts.format
        with exporting.folder_whole(dest) as tmp:
            meta = exporting.export_model(learn, cfg, run, tmp, opts.format, opts.items, takes)
        show(meta, dest)
        code = 0 if meta["parity"]["passed"] else 1
    console().print(f"wrote {card.write(run, cfg)}")
    return code


def check(opts) -> None:
    "What the options ask for is one thing fxp export does, with what it needs installed; else one line."
    if bool(opts.format) == opts.bench:
        raise FxpError("fxp export: give one of --format onnx|torchscript|onnx-int8|app or --bench")
    if opts.items < 2:
        raise FxpError("fxp export: --items must be 2 or more (the exported batch size stays free)")
    if opts.timed < 1:
        raise FxpError("fxp export: --timed must be 1 or more")
    if opts.format in ("onnx", "onnx-int8", "app"):
        exporting.need_onnx(opts.format)


def bench(learn, cfg, run, takes: str, opts) -> int:
    "Every format measured: export/bench.csv and its table; exit 1 only if no format works."
    rows = exportbench.bench(learn, cfg, run, takes, opts.items, opts.timed)
    path = run.path / exporting.EXPORT / exportbench.BENCH
    exportbench.write_csv(rows, path)
    show_bench(rows, path)
    return 0 if any(r["status"] == "ok" for r in rows) else 1


def show_bench(rows: list[dict], path: Path) -> None:
    "The bench as a table, then what int8 saves and costs against float32 ONNX."
    from rich.table import Table

    cols = exportbench.columns(rows)
    table = Table(title=f"export bench: {len(rows)} formats, {rows[0].get('threads')} CPU thread(s)")
    for c in cols:
        table.add_column(c, justify="left" if c in ("format", "device", "status") else "right")
    for r in rows:
        table.add_row(*(cell(r.get(c)) for c in cols))
    out = console()
    out.print(table)
    out.print(exportbench.int8_line(rows) or "")
    out.print(f"wrote {path}")


def cell(v) -> str:
    if v is None:
        return "-"
    return number(v) if isinstance(v, float) else str(v)


def app(learn, cfg, run, takes: str, opts) -> int:
    dest = bundle.write(learn, cfg, run, takes)
    console().print(f"wrote {dest}: python {dest / 'app.py'} serves it (cd {dest}; pip install -r requirements.txt)")
    return 0


def show(meta: dict, dest: Path) -> None:
    p = meta["parity"]
    key = "argmax_agreement" if "argmax_agreement" in p else "threshold_agreement"
    agree = "" if p[key] is None else f", {key} {p[key]:.4f}"
    verdict = "passed" if p["passed"] else f"FAILED (tolerance {p['tolerance']:g})"
    out = console()
    out.print(f"wrote {dest / meta['file']} and {dest / 'model.json'}")
    out.print(f"parity on {p['items']} validation items: max_abs_diff {p['max_abs_diff']:.3g}{agree}: {verdict}")
