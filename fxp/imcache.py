"""Decode-once image cache: each split's items, decoded and item-transformed once into uint8 memmaps on disk, then
batched by indexing whole arrays, as the digits loader batches its tensors (fastai issue #3949; FFCV's idea).

A cache entry is a folder named for a hash of everything its arrays depend on: each item's files (path, size, mtime,
a hash of their first and last blocks or, data.cache_verify=full, of all their bytes) and labels, the block's type
transforms and the item transforms' settings (size, resize method, padding). A changed, added or removed file, another
label or another size is another key, so another entry; an entry whose arrays do not match the checksums of its
meta.json is rebuilt, never used; $FXP_CACHE_MAX bounds the folder (least recently used entries go). Items are decoded
with the valid split's item transforms (a centred Resize): the randomness is the batch transforms', run per batch where
the batch is (the GPU).

Only `iter`ating a `CachedDL` (training, validation, get_preds) reads the cache; `one_batch` (show_batch, the
learner's first forward), `test_dl` (fxp predict) and the top-loss plots read the original files.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from fastai.data.core import TfmdDL
from fastai.torch_core import retain_type, to_device
from fasttransform import compose_tfms

from fxp.cachedir import META, limit, prune
from fxp.errors import FxpError

VERSION = 1
CHUNK = 64  # items decoded at a time while building
SETTINGS = ("size", "method", "pad_mode", "mode", "mode_mask", "do_scale", "y_first")  # what changes the pixels


def item_key(getters, item, verify: str) -> str:
    """What an item's cached arrays depend on, without decoding it: each getter's value, or its file's path, size,
    mtime and (data.cache_verify) a hash of its first and last blocks (`ends`) or of all of it (`full`)."""
    return "|".join(_value_key(g(item), verify) for g in getters)


def _value_key(v, verify: str) -> str:
    if isinstance(v, (str, Path)) and os.path.isfile(v):
        st = os.stat(v)
        return f"{os.path.abspath(v)}:{st.st_size}:{st.st_mtime_ns}:{_content(v, st.st_size, verify)}"
    if hasattr(v, "tolist"):  # tensors and arrays: their values (repr elides long ones)
        return repr(v.tolist())
    return repr(v)


BLOCK = 4096  # bytes hashed at each end of a file (cache_verify=ends)


def _content(file, size: int, verify: str) -> str:
    """A hash of the file's bytes that the key covers: a file replaced with its size and mtime kept (cp -p, rsync -t,
    tar) is then another key. `ends`: its first and last blocks, which a re-encoded image changes (headers, the end
    of the compressed data), at two small reads a file; `full`: every byte; `stat`: none."""
    if verify == "stat":
        return ""
    h = hashlib.blake2b(digest_size=12)
    with open(file, "rb") as f:
        if verify == "full" or size <= 2 * BLOCK:
            while block := f.read(1 << 20):
                h.update(block)
        else:
            h.update(f.read(BLOCK))
            f.seek(-BLOCK, os.SEEK_END)
            h.update(f.read(BLOCK))
    return h.hexdigest()


class ImageCache:
    """A split's cache: where it lives, what its items are (`items`: their keys' hash), the arrays loaded, if any, and
    the folder's size limit ($FXP_CACHE_MAX), applied after a build."""

    def __init__(self, folder: Path, items: str, n: int, split: str, source: str, max_bytes: int | None = None):
        self.folder, self.items, self.n, self.split, self.source = folder, items, n, split, source
        self.max_bytes = max_bytes
        self.key = self.arrays = self.types = None

    def entry(self, settings: str) -> Path:
        return self.folder / hashlib.sha256(f"{VERSION}|{self.items}|{settings}".encode()).hexdigest()[:24]


def attach(dls, block, source, folder: Path, verify: str) -> None:
    """Give each loader of `dls` (CachedDLs over `block`'s datasets of `source`) its split's cache in `folder`, its
    items' files checked as `verify` says (data.cache_verify); the files are read in threads (I/O)."""
    rows = [source.iloc[i] for i in range(len(source))] if hasattr(source, "iloc") else list(source)
    max_bytes = limit()  # a bad $FXP_CACHE_MAX is said now, not after a build
    with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        keys = list(pool.map(lambda r: item_key(block.getters, r, verify), rows))
    for name, dl, idxs in zip(("train", "valid"), dls.loaders, _splits(dls)):
        h = hashlib.sha256("\n".join(keys[i] for i in idxs).encode()).hexdigest()
        dl.cache = ImageCache(folder, h, len(idxs), name, _source([rows[i] for i in idxs], block.getters[0]),
                              max_bytes)


