"""How a saved run's model becomes a plain file that needs no fastai (`fxp export`, the bench, the app bundle): the
model followed by its learner's activation, exported as ONNX or TorchScript, run back in onnxruntime or torch.jit,
and model.json: its inputs, classes, preprocessing, what the output holds, and the parity check against the learner.

What the model takes (its kind's INPUT) decides how it exports: one image batch (the image kinds), or a table's
categorical codes and continuous values (tabular). The exported model ends in the learner's activation (its loss
function's: softmax, sigmoid or none), so its outputs are what `fxp predict` reads: probabilities for classes.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import warnings
from pathlib import Path

from fxp import saved
from fxp.errors import FxpError

FORMATS = {"onnx": "onnx", "torchscript": "pt", "onnx-int8": "onnx"}  # format -> its file's extension
QUANTIZED = ("onnx-int8",)  # formats whose weights are int8 (onnxruntime's dynamic quantisation): a looser parity
# the inputs (a kind's INPUT) fxp exports, and the batch each is: (dimensions, floating point) of each tensor
SPECS = {"image": ((4, True),), "table": ((2, False), (2, True)), "audio": ((4, True),)}
TOLERANCE = 1e-4  # largest output difference the parity check allows (float32 graph rewrites differ ~1e-6)
INT8_TOLERANCE = 0.05  # an int8 model's: of the outputs' largest magnitude (at least 1: probabilities within 0.05)
INT8_AGREEMENT = 0.99  # the share of top classes (or tags at the threshold) an int8 model must keep
EXPORT = "export"  # the folder of a run the exports are written in



def exported_input(run) -> str:
    """What the saved run's model takes (its kind's INPUT), if fxp exports models that take it; else one line. Read
    before the config is validated, as `one_learner` reads the kind: the kind is the reason, not a data folder gone."""
    from fxp import dispatch

    kind = run.written.task.kind
    takes = dispatch.declared(run.kind, "INPUT")
    if takes not in SPECS:
        raise FxpError(f"fxp export: a {kind} run's model takes {takes or 'no input it declares'}; fxp exports models "
                       f"that take {' or '.join(SPECS)}")
    return takes


def need_onnx(fmt: str = "onnx") -> None:
    "onnx, onnxruntime and onnxscript (torch's ONNX exporter), else one line with the pip command."
    from importlib.util import find_spec

    missing = [m for m in ("onnx", "onnxruntime", "onnxscript") if find_spec(m) is None]
    if missing:
        raise FxpError(f"fxp export --format {fmt} needs {', '.join(missing)}: pip install 'fxp[export]'")


@contextlib.contextmanager
def folder_whole(dest: Path):
    """A new empty folder beside `dest` to write in; once the block ends, it replaces `dest` (the old one is moved
    aside, then deleted). An exception leaves `dest` as it was; a kill, at worst, a hidden `.<name>.tmp-<pid>` (or
    `.old-<pid>`, the previous export) beside it."""
    tmp, old = (dest.with_name(f".{dest.name}.{what}-{os.getpid()}") for what in ("tmp", "old"))
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if dest.exists():
        os.replace(dest, old)
    os.replace(tmp, dest)
    shutil.rmtree(old, ignore_errors=True)


def export_model(learn, cfg, run, dest: Path, fmt: str, n: int, takes: str) -> dict:
    "Write dest/model.<ext> and dest/model.json for the saved run `run`, whose model takes `takes`; its content."
    return write_model(learn, cfg, run, dest, fmt, *sample(learn, n), takes)


def sample(learn, n: int | None = None) -> tuple[tuple, object]:
    "The first `n` validation inputs (a tuple of tensors) as the learner's pipeline makes them, and its predictions."
    import torch

    inp, preds, _ = learn.get_preds(dl=learn.dls.valid, with_input=True)  # all of in-memory data (digits): cut to n
    inputs = tuple(t.as_subclass(torch.Tensor)[:n] for t in (inp if isinstance(inp, (tuple, list)) else (inp,)))
    return inputs, preds.as_subclass(torch.Tensor)[:n].float()


def write_model(learn, cfg, run, dest: Path, fmt: str, inputs: tuple, preds, takes: str) -> dict:
    """Write dest/model.<ext> and dest/model.json, the parity check on `inputs` against the learner's `preds` on
    them; model.json's content."""
    spec = input_spec(learn, inputs, takes)
    model = activated(learn.model.eval().cpu(), getattr(learn.loss_func, "activation", None))
    file = dest / f"model.{FORMATS[fmt]}"
    names = [i["name"] for i in spec["inputs"]]
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")  # torch's notes on tracing and exporting
        try:
            WRITERS[fmt](model, inputs, names, file)
        except Exception as e:
            raise FxpError(f"fxp export: this model cannot be exported as {fmt} ({type(e).__name__}: "
                           f"{first_line(e)})") from None
        outputs = run_exported(file, fmt, names, inputs)
    summary = run.summary
    output = {**output_spec(model, inputs, preds, spec), **thresholds(learn, summary)}
    meta = {"format": fmt, "file": file.name, "run": str(run.path.resolve()),
            "task": summary.get("task") or cfg.task.kind, "kind": cfg.task.kind, **spec, "output": output,
            "parity": parity(outputs, preds, spec.get("classes") is not None, output.get("thresh"), fmt)}
    (dest / "model.json").write_text(json.dumps(meta, indent=2))
    return meta


