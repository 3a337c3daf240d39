"Where a task's data comes from, checks on it, and a fast DataLoader for data that fits in memory."
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from fastai.data.core import DataLoaders
from fastai.data.load import DataLoader
from fastai.data.transforms import ColReader, ColSplitter, RandomSplitter, get_image_files, image_extensions
from fastai.torch_core import to_device
from fastcore.parallel import parallel

from fxp.errors import FxpError


def data_path(cfg) -> Path:
    "The task's data folder: `data.path` if given, else fastai's cached download of `URLs.<task.url>`."
    if cfg.data.path:  # its existence is checked with the config (fxp.config.validate)
        return Path(cfg.data.path).expanduser().resolve()
    if cfg.task.url:
        return _download(cfg.task.url)
    raise FxpError("this task has no data: set data.path=DIR (a local copy) or task.url=NAME (a fastai URLs name)")


def _download(name: str) -> Path:
    from fastai.data.external import URLs, untar_data

    url = getattr(URLs, name, None)
    if not isinstance(url, str):
        raise FxpError(f"task.url={name} is not a fastai URLs name (e.g. PETS, MNIST_TINY, PLANET_SAMPLE)")
    try:
        return untar_data(url)
    except Exception as e:  # any network or archive failure means the same thing to the user
        raise FxpError(f"could not download URLs.{name} ({url}): {type(e).__name__}: {e}; without network, "
                       f"point data.path= at a local copy of the dataset") from e


def read_table(path: Path, key: str | None, cols: dict | None = None, names=None, sep_key: str | None = None,
               encoding_key: str | None = None, **opts) -> pd.DataFrame:
    """The delimited file at `path` (pandas `opts`: sep, encoding, ...; `names`: the first columns of a file without a
    header) with the columns `cols` names (see `need_cols`). Anything wrong is one line: what, the file and the key to
    set: `key` names the file (None: an input given on the command line), `sep_key`/`encoding_key` its options."""
    need_file(path, key)
    if names:
        opts.update(header=None, names=list(names), usecols=range(len(names)))
    try:
        # consolidated (pandas 3 reads a block per column, so a kind adding columns hears "highly fragmented")
        df = pd.read_csv(path, **opts).copy()
    except pd.errors.EmptyDataError:
        df = pd.DataFrame()
    except UnicodeDecodeError:
        enc = opts.get("encoding", "utf-8")
        raise FxpError(f"{path} is not {enc} text; " + (f"set {encoding_key}= (e.g. latin-1)" if encoding_key
                                                        else f"save it as {enc}")) from None
    except (pd.errors.ParserError, ValueError) as e:
        raise FxpError(f"cannot read {path} ({type(e).__name__}: {str(e).strip().splitlines()[0]}); check its "
                       f"separator" + (f" ({sep_key}=)" if sep_key else "") + (" and column names" if names else "")
                       ) from None
    if df.empty:
        raise FxpError(f"{path} has no rows" + (f"; fill it or set {key}=" if key else ""))
    need_cols(df, path.name, cols or {}, sep_key)
    return df


def need_file(path: Path, key: str | None) -> None:
    "`path` is a file; else one line: the config `key` that names it (None: an input given on the command line)."
    if not path.is_file():
        raise FxpError(f"file not found: {path}; set {key}= (relative to data.path) or data.path=" if key
                       else f"input not found: {path}")


def need_cols(df, source: str, cols: dict, sep_key: str | None = None) -> None:
    """Each column `cols` names ({config key: a column by name or position, a list of them, or None}) is one of
    `df`'s (read from `source`); else one line naming the key and the columns there are."""
    for key, col in _each_col(cols):
        n = len(df.columns)
        if not (-n <= col < n if isinstance(col, int) else col in df.columns):
            hint = f" (one column only: check the separator{f', {sep_key}=' if sep_key else ''})" if n == 1 else ""
            raise FxpError(f"{key}{col!r} is not a column of {source}; its columns are: "
                           f"{', '.join(map(str, df.columns))}{hint}")


