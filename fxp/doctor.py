"""The data doctor: what is wrong with a task's data before a first epoch is spent on it, read from the DataLoaders the
kind built (so every kind's items are found as its training sees them). Counts per split and class, unreadable files,
byte-identical files within a split and across train and valid, rare classes; by the kind's declared INPUT: image sizes
far from the rest, a table's leaking, constant and missing columns, empty and repeated texts, users and items seen only
in valid. An input it does not know gets the checks every kind shares.

Each finding names its items (the first few, and a count) and what to do. `cheap=True` is what `fxp train` runs before
epoch 1: no image is opened, only files of the same byte size are hashed.
"""
from __future__ import annotations

import hashlib
import os
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

MIN_PER_CLASS = 10  # fewer training items of a class than this: an error (fxp check --min-per-class)
SHOWN = 3  # items named in a finding's line; the rest are counted
ERROR, WARNING, INFO = "error", "warning", "info"
OUTLIER = 8.0  # an image whose area is this many times above or below the median's (or its aspect ratio half that)
RARE_SHARE = 0.05  # a class below this share of the training items is called out as unbalanced
RARE_RATIO = 10  # fxp train warns of a rare class only if the median class has this many times its items
LEAK = 0.99  # a column that alone scores this on valid (accuracy, or R²) leaks the target
MOSTLY_MISSING = 0.5


@dataclass
class Finding:
    "One thing wrong (or worth knowing) about the data: what, which items, how many, and what to do."
    level: str
    what: str
    items: list = field(default_factory=list)
    count: int = 0
    fix: str = ""

    def line(self) -> str:
        named = ", ".join(map(str, self.items[:SHOWN]))
        more = f" and {self.count - SHOWN} more" if self.count > SHOWN else ""
        return f"{self.what}" + (f": {named}{more}" if named else "") + (f"; {self.fix}" if self.fix else "")

    def as_dict(self) -> dict:
        return {**asdict(self), "items": [str(i) for i in self.items[:20]]}


def examine(dls, kind, min_per_class: int = MIN_PER_CLASS, cheap: bool = False, skip_bad: bool = False
            ) -> tuple[dict, list[Finding]]:
    """(counts, findings) of the data in `dls` (a kind's step's loaders); the kind's declared INPUT picks the checks
    beyond the shared ones. `skip_bad`: the run skips unreadable files (data.skip_bad), so they are no error."""
    from fxp.dispatch import declared

    counts = {"train": len(dls.train_ds), "valid": len(dls.valid_ds)}
    labels = {split: labels_of(ds, vocab_of(dls)) for split, ds in splits(dls).items()}
    files = {split: files_of(dls, ds) for split, ds in splits(dls).items()}
    findings = skipped(dls, skip_bad)
    if labels["train"] is not None:
        counts["classes"] = {split: dict(sorted(Counter(ys).items())) for split, ys in labels.items() if ys}
        findings += rare_classes(labels, files["train"], min_per_class, cheap)
    findings += files_checks(files, cheap)
    input_ = declared(kind, "INPUT")
    if input_ in BY_INPUT and not cheap:
        findings += BY_INPUT[input_](dls)
    return counts, findings


def splits(dls) -> dict:
    return {"train": dls.train_ds, "valid": dls.valid_ds}


def vocab_of(dls) -> list | None:
    "The class names of single-label targets (a text classifier's: the second of [words, classes])."
    vocab = getattr(dls, "vocab", None)
    if vocab is not None and len(vocab) == 2 and isinstance(vocab[0], list):
        vocab = vocab[1]
    return list(vocab) if vocab is not None and len(vocab) else None


def labels_of(ds, vocab) -> list | None:
    "A split's class names when its targets are single labels, read without opening an input; else None."
    if hasattr(ds, "tensors"):  # in-memory data
        codes = ds.tensors[-1].tolist()
    elif hasattr(ds, "tls") and len(ds.tls) > 1 and len(ds):
        if getattr(ds.tls[-1][0], "ndim", None) != 0:  # masks, points, several labels: not one class per item
            return None
        codes = [int(y) for y in ds.tls[-1]]
    else:
        return None
    if vocab is None or not all(isinstance(c, int) for c in codes):
        return None
    return [str(vocab[c]) for c in codes]


