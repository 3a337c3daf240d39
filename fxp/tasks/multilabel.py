"""Multi-label image classification: images listed in a CSV with delimited tags (planet, lesson 3).

One threshold (`task.thresh`) turns sigmoid outputs into tags everywhere: the metrics (`accuracy_multi`, `fbeta`,
which take it by interpolation), the F-beta-against-threshold plot and `fxp predict`.
Module top stays light (the schema is read before anything heavy); fastai is imported where it is used.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from fxp.checks import IMAGE_MODEL, check_model
from fxp.errors import FxpError
from fxp.schema import Images, Listed, TaskBase, valid
from fxp.tasks import moved

__getattr__ = moved(__name__, {"fbeta": "fxp.metrics"})  # old runs' config.yaml name it here


@dataclass
class Task(Images, Listed, TaskBase):
    "Image keys (fxp.schema.Images); the CSV lists the images (fxp.schema.Listed)."
    kind: str = "multilabel"
    csv: str = "labels.csv"  # relative to data.path
    label_col: Any = 1  # tags column (name or position)
    label_delim: str = " "  # separates the tags of a cell
    # a tag is predicted when its sigmoid output is above this
    thresh: float = field(default=0.5, metadata=valid("(0, 1)"))
    beta: float = field(default=2.0, metadata=valid("(0, inf)"))  # F-beta's beta (the planet competition scored F2)


INPUT = "image"
TECHNIQUES = ("mixup", "cutmix", "tta")  # the trainer keys only image kinds take (fxp.checks.check_techniques)


def check(cfg) -> None:
    "Rules across keys, checked before any heavy import (each key's own values: the schema's `valid`)."
    check_model(cfg, *IMAGE_MODEL)


def dls(cfg, device):
    "DataLoaders of (image, tags) from the task's CSV, with MultiCategoryBlock targets."
    from fastai.data.block import DataBlock, MultiCategoryBlock
    from fastai.data.transforms import ColReader
    from fastai.vision.data import ImageBlock

    from fxp import folds, vision
    from fxp.data import data_path, file_key, splitter

    t, root = cfg.task, data_path(cfg)
    df, get_x, skipped = _items(t, root, cfg.data.skip_bad)
    get_y = ColReader(t.label_col, label_delim=t.label_delim)
    split = folds.splitter(cfg, splitter(t, t.valid_col), labels=folds.each(get_y),
                           key=partial(file_key, root, get_x))
    block = DataBlock(blocks=(ImageBlock, MultiCategoryBlock), splitter=split, get_x=get_x, get_y=get_y,
                      item_tfms=vision.item_tfms(t), batch_tfms=vision.batch_tfms(t))
    out = vision.dataloaders(block, df, cfg, device, "check task.valid_pct or task.valid_col")
    out.skipped = skipped
    return out


def _items(t, root: Path, skip_bad: bool):
    "The CSV's rows whose images exist and open, a get_x reading their image, and the names of skipped images."
    from fxp.data import col_name, listed_rows, read_listing

    df = read_listing(root / t.csv, t, "task.csv", {"task.label_col": t.label_col})
    fn_col, label_col = col_name(df, t.fn_col), col_name(df, t.label_col)
    empty = df[label_col].isna() | (df[label_col].astype(str).str.strip() == "")
    if empty.any():
        i = int(empty.to_numpy().nonzero()[0][0])
        raise FxpError(f"{root / t.csv}: {int(empty.sum())} rows have an empty {label_col!r} cell, "
                       f"first at line {i + 2} ({df[fn_col].iloc[i]}); give every row at least one tag, "
                       "or remove those rows")
    return listed_rows(df, t, root, t.csv, skip_bad)


def factories(cfg) -> list:
    from fxp import vision

    return vision.factories(cfg)


def learner(cfg, dls):
    "A vision learner with one sigmoid output per tag (BCE), decoding at `task.thresh`."
    from fastai.losses import BCEWithLogitsLossFlat

    from fxp import vision

    return vision.learner(cfg, dls, n_out=len(dls.vocab), loss_func=BCEWithLogitsLossFlat(thresh=cfg.task.thresh))


def _fbeta_curve(probs, targs, beta: float):
    "Thresholds 0.05..0.95 and the valid F-beta at each."
    import numpy as np

    threshs = np.round(np.arange(0.05, 0.96, 0.01), 2)
    return threshs, [_fbeta(probs, targs, th, beta) for th in threshs]


def evaluate(learn, cfg) -> dict:
    "The threshold with the best valid F-beta, and that F-beta; each tag's precision and recall at task.thresh."
    import numpy as np

    from fxp.metrics import per_class

    probs, targs = learn.get_preds(dl=learn.dls.valid)
    threshs, scores = _fbeta_curve(probs, targs, cfg.task.beta)
    best = int(np.argmax(scores))
    pred, targ = probs > cfg.task.thresh, targs.bool()
    counts = ((pred & targ).sum(0), (pred & ~targ).sum(0), (~pred & targ).sum(0))
    return {"best_thresh": float(threshs[best]), "best_fbeta": round(scores[best], 4),
            "per_class": per_class(learn.dls.vocab, *counts, columns=("precision", "recall", "support"))}


def baseline(learn, cfg) -> dict:
    """Per metric, the stronger of two constant tag sets predicted for every image: of the k most frequent training
    tags (k = 1, 2, ...), the set with the best training F-beta; and the tags of over half the training images (the
    best set for accuracy_multi). Scored with the run's metrics on the valid split."""
    import torch

    from fxp.baselines import score, stronger, tags_logits

    train, valid = (_targets(ds) for ds in (learn.dls.train_ds, learn.dls.valid_ds))
    order = torch.sort(train.sum(0), descending=True, stable=True).indices  # ties: the vocab's order
    sets = [torch.zeros(train.shape[1]).index_fill_(0, order[:k], 1) for k in range(1, len(order) + 1)]
    best = max(sets, key=lambda tags: _fbeta(tags.expand_as(train), train, 0.5, cfg.task.beta))
    half = (train.mean(0) > 0.5).float()
    return stronger(*(score(learn, [(tags_logits(tags, len(valid)), valid)], _always(tags, learn.dls.vocab))
                      for tags in (best, half)))