def _each_col(cols: dict):
    "(`key=` or, in a list, `key: `; a column) for each column `cols` names."
    for key, col in cols.items():
        if isinstance(col, (str, int)):
            yield f"{key}=", col
        elif col is not None:
            yield from ((f"{key}: ", c) for c in col)


def col_name(df, col) -> str:
    "A column given by name or position → its name."
    return df.columns[col] if isinstance(col, int) else col


def splitter(t, valid_col: str | None = None):
    "fastai's ColSplitter on `valid_col` when given, else RandomSplitter(task.valid_pct, seed=task.split_seed)."
    return ColSplitter(valid_col) if valid_col else RandomSplitter(t.valid_pct, seed=t.split_seed)


def image_files(folder: Path) -> list[Path]:
    files = get_image_files(folder)
    if not files:
        raise FxpError(f"no image files under {folder}; check data.path= and the task's folder settings")
    return list(files)


def check_images(files: list[Path], skip_bad: bool) -> tuple[list[Path], list[str]]:
    "Open each image once; return the readable ones and the names of bad ones (an error unless `skip_bad`)."
    from fastai.vision.utils import verify_image  # here: tabular and collab runs never load the vision stack

    ok = parallel(verify_image, files, n_workers=0 if len(files) < 5000 else None)
    bad = [str(f) for f, good in zip(files, ok) if not good]
    if bad and not skip_bad:
        more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
        raise FxpError(f"unreadable or corrupt image: {bad[0]}{more}; remove it or set data.skip_bad=true")
    return [f for f, good in zip(files, ok) if good], bad


def input_images(inputs: list[str], listing: str | None = None) -> list[Path]:
    """The images to predict on: files as given, folders expanded; each must exist and open, else one line saying what
    `fxp predict` takes. `listing`: the kind's key for a table of labelled images (task.csv), named when one is
    given."""
    files = [f for p in map(Path, inputs) for f in (image_files(p) if p.is_dir() else [p])]
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise FxpError(f"input not found: {missing[0]}")
    ok, bad = check_images(files, skip_bad=True)
    if bad:
        raise FxpError(_not_an_image(Path(bad[0]), len(bad), listing))
    return ok


TABLES = (".csv", ".tsv", ".txt", ".json", ".pkl")


def input_text(text: str, what: str = "texts to classify") -> str:
    "An input of a text kind (fxp predict, fxp serve): the text itself, or the content of a .txt file it names."
    path = Path(text)
    if path.suffix == ".txt" and path.is_file():
        return path.read_text(encoding="utf-8", errors="replace")
    if not text.strip():
        raise FxpError(f"fxp predict: an input text is empty; give the {what} (or .txt files)")
    return text


def _not_an_image(f: Path, n: int, listing: str | None) -> str:
    "Why `f` (and n - 1 more inputs) cannot be predicted on, and what `fxp predict` on an image run takes instead."
    takes = "fxp predict on an image run takes image files or folders of them (fxp predict RUN_DIR IMAGE... or DIR)"
    if f.suffix.lower() not in TABLES:
        return f"unreadable or corrupt image: {f}{f' and {n - 1} more' if n > 1 else ''}; {takes}"
    listed = _listed_images(f)
    what = f"{f} is a {f.suffix.lstrip('.').upper()} file, not an image" + (
        f"; it lists {listed} image files" if listed else "")
    score = (f"; predict does not score labels: to evaluate the run on the images it lists, fxp val RUN_DIR "
             f"data.path={f.resolve().parent}" + (f" {listing}={f.name}" if listing else "") + " --split test")
    return f"{what}: {takes}" + (score if listed else "")