def _splits(dls) -> list:
    "The item indices of each loader's split (a Datasets subset keeps them as its `splits`)."
    return [dl.dataset.splits[i] for i, dl in enumerate(dls.loaders)]


def _source(rows, get_x) -> str:
    "The folder the inputs come from (their common parent), for `fxp cache ls`."
    try:
        return os.path.commonpath([os.path.abspath(str(get_x(r))) for r in rows])
    except (TypeError, ValueError):
        return ""


class CachedDL(TfmdDL):
    "A TfmdDL whose batches come from its split's decode-once cache (`cache`, built on first use), else from files."

    cache: ImageCache | None = None
    _files = False

    def __iter__(self):
        if self.cache is None or self._files:
            yield from super().__iter__()
            return
        arrays, types = self.cached()
        self.randomize()
        self.before_iter()
        idxs = np.asarray(self.get_idxs(), dtype=np.int64)
        for i in range(0, len(idxs), self.bs):
            b = idxs[i:i + self.bs]
            if self.drop_last and len(b) < self.bs:
                break
            yield self.after_batch(self._to_device(tuple(retain_type(torch.from_numpy(a[b]), t)
                                                          for a, t in zip(arrays, types))))
        self.after_iter()

    def _to_device(self, batch):
        if self.device is None:
            return batch
        if self.pin_memory and torch.device(self.device).type == "cuda":
            batch = tuple(t.pin_memory() for t in batch)
        return to_device(batch, self.device, non_blocking=True)

    def one_batch(self):
        "A batch read from the files (show_batch, a model's first forward see the images as they are)."
        with self.from_files():
            return super().one_batch()

    @contextmanager
    def from_files(self):
        self._files = True
        try:
            yield
        finally:
            self._files = False

    def new(self, dataset=None, cls=None, **kwargs):
        "The same split again (get_preds, interpretation) keeps the cache; other items (test_dl, export) do not."
        res = super().new(dataset, cls, **kwargs)
        if dataset is None and isinstance(res, CachedDL):
            res.cache = self.cache
        return res

    def cached(self) -> tuple:
        "The arrays and item types of the cache for the current item transforms: loaded, or built and then loaded."
        c = self.cache
        settings = self.settings()
        if c.key != settings:
            folder, types = c.entry(settings), self.decoded(0)  # the types (and their metadata) the pipeline gives now
            arrays = load(folder, c.n, types)
            if arrays is None:
                build(self, folder)
                arrays = load(folder, c.n, types)
            c.arrays, c.types, c.key = arrays, types, settings
        return c.arrays, c.types

    def settings(self) -> str:
        "The type and item transforms' settings that change what an item decodes to."
        tls = [" ".join(map(_name, tl.tfms.fs)) for tl in self.dataset.tls]
        item = [f"{_name(t)}{[(k, repr(getattr(t, k))) for k in SETTINGS if hasattr(t, k)]}"
                for t in self.after_item.fs]
        return repr((tls, item))

    def decoded(self, i: int) -> tuple:
        "Item `i` as the valid split decodes it: item transforms without their randomness (a centred crop)."
        return compose_tfms(self.dataset[i], self.after_item.fs, split_idx=1)


def _name(f) -> str:
    owner = getattr(f, "__self__", None)  # PILImageBW.create vs PILImage.create
    return f"{getattr(owner, '__name__', '')}.{getattr(f, 'name', None) or getattr(f, '__name__', type(f).__name__)}"


def build(dl: CachedDL, folder: Path) -> None:
    """Decode every item of `dl`'s split once into `folder` (written whole: a temp folder renamed into place), each
    element of an item (image, mask, label, points) an .npy memmap; decoding runs in threads (PIL releases the GIL).
    A full disk is one line (FxpError) naming the cache folder, and the half-written entry is removed."""
    t0, n = time.perf_counter(), len(dl.dataset)
    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
    except OSError as e:
        raise FxpError(unwritable(folder.parent, e)) from None
    try:
        _write(dl, tmp, n)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if e.errno in FULL:  # other OSErrors are the images' (PIL's unreadable file)
            raise FxpError(unwritable(folder.parent, e)) from e
        raise
    shutil.rmtree(folder, ignore_errors=True)  # a corrupt entry of the same key
    try:
        tmp.rename(folder)
    except OSError:  # another process put the same entry in place first
        shutil.rmtree(tmp, ignore_errors=True)
    mb = sum(f.stat().st_size for f in folder.iterdir()) / 2**20
    print(f"image cache: {n} {dl.cache.split} items decoded once into {folder} ({mb:.1f} MB, "
          f"{time.perf_counter() - t0:.1f} s)", flush=True)
    _bound(folder, dl.cache.max_bytes)


