"""MODEL_CARD.md beside a run's model (`fxp card RUN`, and every `fxp export`): what the model is for and what it was
measured on, read from the run folder: the task and a fingerprint of its data (file count, a hash of the listing,
split sizes, class counts: the data as it is now, from the run's config or `data.path=`), the recipe (config
highlights, epochs, seed, versions), the metrics exactly as summary.json has them with their baselines, the stored
diagnosis, the export benchmark if there is one, intended use and limitations, and how to load each exported format.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from fxp import dispatch, doctor
from fxp.runs import MODEL, read_json
from fxp.writer import write_atomic

CARD = "MODEL_CARD.md"
SHOWN_CLASSES = 30  # classes listed in the counts table; the rest are counted
# what a model that takes each input (a kind's INPUT) cannot be trusted with, whatever its metric
LIMITS = {
    "image": "It sees one image at a time, made as model.json's preprocessing says (resized to the training size). "
             "Its metrics hold for images like the validation split's; photos from other cameras, light, framing or "
             "subjects are outside what was measured, and a class model has no 'none of these': it answers with one "
             "of its classes whatever the image.",
    "table": "It takes rows with the training columns. A category it never saw is read as missing (#na#), and numbers "
             "far outside the training range extrapolate; rows from another population are outside what was "
             "measured.",
    "text": "It reads texts in the training texts' language and style, cut to the length it trained on; other "
            "domains are outside what was measured.",
    "pairs": "Users and items it never saw in training have no embedding: their predictions are the biases' alone.",
    "audio": "It hears clips as spectrograms made with the run's settings (sample rate, duration); other microphones, "
             "noise or speakers are outside what was measured.",
}


def write(run, cfg=None, data_note: str | None = None) -> Path:
    """RUN/MODEL_CARD.md for the saved run `run` (a fxp.saved.SavedRun), written whole; `cfg`: its validated config
    (None: the data fingerprint is left out, `data_note` says why)."""
    fingerprint = data_fingerprint(run, cfg) if cfg is not None else {"note": data_note or "not computed"}
    text = "\n".join(card_lines(run, fingerprint)) + "\n"
    path = run.path / CARD
    write_atomic(path, text)
    return path


def card_lines(run, fingerprint: dict) -> list[str]:
    s, written = run.summary, run.written
    task = s.get("task") or written.task.kind
    return [f"# Model card: {task}", "",
            f"A {written.task.kind} model trained by fxp in `{run.path.name}` (status: {s.get('status', 'unknown')}).",
            "", *task_lines(run, fingerprint), *recipe_lines(written, s), *metric_lines(s), *diagnosis_lines(s),
            *bench_lines(run.path), *limit_lines(run, fingerprint, s), *loading_lines(run)]


# --- the task and its data ------------------------------------------------------------------------------------------


def task_lines(run, fp: dict) -> list[str]:
    what = " ".join((run.kind.__doc__ or "").split("\n\n")[0].split())  # the kind module's first paragraph
    out = ["## Task and data", "", f"- kind: {run.written.task.kind}: {what}",
           f"- input: {dispatch.declared(run.kind, 'INPUT') or 'not declared'}",
           f"- data: {run.written.data.get('path') or run.written.task.get('url') or 'built in'}"]
    if "note" in fp:
        return [*out, f"- fingerprint: {fp['note']}", ""]
    out += [f"- files: {fp['files']}" + (f" under `{fp['root']}`" if fp.get("root") else ""),
            f"- listing hash (sha256 of each item's path and size): `{fp['listing_sha256']}`",
            f"- split sizes: train {fp['splits']['train']}, valid {fp['splits']['valid']}", ""]
    return out + class_table(fp.get("classes"))


def class_table(classes: dict | None) -> list[str]:
    "Each class's item count per split, as a table."
    if not classes:
        return ["Class counts: not computed (the targets are not one label per item).", ""]
    names = sorted(set().union(*classes.values()), key=lambda c: -classes.get("train", {}).get(c, 0))
    out = ["| class | train | valid |", "|---|---:|---:|"]
    out += [f"| {c} | {classes.get('train', {}).get(c, 0)} | {classes.get('valid', {}).get(c, 0)} |"
            for c in names[:SHOWN_CLASSES]]
    if len(names) > SHOWN_CLASSES:
        out.append(f"| ({len(names) - SHOWN_CLASSES} more) | | |")
    return [*out, ""]


def data_fingerprint(run, cfg) -> dict:
    """The data `cfg` points at, as the kind's loaders list it: files (their count and a hash of their paths and sizes;
    in-memory items: a hash of their bytes), split sizes, class counts. One note instead where it cannot be read."""
    import torch

    from fxp import saved
    from fxp.errors import FxpError

    try:
        dls = saved.build_loaders(run.kind, cfg, torch.device("cpu"), run.path)
    except FxpError as e:
        return {"note": f"the data could not be read ({e}); `fxp card RUN data.path=DIR` points at it"}
    splits = doctor.splits(dls)
    files = [f for ds in splits.values() for f in doctor.files_of(dls, ds)]
    vocab = doctor.vocab_of(dls)
    labels = {k: doctor.labels_of(ds, vocab) for k, ds in splits.items()}
    out = {"splits": {k: len(ds) for k, ds in splits.items()}, **listing(files, splits)}
    if labels["train"] is not None:
        out["classes"] = {k: count(ys) for k, ys in labels.items() if ys is not None}
    return out


def listing(files: list[Path], splits: dict) -> dict:
    "The files' count and the sha256 of their sorted `relative path<TAB>size` lines; in-memory items: of their bytes."
    digest = hashlib.sha256()
    if not files:
        for ds in splits.values():
            for t in getattr(ds, "tensors", []):
                digest.update(t.numpy().tobytes())
        return {"files": "none (in-memory items)", "listing_sha256": digest.hexdigest()}
    root = Path(os.path.commonpath([str(f.parent) for f in files]))
    for line in sorted(f"{f.relative_to(root).as_posix()}\t{f.stat().st_size}" for f in files):
        digest.update(line.encode() + b"\n")
    return {"files": len(files), "root": str(root), "listing_sha256": digest.hexdigest()}


def count(labels: list) -> dict:
    from collections import Counter

    return dict(sorted(Counter(labels).items()))


# --- the recipe, the metrics, the diagnosis, the bench ---------------------------------------------------------------


def recipe_lines(cfg, s: dict) -> list[str]:
    "Config highlights: the model, the trainer's main keys, the stages; epochs, seed, time, device, versions."
    from omegaconf import OmegaConf

    model = OmegaConf.to_container(cfg.model, resolve=True)
    arch = model.get("arch") or (model.get("net") or {}).get("_target_") or "the kind's default"
    t = cfg.trainer
    keys = {k: t.get(k) for k in ("bs", "lr", "wd", "opt", "precision", "mixup", "cutmix", "clip", "tta")
            if t.get(k) not in (None, 0, False)}
    stages = [{k: v for k, v in st.items() if v is not None} for st in OmegaConf.to_container(t.stages, resolve=True)]
    versions = ", ".join(f"{k} {v}" for k, v in (s.get("versions") or {}).items())
    return ["## Recipe", "", f"- model: `{arch}` (pretrained: {model.get('pretrained')})",
            f"- trainer: {', '.join(f'{k}={v}' for k, v in keys.items())}",
            f"- stages: {json.dumps(stages)}",
            f"- epochs: {s.get('epochs')}, seed: {s.get('seed')}, wall time: {s.get('wall_time_s')} s on "
            f"{s.get('device')}" if s else "- no summary.json in the run folder (epochs, seed, versions unknown)",
            f"- overrides: {' '.join(s.get('overrides') or []) or 'none'}",
            f"- versions: {versions or 'not recorded'}", ""]


def metric_lines(s: dict) -> list[str]:
    "summary.json's final and best metrics, each number as it is there, with the baseline of each."
    final, best, base = s.get("final_metrics") or {}, s.get("best_metrics") or {}, s.get("baselines") or {}
    if not final:
        return ["## Metrics", "", "No summary.json metrics in this run folder.", ""]
    out = ["## Metrics (validation split, as summary.json has them)", "",
           "| metric | final | best | baseline | baseline by |", "|---|---:|---:|---:|---|"]
    for name, value in final.items():
        b = base.get(name) or {}
        out.append(f"| {name} | {json.dumps(value)} | {json.dumps(best.get(name))} | "
                   f"{json.dumps(b['value']) if 'value' in b else '-'} | {b.get('by', '-')} |")
    return [*out, ""]


def diagnosis_lines(s: dict) -> list[str]:
    d = s.get("diagnosis")
    if not d:
        return []
    out = ["## Diagnosis (fxp diagnose, as stored)", "", f"**{d.get('verdict')}**: {d.get('advice')}", ""]
    if d.get("curves"):
        out += [f"Curves: {d['curves']}", ""]
    out += [f"- {f.get('verdict')}: {f.get('evidence', '')}" for f in d.get("findings") or []]
    return [*out, ""] if d.get("findings") else out


def bench_lines(path: Path) -> list[str]:
    "export/bench.csv as a table, if `fxp export --bench` wrote one."
    import csv

    from fxp.exportbench import BENCH
    from fxp.exporting import EXPORT

    f = path / EXPORT / BENCH
    if not f.is_file():
        return []
    with open(f, newline="") as fh:
        rows = list(csv.reader(fh))
    return ["## Export benchmark (export/bench.csv)", "", "| " + " | ".join(rows[0]) + " |",
            "|" + "---|" * len(rows[0]), *("| " + " | ".join(r) + " |" for r in rows[1:]), ""]


# --- use, limits, loading ---------------------------------------------------------------------------------------------


def limit_lines(run, fp: dict, s: dict) -> list[str]:
    "Intended use, the input's limits, rare classes, the valid split's size, and where the model is weakest."
    input_ = dispatch.declared(run.kind, "INPUT")
    out = ["## Intended use and limitations", "",
           f"- Intended use: predictions on inputs like the training data of `{s.get('task') or run.written.task.kind}`"
           f", with a person checking what matters; not a decision on people without review.",
           f"- {LIMITS.get(input_, 'Inputs unlike the training data are outside what was measured.')}"]
    rare = rare_classes((fp.get("classes") or {}).get("train") or {})
    if rare:
        out.append(f"- Classes with few training examples (their metrics are the least sure): {', '.join(rare)}.")
    n = (fp.get("splits") or {}).get("valid") or s.get("items_valid")
    if n:
        out.append(f"- The metrics come from {n} validation items: a share such as accuracy is known to about "
                   f"±{1 / (2 * n ** 0.5):.3f} (one standard error at 0.5).")
    weakest = weakest_class(s.get("per_class") or {})
    if weakest:
        out.append(f"- Weakest class by recall: {weakest}.")
    return [*out, ""]


def rare_classes(train: dict) -> list[str]:
    "Classes under the doctor's minimum count or its rare share of the training items, fewest first."
    total = sum(train.values())
    few = sorted((n, c) for c, n in train.items() if n < doctor.MIN_PER_CLASS or n < doctor.RARE_SHARE * total)
    return [f"'{c}' ({n})" for n, c in few]


def weakest_class(per_class: dict) -> str | None:
    scored = [(v.get("recall"), c) for c, v in per_class.items() if isinstance(v, dict) and v.get("recall") is not None]
    if not scored:
        return None
    recall, name = min(scored)
    return f"'{name}' (recall {recall}, support {per_class[name].get('support')})"


def loading_lines(run) -> list[str]:
    "How to load the learner and each exported format (the model.json files under export/) and the app."
    from fxp.bundle import APP
    from fxp.exporting import EXPORT

    out = ["## How to load it", "", f"- the fastai learner, `{MODEL}` (a pickle: load only files you trust; fxp checks "
           f"its SHA-256): `fxp predict RUN_DIR INPUT...`, or in Python "
           f"`fastai.learner.load_learner('{MODEL}')`"]
    for meta_file in sorted((run.path / EXPORT).glob("*/model.json")):
        if meta_file.parent.name == APP:  # its own line below
            continue
        meta = read_json(meta_file)
        if meta.get("format"):
            out.append(f"- {meta['format']}: `{EXPORT}/{meta_file.parent.name}/{meta.get('file')}` with model.json "
                       f"(inputs, classes, preprocessing): {LOADING.get(meta['format'], '')}")
    if (run.path / EXPORT / APP / "app.py").is_file():
        out.append(f"- the Gradio app: `cd {EXPORT}/{APP} && pip install -r requirements.txt && python app.py`")
    return [*out, ""]


LOADING = {
    "onnx": "`onnxruntime.InferenceSession('model.onnx').run(None, {name: array})`, no torch needed",
    "onnx-int8": "`onnxruntime.InferenceSession('model.onnx')` as for onnx: int8 weights, no torch needed",
    "torchscript": "`torch.jit.load('model.pt')(*inputs)`, no fastai needed",
}