def _listed_images(table: Path) -> int:
    "How many cells of a CSV name image files beside it (0 if it cannot be read as one)."
    from fastai.data.transforms import image_extensions

    try:
        df = pd.read_csv(table, sep=None, engine="python", dtype=str, nrows=100_000)
    except Exception:
        return 0
    names = {v for col in df.columns for v in df[col].dropna()
             if Path(v).suffix.lower() in image_extensions and (table.parent / v).is_file()}
    return len(names)


def image_folder(t, root: Path) -> Path:
    "The images of a kind with a `task.folder` (fxp.schema.Listed): that sub-folder of the data folder `root`."
    return root / (t.folder or "")


def read_listing(path: Path, t, key: str, cols: dict) -> pd.DataFrame:
    "A label file listing images (fxp.schema.Listed): task.fn_col, `cols` and task.valid_col (if set) must be columns."
    return read_table(path, key, {"task.fn_col": t.fn_col, **cols, "task.valid_col": t.valid_col})


def need_labels(df, col, fn_col, path: Path, key: str) -> None:
    """Every row of the listing `df` (read from `path`) has a label in column `col` (set by `key`); else one line: how
    many have none and the first few (their file, column `fn_col`, and row). pandas reads an empty cell as NaN, which
    would otherwise become a class 'nan'."""
    labels = df[col_name(df, col)]
    empty = df[labels.isna() | (labels.astype(str).str.strip() == "")]
    if len(empty):
        files = empty[col_name(df, fn_col)]
        first = ", ".join(f"{f} (row {i + 1})" for i, f in files.head(3).items())
        raise FxpError(f"{len(empty)} of the {len(df)} rows of {path} have no label in column "
                       f"{col_name(df, col)!r} ({key}), e.g. {first}; fill in their labels or delete those rows")


def listed_rows(df, t, root: Path, listed_in: str, skip_bad: bool):
    "The rows of a listing `df` whose image opens, a get_x reading that image, and the names of those that don't."
    _, keep, bad = listed_images(df[col_name(df, t.fn_col)], t, root, listed_in, skip_bad)
    return df[keep].reset_index(drop=True), ColReader(t.fn_col, pref=image_folder(t, root), suff=t.suff), bad


def listed_images(names, t, root: Path, listed_in: str, skip_bad: bool):
    """The image file of each name (<root>/<task.folder>/<name><task.suff>; a missing one is an error), a mask of those
    that open, and the names of those that don't."""
    files = [image_folder(t, root) / f"{name}{t.suff}" for name in names]
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise FxpError(f"{len(missing)} image files listed in {listed_in} are missing, e.g. {missing[0]}; "
                       f"check data.path=, task.folder= and task.suff=")
    _, bad = check_images(files, skip_bad)
    bad_set = set(bad)
    return files, np.array([str(f) not in bad_set for f in files], dtype=bool), bad


def load_image(fn, bw: bool = False):
    "Open an image as fastai does (PIL sniffs the format, so a PNG named .jpg or a CMYK JPEG loads as RGB)."
    try:
        from fastai.vision.core import PILImage

        im = PILImage.create(fn)
    except Exception as e:
        raise FxpError(f"cannot read image {fn}: {e}") from None
    return im.convert("L") if bw else im


class Tensors(torch.utils.data.TensorDataset):
    "A TensorDataset with the `vocab` of its labels, which `learn.export` can empty (keeping shapes and vocab)."

    def __init__(self, *tensors, vocab=None):
        super().__init__(*tensors)
        self.vocab = vocab

    def new_empty(self) -> "Tensors":
        return Tensors(*(t[:0] for t in self.tensors), vocab=self.vocab)


class TensorDL(DataLoader):
    "Batches by indexing whole tensors, with fastai's shuffling: no per-item work (fastai issue #3949)."

    def __iter__(self):
        self.randomize()
        self.before_iter()
        idxs = torch.as_tensor(self.get_idxs(), dtype=torch.long)
        for b in idxs.split(self.bs):
            if self.drop_last and len(b) < self.bs:
                break
            batch = tuple(t[b] for t in self.dataset.tensors)
            yield self.after_batch(batch if self.device is None else to_device(batch, self.device))
        self.after_iter()


