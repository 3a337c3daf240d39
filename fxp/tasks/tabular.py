"""Tabular data from a CSV: classification (lesson 4 / fastbook ch. 1: adult) and regression (lesson 6: rossmann).

fastai's own pieces throughout: the CSV is read as `TabularDataLoaders.from_csv` reads it (`skipinitialspace`),
`add_datepart` expands each of `task.date_names`, `cont_cat_split` names the columns the config leaves null, procs
are fastai's by name, and `TabularPandas` + `tabular_learner` build the rest. With `trainer.seed` equal to
`task.split_seed` the random split is the one fastai's `RandomSplitter()` draws after `set_seed`, so a fastbook
recipe run through fxp trains exactly as the notebook does. `log_target` trains on log(y) (rossmann); `y_range: auto`
is lesson 6's [0, log(1.2 * max y)] over the CSV's rows. The learner's layers and `config` (`tabular_config`: ps,
embed_p, ...) are the model group's `kwargs`, the y_range the task's.
Module top stays light (the schema is read before anything heavy); fastai is imported where it is used.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, List, Optional

from fxp.checks import check_model
from fxp.errors import ConfigError, FxpError
from fxp.schema import Split, TaskBase, valid
from fxp.tasks import moved

__getattr__ = moved(__name__, {"exp_rmspe": "fxp.metrics"})  # old runs' config.yaml name it here

Y_BLOCKS = ("category", "regression")
PROCS = ("Categorify", "FillMissing", "Normalize")  # fastai's TabularProcs that task.procs names
INPUT = "table"
Y_RANGE_HEADROOM = 1.2  # lesson 6: the sigmoid must reach the largest target, so the range ends a little above it
SHOWN_ROWS = 10  # fxp predict prints this many rows of each CSV; the file it writes has them all
IMPORTANCE_BS = 1024  # permutation importance batches: a fastai tabular batch has a fixed cost, so few large ones


@dataclass
class Task(Split, TaskBase):  # Split: the random split when there is no valid_col or valid_rows
    kind: str = "tabular"
    csv: str = "train.csv"  # relative to data.path (or absolute)
    y_names: Optional[str] = None  # the target column
    y_block: str = field(default="category", metadata=valid(choices=Y_BLOCKS))  # classification or regression
    cat_names: Optional[List[str]] = None  # null: the columns cont_cat_split calls categorical
    cont_names: Optional[List[str]] = None  # null: the columns cont_cat_split calls continuous
    # cont_cat_split: an integer column with more distinct values than this is continuous
    max_card: int = field(default=20, metadata=valid("[0, inf)"))
    procs: List[str] = field(default_factory=lambda: list(PROCS), metadata=valid(choices=PROCS))
    date_names: List[str] = field(default_factory=list)  # add_datepart on each (Year, Month, ..., Elapsed)
    valid_col: Optional[str] = None  # boolean column marking valid rows
    # [start, end): rows start..end-1 validate (lesson 4: [800, 1000])
    valid_rows: Optional[List[int]] = field(default=None, metadata=valid("[0, inf)", items=2, scalar=False,
                                                                                whole=True))
    log_target: bool = False  # regression: train on log(y); fxp predict returns exp of the output
    y_range: Any = None  # regression: [lo, hi] (log space with log_target), auto (lesson 6), or null


def check(cfg) -> None:
    "Rules across keys, checked before any heavy import (each key's own values: the schema's `valid`)."
    task = cfg.task
    if not task.y_names:
        raise ConfigError("task.y_names is not set: name the target column of the CSV (e.g. task.y_names=salary)")
    _check_names(task)
    _check_split(task)
    _check_target(task)
    check_model(cfg, (), "model=tabular or tabular_rossmann")


def _check_names(task) -> None:
    cat, cont = list(task.cat_names or []), list(task.cont_names or [])
    both = [c for c in cat if c in cont]
    if both:
        raise ConfigError(f"column {both[0]!r} is in both task.cat_names and task.cont_names; "
                          f"keep it in one (categorical: an embedding; continuous: a normalised number)")
    for key, names in (("task.cat_names", cat), ("task.cont_names", cont), ("task.date_names", task.date_names)):
        if task.y_names in names:
            raise ConfigError(f"{key} lists the target {task.y_names!r} (task.y_names); remove it from {key}")


def _check_split(task) -> None:
    rows = task.valid_rows
    if rows is not None and rows[0] >= rows[1]:
        raise ConfigError(f"task.valid_rows={list(rows)} must be [start, end) with start < end, or null")
    if rows is not None and task.valid_col:
        raise ConfigError("task.valid_rows and task.valid_col both choose the valid rows; set one to null")


def _check_target(task) -> None:
    regression = task.y_block == "regression"
    if task.log_target and not regression:
        raise ConfigError("task.log_target=true needs task.y_block=regression (a numeric target)")
    yr = task.y_range
    if yr is not None and not regression:
        raise ConfigError("task.y_range is for task.y_block=regression; set task.y_range=null")
    if yr is not None and yr != "auto" and not (_is_pair(yr) and yr[0] < yr[1]):
        raise ConfigError(f"task.y_range={yr!r} must be [lo, hi] with lo < hi, auto (lesson 6: [0, max * "
                          f"{Y_RANGE_HEADROOM}], in log space with log_target), or null")


def _is_pair(x) -> bool:
    return not isinstance(x, str) and hasattr(x, "__len__") and len(x) == 2 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in x)


# --- data -----------------------------------------------------------------------------------------------------


def dls(cfg, device):
    "TabularDataLoaders from the CSV: date parts added, column kinds checked, procs set up on the training rows."
    import fastai.tabular.core as tab
    import fastai.tabular.data  # noqa: F401  (makes TabularDataLoaders, whose test_dl processes new rows, the type)
    from fastai.data.block import CategoryBlock, RegressionBlock

    from fxp.data import data_path, quiet_readonly_arrays, workers
    from fxp.tables import TableDL

    quiet_readonly_arrays()
    t, tr = cfg.task, cfg.trainer
    path = data_path(cfg) / t.csv
    df = with_date_parts(read_rows(path), t.date_names, path)
    cat, cont = column_names(t, df, path)
    df = _target(t, df, path)
    y_block = CategoryBlock() if t.y_block == "category" else RegressionBlock()
    to = tab.TabularPandas(df, [getattr(tab, p) for p in t.procs], cat, cont, y_names=t.y_names, y_block=y_block,
                           splits=_splits(cfg, df, path))
    out = to.dataloaders(bs=tr.bs, num_workers=workers(tr, device, files=False), device=device, path=path.parent,
                         dl_type=TableDL)
    out.raw_rows = df  # the rows before the procs, for a saved learner's own procs (fxp.saved)
    return out


def read_rows(path: Path, key: str | None = "task.csv"):
    """The CSV as fastai's TabularDataLoaders.from_csv reads it (spaces after commas skipped): `key`'s file, or (None)
    an input given on the command line."""
    from fxp.data import read_table

    return read_table(path, key, skipinitialspace=True)


def with_date_parts(df, date_names, path: Path):
    "fastai's add_datepart on each date column (the column becomes Year, Month, Week, Day, ..., Elapsed)."
    import pandas as pd
    from fastai.tabular.core import add_datepart

    from fxp.data import need_cols

    need_cols(df, path.name, {"task.date_names": date_names})
    for name in date_names:
        if pd.api.types.is_numeric_dtype(df[name]):
            raise FxpError(f"task.date_names: column {name!r} of {path.name} holds numbers, not dates "
                           f"(e.g. {df[name].iloc[0]!r}); give dates like 2015-07-31")
        try:
            df = add_datepart(df, name)
        except (ValueError, TypeError) as e:
            raise FxpError(f"task.date_names: column {name!r} of {path.name} is not a date ({type(e).__name__}: "
                           f"{str(e).splitlines()[0]})") from None
    return df


def column_names(t, df, path: Path) -> tuple[list, list]:
    "The categorical and continuous columns: as configured, or as cont_cat_split sorts the rest (null lists)."
    from fastai.tabular.core import cont_cat_split

    from fxp.data import need_cols

    source = path.name + (" with the date parts of task.date_names" if t.date_names else "")
    need_cols(df, source, {"task.y_names": t.y_names, "task.valid_col": t.valid_col, "task.cat_names": t.cat_names,
                           "task.cont_names": t.cont_names})
    given = [*(t.cat_names or []), *(t.cont_names or []), t.valid_col]
    inferred_cont, inferred_cat = cont_cat_split(df.drop(columns=[c for c in given if c]), t.max_card,
                                                 dep_var=t.y_names)
    cat = inferred_cat if t.cat_names is None else list(t.cat_names)
    cont = inferred_cont if t.cont_names is None else list(t.cont_names)
    _check_numeric(df, cont, path, "list it in task.cat_names instead")
    return cat, cont


def _check_numeric(df, cont, path: Path, fix: str) -> None:
    "Continuous columns must hold numbers (a text column is categorical); else one line ending in `fix`."
    import pandas as pd

    for c in cont:
        if not pd.api.types.is_numeric_dtype(df[c]) or pd.api.types.is_bool_dtype(df[c]):
            example = df[c].dropna().iloc[0] if df[c].notna().any() else "empty"
            raise FxpError(f"task.cont_names: column {c!r} of {path.name} is not numeric (e.g. {example!r}); {fix}")


def _target(t, df, path: Path):
    "The target checked for its block: two classes or more; numbers (as float32, logged with `log_target`)."
    import numpy as np
    import pandas as pd

    y = df[t.y_names]
    if y.isna().any():
        i = int(y.isna().to_numpy().nonzero()[0][0])
        raise FxpError(f"{path.name}: {int(y.isna().sum())} rows have no {t.y_names!r} (task.y_names), first at "
                       f"line {i + 2}; fill or drop them")
    if t.y_block == "category":
        if y.nunique() < 2:
            raise FxpError(f"task.y_names={t.y_names!r} has a single class ({y.iloc[0]!r}) in {path.name}; "
                           f"a classifier needs two or more")
        return df
    if not pd.api.types.is_numeric_dtype(y) or pd.api.types.is_bool_dtype(y):
        raise FxpError(f"task.y_names={t.y_names!r} of {path.name} is not numeric (e.g. {y.iloc[0]!r}); "
                       f"task.y_block=regression needs numbers (task.y_block=category classifies it)")
    y = y.astype("float32")
    if t.log_target and (y <= 0).any():
        raise FxpError(f"task.log_target=true needs positive targets, but {path.name} has {int((y <= 0).sum())} "
                       f"rows with {t.y_names} <= 0 (lesson 6 drops them: closed stores sell nothing); "
                       f"drop those rows or set task.log_target=false")
    return df.assign(**{t.y_names: np.log(y) if t.log_target else y})


def _splits(cfg, df, path: Path) -> tuple[list, list]:
    "Train and valid row indices: a boolean column, a row range, a seeded random split, or a cross-validation's fold."
    from fxp import folds

    t = cfg.task
    classes = (lambda df: df[t.y_names]) if t.y_block == "category" else None  # the folds stratified by class
    train, valid = folds.splitter(cfg, partial(_own_split, t=t, path=path), labels=classes)(df)
    for name, idx in (("train", train), ("valid", valid)):
        if len(idx) == 0:
            raise FxpError(f"the {name} split of {path.name} is empty ({len(df)} rows); check task.valid_pct, "
                           f"task.valid_rows or task.valid_col")
    return list(train), list(valid)


def _own_split(df, t, path: Path):
    "The task's own split of the rows: task.valid_col, task.valid_rows or task.valid_pct."
    from fastai.data.transforms import IndexSplitter

    from fxp.data import splitter

    if t.valid_col and not df[t.valid_col].isin([True, False]).all():
        raise FxpError(f"task.valid_col={t.valid_col!r} of {path.name} must hold True/False in every row")
    if t.valid_rows is not None and not t.valid_col:
        start, end = t.valid_rows
        if end > len(df):
            raise FxpError(f"task.valid_rows=[{start}, {end}] goes past the {len(df)} rows of {path.name}")
        return IndexSplitter(list(range(start, end)))(df)
    return splitter(t, t.valid_col)(df)


# --- learner --------------------------------------------------------------------------------------------------


def factories(cfg) -> list:
    from fastai.tabular.learner import tabular_learner

    return [tabular_learner]


def learner(cfg, dls):
    "fastai's tabular_learner: layers and `config` (tabular_config: ps, embed_p, ...) from model.kwargs."
    from fastai.tabular.learner import tabular_learner
    from fastai.tabular.model import tabular_config
    from omegaconf import OmegaConf

    from fxp.metrics import metrics

    kwargs = OmegaConf.to_container(cfg.model.kwargs)
    config = kwargs.pop("config", None)
    if "y_range" in (config or {}):
        raise FxpError("model.kwargs.config sets y_range: it belongs to the task (task.y_range=[lo,hi] or auto)")
    return tabular_learner(dls, config=None if config is None else tabular_config(**config),
                           y_range=_y_range(cfg.task, dls), metrics=metrics(cfg.task.metrics), **kwargs)


def _y_range(t, dls):
    "The task's [lo, hi]; for `auto`, lesson 6's [0, 1.2 * the largest target] (log of it with log_target)."
    import math

    if t.y_range is None:
        return None
    if t.y_range != "auto":
        return tuple(t.y_range)
    top = max(float(dls.train_ds.y.max()), float(dls.valid_ds.y.max()))  # the whole CSV, as the lesson
    return (0.0, top + math.log(Y_RANGE_HEADROOM) if t.log_target else top * Y_RANGE_HEADROOM)


# --- plots, predict -------------------------------------------------------------------------------------------


def evaluate(learn, cfg) -> dict:
    """Permutation importance on the valid set: how much worse the monitored metric gets when one column's values
    are shuffled (a FillMissing `_na` column moves with its column), one pass each; most important first."""
    importance = permutation_importance(learn, cfg.task.monitor, cfg.trainer.seed)
    names = sorted(importance, key=importance.get, reverse=True)
    return {"feature_importance": {n: round(importance[n], 6) for n in names},
            "cat_names": list(_inputs(learn.dls.train_ds)[0]), "cont_names": list(learn.dls.cont_names)}


def baseline(learn, cfg) -> dict:
    """Always the majority training label (a category target) or the training mean of each target (a continuous
    one, in the space the model predicts: the log where task.log_target), scored with the run's metrics on the
    valid split."""
    import torch

    from fxp.baselines import majority, score

    train_y, valid_y = (torch.as_tensor(ds.ys.to_numpy()) for ds in (learn.dls.train_ds, learn.dls.valid_ds))
    if cfg.task.y_block == "category":
        return majority(learn, train_y, valid_y, learn.dls.vocab)
    mean = train_y.float().mean(0)
    return score(learn, [(mean.expand(len(valid_y), -1).clone(), valid_y.float())], "the training mean")


def plots(learn, cfg, dest: Path, evaluation: dict) -> None:
    "The permutation importance as bars, the most important on top."
    from fxp.plots import plt, save

    importance = evaluation["feature_importance"]
    names = list(reversed(importance))
    fig, ax = plt.subplots(figsize=(6, 0.3 * len(names) + 1.5))
    ax.barh(names, [importance[n] for n in names])
    ax.set(xlabel=f"how much worse {_metric_name(learn, cfg.task.monitor)} gets with the column shuffled (valid set)",
           title="permutation feature importance")
    save(fig, dest / "feature_importance.png")


def explain(learn, cfg, inputs: list[str], dest: Path) -> list[dict]:
    """The permutation importance of each input column on the labelled validation rows (`evaluate`'s), as a bar chart
    (feature_importance.png) and rows, the most important first."""
    if inputs:
        raise FxpError(f"fxp explain: a tabular run is explained by permutation importance on labelled rows, not on "
                       f"{inputs[0]}: its validation rows, or another labelled CSV with data.path=DIR task.csv=FILE")
    evaluation = evaluate(learn, cfg)
    plots(learn, cfg, dest, evaluation)
    metric = _metric_name(learn, cfg.task.monitor)
    return [{"column": c, f"{metric} worse by": v} for c, v in evaluation["feature_importance"].items()]


def _metric_name(learn, monitor) -> str:
    names = ["valid_loss", *(m.name for m in learn.metrics)]
    return monitor.metric if monitor.metric in names else "valid_loss"


def permutation_importance(learn, monitor, seed: int) -> dict:
    "{column: metric change when its valid values are permuted}, positive when the model relies on the column."
    import numpy as np

    names = ["valid_loss", *(m.name for m in learn.metrics)]
    at = names.index(_metric_name(learn, monitor))
    sign = -1 if monitor.mode == "max" and at > 0 else 1
    to, rng = learn.dls.valid.dataset, np.random.default_rng(seed)
    base = _validate(learn, to)[at]
    out = {}
    for col, cols in _feature_columns(to).items():
        df = to.items.copy()
        df[cols] = df[cols].to_numpy()[rng.permutation(len(df))]
        out[col] = sign * (_validate(learn, to.new(df))[at] - base)
    return out


def _validate(learn, to) -> list:
    "Loss and metrics on processed rows `to`, in large batches (each fastai tabular batch has a fixed cost)."
    return [float(v) for v in learn.validate(dl=learn.dls.valid.new(to, bs=IMPORTANCE_BS))]


def _fill_values(to) -> dict:
    "FillMissing's {continuous column: fill value}, learnt from the training rows that missed a value."
    from fastai.tabular.core import FillMissing

    fill = next((p for p in to.procs if isinstance(p, FillMissing)), None)
    return dict(fill.na_dict) if fill is not None else {}


def _filled(to) -> list:
    "Columns FillMissing added (`<column>_na`), which are not in the input rows."
    return [f"{c}_na" for c in _fill_values(to) if f"{c}_na" in to.cat_names]


def _inputs(to) -> tuple[list, list]:
    "The categorical and continuous columns an input row must have."
    added = set(_filled(to))
    return [c for c in to.cat_names if c not in added], list(to.cont_names)


def _feature_columns(to) -> dict:
    "Each input column with the columns shuffled together with it (itself and its `_na` flag)."
    cat, cont = _inputs(to)
    added = set(_filled(to))
    return {c: [c] + ([f"{c}_na"] if f"{c}_na" in added else []) for c in [*cat, *cont]}


def predict(learn, cfg, inputs: list[str], out: Path = Path("predictions")) -> list[dict]:
    """Predict each row of each CSV; write the rows with the prediction (and probability for classification)
    beside them to `out`/<name>_predictions.csv, never overwriting a file. Returns the first rows of each."""
    from fxp.writer import write_atomic

    rows = []
    for name in inputs:
        path = Path(name)
        df = read_rows(path, key=None)
        preds = _predictions(learn, cfg.task, df, path)
        dest = _free_name(Path(out).resolve(), f"{path.stem}_predictions.csv")
        write_atomic(dest, preds.to_csv(index=False))
        print(f"wrote {len(preds)} predictions to {dest}", file=sys.stderr)
        added = list(preds.columns[len(df.columns):])
        rows += [{"input": str(path), "row": i + 1, **r}
                 for i, r in enumerate(preds[added].head(SHOWN_ROWS).to_dict("records"))]
    return rows


def unknown_categories(to, rows, cat: list) -> list[str]:
    """A line per categorical column with values the model never saw (Categorify reads them as #na#): the values, the
    closest known one of each (difflib) and the known values."""
    from fastai.tabular.core import Categorify

    cats = next((p for p in to.procs if isinstance(p, Categorify)), None)
    lines = []
    for c in cat if cats is not None else []:
        new = [v for v in dict.fromkeys(rows[c].dropna()) if v not in cats.classes[c].o2i]
        if new:
            lines.append(_unknown_line(c, new, [str(v) for v in cats.classes[c] if str(v) != "#na#"]))
    return lines


def _unknown_line(col: str, new: list, known: list[str]) -> str:
    import difflib

    def closest(v) -> str:
        match = difflib.get_close_matches(str(v), known, 1, 0.5)
        return f"{v!r} (closest: {match[0]!r})" if match else repr(v)

    more = " ..." if len(new) > 5 else ""
    return (f"column {col!r}: {', '.join(map(closest, new[:5]))}{more} never seen in training, read as missing "
            f"(#na#); its values: {', '.join(known[:30])}{' ...' if len(known) > 30 else ''}")


class _Copies:
    "A TabularPandas whose cats, conts and targ are writable copies (pandas' copy-on-write arrays are read-only)."

    def __init__(self, to):
        self.to = to

    def __getattr__(self, name):
        value = getattr(self.to, name)
        return value.to_numpy(copy=True) if name in ("cats", "conts", "targ") else value


def writable(dl):
    """`dl` with fastai's ReadTabBatch reading writable copies of the processed rows: torch warns ("The given NumPy
    array is not writable") when a tensor wraps pandas' read-only arrays."""
    from fastai.tabular.core import ReadTabBatch

    class ReadCopies(ReadTabBatch):
        def encodes(self, to):
            return super().encodes(_Copies(to))

    fs = dl.after_batch.fs
    for i, f in enumerate(fs):
        if isinstance(f, ReadTabBatch):
            fs[i] = ReadCopies(dl.dataset)
    return dl


def _predictions(learn, t, df, path: Path):
    "`df` with `<y>_pred` (and `probability`) columns added, from the exported learner's test_dl."
    import numpy as np

    to = learn.dls.train_ds
    rows = with_date_parts(df.copy(), t.date_names, path)
    cat, cont = _inputs(to)
    missing = [c for c in [*cat, *cont] if c not in rows.columns]
    if missing:
        raise FxpError(f"{path.name} lacks the model's input columns: {', '.join(missing)}; its columns are: "
                       f"{', '.join(map(str, df.columns))}")
    _check_numeric(rows, cont, path, "the model reads it as a number: give numbers or leave cells empty")
    unfilled = [c for c in cont if rows[c].isna().any() and c not in _fill_values(to)]
    if unfilled:
        raise FxpError(f"{path.name}: column {unfilled[0]!r} has empty values, which the training rows never had "
                       f"(FillMissing learnt no fill value for it); fill them")
    for line in unknown_categories(to, rows, cat):
        print(f"fxp: warning: {path.name}: {line}", file=sys.stderr)
    probs, _ = learn.get_preds(dl=writable(learn.dls.test_dl(rows[[*cat, *cont]])))
    if t.y_block == "category":
        vocab = learn.dls.vocab
        return df.assign(**{f"{t.y_names}_pred": [str(vocab[i]) for i in probs.argmax(1).tolist()],
                            "probability": probs.max(1).values.double().numpy().round(4)})
    values = probs.view(len(df)).double().numpy()
    return df.assign(**{f"{t.y_names}_pred": (np.exp(values) if t.log_target else values).round(6)})


def _free_name(folder: Path, name: str) -> Path:
    "`folder/name`, or with -1, -2, ... before the suffix when that file exists."
    folder.mkdir(parents=True, exist_ok=True)
    dest, i = folder / name, 0
    while dest.exists():
        i += 1
        dest = folder / f"{Path(name).stem}-{i}.csv"
    return dest
