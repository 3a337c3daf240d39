"""Collaborative filtering: user-item ratings, a dot product with biases or a neural net (lesson 4-5, fastbook ch. 8).

The ratings file takes pandas' reading options (separator, encoding, column names when it has no header), so both
MovieLens 100k's tab-separated `u.data` and the CSV of URLs.ML_SAMPLE load. An optional titles file (ml-100k's `u.item`)
gives titles: joined on the item column, either as the model's items (fastbook's `item_name='title'`) or for display.
fastai's CollabDataLoaders and collab_learner do the rest; the metric is the valid `mse`.

The exported learner keeps what `fxp predict` needs and `learn.export` drops with the data: every rated (user, item)
pair, so `--user U` ranks only the items U has not rated, and the titles of the items.
Module top stays light (the schema is read before anything heavy); fastai is imported where it is used.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

from fxp.checks import check_model, check_y_range
from fxp.errors import ConfigError, FxpError
from fxp.schema import Split, TaskBase

INPUT = "pairs"  # fxp predict: a CSV of user, item pairs (or --user U for U's top items)

@dataclass
class Task(Split, TaskBase):  # split_seed equal to trainer.seed: fastai's own split after set_seed
    kind: str = "collab"
    ratings: str = "ratings.csv"  # relative to data.path
    sep: str = ","
    encoding: str = "utf-8"
    names: Optional[List[str]] = None  # null: a header row names the columns; a list: no header, these name the first
    user_col: str = "userId"
    item_col: str = "movieId"
    rating_col: str = "rating"
    titles: Optional[str] = None  # a file of item titles (e.g. ml-100k's u.item), relative to data.path; null: none
    titles_sep: str = ","
    titles_encoding: str = "utf-8"
    titles_names: Optional[List[str]] = None  # as `names`, for the titles file; it must have item_col and title_col
    title_col: str = "title"
    item_by_title: bool = False  # true: the titles are the model's items (fastbook ch. 8; equal titles become one item)
    y_range: Optional[List[float]] = field(default_factory=lambda: [0.0, 5.5])  # a sigmoid squashes predictions into it


def check(cfg) -> None:
    "Rules across keys, checked before any heavy import (each key's own values: the schema's `valid`)."
    task = cfg.task
    check_model(cfg, (), "model=collab_dot or collab_nn")
    check_y_range(task.y_range)
    if task.item_by_title and task.titles is None:
        raise ConfigError("task.item_by_title=true needs a titles file: set task.titles= (e.g. u.item) or "
                          "task.item_by_title=false")
    for key in ("sep", "titles_sep"):
        if not task[key]:
            raise ConfigError(f"task.{key} is empty: give the column separator, e.g. ',' or '\\t'")


# --- data -----------------------------------------------------------------------------------------------------


def dls(cfg, device):
    "fastai's CollabDataLoaders over the ratings (titles joined), with the rated pairs and titles for the learner."
    from fastai.collab import TabularCollab
    from fastai.data.block import TransformBlock
    from fastai.tabular.core import Categorify

    from fxp import folds
    from fxp.data import data_path, quiet_readonly_arrays, splitter, workers
    from fxp.tables import TableDL

    quiet_readonly_arrays()
    t = cfg.task
    ratings, titles = _ratings(t, data_path(cfg))
    # fastai's CollabDataLoaders.from_df, with the split as a cross-validation's fold may be (by rating rows)
    splits = folds.splitter(cfg, splitter(t))(ratings)
    to = TabularCollab(ratings, [Categorify], [t.user_col, _item_name(t)], y_names=[t.rating_col],
                       y_block=TransformBlock(), splits=splits)
    out = to.dataloaders(path=".", bs=cfg.trainer.bs, num_workers=workers(cfg.trainer, device, files=False),
                         device=device, dl_type=TableDL)
    if len(out.valid_ds) == 0:
        raise FxpError(f"the valid split is empty ({len(ratings)} ratings in all); raise task.valid_pct")
    out.rated, out.titles = _rated_pairs(out), titles
    out.raw_rows = ratings  # the rows before Categorify, for a saved learner's own codes (fxp.saved)
    return out


def _item_name(t) -> str:
    return t.title_col if t.item_by_title else t.item_col


def _ratings(t, root: Path):
    "The ratings (with titles merged in when they are the items) and a {item: title} map for display (or None)."
    from fxp.data import read_table

    path = root / t.ratings
    df = read_table(path, "task.ratings", {"task.user_col": t.user_col, "task.item_col": t.item_col,
                                           "task.rating_col": t.rating_col},
                    names=t.names, sep_key="task.sep", encoding_key="task.encoding", sep=t.sep, encoding=t.encoding)
    _check_numeric(df, path, t.rating_col, header=t.names is None)
    if t.titles is None:
        return df, None
    items = read_table(root / t.titles, "task.titles", {"task.item_col": t.item_col, "task.title_col": t.title_col},
                       names=t.titles_names, sep_key="task.titles_sep", encoding_key="task.titles_encoding",
                       sep=t.titles_sep, encoding=t.titles_encoding)
    if t.item_by_title:
        return df.merge(items[[t.item_col, t.title_col]], on=t.item_col), None  # fastbook's ratings.merge(movies)
    return df, dict(zip(items[t.item_col], items[t.title_col].astype(str)))


def _check_numeric(df, path: Path, col: str, header: bool) -> None:
    import pandas as pd

    bad = pd.to_numeric(df[col], errors="coerce").isna().to_numpy()
    if bad.any():
        i = int(bad.nonzero()[0][0])
        raise FxpError(f"{path}: column {col!r} (task.rating_col) has {int(bad.sum())} empty or non-numeric "
                       f"values, first {df[col].iloc[i]!r} at line {i + 1 + header}; every rating must be a number")


def _rated_pairs(dls):
    "(user, item) codes of every rating, train and valid: the items a user has rated are not recommended."
    import numpy as np

    return np.concatenate([dls.train_ds.xs.to_numpy(), dls.valid_ds.xs.to_numpy()]).astype(np.int32)


# --- learner, plots, predict ----------------------------------------------------------------------------------


def factories(cfg) -> list:
    from fastai.collab import collab_learner

    return [collab_learner]


def learner(cfg, dls):
    "fastai's collab_learner: `model.kwargs` pick dot product (n_factors) or neural net (use_nn, layers)."
    from fastai.collab import collab_learner
    from omegaconf import OmegaConf

    from fxp.metrics import metrics

    kwargs = OmegaConf.to_container(cfg.model.kwargs)
    yr = cfg.task.y_range
    learn = collab_learner(dls, y_range=tuple(yr) if yr is not None else None, metrics=metrics(cfg.task.metrics),
                           **kwargs)
    learn.rated, learn.titles = dls.rated, dls.titles  # exported with the learner (its data is not)
    return learn


def _item_weights(model):
    "The item embedding matrix and item biases (None for the neural net, which has none)."
    if hasattr(model, "i_weight"):
        return model.i_weight.weight, model.i_bias.weight.squeeze(1)
    return model.embeds[1].weight, None


def _label(learn, item) -> str:
    titles = learn.titles
    return str(titles.get(item, item)) if titles else str(item)


def evaluate(learn, cfg) -> dict:
    "Nothing beyond the metrics (the baseline is `baseline`'s)."
    return {}


def baseline(learn, cfg) -> dict:
    "Always the training mean rating, scored with the run's metrics on the valid split."
    import torch

    from fxp.baselines import score

    train_y, valid_y = (torch.tensor(ds.ys[cfg.task.rating_col].to_numpy(), dtype=torch.float32)
                        for ds in (learn.dls.train_ds, learn.dls.valid_ds))
    mean = float(train_y.mean())
    return score(learn, [(torch.full_like(valid_y, mean), valid_y)], f"the training mean {mean:.4g}")


def plots(learn, cfg, dest: Path, evaluation: dict) -> None:
    """The items with the lowest and highest learned bias (dot model), and a 2-D PCA of the embeddings of the
    most-rated items, labelled."""
    import numpy as np

    t = cfg.task
    train = learn.dls.train_ds
    items = learn.dls.classes[_item_name(t)]
    counts = np.bincount(train.xs[_item_name(t)].to_numpy(), minlength=len(items))
    weights, bias = _item_weights(learn.model)
    if bias is not None:
        _plot_bias(learn, bias.detach().float().cpu(), items, counts, dest / "item_bias.png")
    _plot_pca(learn, weights.detach().float().cpu(), items, counts, dest / "item_pca.png")


def _plot_bias(learn, bias, items, counts, dest: Path, n: int = 10) -> None:
    "Horizontal bars of the n lowest and n highest item biases among the items seen in training."
    import numpy as np

    from fxp.plots import plt, save

    seen = np.nonzero(counts)[0]
    order = seen[np.argsort(bias.numpy()[seen])]
    idx = np.concatenate([order[:n], order[-n:]]) if len(order) > 2 * n else order
    fig, ax = plt.subplots(figsize=(8, 0.3 * len(idx) + 1.5))
    vals = bias.numpy()[idx]
    ax.barh(range(len(idx)), vals, color=["tab:red" if v < 0 else "tab:blue" for v in vals])
    ax.set_yticks(range(len(idx)), [_label(learn, items[i])[:50] for i in idx], fontsize=8)
    ax.set(xlabel="learned item bias", title=f"items with the lowest and highest bias ({len(seen)} items)")
    save(fig, dest)


def _plot_pca(learn, weights, items, counts, dest: Path, n_fit: int = 1000, n_label: int = 50) -> None:
    "fastbook's plot: PCA of the embeddings of the `n_fit` most-rated items, the `n_label` most-rated labelled."
    import fastai.torch_core  # noqa: F401  (patches Tensor.pca)
    import numpy as np

    from fxp.plots import plt, save

    top = np.argsort(-counts, kind="stable")[:min(n_fit, int((counts > 0).sum()))]
    xy = weights[top].pca(2).numpy()
    fig, ax = plt.subplots(figsize=(10, 10))
    ax.scatter(xy[:, 0], xy[:, 1], s=6, color="lightgrey")
    k = min(n_label, len(top))
    ax.scatter(xy[:k, 0], xy[:k, 1], s=10)
    for i, (x, y) in zip(top[:k], xy[:k]):
        ax.text(x, y, _label(learn, items[i])[:40], fontsize=7)
    ax.set(xlabel="first principal component", ylabel="second principal component",
           title=f"item embeddings, PCA of the {len(top)} most-rated items ({k} labelled)")
    save(fig, dest)


def predict(learn, cfg, inputs: list[str], user: Optional[str] = None, top: str = "10") -> list[dict]:
    """`--user U [--top N]`: the N items user U has not rated with the highest predicted ratings.
    `PAIRS.csv`: the predicted rating of each row's (user, item), also written beside it as PAIRS_predictions.csv."""
    t = cfg.task
    what = f"--user U (the top items U has not rated) or CSV files of {t.user_col},{_item_name(t)} pairs"
    if user is not None and inputs:
        raise FxpError(f"fxp predict on a collab run takes {what}, not both")
    if user is None and not inputs:
        raise FxpError(f"fxp predict on a collab run takes {what}")
    if user is not None:
        return _top_items(learn, t, user, _positive_int(top, "--top"))
    return [row for path in inputs for row in _score_pairs(learn, t, Path(path))]


