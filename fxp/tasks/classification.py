"""Single-label image classification: digits (in memory), class folders, filename regex, or a CSV of files.

Module top stays light (the schema is read before anything heavy); fastai is imported where it is used.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Optional

from fxp.checks import IMAGE_MODEL, check_model
from fxp.errors import ConfigError, FxpError
from fxp.schema import Images, Listed, Smoothed, TaskBase, valid

SOURCES = ("digits", "folders", "regex", "csv")
INPUT = "image"
TECHNIQUES = ("mixup", "cutmix", "tta")  # the trainer keys only image kinds take (fxp.checks.check_techniques)


@dataclass
class Task(Images, Listed, Smoothed, TaskBase):
    "Image keys (fxp.schema.Images); folder, suff and valid_col (fxp.schema.Listed) are for source regex and csv."
    kind: str = "classification"
    source: str = field(default="folders", metadata=valid(choices=SOURCES))
    train: str = "train"  # folders: the training and validation folder names
    valid: str = "valid"
    pat: Optional[str] = None  # regex: the label is the pattern's first group in the file name
    csv: str = "labels.csv"  # csv: the file, relative to data.path
    label_col: Any = 1  # csv: label column (name or position)
    bw: bool = False  # load images as one channel


def check(cfg) -> None:
    "Rules across keys, checked before any heavy import (each key's own values: the schema's `valid`)."
    task = cfg.task
    check_model(cfg, *IMAGE_MODEL)
    if cfg.trainer.tta and task.source == "digits":
        raise ConfigError("trainer.tta=true: the digits are in-memory tensors without augmentation, so test-time "
                          "augmentation has nothing to average; use image files (e.g. task=mnist)")
    if task.source == "regex" and not task.pat:
        raise ConfigError("task.source=regex needs task.pat, a regex whose first group is the label")


def not_cleanable(cfg) -> str | None:
    "Why fxp clean cannot list the run's items, which it names by their files (None: it can)."
    return "the digits are in memory, not image files (task.source=digits)" if cfg.task.source == "digits" else None


def dls(cfg, device):
    "DataLoaders for the task: in-memory tensors for digits, a fastai DataBlock for image files."
    t = cfg.task
    if t.source == "digits":
        return _digits_dls(cfg, device)
    from fastai.data.block import CategoryBlock, DataBlock
    from fastai.vision.data import ImageBlock, PILImageBW

    from fxp import folds, vision
    from fxp.data import curate, data_path, item_key

    root = data_path(cfg)
    items, getters, splitter, skipped = _SOURCES[t.source](t, root, cfg.data.skip_bad)
    key = item_key(root, getters.get("get_x"))
    items, getters["get_y"], curated = curate(items, getters["get_y"], cfg.data, key)  # fxp clean's lists
    splitter = folds.splitter(cfg, splitter, labels=folds.each(getters["get_y"]), key=key)
    _check_classes(items, getters["get_y"], splitter, _fix_split(t, root))
    block = DataBlock(blocks=(ImageBlock(PILImageBW) if t.bw else ImageBlock, CategoryBlock), splitter=splitter,
                      item_tfms=vision.item_tfms(t), batch_tfms=vision.batch_tfms(t), **getters)
    out = vision.dataloaders(block, items, cfg, device, "check the split settings "
                             "(task.valid_pct, task.train/task.valid folders or task.valid_col)")
    out.skipped, out.curated, out.item_key = skipped, curated, key  # summary.json; fxp clean names items by key
    return out


def _fix_split(t, root: Path) -> str:
    "What to do when a class is only in the validation split, for the task's source (`{label}`: the class)."
    if t.source == "folders":
        return f"add training images of it to {root}/{t.train}/{{label}}/, or take out {root}/{t.valid}/{{label}}/"
    if t.valid_col:
        return f"mark some of its rows as training in {t.csv} (column {t.valid_col}), or drop them"
    return "change task.split_seed= or task.valid_pct=, or add images of it"


def _check_classes(items, get_y, splitter, fix: str) -> None:
    """Every label of the validation split is one of the training split's (the model learns those); else one line
    naming the class, an item of it and `fix` (`{label}` in it: the class)."""
    train, valid = splitter(items)
    at = items.iloc.__getitem__ if hasattr(items, "iloc") else items.__getitem__
    seen = {get_y(at(i)) for i in train}
    for i in valid:
        if (label := get_y(at(i))) not in seen:
            item = at(i)
            shown = item if isinstance(item, Path) else ", ".join(map(str, item.values))
            raise FxpError(f"class '{label}' is in the validation split but not in the training one (e.g. {shown}); "
                           f"the model learns the training classes only: {fix.format(label=label)}")


def _digits_dls(cfg, device):
    import torch
    from sklearn.datasets import load_digits

    from fxp import folds
    from fxp.data import tensor_dls

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16  # 8x8, ink 0..16
    y = torch.tensor(d.target)
    split = folds.splitter(cfg, partial(_digits_split, t=cfg.task, y=d.target), labels=lambda idx: d.target[idx])
    _, valid_idx = split(range(len(y)))
    return tensor_dls(x, y, valid_idx, vocab=[str(c) for c in d.target_names], bs=cfg.trainer.bs, device=device)


def _digits_split(items, t, y):
    "A stratified valid_pct of the digits: each split needs every class at least once."
    from sklearn.model_selection import train_test_split

    try:
        return train_test_split(items, test_size=t.valid_pct, random_state=t.split_seed, stratify=y)
    except ValueError:
        raise FxpError(f"task.valid_pct={t.valid_pct} leaves a split of the {len(y)} digits without every one of "
                       f"the {len(set(y))} classes; pick a task.valid_pct nearer 0.2") from None


def _folders(t, path, skip_bad):
    from fastai.data.transforms import GrandparentSplitter, parent_label

    from fxp.data import check_images, image_files

    files = [f for f in image_files(path) if f.parent.parent.name in (t.train, t.valid)]
    if not files:
        raise FxpError(f"no images in {path}/{t.train}/<class>/ or {path}/{t.valid}/<class>/; "
                       f"set task.train= and task.valid= to the folder names, or use source=csv")
    for key, split in (("train", t.train), ("valid", t.valid)):
        if not any(f.parent.parent.name == split for f in files):
            raise FxpError(f"the {key} split is empty: no images in {path}/{split}/<class>/; add them there, or set "
                           f"task.{key}= to the folder that has them")
    files, bad = check_images(files, skip_bad)
    return files, dict(get_y=parent_label), GrandparentSplitter(t.train, t.valid), bad


def _regex(t, root, skip_bad):
    import re

    from fastai.data.transforms import RegexLabeller
    from fastcore.basics import using_attr

    from fxp.data import check_images, image_files, image_folder, splitter

    folder = image_folder(t, root)
    files = image_files(folder)
    unmatched = [f.name for f in files if not re.match(t.pat, f.name)]
    if unmatched:
        raise FxpError(f"task.pat={t.pat!r} does not match {unmatched[0]!r} ({len(unmatched)} of {len(files)} "
                       f"files in {folder}); fix the pattern so its first group is the label")
    files, bad = check_images(files, skip_bad)
    get_y = using_attr(RegexLabeller(t.pat), "name")
    return files, dict(get_y=get_y), splitter(t), bad


def _csv(t, root, skip_bad):
    from fastai.data.transforms import ColReader

    from fxp.data import listed_rows, need_labels, read_listing, splitter

    df = read_listing(root / t.csv, t, "task.csv", {"task.label_col": t.label_col})
    need_labels(df, t.label_col, t.fn_col, root / t.csv, "task.label_col")
    df, get_x, bad = listed_rows(df, t, root, t.csv, skip_bad)
    return df, dict(get_x=get_x, get_y=ColReader(t.label_col)), splitter(t, t.valid_col), bad


_SOURCES = {"folders": _folders, "regex": _regex, "csv": _csv}


def factories(cfg) -> list:
    from fxp import vision

    return vision.factories(cfg)


def learner(cfg, dls):
    from fastai.losses import LabelSmoothingCrossEntropyFlat

    from fxp import vision
    from fxp.learner import CrossEntropyLossPlain

    eps = cfg.task.label_smoothing
    loss = LabelSmoothingCrossEntropyFlat(eps=eps) if eps else CrossEntropyLossPlain()
    return vision.learner(cfg, dls, n_out=len(dls.vocab), loss_func=loss)


def evaluate(learn, cfg) -> dict:
    "Each class's precision and recall on the validation split, and its number of items (`per_class`)."
    import torch

    from fxp.metrics import confusion_counts, per_class

    probs, targs = learn.get_preds(dl=learn.dls.valid)
    n = probs.shape[1]
    cm = torch.bincount(targs.long() * n + probs.argmax(1), minlength=n * n).view(n, n)
    return {"per_class": per_class(learn.dls.vocab, *confusion_counts(cm), columns=("precision", "recall", "support"))}


def baseline(learn, cfg) -> dict:
    "Always the most common training label, scored with the run's metrics on the valid split."
    from fxp.baselines import majority

    return majority(learn, _labels(learn.dls.train_ds), _labels(learn.dls.valid_ds), learn.dls.vocab)


def _labels(ds):
    """The label indices of a split: the in-memory tensors' (digits), else the DataBlock's label pipeline (no image
    read)."""
    import torch

    if hasattr(ds, "tensors"):
        return ds.tensors[1].long()
    return torch.tensor([int(y) for y in ds.tls[1]], dtype=torch.long)


def plots(learn, cfg, dest: Path, evaluation: dict) -> None:
    "Confusion matrix and the top losses of the validation set (each titled with its file, prediction and label)."
    from fxp import vision
    from fxp.plots import confusion_matrix, image_grid

    interp = confusion_matrix(learn, dest / "confusion_matrix.png")
    losses, idx = interp.top_losses(min(9, len(interp.losses)))
    idx = idx.tolist()
    images, titles = vision.valid_items(interp.dl, idx), []
    names = vision.item_names(interp.dl, idx, cfg.task.fn_col if cfg.task.source == "csv" else None)
    probs, targs = learn.get_preds(dl=interp.dl)
    vocab = learn.dls.vocab
    for i, loss, name in zip(idx, losses.tolist(), names):
        pred = probs[i].argmax().item()
        titles.append(f"{name}\n".lstrip() + f"pred {vocab[pred]} / true {vocab[targs[i].item()]}\n"
                      f"loss {loss:.2f}, p {probs[i, pred]:.2f}")
    image_grid(images, titles, dest / "top_losses.png")


def predict(learn, cfg, inputs: list[str], top: str = "0", tta: bool = False) -> list[dict]:
    """Label and probability of each image file (or every image in a folder); `--top N`: the N likeliest classes too;
    `tta`: fastai's test-time augmentation."""
    import torch

    from fxp.data import input_images

    files = input_images(inputs, listing="task.source=csv task.csv")
    if cfg.task.source == "digits":
        if tta:
            raise FxpError("--tta: a digits run reads in-memory tensors without augmentation; nothing to average")
        probs = torch.softmax(learn.model.eval()(_as_digits(files)), 1).detach()
    else:
        probs, _ = (learn.tta if tta else learn.get_preds)(dl=learn.dls.test_dl(files))
    vocab, n = learn.dls.vocab, _count(top, "--top")
    rows = [{"input": str(f), "label": str(vocab[p.argmax().item()]), "probability": round(p.max().item(), 4)}
            for f, p in zip(files, probs)]
    for row, p in zip(rows, probs) if n else ():
        best = p.argsort(descending=True)[:n].tolist()
        row["probabilities"] = {str(vocab[i]): round(float(p[i]), 4) for i in best}
    return rows