def _bound(folder: Path, max_bytes: int | None) -> None:
    "Keep the cache folder under $FXP_CACHE_MAX: the least recently used entries go, never the one just built."
    gone = prune(folder.parent, max_bytes, keep=(folder,))
    if gone["entries"]:
        print(f"image cache: {gone['entries']} least recently used cache(s) removed ({gone['bytes'] / 2**20:.1f} MB), "
              f"to stay within FXP_CACHE_MAX={os.environ.get('FXP_CACHE_MAX')}", flush=True)


FULL = (errno.ENOSPC, errno.EDQUOT)  # the disk or the user's quota is full


def unwritable(folder: Path, e: OSError) -> str:
    "Why the cache in `folder` cannot be written, and the ways out."
    if e.errno in FULL:
        return (f"the image cache in {folder} is out of space ({e.strerror}): free space with `fxp cache clear` "
                f"(or `fxp cache prune`), set FXP_CACHE_DIR to a folder on a larger disk, or data.cache=off")
    return (f"cannot write the image cache in {folder} ({e.strerror}); set data.cache= to a writable folder, or "
            f"data.cache=off")


def _write(dl: CachedDL, tmp: Path, n: int) -> None:
    "The arrays and meta.json of `dl`'s split, into the folder `tmp`."
    first = dl.decoded(0)
    arrays = [_allocated(tmp / f"{j}.npy", (n, *e.shape), _plain(e).numpy().dtype) for j, e in enumerate(first)]
    # files are opened and decoded in threads (PIL releases the GIL), CHUNK at a time so memory stays bounded; item
    # transforms run here, in order, as some keep per-item state on themselves (PointScaler: its image's size)
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        for start in range(0, n, CHUNK):
            for i, item in enumerate(pool.map(dl.dataset.__getitem__, range(start, min(n, start + CHUNK))), start):
                for a, e in zip(arrays, compose_tfms(item, dl.after_item.fs, split_idx=1)):
                    a[i] = _plain(e).numpy()
    for a in arrays:
        a.flush()
    meta = {"version": VERSION, "split": dl.cache.split, "n": n, "source": dl.cache.source, "created": time.time(),
            "arrays": [{"file": f"{j}.npy", "crc": _crc(tmp / f"{j}.npy")} for j in range(len(arrays))]}
    del arrays
    (tmp / META).write_text(json.dumps(meta))


def _allocated(file: Path, shape: tuple, dtype) -> np.memmap:
    """An .npy memmap whose disk blocks are reserved now. numpy makes the file sparse: pages written through the
    mapping on a full disk would then kill the process with SIGBUS, where this makes it an OSError (ENOSPC) here."""
    a = np.lib.format.open_memmap(file, mode="w+", dtype=dtype, shape=shape)
    with open(file, "r+b") as f:
        os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
    return a


def load(folder: Path, n: int, types) -> list | None:
    "The arrays of the entry `folder` as memmaps, or None if it is missing or does not check out (then it is rebuilt)."
    try:
        meta = json.loads((folder / META).read_text())
        files = [folder / a["file"] for a in meta["arrays"]]
        if meta["version"] != VERSION or meta["n"] != n or len(files) != len(types):
            return None
        if any(_crc(f) != a["crc"] for f, a in zip(files, meta["arrays"])):
            return None
        arrays = [np.load(f, mmap_mode="r") for f in files]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if any(a.shape != (n, *t.shape) for a, t in zip(arrays, types)):
        return None
    _touch(folder)
    return arrays


def _touch(folder: Path) -> None:
    "Record the entry's last use (for `fxp cache ls`); a read-only cache folder is used as it is."
    try:
        os.utime(folder / META)
    except OSError:
        pass


def _crc(file: Path, chunk: int = 1 << 24) -> int:
    "A checksum of the file's bytes: a cache file changed or cut short since it was written is not used."
    crc = 0
    with open(file, "rb") as f:
        while block := f.read(chunk):
            crc = zlib.crc32(block, crc)
    return crc


def _plain(t) -> torch.Tensor:
    return torch.as_tensor(t).as_subclass(torch.Tensor)