class Windows(Tensors):
    """In-memory (inputs, lengths, labels) whose loader cuts each input to a window (`WindowDL`), with what a saved
    learner keeps of how the inputs were made (`meta`: settings, statistics, the items' files)."""

    def __init__(self, *tensors, vocab=None, meta=None):
        super().__init__(*tensors, vocab=vocab)
        self.meta = dict(meta or {})

    def new_empty(self) -> "Windows":
        return Windows(*(t[:0] for t in self.tensors), vocab=self.vocab, meta={**self.meta, "files": []})


class WindowDL(TensorDL):
    """Batches of (window, label): `cut(inputs, lengths, u)` takes each input's window at u in [0, 1] (random when
    shuffling, the centre 0.5 otherwise), and `augment`, if any, changes the batch where it is (its device)."""

    def __init__(self, dataset=None, cut=None, augment=None, **kwargs):
        super().__init__(dataset, **kwargs)
        self.cut, self.augment = cut, augment

    def __iter__(self):
        self.randomize()
        self.before_iter()
        for b in torch.as_tensor(self.get_idxs(), dtype=torch.long).split(self.bs):
            if self.drop_last and len(b) < self.bs:
                break
            x, lengths, y = (t[b] for t in self.dataset.tensors)
            u = torch.rand(len(b)) if self.shuffle else torch.full((len(b),), 0.5)
            x, y = to_device((self.cut(x, lengths, u), y), self.device) if self.device is not None else (
                self.cut(x, lengths, u), y)
            yield self.after_batch((self.augment(x) if self.augment and self.shuffle else x, y))
        self.after_iter()

    def new(self, dataset=None, cls=None, **kwargs):
        res = super().new(dataset, cls, **kwargs)
        res.cut, res.augment = self.cut, self.augment
        return res


def tensor_dls(x, y, valid_idx, vocab, bs: int, device) -> DataLoaders:
    "Train/valid TensorDLs over in-memory `x`, `y`, split by `valid_idx`, with `vocab` for decoding."
    is_valid = torch.zeros(len(x), dtype=torch.bool)
    is_valid[valid_idx] = True
    ds = [Tensors(x[m], y[m], vocab=vocab) for m in (~is_valid, is_valid)]
    train = TensorDL(ds[0], bs=bs, shuffle=True, drop_last=True, device=device)
    valid = TensorDL(ds[1], bs=bs * 2, device=device)
    return DataLoaders(train, valid, device=device)


def free_path(path: Path, used: set | None = None) -> Path:
    """`path`, or with -1, -2, ... before the suffix when that file exists (or is in `used`: names this call took
    already, which it adds to): what predict writes never overwrites anything."""
    used = set() if used is None else used
    i, cand = 0, Path(path)
    while cand in used or cand.exists():
        i += 1
        cand = cand.with_name(f"{Path(path).stem}-{i}{Path(path).suffix}")
    used.add(cand)
    return cand


def save_png(im, dest: Path) -> None:
    "The PIL image `im` as the PNG `dest`, written whole (a kill or a full disk never leaves half an image)."
    from fxp.writer import write_atomic

    write_atomic(dest, lambda tmp: im.save(tmp, format="PNG"))  # the temp file's suffix is no image format's


def dataloaders(block, source, cfg, device, fix: str, cached: bool = False, **loader_kwargs):
    """DataLoaders of a DataBlock over `source`, with one line (ending in `fix`) when a split is empty, and one naming
    two files when image inputs differ in size with nothing to resize them (a batch stacks them: task.size=)."""
    dsets = block.datasets(source)
    for name, ds in (("train", dsets.train), ("valid", dsets.valid)):
        if len(ds) == 0:
            raise FxpError(f"the {name} split is empty ({len(source)} items in all); {fix}")
    same_size(block, source)
    out = dsets.dataloaders(bs=cfg.trainer.bs, num_workers=workers(cfg.trainer, device, files=not cached),
                            pin_memory=on_cuda(device), device=device, **loader_kwargs)
    out.block, out.source = block, source  # fxp show prints block.summary(source)
    return out