def first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [""])[0][:200]


def activated(model, activation):
    "The model followed by the learner's activation (its loss function's), as `learn.get_preds` applies it."
    import torch

    class Activated(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, *x):
            out = self.model(*x)
            return out if activation is None else activation(out)

    return Activated().eval()


def to_onnx(model, inputs, names, path) -> None:
    """torch's ONNX exporter (torch.export), the batch dimension left free; where torch.export cannot follow the model
    (a U-Net's hooks and concatenations of sizes it reads at run time), the TorchScript-based exporter."""
    import torch

    batch = torch.export.Dim("batch", min=1)
    try:
        prog = torch.onnx.export(model, inputs, input_names=names, output_names=["output"], dynamo=True,
                                 dynamic_shapes=(tuple({0: batch} for _ in inputs),), verbose=False)  # forward(*x)
        prog.save(str(path))
    except Exception:
        torch.onnx.export(model, inputs, str(path), input_names=names, output_names=["output"], dynamo=False,
                          dynamic_axes={n: {0: "batch"} for n in [*names, "output"]})


def to_torchscript(model, inputs, names, path) -> None:
    import torch

    torch.jit.save(torch.jit.trace(model, inputs, check_trace=False), str(path))


def to_int8(model, inputs, names, path: Path) -> None:
    """ONNX, then onnxruntime's dynamic quantisation: int8 weights, activations quantised as they come (no calibration
    data); the float32 file is only a step."""
    import logging

    from onnxruntime.quantization import quantize_dynamic

    fp32 = path.with_name("fp32.onnx")
    to_onnx(model, inputs, names, fp32)
    logging.disable(logging.WARNING)  # its advice to pre-process first, on the root logger: the model runs without it
    try:
        quantize_dynamic(str(fp32), str(path))
    finally:
        logging.disable(logging.NOTSET)
    fp32.unlink()


WRITERS = {"onnx": to_onnx, "torchscript": to_torchscript, "onnx-int8": to_int8}


def run_exported(file: Path, fmt: str, names: list[str], inputs):
    "The exported file's outputs on `inputs`, run without fastai (onnxruntime, or torch.jit.load)."
    return runner(file, fmt, names)(inputs)


