"Where a task's data comes from, checks on it, and a fast DataLoader for data that fits in memory."
from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch
from fastai.data.core import DataLoaders
from fastai.data.load import DataLoader
from fastai.data.transforms import get_image_files
from fastai.torch_core import to_device
from fastai.vision.core import PILImage
from fastai.vision.utils import verify_image
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


def read_csv(path: Path, cols: list) -> pd.DataFrame:
    "Read a CSV and check that the named columns (names or positions) exist."
    if not path.is_file():
        raise FxpError(f"CSV file not found: {path}; set task.csv= (relative to data.path) or data.path=")
    df = pd.read_csv(path)
    for c in cols:
        ok = c < len(df.columns) if isinstance(c, int) else c in df.columns
        if not ok:
            raise FxpError(f"column {c!r} not in {path.name}; its columns are: {', '.join(map(str, df.columns))}")
    if df.empty:
        raise FxpError(f"{path} has no rows")
    return df


def image_files(folder: Path) -> list[Path]:
    files = get_image_files(folder)
    if not files:
        raise FxpError(f"no image files under {folder}; check data.path= and the task's folder settings")
    return list(files)


def check_images(files: list[Path], skip_bad: bool) -> tuple[list[Path], list[str]]:
    "Open each image once; return the readable ones and the names of bad ones (an error unless `skip_bad`)."
    ok = parallel(verify_image, files, n_workers=0 if len(files) < 5000 else None)
    bad = [str(f) for f, good in zip(files, ok) if not good]
    if bad and not skip_bad:
        more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
        raise FxpError(f"unreadable or corrupt image: {bad[0]}{more}; remove it or set data.skip_bad=true")
    return [f for f, good in zip(files, ok) if good], bad


def input_images(inputs: list[str]) -> list[Path]:
    "The images to predict on: files as given, folders expanded; each must exist and open."
    files = [f for p in map(Path, inputs) for f in (image_files(p) if p.is_dir() else [p])]
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise FxpError(f"input not found: {missing[0]}")
    return check_images(files, skip_bad=False)[0]


def listed_images(names, pref: Path, suff: str, listed_in: str, skip_bad: bool):
    "The image files a label file names (each must exist), which of them open, and the names of those that don't."
    files = [pref / f"{name}{suff}" for name in names]
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise FxpError(f"{len(missing)} image files listed in {listed_in} are missing, e.g. {missing[0]}; "
                       f"check data.path=, task.folder= and task.suff=")
    _, bad = check_images(files, skip_bad)
    bad_set = set(bad)
    return files, [str(f) not in bad_set for f in files], bad


def load_image(fn, bw: bool = False):
    "Open an image as fastai does (PIL sniffs the format, so a PNG named .jpg or a CMYK JPEG loads as RGB)."
    try:
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


def dataloaders(block, source, cfg, device, fix: str, **loader_kwargs):
    "DataLoaders of a DataBlock over `source`, with one line (ending in `fix`) when a split is empty."
    dsets = block.datasets(source)
    for name, ds in (("train", dsets.train), ("valid", dsets.valid)):
        if len(ds) == 0:
            raise FxpError(f"the {name} split is empty ({len(source)} items in all); {fix}")
    return dsets.dataloaders(bs=cfg.trainer.bs, num_workers=cfg.trainer.num_workers, device=device, **loader_kwargs)
