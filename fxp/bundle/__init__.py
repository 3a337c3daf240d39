"""`fxp export RUN --format app`: RUN/export/app/, a folder that runs on its own: app.py (this package's app.py, a
Gradio interface), the model as ONNX (int8 weights where they pass parity, else float32: the smallest that passes)
with its model.json, examples/ (a validation image of each class), requirements.txt (the versions installed here,
pinned) and a README.md whose front-matter a hosted Gradio Space reads. Nothing is uploaded.

Before the folder is written, its own preprocessing (app.py's `prepare`: PIL and numpy from model.json) is run on
validation images and must give the inputs the run's fastai pipeline gives; so the app needs neither torch nor fastai.
"""
from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from fxp import exporting
from fxp.errors import FxpError
from fxp.writer import write_atomic

APP = "app"
TEMPLATE = Path(__file__).with_name("app.py")
REQUIREMENTS = ("gradio", "onnxruntime", "numpy", "pillow")
CANDIDATES = ("onnx-int8", "onnx")  # smallest first: the first that passes parity is the app's
PARITY_ITEMS = 256  # validation items of each candidate's parity check
CHECKED = 32  # validation images app.py's preprocessing is checked on
EXAMPLES = 8  # example images at most (one per class)
PREPARE_TOLERANCE = 1e-4  # app.py's input against fastai's (float32 arithmetic in another order)


def write(learn, cfg, run, takes: str) -> Path:
    "RUN/export/app for the saved run `run` (its learner's loaders: the validation split, labelled); the folder."
    need_gradio()
    takes_images(takes)
    files = image_files(learn)
    dest = run.path / exporting.EXPORT / APP
    inputs, preds = exporting.sample(learn, PARITY_ITEMS)
    with exporting.folder_whole(dest) as tmp:
        meta = smallest(learn, cfg, run, tmp, inputs, preds, takes)
        check_prepare(meta, files, inputs)
        write_atomic(tmp / "app.py", TEMPLATE.read_text())
        write_examples(tmp / "examples", files, learn)
        write_atomic(tmp / "requirements.txt", "".join(f"{p}=={pinned(p)}\n" for p in REQUIREMENTS))
        write_atomic(tmp / "README.md", readme(meta, run))
    return dest


def need_gradio() -> None:
    "gradio installed here (its version is pinned in requirements.txt), else one line with the pip command."
    try:
        pinned("gradio")
    except FxpError:
        raise FxpError("fxp export --format app pins the gradio it was checked with: pip install 'fxp[app]'") from None


def pinned(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        raise FxpError(f"fxp export --format app: {package} is not installed (pip install 'fxp[app]')") from None


def takes_images(takes: str) -> None:
    "The app takes images: a model that takes another input (`takes`, its kind's INPUT) is one line, before any data."
    if takes != "image":
        raise FxpError(f"fxp export --format app: the app takes image models; this run's model takes {takes}")


def image_files(learn) -> list[Path]:
    "The validation split's image files; one line where its items are not files (a listing's rows, in-memory data)."
    items = getattr(learn.dls.valid, "items", None)
    items = [] if items is None or hasattr(items, "iloc") else list(items)  # a listing's rows: not files
    if not items or not all(isinstance(i, (str, Path)) and Path(i).is_file() for i in items[:3]):
        raise FxpError("fxp export --format app: the app takes image models whose validation items are image files "
                       "(class folders, a filename regex); this run's loaders find its images through a listing or "
                       "make them in memory")
    return [Path(i) for i in items]


def smallest(learn, cfg, run, tmp: Path, inputs, preds, takes: str) -> dict:
    """model.onnx and model.json in `tmp` in the smallest format of CANDIDATES that passes parity on `inputs`; one line
    if none does."""
    tried = []
    for fmt in CANDIDATES:
        meta = exporting.write_model(learn, cfg, run, tmp, fmt, inputs, preds, takes)
        if len(meta["output"]["shape"]) != 2:
            raise FxpError(f"fxp export --format app: the app shows one answer per image; this model's output is "
                           f"{meta['output']['shape']} (a value per pixel)")
        if meta["parity"]["passed"]:
            return meta
        tried.append(f"{fmt}: max_abs_diff {meta['parity']['max_abs_diff']:.3g}")
    raise FxpError(f"fxp export --format app: no format passes parity ({'; '.join(tried)})")


def check_prepare(meta: dict, files: list[Path], inputs) -> None:
    "app.py's `prepare` on the first validation images gives the inputs fastai made of them; else one line."
    import numpy as np
    from PIL import Image

    from fxp.bundle.app import prepare

    if meta["preprocessing"].get("scale") is None:
        raise FxpError("fxp export --format app: this run's inputs are made before its loaders (in-memory data), "
                       "not from image files; the app cannot make them")
    n = min(CHECKED, len(files), len(inputs[0]))
    with_app = np.concatenate([prepare(Image.open(f), meta) for f in files[:n]])
    diff = float(np.abs(with_app - inputs[0][:n].numpy()).max())
    if diff > PREPARE_TOLERANCE:
        raise FxpError(f"fxp export --format app: app.py's preprocessing differs from the run's pipeline by {diff:.3g} "
                       f"on its validation images ({meta['preprocessing'].get('resize')}); the app would see other "
                       f"inputs than the model trained on")


def write_examples(folder: Path, files: list[Path], learn) -> None:
    "A validation image of each class (the first, up to EXAMPLES), named by its class."
    from fxp import doctor

    folder.mkdir()
    labels = doctor.labels_of(learn.dls.valid_ds, doctor.vocab_of(learn.dls))  # None: not one class per image
    chosen = {}
    for i, f in enumerate(files):
        key = labels[i] if labels else str(i)
        if key not in chosen and len(chosen) < EXAMPLES:
            chosen[key] = f
    for key, f in chosen.items():
        write_atomic(folder / f"{safe(key)}_{f.name}", f.read_bytes())


def safe(name: str) -> str:
    import re

    return re.sub(r"[^\w.-]+", "_", name)[:40]


def readme(meta: dict, run) -> str:
    "The README of the folder: the front-matter a hosted Gradio Space reads, then what the app is and how to run it."
    title = f"{meta['task']} (fxp)"[:30]
    p = meta["parity"]
    agree = p.get("argmax_agreement", p.get("threshold_agreement"))
    return f"""---
title: {title}
sdk: gradio
sdk_version: {pinned('gradio')}
app_file: app.py
pinned: false
---

# {meta['task']}

A {meta['kind']} model trained with fxp (run `{run.path.name}`), served by Gradio. The model is `{meta['file']}`
({meta['format']}; ONNX, run by onnxruntime) with `model.json` beside it: its inputs, classes and preprocessing.
Parity with the fastai learner on {p['items']} validation items: max_abs_diff {p['max_abs_diff']:.3g}
(tolerance {p['tolerance']:.3g}){'' if agree is None else f', agreement {agree:.4f}'}.

```bash
pip install -r requirements.txt
python app.py --port 7860     # then open http://127.0.0.1:7860
```

No torch or fastai is needed: `app.py` makes the model's input from an image with PIL and numpy as model.json says.
The `examples/` images come from the run's validation split. See the run's MODEL_CARD.md for what the model was
measured on and its limits.
"""
