"""Image regression: points (lesson 3's BIWI head pose, PointBlock) or numeric targets from a CSV (RegressionBlock).

`target: points` reads x, y pixel columns in pairs (or BIWI_SAMPLE's centers.pkl); fastai scales them to [-1, 1]
of the resized image, so the model ends in `task.y_range` [-1, 1]. Predictions map back to the input image's
pixels through the item Resize (crop, pad or squish; `aug.size` must stay null for that). `target: scalars` reads
one or more numeric columns; `log_target` trains on log(y) (loss and metrics then in log space) and `fxp predict`
exponentiates back. Loss MSELossFlat; metrics `mse`, `mae` (fastai's, which flatten points) and `rmse`.
Module top stays light (the schema is read before anything heavy); fastai is imported where it is used.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, List, Optional

from fxp.checks import IMAGE_MODEL, check_model, check_y_range
from fxp.errors import ConfigError, FxpError
from fxp.schema import Images, Listed, TaskBase, valid
from fxp.tasks import moved

__getattr__ = moved(__name__, {"rmse": "fxp.metrics"})  # old runs' config.yaml name it here

TARGETS = ("points", "scalars")
OUTSIDE = ("error", "clip", "drop")  # task.points_outside
INPUT = "image"


@dataclass
class Task(Images, Listed, TaskBase):
    "Image keys (fxp.schema.Images; aug flips move points too); task.labels lists the images (fxp.schema.Listed)."
    kind: str = "regression"
    # points (PointBlock, x/y pairs) | scalars (RegressionBlock)
    target: str = field(default="points", metadata=valid(choices=TARGETS))
    labels: str = "labels.csv"  # relative to data.path: a CSV, or a .pkl {file name: (row, col)} (BIWI's centers.pkl)
    y_cols: List[Any] = field(default_factory=lambda: [1, 2])  # points: x, y pairs; scalars: the target columns
    y_range: Optional[List[float]] = None  # [lo, hi]: a sigmoid squashes outputs into it (points: [-1, 1])
    log_target: bool = False  # scalars: train on log(y); predict returns exp of the output
    # a point outside its image: error | clip (onto the border) | drop (its row)
    points_outside: str = field(default="error", metadata=valid(choices=OUTSIDE))
    resize_method: str = "squish"  # crop | pad | squish


def check(cfg) -> None:
    "Rules across keys, checked before any heavy import (each key's own values: the schema's `valid`)."
    task = cfg.task
    check_model(cfg, *IMAGE_MODEL)
    is_pkl = str(task.labels).endswith(".pkl")
    if not task.y_cols and not is_pkl:
        raise ConfigError("task.y_cols is empty: name the target columns (points: x, y pairs)")
    if task.target == "points" and len(task.y_cols) % 2 and not is_pkl:
        raise ConfigError(f"task.y_cols={list(task.y_cols)} has an odd length; points take x, y column pairs")
    if task.target == "points" and task.log_target:
        raise ConfigError("task.log_target=true is for target=scalars; points are scaled to [-1, 1] already")
    if task.target == "scalars" and is_pkl:
        raise ConfigError(f"task.labels={task.labels}: a .pkl holds points; scalars come from a CSV")
    check_y_range(task.y_range)
    if task.target == "points" and task.aug is not None and task.aug.size is not None:
        raise ConfigError("task.aug.size must be null for points (predictions map back through the item Resize); "
                          "set task.size instead")


# --- data -----------------------------------------------------------------------------------------------------


def dls(cfg, device):
    "DataLoaders of (image, points) with PointBlock, or (image, numbers) with RegressionBlock."
    from fastai.data.block import DataBlock, RegressionBlock
    from fastai.vision.data import ImageBlock, PointBlock

    from fxp import folds, vision
    from fxp.data import data_path, file_key, splitter

    t, root = cfg.task, data_path(cfg)
    df, files, ys, skipped = _items(t, root, cfg.data.skip_bad)
    df = df.assign(_file=[str(f) for f in files], _y=[y.reshape(-1, 2) if t.target == "points" else y for y in ys])
    y_block = PointBlock if t.target == "points" else RegressionBlock(n_out=ys.shape[1])
    split = folds.splitter(cfg, splitter(t, t.valid_col), key=partial(file_key, root, _get_file))
    block = DataBlock(blocks=(ImageBlock, y_block), splitter=split, get_x=_get_file, get_y=_get_y,
                      item_tfms=vision.item_tfms(t), batch_tfms=vision.batch_tfms(t))
    out = vision.dataloaders(block, df, cfg, device, "check task.valid_pct or task.valid_col")
    out.skipped, out.c = skipped, int(ys[0].size)
    return out


def _get_file(row):
    return row["_file"]


def _get_y(row):
    "Points as an (n, 2) float tensor of pixels; scalars as a float tensor."
    import torch

    return torch.tensor(row["_y"], dtype=torch.float32)


def _items(t, root: Path, skip_bad: bool):
    "The label rows whose images exist and open, their files, targets (n_rows, n_values) and skipped image names."
    from fxp.data import listed_images

    path = root / t.labels
    df, names, ys = _read_pkl(path) if path.suffix == ".pkl" else _read_csv(t, path)
    files, keep, bad = listed_images(names, t, root, path.name, skip_bad)
    df, files, ys = df[keep].reset_index(drop=True), [f for f, k in zip(files, keep) if k], ys[keep]
    if t.target == "points":
        df, files, ys = _inside(path, t.points_outside, df, files, ys)
    elif t.log_target:
        ys = _log(path, t, ys)
    return df, files, ys, bad


def _read_csv(t, path: Path):
    import numpy as np
    import pandas as pd

    from fxp.data import col_name, read_listing

    df = read_listing(path, t, "task.labels", {"task.y_cols": t.y_cols})
    fn_col, cols = col_name(df, t.fn_col), [col_name(df, c) for c in t.y_cols]
    values = df[cols].apply(pd.to_numeric, errors="coerce")
    bad = values.isna().any(axis=1).to_numpy()
    if bad.any():
        i = int(bad.nonzero()[0][0])
        col = next(c for c in cols if pd.isna(values[c].iloc[i]))
        raise FxpError(f"{path}: {int(bad.sum())} rows have an empty or non-numeric target, first at line {i + 2} "
                       f"({df[fn_col].iloc[i]}, column {col!r}); give every row numbers in {', '.join(map(str, cols))}")
    return df, list(df[fn_col]), values.to_numpy(dtype=np.float32)


def _read_pkl(path: Path):
    "BIWI_SAMPLE's centers.pkl: {file name: tensor (row, col)}; points become (x, y)."
    import pickle

    import numpy as np
    import pandas as pd

    from fxp.data import need_file

    need_file(path, "task.labels")
    try:
        with open(path, "rb") as f:
            fn2ctr = pickle.load(f)
        names = sorted(fn2ctr)
        ys = np.stack([np.asarray(fn2ctr[n], dtype=np.float32).reshape(-1, 2)[:, ::-1].reshape(-1) for n in names])
    except Exception as e:
        raise FxpError(f"{path} is not a pickle of {{file name: (row, col)}} ({type(e).__name__}: {e}); "
                       f"give a CSV of file, x, y columns in task.labels instead") from None
    return pd.DataFrame({"name": names}), names, ys


def _inside(path: Path, how: str, df, files, ys):
    """Points outside their image (x outside 0..width or y outside 0..height, in pixels; dlib landmarks a few pixels
    off the frame): an error naming the first, clipped onto the border, or their rows dropped (task.points_outside)."""
    import numpy as np
    from PIL import Image

    sizes = []
    for f in files:
        with Image.open(f) as im:
            sizes.append(im.size)
    wh = np.repeat(np.asarray(sizes, dtype=np.float32).reshape(-1, 1, 2), ys.shape[1] // 2, axis=1)
    pts = ys.reshape(len(ys), -1, 2)
    out = (pts < 0) | (pts > wh)
    rows = out.any(axis=(1, 2))
    if not rows.any():
        return df, files, ys
    i = int(rows.argmax())
    (w, h), n = sizes[i], int(rows.sum())
    where = (f"{n} of {len(rows)} rows have points outside their image" if n > 1
             else "1 row has a point outside its image")
    if how == "error":
        x, y = pts[i][out[i].any(axis=1)][0]
        raise FxpError(f"{path}: point ({x:g}, {y:g}) of {files[i].name} (row {i + 1}) lies outside its {w}x{h} image"
                       f"{f' ({n} rows in all)' if n > 1 else ''}; set task.points_outside=clip (onto the border) "
                       f"or drop (those rows), or fix the coordinates (pixels, x in 0..{w}, y in 0..{h})")
    if how == "clip":
        _note(f"{path.name}: {where}, clipped onto the border (task.points_outside=clip)")
        return df, files, np.clip(pts, 0, wh).reshape(ys.shape).astype(ys.dtype)
    if rows.all():
        raise FxpError(f"{path}: every row has a point outside its image, so task.points_outside=drop leaves none; "
                       f"check the coordinates are pixels (x in 0..width, y in 0..height) or set points_outside=clip")
    _note(f"{path.name}: {where}, dropped (task.points_outside=drop): "
          f"{', '.join(f.name for f, r in zip(files, rows) if r)}")
    keep = ~rows
    return df[keep].reset_index(drop=True), [f for f, k in zip(files, keep) if k], ys[keep]


def _note(line: str) -> None:
    "A line about the data, on the console and in train.log."
    import logging

    logging.getLogger("fxp").info(line)
    print(line, flush=True)


def _log(path: Path, t, ys):
    import numpy as np

    if (ys <= 0).any():
        i = int((ys <= 0).any(axis=1).nonzero()[0][0])
        raise FxpError(f"task.log_target=true needs positive targets, but {path.name} has {int((ys <= 0).sum())} "
                       f"values <= 0, first at row {i + 1}; set task.log_target=false or fix the data")
    return np.log(ys)


# --- learner, plots, predict ----------------------------------------------------------------------------------


def factories(cfg) -> list:
    from fxp import vision

    return vision.factories(cfg)


def learner(cfg, dls):
    "A vision learner (or `model.net`) with one output per target value, MSE loss, squashed into `task.y_range`."
    from fastai.layers import SigmoidRange
    from fastai.losses import MSELossFlat
    from torch import nn

    from fxp import vision

    yr = cfg.task.y_range
    yr = tuple(yr) if yr is not None else None
    extra = {"y_range": yr} if yr and cfg.model.arch is not None else {}
    learn = vision.learner(cfg, dls, n_out=dls.c, loss_func=MSELossFlat(), **extra)
    if yr and cfg.model.arch is None:  # a plain `model.net`: add the head's sigmoid range ourselves
        learn.model = nn.Sequential(learn.model, SigmoidRange(*yr))
    return learn


def _valid_preds(learn):
    "Valid predictions and targets, one row per item."
    preds, targs = learn.get_preds(dl=learn.dls.valid)
    return preds.float().view(len(preds), -1), targs.float().view(len(targs), -1)


def evaluate(learn, cfg) -> dict:
    "Nothing beyond the metrics (the baseline is `baseline`'s)."
    return {}


def baseline(learn, cfg) -> dict:
    "Always the training mean of each target, scored with the run's metrics on the valid split."
    import torch

    from fxp.baselines import score

    targs = torch.cat([b[1].float() for b in learn.dls.valid])
    dl = learn.dls.test_dl(learn.dls.train_ds.items, with_labels=True)  # the valid-time transforms, no shuffle
    mean = torch.cat([b[1].float() for b in dl]).mean(0)
    return score(learn, [(mean.expand_as(targs).clone(), targs)], "the training mean")


def plots(learn, cfg, dest: Path, evaluation: dict) -> None:
    "Points: true (green) and predicted (red) on up to 9 validation images. Scalars: predicted against true."
    from fxp.plots import plt, save

    preds, targs = _valid_preds(learn)
    if cfg.task.target == "points":
        _plot_points(learn, preds, targs, dest / "predicted_points.png")
    else:
        names = [str(c) for c in cfg.task.y_cols]
        log = " (log)" if cfg.task.log_target else ""
        fig, axs = plt.subplots(1, len(names), figsize=(4 * len(names), 4.2), squeeze=False)
        for j, (ax, name) in enumerate(zip(axs.flat, names)):
            t, p = targs[:, j], preds[:, j]
            ax.scatter(t, p, s=12, alpha=0.5)  # many rows share a value (steering 0): darker where they pile up
            lo, hi = float(min(t.min(), p.min())), float(max(t.max(), p.max()))
            pad = 0.05 * (hi - lo or 1)
            ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="grey", linestyle=":", label="predicted = true")
            ax.set(xlim=(lo - pad, hi + pad), ylim=(lo - pad, hi + pad), aspect="equal", xlabel=f"true {name}{log}",
                   ylabel=f"predicted {name}{log}", title=f"valid {name}: mse {float(((p - t) ** 2).mean()):.4g}")
            ax.legend(fontsize=8, loc="upper left")
        save(fig, dest / "predicted_vs_true.png")


def _plot_points(learn, preds, targs, dest: Path, n: int = 9) -> None:
    "True and predicted points on the first `n` validation images, a panel each (up to 3 a row), titled with the file."
    import math

    from fxp.plots import displayable, plt, save
    from fxp.vision import valid_items

    n = min(n, len(preds))
    ncols = min(3, n)
    nrows = math.ceil(n / ncols)
    fig, axs = plt.subplots(nrows, ncols, figsize=(3.3 * ncols, 3.5 * nrows + 0.4), squeeze=False)
    for ax in axs.flat[n:]:
        ax.set_visible(False)
    files = learn.dls.valid_ds.items["_file"]
    for i, (ax, im) in enumerate(zip(axs.flat, valid_items(learn.dls.valid, list(range(n))))):
        h, w = im.shape[-2:]
        ax.imshow(displayable(im), cmap="gray")
        for y, color, label in ((targs[i], "lime", "true"), (preds[i], "red", "predicted")):
            p = y.view(-1, 2)
            ax.scatter((p[:, 0] + 1) * w / 2, (p[:, 1] + 1) * h / 2, s=30 if len(p) < 5 else 8, c=color,
                       marker="x" if color == "red" else "o", label=label, linewidths=1)
        ax.set_title(f"{_short(Path(files.iloc[i]).name)}\nmse {float(((preds[i] - targs[i]) ** 2).mean()):.4f}",
                     fontsize=8)
        ax.axis("off")
    handles, labels = axs.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0), ncol=2, fontsize=8, frameon=False)
    save(fig, dest)


def _short(name: str, width: int = 32) -> str:
    "A file name that fits a panel's title: its start and end around an ellipsis when longer than `width`."
    return name if len(name) <= width else f"{name[:width // 2 - 1]}…{name[-(width // 2 - 1):]}"


def predict(learn, cfg, inputs: list[str]) -> list[dict]:
    "Points in the input image's pixels (x, y; or `points` when there are several), or each target column's value."
    import numpy as np

    from fxp.data import input_images

    t = cfg.task
    files = input_images(inputs, listing="task.labels")
    preds, _ = learn.get_preds(dl=learn.dls.test_dl(files))
    preds = preds.float().view(len(files), -1).numpy()
    if t.target == "points":
        rows = []
        for f, p in zip(files, preds):
            pts = [[round(float(x), 2), round(float(y), 2)] for x, y in _to_pixels(t, f, p.reshape(-1, 2))]
            rows.append({"input": str(f), "x": pts[0][0], "y": pts[0][1]} if len(pts) == 1
                        else {"input": str(f), "points": pts})
        return rows
    if t.log_target:
        preds = np.exp(preds)
    names = [str(c) for c in t.y_cols]
    return [{"input": str(f), **{n: round(float(v), 6) for n, v in zip(names, p)}} for f, p in zip(files, preds)]


def _to_pixels(t, file: Path, pts):
    "Invert the valid-time item Resize: [-1, 1] of the resized image → pixels of `file` (fastai's crop_pad window)."
    from PIL import Image

    with Image.open(file) as im:
        w, h = im.size
    if t.size is None or t.resize_method == "squish":
        left, top, cw, ch = 0.0, 0.0, w, h
    else:
        size = list(t.size) if not isinstance(t.size, int) else [t.size, t.size]
        sh, sw = size  # [h, w] as fastai's Resize takes it
        wider = w / sw < h / sh
        m = (w / sw if wider else h / sh) if t.resize_method == "crop" else (w / sw if not wider else h / sh)
        cw, ch = int(m * sw), int(m * sh)
        left, top = int(0.5 * (w - cw)), int(0.5 * (h - ch))
    return [(left + (x + 1) * cw / 2, top + (y + 1) * ch / 2) for x, y in pts]