def skipped(dls, skip_bad: bool) -> list[Finding]:
    """Files the kind could not open (listed but absent, empty, truncated, not an image): skipped when data.skip_bad,
    else fatal."""
    bad = [Path(f) for f in getattr(dls, "skipped", [])]
    if not bad:
        return []
    groups = {"listed with no file": [f for f in bad if not f.exists()],
              "empty file(s) (0 bytes)": [f for f in bad if f.is_file() and f.stat().st_size == 0]}
    groups["unreadable or truncated file(s)"] = [f for f in bad if not any(f in g for g in groups.values())]
    fix = ("they are skipped (data.skip_bad=true); delete them (or their rows)" if skip_bad
           else "delete or replace them (or their rows), or set data.skip_bad=true")
    level = WARNING if skip_bad else ERROR
    return [Finding(level, f"{len(fs)} {what}", fs, len(fs), fix) for what, fs in groups.items() if fs]


def rare_classes(labels: dict, files: list, min_per_class: int, cheap: bool) -> list[Finding]:
    """Classes with fewer than `min_per_class` training items, named with their files (`files`: the training items',
    if they are files); a class far below the others' share (unbalanced)."""
    train = Counter(labels["train"])
    typical = sorted(train.values())[len(train) // 2]
    # cheap (fxp train): only a class far below the others, not a data set small all over (a quick try on a subset)
    rare = sorted((n, c) for c, n in train.items() if n < min_per_class and not (cheap and n * RARE_RATIO > typical))
    where = defaultdict(list)
    for label, f in zip(labels["train"], files):
        where[label].append(f)
    named = [f"'{c}' ({n}: {', '.join(map(str, where[c][:SHOWN]))})" if where[c] else f"'{c}' ({n})" for n, c in rare]
    out = [Finding(ERROR, f"{len(rare)} class(es) with fewer than {min_per_class} training items", named, len(rare),
                   "add items of them, merge or drop them (data.exclude=), or lower --min-per-class")] if rare else []
    total = sum(train.values())
    small = sorted((n, c) for c, n in train.items() if n / total < RARE_SHARE and n >= min_per_class)
    if small and not cheap:
        out.append(Finding(INFO, f"{len(small)} class(es) under {RARE_SHARE:.0%} of the training items",
                           [f"'{c}' ({n / total:.1%})" for n, c in small], len(small),
                           "it often still works; watch their per-class numbers, or weight or oversample them"))
    return out


def files_of(dls, ds) -> list[Path]:
    "The input files of a split's items, as the kind's getter finds them (none: the items are not files)."
    items = getattr(ds, "items", None)
    if items is None:  # in-memory inputs made from files (fxp.data.Windows) keep their files' names
        return [Path(f) for f in getattr(ds, "meta", {}).get("files", [])]
    if len(items) == 0:
        return []
    get_x = getattr(getattr(dls, "block", None), "get_x", None)
    rows = (items.iloc[i] for i in range(len(items))) if hasattr(items, "iloc") else iter(items)
    first = next(rows)
    if not _is_file(get_x(first) if get_x else first):
        return []
    rows = (items.iloc[i] for i in range(len(items))) if hasattr(items, "iloc") else iter(items)
    return [Path(get_x(r) if get_x else r) for r in rows]


def _is_file(x) -> bool:
    return isinstance(x, (str, Path)) and Path(x).is_file()


def files_checks(files: dict, cheap: bool) -> list[Finding]:
    "Byte-identical copies within a split and across train and valid of `files` (by split), (not cheap) odd sizes."
    if not any(files.values()):
        return []
    root = _root([f for fs in files.values() for f in fs])
    out = duplicates(files, root)
    if not cheap:
        out += size_outliers([f for fs in files.values() for f in fs], root)
    return out


def _root(files: list[Path]) -> Path:
    return Path(os.path.commonpath([str(f.parent) for f in files])) if files else Path(".")


def _rel(f: Path, root: Path) -> str:
    try:
        return str(f.relative_to(root))
    except ValueError:
        return str(f)


def duplicates(files: dict, root: Path) -> list[Finding]:
    "Byte-identical files (same size, then same BLAKE2 hash): across train and valid (a leak), within a split."
    by_size = defaultdict(list)
    for split, fs in files.items():
        for f in fs:
            by_size[f.stat().st_size].append((split, f))
    by_hash = defaultdict(list)
    for group in (g for g in by_size.values() if len(g) > 1):
        for split, f in group:
            by_hash[hashlib.blake2b(f.read_bytes(), digest_size=16).digest()].append((split, f))
    across, within = [], []
    for group in (g for g in by_hash.values() if len(g) > 1):
        splits_in = {s for s, _ in group}
        names = " = ".join(_rel(f, root) for _, f in group)
        (across if len(splits_in) > 1 else within).append(names)
    out = []
    if across:
        out.append(Finding(ERROR, f"{len(across)} file(s) in both train and valid (byte-identical), which inflates "
                                  f"the valid metrics (under {root})", across, len(across),
                           "delete the valid copies (or list them in a data.exclude= CSV)"))
    if within:
        out.append(Finding(WARNING, f"{len(within)} group(s) of byte-identical files within a split (under {root})",
                           within, len(within), "delete the extra copies: they count twice"))
    return out


def size_outliers(files: list[Path], root: Path) -> list[Finding]:
    """Images whose area or aspect ratio is far from the median's of their folder (read from their headers): a folder
    is one source (a class, the originals, a kind's generated images), compared with itself."""
    from PIL import Image

    folders = defaultdict(list)
    for f in files:
        try:
            with Image.open(f) as im:
                folders[f.parent].append((f, *im.size))
        except Exception:  # not an image (a sound, a text): no size to compare
            continue
    odd, medians = [], {}
    for folder, sizes in folders.items():
        far, medians[folder] = _far(sizes)
        odd += [f"{_rel(f, root)} ({w}x{h})" for f, w, h in far]
    if not odd:
        return []
    shown = ", ".join(f"{w}x{h}" for w, h in list(dict.fromkeys(medians.values()))[:3])
    return [Finding(WARNING, f"{len(odd)} image(s) far from their folder's median size ({shown})", odd, len(odd),
                    "look at them: a wrong file, a thumbnail or a panorama? (fxp clean after a first run lists them)")]


def _far(sizes: list) -> tuple[list, tuple]:
    "The (file, w, h) of `sizes` far from their median area or aspect ratio, and the median (w, h)."
    import numpy as np

    w, h = (int(np.median([s[i] for s in sizes])) for i in (1, 2))
    if len(sizes) < 3:
        return [], (w, h)
    area = np.array([sw * sh for _, sw, sh in sizes], dtype=float)
    aspect = np.array([sw / max(sh, 1) for _, sw, sh in sizes], dtype=float)
    far = (np.abs(np.log(area / np.median(area))) > np.log(OUTLIER)) | (
        np.abs(np.log(aspect / np.median(aspect))) > np.log(OUTLIER) / 2)
    return [s for s, bad in zip(sizes, far) if bad], (w, h)


def raw_rows(dls, ds):
    "A table split's rows as read, before the procs (a kind that keeps them as `raw_rows`), else its items."
    rows = getattr(dls, "raw_rows", None)
    return rows.loc[ds.items.index] if rows is not None else ds.items


def table_checks(dls) -> list[Finding]:
    "A table's target balance, leaking, constant and mostly missing columns."
    ds = dls.train_ds
    if not hasattr(ds, "y_names"):
        return []
    train, valid = raw_rows(dls, dls.train_ds), raw_rows(dls, dls.valid_ds)
    columns = [c for c in [*ds.cat_names, *ds.cont_names] if c in train.columns]
    target = ds.y_names[0]
    out = []
    constant = [c for c in columns if train[c].nunique(dropna=False) <= 1]
    if constant:
        out.append(Finding(WARNING, f"{len(constant)} constant column(s) in train", constant, len(constant),
                           "drop them from the task's columns: they cannot help"))
    missing = {c: train[c].isna().mean() for c in columns if train[c].isna().any()}
    if missing:
        level = WARNING if max(missing.values()) > MOSTLY_MISSING else INFO
        shares = [f"{c} ({s:.0%})" for c, s in sorted(missing.items(), key=lambda kv: -kv[1])]
        out.append(Finding(level, f"{len(missing)} column(s) with missing values", shares, len(shares),
                           "FillMissing fills them and adds a _na column; drop a column that is mostly missing"))
    categorical = not _numeric(train[target])
    if categorical:
        out += balance(train[target], target)
    leaks = [c for c in columns if c != target and leak_score(train, valid, c, target, categorical) >= LEAK]
    if leaks:
        out.append(Finding(ERROR, f"{len(leaks)} column(s) that alone predict '{target}' on valid", leaks, len(leaks),
                           "is it known before the target is? if not, drop it from the task's columns"))
    return out


def _numeric(col) -> bool:
    import pandas as pd

    return pd.api.types.is_numeric_dtype(col) and col.nunique() > 20


def balance(y, target: str) -> list[Finding]:
    shares = y.value_counts(normalize=True)
    if shares.min() >= RARE_SHARE:
        return []
    small = [f"{v} ({s:.1%})" for v, s in shares.items() if s < RARE_SHARE]
    return [Finding(WARNING, f"'{target}' is unbalanced: {len(small)} value(s) under {RARE_SHARE:.0%} of train", small,
                    len(small), "use a stratified split, and metrics that see the rare values (F1, balanced accuracy)")]


def leak_score(train, valid, col: str, target: str, categorical: bool) -> float:
    """How well `col` alone predicts the target on valid: each value's (a number's quantile bin's) majority or mean in
    train; accuracy, or R² for a numeric target. A value valid has that train lacks gets the overall answer."""
    import numpy as np
    import pandas as pd

    x_train, x_valid = train[col], valid[col]
    if _numeric(x_train):
        edges = np.unique(np.nanquantile(x_train.astype(float), np.linspace(0, 1, 21)))
        x_train, x_valid = (pd.Series(np.digitize(x.astype(float), edges), index=x.index) for x in (x_train, x_valid))
    y_train, y_valid = train[target], valid[target]
    if categorical:
        table = y_train.groupby(x_train.astype(str)).agg(lambda s: s.mode().iat[0])
        guess = x_valid.astype(str).map(table).fillna(y_train.mode().iat[0])
        return float((guess.astype(str) == y_valid.astype(str)).mean()) if len(y_valid) else 0.0
    table = y_train.groupby(x_train.astype(str)).mean()
    guess = x_valid.astype(str).map(table).fillna(y_train.mean())
    total = float(((y_valid - y_valid.mean()) ** 2).sum())
    return 1 - float(((y_valid - guess) ** 2).sum()) / total if total else 0.0


def pairs_checks(dls) -> list[Finding]:
    "Users and items of valid that train never saw: the model knows nothing of them (cold start)."
    ds = dls.train_ds
    names = list(getattr(ds, "cat_names", []))[:2]
    if len(names) < 2:
        return []
    train, valid = raw_rows(dls, dls.train_ds), raw_rows(dls, dls.valid_ds)
    out = []
    for col, what in zip(names, ("users", "items")):
        unseen = sorted(set(valid[col]) - set(train[col]), key=str)
        if unseen:
            rows = int(valid[col].isin(unseen).sum())
            out.append(Finding(WARNING, f"{len(unseen)} {what} ({col}) only in valid ({rows} of {len(valid)} valid "
                                        f"rows): the model has no embedding for them", unseen, len(unseen),
                               "split by time or per user so each has training rows, or expect their error to be "
                               "the biases' alone"))
    return out


def text_checks(dls) -> list[Finding]:
    "Empty documents, and documents that are in both train and valid (byte for byte, after trimming)."
    docs = {split: texts_of(dls, ds) for split, ds in splits(dls).items()}
    if not any(docs.values()):
        return []
    out = []
    empty = [f"{split} #{i}" for split, ts in docs.items() for i, t in enumerate(ts) if not t.strip()]
    if empty:
        out.append(Finding(WARNING, f"{len(empty)} empty document(s)", empty, len(empty), "drop them"))
    train = {hashlib.blake2b(t.strip().encode(), digest_size=16).digest() for t in docs["train"] if t.strip()}
    shared = [f"valid #{i}: {t.strip()[:40]!r}" for i, t in enumerate(docs["valid"])
              if t.strip() and hashlib.blake2b(t.strip().encode(), digest_size=16).digest() in train]
    if shared:
        out.append(Finding(ERROR, f"{len(shared)} valid document(s) also in train", shared, len(shared),
                           "drop the valid copies: they inflate the valid metrics"))
    return out


def texts_of(dls, ds) -> list[str]:
    "A split's documents (a DataFrame's text column through the kind's getter; tokens joined), or none if not text."
    items = getattr(ds, "items", None)
    get_x = getattr(getattr(dls, "block", None), "get_x", None)
    if items is None or get_x is None or not hasattr(items, "iloc") or not len(items):
        return []
    column = getattr(get_x, "cols", None)
    if column is not None and len(column) == 1 and column[0] in items.columns:
        return [v if isinstance(v, str) else " ".join(map(str, v)) for v in items[column[0]]
                if isinstance(v, str) or _tokens(v)]
    return []


def _tokens(v) -> bool:
    return hasattr(v, "__len__") and not hasattr(v, "shape") and all(isinstance(t, str) for t in list(v)[:5])


BY_INPUT = {"table": table_checks, "pairs": pairs_checks, "text": text_checks}