def _positive_int(value: str, option: str) -> int:
    n = int(value) if str(value).isdigit() else 0
    if n < 1:
        raise FxpError(f"fxp predict: {option} takes a whole number of at least 1 (got {value!r})")
    return n


def _top_items(learn, t, user: str, top: int) -> list[dict]:
    import numpy as np

    item = _item_name(t)
    users, items = learn.dls.classes[t.user_col], learn.dls.classes[item]
    u = _codes(users, [user], t.user_col, "--user")[0]
    rated = learn.rated[learn.rated[:, 0] == u, 1]
    unseen = np.setdiff1d(np.arange(1, len(items)), rated)  # code 0 is fastai's #na#
    if len(unseen) == 0:
        raise FxpError(f"user {user!r} has rated all {len(items) - 1} items; there is nothing left to recommend")
    preds = _scores(learn, np.full(len(unseen), u), unseen)
    best = np.argsort(-preds, kind="stable")[:top]
    return [{"rank": r, t.user_col: user, item: _plain(items[unseen[i]]), **_title(learn, items[unseen[i]]),
             "prediction": round(float(preds[i]), 4)} for r, i in enumerate(best, 1)]


def _examples(classes, n: int = 3) -> str:
    return "e.g. " + ", ".join(map(str, classes[1:n + 1])) + (", ..." if len(classes) > n + 1 else "")