def _always(tags, vocab) -> str:
    return f"always the tags '{_tags(tags, vocab)}'" if tags.any() else "never a tag"


def _targets(ds):
    "A split's tags, one 0/1 row per item, through its label pipeline (no image read)."
    import torch

    return torch.stack([torch.as_tensor(ds.tls[1][i]).float() for i in range(len(ds))])


def plots(learn, cfg, dest: Path, evaluation: dict) -> None:
    """F-beta of the validation set against the threshold (best threshold marked, also in fbeta_threshold.json),
    and the validation images with the highest loss."""
    import numpy as np
    import torch.nn.functional as F

    from fxp import vision
    from fxp.plots import image_grid, plt, save
    from fxp.writer import write_atomic

    t = cfg.task
    probs, targs = learn.get_preds(dl=learn.dls.valid)
    threshs, scores = _fbeta_curve(probs, targs, t.beta)
    best = int(np.argmax(scores))
    info = {**evaluation, "thresh": t.thresh, "fbeta_at_thresh": round(_fbeta(probs, targs, t.thresh, t.beta), 4)}
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(threshs, scores)
    ax.axvline(t.thresh, color="grey", linestyle=":", label=f"task.thresh {t.thresh:g}")
    ax.axvline(threshs[best], color="red", linestyle="--",
               label=f"best {threshs[best]:g} (F{t.beta:g} {scores[best]:.3f})")
    ax.set(xlabel="threshold", ylabel=f"F{t.beta:g} (samples)", title="validation F-beta against threshold")
    ax.legend()
    save(fig, dest / "fbeta_threshold.png")
    curve = {"thresholds": threshs.tolist(), "fbeta": [round(s, 4) for s in scores]}
    write_atomic(dest / "fbeta_threshold.json", json.dumps({**info, **curve}, indent=1))

    losses = F.binary_cross_entropy(probs.float(), targs.float(), reduction="none").mean(1)
    idx = losses.argsort(descending=True)[:9].tolist()
    vocab = learn.dls.vocab
    images = vision.valid_items(learn.dls.valid, idx)
    names = vision.item_names(learn.dls.valid, idx, t.fn_col)
    titles = [f"{name}\npred {_tags(probs[i] > t.thresh, vocab) or '(none)'}\n"
              f"true {_tags(targs[i] > 0.5, vocab)}\nloss {losses[i]:.2f}" for i, name in zip(idx, names)]
    image_grid(images, titles, dest / "top_losses.png")


def _fbeta(probs, targs, thresh: float, beta: float) -> float:
    "Sample-averaged F-beta of thresholded `probs` (a sample with no true and no predicted tag scores 0, as sklearn)."
    pred, targ = (probs > thresh).float(), targs.float()
    tp = (pred * targ).sum(1)
    denom = beta ** 2 * targ.sum(1) + pred.sum(1)
    return float(((1 + beta ** 2) * tp / denom.clamp(min=1e-12)).mean())


def _tags(mask, vocab) -> str:
    return " ".join(str(vocab[j]) for j in mask.nonzero().flatten().tolist())


def predict(learn, cfg, inputs: list[str], tta: bool = False) -> list[dict]:
    """The tags above `task.thresh` of each image file (or every image in a folder), with their probabilities; `tta`:
    fastai's test-time augmentation."""
    from fxp.data import input_images

    files = input_images(inputs, listing="task.csv")
    probs, _ = (learn.tta if tta else learn.get_preds)(dl=learn.dls.test_dl(files))
    vocab, rows = learn.dls.vocab, []
    for f, p in zip(files, probs):
        keep = (p > cfg.task.thresh).nonzero().flatten()
        keep = keep[p[keep].argsort(descending=True)].tolist()
        rows.append({"input": str(f), "tags": " ".join(str(vocab[j]) for j in keep),
                     "probabilities": [round(float(p[j]), 4) for j in keep]})
    return rows


def explain(learn, cfg, inputs: list[str], dest: Path, method: str | None = None, target: str | None = None,
            layer: str | None = None) -> list[dict]:
    """A heatmap (fxp.heatmaps: CAM or Grad-CAM) per tag over task.thresh (or `target`) of each image file, or of
    validation items and top losses."""
    from fxp import heatmaps, vision
    from fxp.data import input_images

    if inputs:
        items = heatmaps.file_items(learn, input_images(inputs, listing="task.csv"))
    else:
        items = heatmaps.valid_items(learn, lambda idx: vision.item_names(learn.dls.valid, idx, cfg.task.fn_col))
    return heatmaps.explain(learn, items, dest, method, target, layer, thresh=cfg.task.thresh)
