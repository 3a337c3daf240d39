"""The folds of a k-fold cross-validation (`trainer.folds`): which fold each item is in, drawn once and recorded, and
the one point where a kind's split becomes a fold's (`splitter`).

A kind hands its items to `splitter(cfg, own, labels)` where it splits them: outside a fold run it gets its `own`
split back (valid_pct, valid_col, a folder split, ...); in a run that validates on fold i (`trainer.fold`) it gets a
fastai splitter whose valid items are those of fold i. The folds are drawn on the first call (`draw`, from
`trainer.seed`; stratified by `labels` where the kind gives them, grouped by `data.group_col`) and written to
`data.folds_file` (a cv folder's folds.json), which every later fold, a resume or a rerun reads instead. Items are
known by a stable key: a file's path under the data folder, a table's row index.

A kind that cannot be folded declares why in `NO_FOLDS` (fxp.dispatch), and `trainer.folds` is refused for it with the
config. Light imports at module level (numpy and scikit-learn inside the functions).
"""
from __future__ import annotations

import json
import warnings
from collections import Counter
from pathlib import Path

from fxp.errors import FxpError

FOLDS = "folds.json"  # a cv folder's record of the folds (fxp.cv)


def splitter(cfg, own, labels=None, key=None):
    """The split a kind uses: its `own` (a fastai splitter: items → train and valid indices), or in a run that
    validates on one fold (trainer.fold) a `FoldSplitter`. `labels(items)`: each item's class, or its list of tags
    (multi-label), which the folds are stratified by; None: plain folds (segmentation, regression, ...). `key(item)`:
    the item's name in the folds file, where a kind has a better one than `keys_of`'s (a listing's image file)."""
    return own if cfg.trainer.fold is None else FoldSplitter(cfg, labels, key)


class FoldSplitter:
    "A fastai splitter: trains on every fold but `trainer.fold`, validates on it (the folds as recorded, or drawn)."

    def __init__(self, cfg, labels=None, key=None):
        self.cfg, self.labels, self.key, self.folds = cfg, labels, key, None

    def __call__(self, items) -> tuple[list[int], list[int]]:
        keys = keys_of(items, self.cfg) if self.key is None else [str(self.key(o)) for o in rows(items)]
        if self.folds is None:
            self.folds = self.assigned(items, keys)
        check_same(keys, self.folds, self.cfg.data.folds_file)
        fold_of, i = [self.folds[k] for k in keys], self.cfg.trainer.fold
        return [j for j, f in enumerate(fold_of) if f != i], [j for j, f in enumerate(fold_of) if f == i]

    def assigned(self, items, keys: list[str]) -> dict:
        """The folds data.folds_file records; else drawn (and recorded there). One process draws at a time: the ranks
        of a run over several processes find the file the first one wrote."""
        file = self.cfg.data.folds_file
        if not file:
            return self.drawn(items, keys)
        from fxp.writer import locked

        with locked(Path(file).with_name(f".{Path(file).name}.lock")):
            return self.recorded() or self.drawn(items, keys)

    def recorded(self) -> dict | None:
        "The folds data.folds_file records, if it is there (its number of folds checked); else None."
        file, k = self.cfg.data.folds_file, self.cfg.trainer.folds
        if not Path(file).is_file():
            return None
        record = read(Path(file))
        if record["folds"] != k:
            raise FxpError(f"data.folds_file={file} records {record['folds']} folds, not trainer.folds={k}; give "
                           f"trainer.folds={record['folds']}, or another data.folds_file")
        return record["items"]

    def drawn(self, items, keys: list[str]) -> dict:
        "The folds drawn for these items, checked against trainer.bs, and written to data.folds_file if it is set."
        cfg = self.cfg
        labels = None if self.labels is None else list(self.labels(items))
        groups = group_values(items, cfg.data.group_col)
        folds = draw(keys, cfg.trainer.folds, cfg.trainer.seed, labels, groups)
        check_batches(folds, cfg.trainer.folds, cfg.trainer.bs)
        if cfg.data.folds_file:
            from fxp.writer import write_atomic

            record = dict(folds=cfg.trainer.folds, seed=cfg.trainer.seed, stratified=stratified_by(labels),
                          group_col=cfg.data.group_col, sizes=sizes(folds, cfg.trainer.folds), items=folds)
            write_atomic(Path(cfg.data.folds_file), json.dumps(record))
        return folds


def read(file: Path) -> dict:
    "A folds file: {folds, seed, stratified, group_col, sizes, items: {key: fold}}; one line if it is not one."
    try:
        record = json.loads(file.read_text())
        if isinstance(record.get("folds"), int) and isinstance(record.get("items"), dict):
            return record
    except (OSError, ValueError, AttributeError):
        pass
    raise FxpError(f"data.folds_file={file} is not a folds file fxp wrote (a cv folder's {FOLDS}); give one, or drop "
                   f"data.folds_file to draw the folds")


def keys_of(items, cfg) -> list[str]:
    "Each item's stable key: a table row's index, a file's path under the data folder, else the item itself."
    if hasattr(items, "iloc"):
        return [str(i) for i in items.index]
    items = list(items)
    if items and isinstance(items[0], Path):
        from fxp.data import data_path, file_key

        root = data_path(cfg)
        return [file_key(root, None, f) for f in items]
    return [str(o) for o in items]


def each(f):
    "`labels` from a function of one item (a DataBlock's get_y): f of each item."
    return lambda items: [f(o) for o in rows(items)]