def runner(file: Path, fmt: str, names: list[str], threads: int | None = None, device: str = "cpu"):
    """The exported file loaded once, as a function of a tuple of input tensors to the output tensor (float32, on the
    CPU): onnxruntime with `threads` intra-op threads (its default: one per core), or torch.jit on `device`."""
    import torch

    if fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch's note that torch.jit is deprecated
            model = torch.jit.load(str(file), map_location=device).eval()

        def run(inputs):
            with torch.no_grad():
                return model(*(t.to(device) for t in inputs)).float().cpu()
        return run
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    providers = ["CUDAExecutionProvider"] if device.startswith("cuda") else ["CPUExecutionProvider"]
    session = onnxruntime.InferenceSession(str(file), options, providers=providers)
    return lambda inputs: torch.from_numpy(session.run(None, {k: t.cpu().numpy() for k, t in zip(names, inputs)})[0]
                                           ).float()


def parity(outputs, preds, classes: bool, thresh: float | None = None, fmt: str = "onnx") -> dict:
    """The largest difference from the learner's predictions, and (class outputs) how often the top class agrees, or
    for tags (a `thresh`) how often each tag's decision does; an int8 model is held to INT8_TOLERANCE and
    INT8_AGREEMENT."""
    diff = float((outputs - preds).abs().max())
    agree = agreement(outputs, preds, thresh) if classes else None
    if fmt in QUANTIZED:
        tol, need = INT8_TOLERANCE * max(1.0, float(preds.abs().max())), INT8_AGREEMENT
    else:
        tol, need = TOLERANCE, 1.0
    key = "argmax_agreement" if thresh is None else "threshold_agreement"
    return {"items": len(preds), "max_abs_diff": diff, key: agree, "tolerance": tol, "min_agreement": need,
            "passed": diff <= tol and (agree is None or agree >= need)}


def agreement(outputs, preds, thresh: float | None = None) -> float:
    "The share of top classes (dim 1: per item, or per pixel) or, at `thresh`, of tag decisions that agree."
    if thresh is not None:
        return float(((outputs > thresh) == (preds > thresh)).float().mean())
    return float((outputs.argmax(1) == preds.argmax(1)).float().mean())


# --- what model.json says about inputs and outputs -------------------------------------------------------------------


def input_spec(learn, inputs, takes: str) -> dict:
    """The inputs, classes and preprocessing of a model that takes `takes` (a key of SPECS), from the learner's loaders;
    one line if its batches are not of that form."""
    shapes, form = [(t.ndim, t.is_floating_point()) for t in inputs], SPECS[takes]
    if len(shapes) != len(form) or any(ndim != want or float_ != f for (ndim, float_), (want, f) in zip(shapes, form)):
        shown = ", ".join(f"{tuple(t.shape)} {t.dtype}" for t in inputs)
        raise FxpError(f"fxp export: this model takes {shown}, not the {takes} batch its kind declares")
    if takes == "audio":
        return audio_spec(learn, inputs[0])
    return image_spec(learn, inputs[0]) if takes == "image" else table_spec(learn, inputs)


def audio_spec(learn, x) -> dict:
    """One spectrogram batch [N, 1, n_mels, frames]: how to make it from a sound file, the settings the run's loaders
    recorded (the network itself normalises it)."""
    meta = getattr(learn.dls.valid.dataset, "meta", {})
    _, c, m, w = x.shape
    steps = {**meta.get("settings", {}), "layout": "NCHW float32 (N, 1, mel bins, frames)",
             "recipe": ("decode, mix to mono, resample to sample_rate; centre the clip in placed_in × duration seconds "
                        "(zeros both sides, or the middle of a longer clip); power mel spectrogram (STFT with a hann "
                        "window, center=True, zero padding; librosa.filters.mel(sr, n_fft, n_mels)); scale log: "
                        "ln(mel + 1e-6), db: 10·log10(max(mel, 1e-10)); keep the centre `frames` frames")}
    return {"inputs": [{"name": "spectrogram", "shape": [None, c, m, w], "dtype": "float32"}],
            "classes": saved.classes(learn), "frames": w, "preprocessing": steps}