def workers(tr, device, files: bool) -> int:
    """`trainer.num_workers`, or for auto: worker processes only where items are decoded from files every epoch on
    CUDA (on CPU they take the cores the model needs; in-memory or cached batches are one indexing: PERFORMANCE.md)."""
    if tr.num_workers != "auto":
        return tr.num_workers
    return min(8, os.cpu_count() or 1) if files and on_cuda(device) else 0


def on_cuda(device) -> bool:
    "`device` (a torch.device, its name, or None: the CPU) is a CUDA one."
    return device is not None and torch.device(device).type == "cuda"


def same_size(block, source) -> None:
    """The input images of `source` (files, as the block's get_x finds them) have one size, unless an item transform
    resizes them (task.size); else one line naming a file of each size and the key. Reads image headers only."""
    from PIL import Image

    if any(hasattr(t, "size") for t in block.item_tfms):
        return
    get_x = block.getters[0] if len(block.getters) else (lambda o: o)
    items = (source.iloc[i] for i in range(len(source))) if hasattr(source, "iloc") else iter(source)
    first = None
    for item in items:
        f = get_x(item)
        if not isinstance(f, (str, Path)) or Path(f).suffix.lower() not in image_extensions or not Path(f).is_file():
            return  # not image files: nothing to check
        try:
            with Image.open(f) as im:
                size = im.size
        except Exception:  # unreadable: check_images decides what to do with it
            continue
        if first is None:
            first = (f, size)
        elif size != first[1]:
            (a, (wa, ha)), (wb, hb) = first, size
            raise FxpError(f"images differ in size ({a} is {wa}x{ha}, {f} is {wb}x{hb}) and nothing resizes them; "
                           f"a batch needs one size: set task.size= (e.g. task.size={ha} or [h, w])")


def quiet_readonly_arrays() -> None:
    "fastai's tabular and collab batches wrap pandas' read-only (copy-on-write) arrays, never writing to them."
    import warnings

    warnings.filterwarnings("ignore", message="The given NumPy array is not writable")


# --- fxp clean's lists: items left out or relabelled in the next run, the files on disk untouched -------------------

CLEAN_COLS = ("file", "split", "label", "predicted", "probability", "loss", "action")
RELABEL = "relabel:"


def file_key(root: Path, get_x, item) -> str:
    "What fxp clean's CSV calls an item: its image file's path under the data folder `root` (get_x: a row's file)."
    f = Path(get_x(item) if get_x is not None else item)
    try:
        return f.relative_to(root).as_posix()
    except ValueError:  # a file outside the data folder
        return str(f)


def item_key(root: Path, get_x=None):
    "`file_key` for the items of a data folder, picklable (a relabelled get_y keeps it in model.pkl)."
    from functools import partial

    return partial(file_key, root, get_x)


def clean_actions(file: str, key: str) -> pd.DataFrame:
    "fxp clean's CSV: a file and an action (empty, keep, delete or relabel:LABEL) a row; else one line."
    df = read_table(Path(file), key, {f"{key}: ": ["file", "action"]}, dtype=str, keep_default_na=False)
    bad = [a for a in df.action if a not in ("", "keep", "delete") and not (a.startswith(RELABEL) and a[len(RELABEL):])]
    if bad:
        raise FxpError(f"{file} ({key}=): action {bad[0]!r} is not keep, delete or {RELABEL}LABEL")
    return df