def _plain(value):
    "numpy scalars as Python values, for the table and JSON."
    return value.item() if hasattr(value, "item") else value


def _title(learn, item) -> dict:
    return {"title": _label(learn, item)} if learn.titles else {}


def _scores(learn, users, items):
    """Predicted ratings of (user, item) codes. The model is called directly: fastai's get_preds fails on a
    single row, which EmbeddingDotBias squeezes to a scalar."""
    import numpy as np
    import torch

    x = torch.as_tensor(np.stack([users, items], 1), dtype=torch.long)  # CollabDataLoaders' order: user, item
    model = learn.model.eval()
    with torch.no_grad():
        return model(x.to(next(model.parameters()).device)).float().view(-1).cpu().numpy()


def _score_pairs(learn, t, path: Path) -> list[dict]:
    import sys

    from fxp.data import free_path, read_table
    from fxp.writer import write_atomic

    item = _item_name(t)
    df = read_table(path, None, dtype=str)  # values matched as text against the model's users and items
    for col in (t.user_col, item):
        if col not in df.columns:
            raise FxpError(f"column {col!r} not in {path.name}; a pairs CSV needs columns {t.user_col} and {item} "
                           f"(as in training); its columns are: {', '.join(map(str, df.columns))}")
    users, items = (_codes(learn.dls.classes[c], df[c], c, path) for c in (t.user_col, item))
    preds = _scores(learn, users, items)
    dest = free_path(path.with_name(f"{path.stem}_predictions.csv"))
    write_atomic(dest, df.assign(prediction=preds.round(4)).to_csv(index=False))
    print(f"predictions written to {dest}", file=sys.stderr)
    titles = learn.dls.classes[item]
    return [{**row, **_title(learn, titles[i]), "prediction": round(float(p), 4)}
            for row, i, p in zip(df[[t.user_col, item]].to_dict("records"), items, preds)]


def _codes(classes, values, col: str, where) -> list[int]:
    "The model's codes for `values` (matched as text); one line naming the first value the model does not know."
    lookup = {str(c): i for i, c in enumerate(classes) if i > 0}  # code 0 is fastai's #na#
    missing = [i for i, v in enumerate(values) if str(v) not in lookup]
    if not missing:
        return [lookup[str(v)] for v in values]
    value, examples = list(values)[missing[0]], _examples(classes)
    if where == "--user":
        raise FxpError(f"unknown user {value!r}: the model knows {len(lookup)} users ({examples}); "
                       f"give one of them with --user")
    raise FxpError(f"{where}: {col} {value!r} at line {missing[0] + 2} is not known to the model (it knows "
                   f"{len(lookup)}, {examples}); {len(missing)} of {len(values)} rows are unknown, remove them")