def rows(items) -> list:
    "The items one by one: a table's rows, or the items of a list."
    return [items.iloc[i] for i in range(len(items))] if hasattr(items, "iloc") else list(items)


def check_same(keys: list[str], folds: dict, file) -> None:
    "The items are those the folds were drawn for; else one line (the data changed since, or another data set)."
    if len(keys) == len(folds) and all(k in folds for k in keys):
        return
    new = [k for k in keys if k not in folds]
    what = f"{len(new)} of them are not in it, e.g. {new[0]}" if new else f"{len(folds) - len(keys)} of its are gone"
    raise FxpError(f"the data has {len(keys)} items and the folds of {file or 'this run'} were drawn for {len(folds)} "
                   f"({what}): the data changed since; point data.path= at the data the folds were drawn on, or "
                   f"cross-validate anew")


def group_values(items, col: str | None) -> list | None:
    "Each item's value of the column data.group_col (None if not set); one line if the items have no such column."
    if col is None:
        return None
    if not hasattr(items, "columns"):
        raise FxpError(f"data.group_col={col}: this task's items are not rows of a table (they are "
                       f"{type(next(iter(items), None)).__name__ if len(items) else 'none'}), so they have no columns; "
                       f"group_col takes a column of a CSV listing")
    if col not in items.columns:
        raise FxpError(f"data.group_col={col} is not a column of the items; their columns are: "
                       f"{', '.join(map(str, items.columns))}")
    return [str(v) for v in items[col]]


# --- drawing the folds (a pure function of the items) -----------------------------------------------------------------


def draw(keys: list[str], k: int, seed: int, labels: list | None = None, groups: list | None = None) -> dict:
    """{key: fold} for `k` folds of the items `keys`, drawn from `seed`: stratified by `labels` (single-label: each
    class's count in a fold within one item of its share; multi-label, lists of tags: by each item's rarest tag), a
    `groups` value's items in one fold; plain folds without either. The items are ordered by key first, so the draw
    does not depend on the order the data lists them in. One line if the folds cannot hold the items."""
    import numpy as np
    from sklearn.model_selection import GroupKFold, KFold, StratifiedGroupKFold, StratifiedKFold

    check_enough(len(keys), k, "items", "")
    order = sorted(range(len(keys)), key=keys.__getitem__)
    strata = None if labels is None else stratum_of([labels[i] for i in order], k)
    group = None if groups is None else [groups[i] for i in order]
    if group is not None:
        check_enough(len(set(group)), k, "groups", " (data.group_col)")
    x = np.zeros(len(keys))
    if strata is None:
        how = KFold(k, shuffle=True, random_state=seed) if group is None else GroupKFold(k, shuffle=True,
                                                                                          random_state=seed)
    else:
        how = (StratifiedKFold if group is None else StratifiedGroupKFold)(k, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # a multi-label stratum smaller than k (its items spread as they can)
        warnings.filterwarnings("ignore", message=".*least populated class.*")
        splits = list(how.split(x, strata, group))
    fold = [0] * len(keys)
    for f, (_, valid) in enumerate(splits):
        for j in valid:
            fold[order[j]] = f
    return dict(zip(keys, fold))


def check_enough(n: int, k: int, what: str, key: str) -> None:
    if n < k:
        raise FxpError(f"trainer.folds={k}: the data has {n} {what}{key}, fewer than the folds; lower trainer.folds")


def is_multi(labels: list) -> bool:
    return any(isinstance(y, (list, tuple, set, frozenset)) for y in labels)


def stratum_of(labels: list, k: int) -> list[str]:
    """What the folds are stratified by: each item's class; for multi-label items, their rarest tag among the tags of at
    least k items (a tag of fewer cannot be in every fold). One line if a class has fewer items than the folds."""
    if not is_multi(labels):
        strata = [str(y) for y in labels]
        rare, n = min(Counter(strata).items(), key=lambda c: c[1])
        if n < k:
            fix = f"lower trainer.folds to {n}" if n > 1 else "remove its item or add more of the class"
            raise FxpError(f"trainer.folds={k}: class {rare!r} has {n} item{'s' * (n > 1)}, fewer than the folds "
                           f"(each fold validates on a share of every class); {fix}")
        return strata
    tags = [sorted(set(map(str, y))) for y in labels]
    counts = Counter(t for ts in tags for t in ts)
    return [min((t for t in ts if counts[t] >= k), key=lambda t: (counts[t], t), default="") for ts in tags]


def stratified_by(labels: list | None) -> str | None:
    "What folds.json says the folds are stratified by."
    return None if labels is None else "rarest tag" if is_multi(labels) else "class"


def sizes(folds: dict, k: int) -> list[int]:
    counts = Counter(folds.values())
    return [counts[f] for f in range(k)]


def check_batches(folds: dict, k: int, bs) -> None:
    """Every fold leaves a training batch (trainer.bs items) when it validates; else one line naming the fold. bs=auto:
    the size it settles on fits the training items (fxp.batchsize)."""
    if not isinstance(bs, int):
        return
    n = len(folds)
    small = [(f, n - size) for f, size in enumerate(sizes(folds, k)) if n - size < bs]
    if small:
        f, left = small[0]
        raise FxpError(f"trainer.folds={k}: fold {f} leaves {left} items to train on, fewer than a batch "
                       f"(trainer.bs={bs}); lower trainer.bs or trainer.folds")