def excluded(df) -> set:
    "The files data.exclude drops: those marked delete, or every one listed when no action is set."
    return set(df.file if (df.action == "").all() else df.file[df.action == "delete"])


def relabelled(df) -> dict:
    "file → new label, for the rows marked relabel:LABEL."
    rows = df[df.action.str.startswith(RELABEL)]
    return dict(zip(rows.file, rows.action.str[len(RELABEL):]))


class Relabel:
    "A get_y giving the labels data.relabel sets (by `key(item)`), and `get_y`'s for the other items."

    def __init__(self, get_y, labels: dict, key):
        self.get_y, self.labels, self.key = get_y, labels, key

    def __call__(self, item):
        k = self.key(item)
        return self.labels[k] if k in self.labels else self.get_y(item)


def curate(items, get_y, data, key):
    """`items` (files or a listing's rows) less those `data.exclude` drops, and a get_y with `data.relabel`'s labels:
    fxp clean's CSVs, matched by `key(item)`. Returns the items, the get_y and what summary.json records of it; says on
    the console (and in train.log) how many items each list changed."""
    info, total = {}, len(items)
    rows = [r for _, r in items.iterrows()] if hasattr(items, "iloc") else list(items)
    names = [key(r) for r in rows]
    classes = {str(y): y for y in map(get_y, rows)} if data.relabel else {}
    if data.exclude:
        drop = _matched(excluded(clean_actions(data.exclude, "data.exclude")), names, "data.exclude", "delete")
        keep = np.array([n not in drop for n in names], dtype=bool)
        items = items[keep].reset_index(drop=True) if hasattr(items, "iloc") else [o for o, k in zip(items, keep) if k]
        names = [n for n, k in zip(names, keep) if k]
        info.update(excluded=int((~keep).sum()), exclude_file=data.exclude)
    if data.relabel:
        listed = relabelled(clean_actions(data.relabel, "data.relabel"))
        labels = _known(_matched(listed, names, "data.relabel", RELABEL + "LABEL"), classes, data.relabel)
        get_y = Relabel(get_y, labels, key)
        info.update(relabelled=sum(n in labels for n in names), relabel_file=data.relabel)
    if info:
        say(curated_line(info, total))
    return items, get_y, info


def _known(labels: dict, classes: dict, file: str) -> dict:
    """`labels` (file → new label) as the data's own class values (a CSV's 7, not '7'), if each is a class; else one
    line naming the classes (a relabel to a new class would silently add one)."""
    for f, label in labels.items():
        if label not in classes:
            shown = ", ".join(sorted(classes)[:40]) + (", ..." if len(classes) > 40 else "")
            raise FxpError(f"data.relabel: {file} relabels {f} as {label!r}, which is not a class of this data "
                           f"({len(classes)} classes: {shown}); mark it relabel:CLASS with one of them")
    return {f: classes[label] for f, label in labels.items()}


def curated_line(info: dict, n: int) -> str:
    "What fxp clean's lists changed, in words: 'data.exclude: 2 of 1408 items left out; data.relabel: 1 relabelled'."
    parts = [f"data.exclude: {info['excluded']} of {n} items left out" if "excluded" in info else "",
             f"data.relabel: {info['relabelled']} item(s) relabelled" if "relabelled" in info else ""]
    return "; ".join(filter(None, parts))


def say(line: str) -> None:
    "A line on the console and in train.log."
    import logging

    logging.getLogger("fxp").info(line)
    print(line, flush=True)


def _matched(listed, names: list, key: str, action: str):
    "`listed` (files) if it names an item of the data; else one line (a list from another data set, or nothing marked)."
    if not listed:
        raise FxpError(f"{key}: no row of the file is marked {action}; mark some in its action column")
    if not set(listed) & set(names):
        raise FxpError(f"{key}: none of its {len(listed)} files is an item of this data (e.g. {next(iter(listed))}); "
                       f"give a list fxp clean wrote for a run on this data.path")
    return listed