def explain(learn, cfg, inputs: list[str], dest: Path, method: Optional[str] = None, target: Optional[str] = None,
            layer: Optional[str] = None) -> list[dict]:
    """CAM or Grad-CAM heatmaps (fxp.heatmaps) of the image files `inputs` (the digits: as fxp predict reads them), or
    of validation items and top losses, for the predicted class or `target`."""
    from fxp import heatmaps
    from fxp.data import input_images

    if not inputs:
        items = heatmaps.valid_items(learn, _names(learn, cfg))
    elif cfg.task.source == "digits":
        files = input_images(inputs)
        items = heatmaps.input_items([f.stem for f in files], _as_digits(files))
    else:
        items = heatmaps.file_items(learn, input_images(inputs, listing="task.source=csv task.csv"))
    return heatmaps.explain(learn, items, dest, method, target, layer)


def _names(learn, cfg):
    "The names of validation items at `idx`: their files (a CSV's fn_col)."
    from fxp import vision

    col = cfg.task.fn_col if cfg.task.source == "csv" else None
    return lambda idx: vision.item_names(learn.dls.valid, idx, col)


def _count(value: str, option: str) -> int:
    if not str(value).isdigit():
        raise FxpError(f"{option} {value}: give a whole number of classes (e.g. {option} 3)")
    return int(value)


def _as_digits(files):
    "Images as sklearn digits: 8x8 grey, ink bright on dark, scaled to 0..1."
    import numpy as np
    import torch
    from PIL import Image

    from fxp.data import load_image

    arrays = []
    for f in files:
        a = np.asarray(load_image(f, bw=True).resize((8, 8), Image.BOX), dtype=np.float32) / 255
        arrays.append(1 - a if a.mean() > 0.5 else a)  # dark ink on a light page: invert
    return torch.tensor(np.stack(arrays)).unsqueeze(1)