def image_spec(learn, x) -> dict:
    "One image batch [N, C, H, W]: how to make it from an image file, as the learner's validation pipeline does."
    from fastai.data.transforms import Normalize
    from fastai.vision.augment import Resize

    dl = learn.dls.valid
    resize = next((t for t in getattr(getattr(dl, "after_item", None), "fs", []) if isinstance(t, Resize)), None)
    norm = next((t for t in getattr(getattr(dl, "after_batch", None), "fs", []) if isinstance(t, Normalize)), None)
    scale = next((1 / t.div for t in getattr(getattr(dl, "after_batch", None), "fs", []) if hasattr(t, "div")), None)
    c, h, w = x.shape[1:]
    steps = {"mode": "L (one channel)" if c == 1 else "RGB",
             "resize": None if resize is None else {"size": [h, w], "method": str(resize.method),
                                                    "pad_mode": str(resize.pad_mode)},
             "scale": scale, "layout": "NCHW float32",
             "normalize": None if norm is None else {"mean": _flat(norm.mean), "std": _flat(norm.std)}}
    if scale is None:  # in-memory tensors (digits): the pipeline ran before training, not in the loaders
        steps["note"] = "inputs as the training tensors were made (no per-image transforms in the loaders)"
    return {"inputs": [{"name": "image", "shape": [None, c, h, w], "dtype": "float32"}],
            "classes": saved.classes(learn), "input_size": [h, w], "channels": c, "preprocessing": steps}


def table_spec(learn, inputs) -> dict:
    "A table's two inputs: category codes by each column's vocabulary, continuous values filled and normalized."
    from fastai.tabular.core import Categorify, FillMissing, Normalize

    to = learn.dls.train_ds
    procs = {type(p): p for p in to.procs}
    cat, cont = list(to.cat_names), list(to.cont_names)
    cats = procs.get(Categorify)
    norm, fill = procs.get(Normalize), procs.get(FillMissing)
    steps = {
        "fill_missing": None if fill is None else {k: _num(v) for k, v in fill.na_dict.items()},
        "categories": {c: [str(v) for v in cats.classes[c]] for c in cat} if cats is not None else None,
        "normalize": None if norm is None else {c: {"mean": _num(norm.means[c]), "std": _num(norm.stds[c])}
                                                for c in cont},
        "note": ("x_cat: each column's index in `categories` (0: missing or unseen); a `<col>_na` column is True when "
                 "<col> was missing (then filled with fill_missing); x_cont: (value - mean) / std")}
    y = to.y_names[0] if len(to.y_names) == 1 else list(to.y_names)
    return {"inputs": [{"name": "x_cat", "shape": [None, len(cat)], "dtype": "int64", "columns": cat},
                       {"name": "x_cont", "shape": [None, len(cont)], "dtype": "float32", "columns": cont}],
            "classes": saved.classes(learn), "target": y, "preprocessing": steps}


def output_spec(model, inputs, preds, spec) -> dict:
    "What the output holds: its shape and the activation at its end (found by running the model without it)."
    shape = [None, *preds.shape[1:]]
    return {"name": "output", "shape": shape, "activation": activation_of(model, inputs, preds),
            "holds": "class probabilities" if spec.get("classes") is not None else "the model's values"}


def activation_of(model, inputs, preds) -> str:
    "The activation at the end of `model` (an `activated` one), found by running the model without it on `inputs`."
    import torch

    with torch.no_grad():
        raw = model.model(*inputs).float()
    if torch.allclose(raw, preds, atol=1e-5):
        return "none"
    if torch.allclose(torch.sigmoid(raw), preds, atol=1e-5):
        return "sigmoid"
    return SOFTMAX


SOFTMAX = "softmax over the classes (dim 1)"


def thresholds(learn, summary: dict) -> dict:
    """A multi-label model's thresholds: `thresh`, above which a tag's probability predicts it (the learner's, as fxp
    predict decodes), and `best_thresh`, the one with the best valid F-beta that the run found (null if none)."""
    thresh = getattr(learn.loss_func, "thresh", None)
    return {} if thresh is None else {"thresh": float(thresh), "best_thresh": summary.get("best_thresh")}


def _flat(t) -> list:
    return [round(float(v), 6) for v in t.flatten()]


def _num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return str(v)
