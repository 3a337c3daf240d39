"""The decode-once image cache (fxp.imcache): rebuilt when a file changes, is added or removed, or a cache file is
corrupt; masks and points stay aligned with their images through the batch augmentation; a seeded run trains to the
same metrics with and without it; the data folder is only read; `fxp cache ls|clear`.

The loaders are built as the kinds build them (fxp.vision.dataloaders) over small images written here.
"""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from conftest import metrics_rows, mnist_subset, newest_run, run_fxp, run_installed, subprocess_env, tmpfs
from fxp import imcache, vision
from fxp.errors import FxpError

CPU = torch.device("cpu")


def cfg(cache: Path, bs: int = 4, verify: str = "ends"):
    return OmegaConf.create({"data": {"cache": str(cache), "cache_verify": verify},
                             "trainer": {"bs": bs, "num_workers": "auto"}})


def write_images(folder: Path, n: int = 6, size: int = 32, seed: int = 0) -> list[Path]:
    "`n` RGB images of a bright block on a dark ground, the block's place and size random: x_<label>.png."
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(n):
        a = np.zeros((size, size, 3), np.uint8)
        y, x, h, w = rng.integers(2, size // 2, 4)
        a[y:y + h, x:x + w] = 255
        files.append(folder / f"im{i}_{'ab'[i % 2]}.png")
        Image.fromarray(a).save(files[-1])
    return files


def class_dls(files, cache: Path, verify: str = "ends"):
    from fastai.data.block import CategoryBlock, DataBlock
    from fastai.data.transforms import IndexSplitter, RegexLabeller
    from fastai.vision.augment import Resize
    from fastai.vision.data import ImageBlock

    block = DataBlock(blocks=(ImageBlock, CategoryBlock), get_y=lambda f: RegexLabeller(r"_(\w)\.\w+$")(str(f)),
                      splitter=IndexSplitter([0, 1]), item_tfms=Resize(24))
    return vision.dataloaders(block, files, cfg(cache, verify=verify), CPU, "")


def entries(cache: Path) -> set[str]:
    return {p.name for p in cache.iterdir() if (p / imcache.META).is_file()}


def train_pixels(dls) -> dict:
    "{sum of an image's pixels: label} over one unshuffled pass of the cached training split."
    dl = dls.train.new(shuffle=False, drop_last=False)
    out = {}
    for x, y in dl:
        for xi, yi in zip(x, y):
            out[round(float(xi.sum()), 3)] = int(yi)
    return out


def test_changed_added_removed_files_rebuild(tmp_path, capsys):
    cache = tmp_path / "cache"
    files = write_images(tmp_path / "ims")
    dls = class_dls(files, cache)
    first = train_pixels(dls)
    assert "4 train items decoded once" in capsys.readouterr().out and len(entries(cache)) == 1
    assert train_pixels(class_dls(files, cache)) == first  # reused: nothing decoded again
    assert "decoded once" not in capsys.readouterr().out

    Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(files[3])  # changed (same name)
    os.utime(files[3], ns=(1, 1))
    changed = train_pixels(class_dls(files, cache))
    assert "decoded once" in capsys.readouterr().out and changed != first
    assert round(90 / 255 * 3 * 24 * 24, 3) in changed  # the new pixels, not the old ones

    added = write_images(tmp_path / "more", n=2, seed=1)
    assert len(train_pixels(class_dls(files + added, cache))) == 6
    assert len(train_pixels(class_dls(files[:-1], cache))) == 3
    assert len(entries(cache)) == 4


def test_corrupt_cache_file_is_rebuilt(tmp_path, capsys):
    cache = tmp_path / "cache"
    files = write_images(tmp_path / "ims")
    good = train_pixels(class_dls(files, cache))
    capsys.readouterr()
    (npy,) = cache.glob("*/0.npy")  # the training split's images
    with open(npy, "r+b") as f:  # bytes flipped in the pixels, past the .npy header
        f.seek(-40, os.SEEK_END)
        f.write(b"\x7f" * 20)
    assert train_pixels(class_dls(files, cache)) == good
    assert capsys.readouterr().out.count("decoded once") == 1
    next(cache.glob("*/1.npy")).write_bytes(b"")  # the labels cut to nothing
    assert train_pixels(class_dls(files, cache)) == good
    assert capsys.readouterr().out.count("decoded once") == 1


def test_stage_size_builds_its_own_entry(tmp_path):
    from fxp.train import resize

    cache = tmp_path / "cache"
    dls = class_dls(write_images(tmp_path / "ims"), cache)
    assert next(iter(dls.train))[0].shape[-1] == 24
    resize(dls, 16)
    assert next(iter(dls.train))[0].shape[-1] == 16 and next(iter(dls.valid))[0].shape[-1] == 16
    assert len(entries(cache)) == 3  # train at 24 and 16, valid at 16


def seg_pairs(folder: Path, n: int = 8, size: int = 48):
    "Images with blocks and masks that are those blocks (1 inside, 0 outside)."
    files = write_images(folder / "images", n, size)
    (folder / "labels").mkdir()
    for f in files:
        mask = (np.asarray(Image.open(f))[..., 0] > 127).astype(np.uint8)
        Image.fromarray(mask).save(folder / "labels" / f.name)
    return files


def test_masks_follow_their_images_through_augmentation(tmp_path):
    from fastai.data.block import DataBlock
    from fastai.data.transforms import RandomSplitter
    from fastai.vision.augment import Resize, aug_transforms
    from fastai.vision.data import ImageBlock, MaskBlock

    files = seg_pairs(tmp_path)
    tfms = aug_transforms(max_rotate=40, max_zoom=1.6, max_warp=0.4, p_affine=1.0, max_lighting=0)
    block = DataBlock(blocks=(ImageBlock, MaskBlock(["ground", "block"])), splitter=RandomSplitter(0.25, seed=0),
                      get_y=lambda f: f.parent.parent / "labels" / f.name, item_tfms=Resize(40), batch_tfms=tfms)
    dls = vision.dataloaders(block, files, cfg(tmp_path / "cache", bs=6), CPU, "")
    torch.manual_seed(0)
    x, mask = next(iter(dls.train))
    assert isinstance(dls.train, imcache.CachedDL) and dls.train.cache.arrays is not None  # came from the cache
    moved = (mask != torch.as_tensor(np.stack([dls.train.cache.arrays[1][i] for i in range(6)]))).float().mean()
    assert moved > 0.05  # the augmentation did move the masks
    agree = ((x[:, 0] > 0.5) == (mask == 1)).float().mean()  # bilinear image vs nearest mask: edges may differ
    assert agree > 0.97, agree


def test_points_follow_their_images_through_augmentation(tmp_path):
    from fastai.data.block import DataBlock
    from fastai.data.transforms import RandomSplitter
    from fastai.vision.augment import Resize, aug_transforms
    from fastai.vision.data import ImageBlock, PointBlock

    rng, points, files = np.random.default_rng(0), {}, []
    (tmp_path / "ims").mkdir()
    for i in range(8):  # a bright 3x3 dot at a random place; the point is its centre (x, y)
        a = np.zeros((40, 40, 3), np.uint8)
        cx, cy = rng.integers(12, 28, 2)
        a[cy - 1:cy + 2, cx - 1:cx + 2] = 255
        files.append(tmp_path / "ims" / f"p{i}.png")
        Image.fromarray(a).save(files[-1])
        points[files[-1].name] = [[float(cx), float(cy)]]
    tfms = aug_transforms(max_rotate=30, max_zoom=1.3, max_warp=0, p_affine=1.0, max_lighting=0, pad_mode="zeros")
    block = DataBlock(blocks=(ImageBlock, PointBlock), get_y=lambda f: torch.tensor(points[f.name]),
                      splitter=RandomSplitter(0.25, seed=0), item_tfms=Resize(40), batch_tfms=tfms)
    dls = vision.dataloaders(block, files, cfg(tmp_path / "cache", bs=6), CPU, "")
    torch.manual_seed(1)
    x, pts = next(iter(dls.train))
    assert dls.train.cache.arrays is not None
    for im, p in zip(x, pts):
        flat = im.sum(0).argmax()
        bright = torch.tensor([flat % 40, flat // 40], dtype=torch.float)  # (x, y) of the brightest pixel
        where = (p[0] + 1) * 40 / 2 - 0.5  # fastai scales points to -1..1 over the image
        assert (where - bright).abs().max() <= 2.5, (where, bright)


@pytest.mark.slow
def test_cached_run_matches_uncached_and_reads_data_only(tmp_path):
    data = mnist_subset(tmp_path / "mnist", n=12)
    before = sorted(p.relative_to(data) for p in data.rglob("*"))
    args = ["task=mnist", f"data.path={data}", "trainer.epochs=1", "trainer.bs=8"]
    cached = run_fxp("train", *args, cwd=tmp_path)
    assert cached.returncode == 0, cached
    assert "train items decoded once into" in cached.stdout and str(tmp_path / ".fxp_cache") in cached.stdout
    (tmp_path / "off").mkdir()
    off = run_fxp("train", *args, "data.cache=off", cwd=tmp_path / "off")
    assert off.returncode == 0, off
    (a,), (b,) = metrics_rows(newest_run(tmp_path)), metrics_rows(newest_run(tmp_path / "off"))
    assert abs(float(a["valid_loss"]) - float(b["valid_loss"])) < 1e-4 and a["accuracy"] == b["accuracy"]
    assert sorted(p.relative_to(data) for p in data.rglob("*")) == before  # nothing written into the data folder

    listed = run_fxp("cache", "ls", cwd=tmp_path)
    assert listed.returncode == 0 and str(data) in listed.stdout and "train" in listed.stdout, listed
    cleared = run_fxp("cache", "clear", cwd=tmp_path)
    assert cleared.returncode == 0 and not entries(tmp_path / ".fxp_cache"), cleared


def test_num_workers_auto():
    from fxp.data import workers

    auto, two = OmegaConf.create({"num_workers": "auto"}), OmegaConf.create({"num_workers": 2})
    assert workers(auto, CPU, files=True) == 0 and workers(auto, torch.device("cuda"), files=False) == 0
    assert workers(auto, torch.device("cuda"), files=True) >= 1 and workers(two, CPU, files=False) == 2


@pytest.mark.slow
def test_full_cache_disk_is_one_line(tmp_path):
    "The cache's file system fills up while an entry is built: one line naming the cache folder, not a bus error."
    data = mnist_subset(tmp_path / "mnist", n=6)  # 12 training images at 64x64x3: 147 kB, twice what is left
    with tmpfs(tmp_path / "small", "300k") as small:
        (small / "filler").write_bytes(b"\0" * 220_000)
        env = {**subprocess_env(tmp_path), "FXP_CACHE_DIR": str(small)}
        r = run_installed("train", "task=mnist", f"data.path={data}", "task.size=64", "trainer.epochs=1",
                          "trainer.bs=4", cwd=tmp_path, env=env)
        assert r.returncode == 2, r
        (line,) = r.err_lines
        assert str(small) in line and "FXP_CACHE_DIR" in line and "fxp cache clear" in line, line
        assert not [p for p in small.iterdir() if ".tmp-" in p.name]  # the half-built entry is gone


# --- what the key covers, unfinished builds, the size limit ------------------------------------------------------


def replace_keeping_stat(file: Path, write) -> None:
    "`write(file)` a new content, then the file's old mtime back (as cp -p, rsync -t and tar do); same size asserted."
    st = file.stat()
    write(file)
    os.utime(file, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert file.stat().st_size == st.st_size and file.stat().st_mtime_ns == st.st_mtime_ns


def test_same_size_file_replaced_with_its_mtime_is_seen(tmp_path):
    cache, files = tmp_path / "cache", write_images(tmp_path / "ims")
    for f in files:  # stored, not deflated: any image of this shape has the same size
        Image.open(f).save(f, compress_level=0)
    first = train_pixels(class_dls(files, cache))
    other = 255 - np.asarray(Image.open(files[3]))
    replace_keeping_stat(files[3], lambda f: Image.fromarray(other).save(f, compress_level=0))
    assert train_pixels(class_dls(files, cache)) != first


def test_cache_verify_full_sees_a_change_inside_a_file(tmp_path):
    "A byte in the middle of an image (its first and last 4 KiB unchanged): `ends` does not read it, `full` does."
    cache = tmp_path / "cache"
    files = []
    for f in write_images(tmp_path / "ims", size=64):  # BMP: 12 kB of raw pixels, no checksum
        files.append(f.with_suffix(".bmp"))
        Image.open(f).save(files[-1])
    first = train_pixels(class_dls(files, cache, verify="ends"))
    replace_keeping_stat(files[3], lambda f: f.write_bytes(f.read_bytes()[:6000] + b"\x80" + f.read_bytes()[6001:]))
    assert train_pixels(class_dls(files, cache, verify="ends")) == first  # what `ends` leaves out (docs/)
    assert train_pixels(class_dls(files, cache, verify="full")) != first


def fake_entry(cache: Path, name: str, nbytes: int, used: float) -> Path:
    "A complete entry of `nbytes` last used at `used` (as `fxp cache` sees one)."
    d = cache / name
    d.mkdir(parents=True)
    (d / "0.npy").write_bytes(b"\0" * nbytes)
    (d / imcache.META).write_text('{"split": "train", "n": 3, "source": "/data"}')
    os.utime(d / imcache.META, (used, used))
    return d


def dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_unfinished_builds_are_listed_and_the_dead_ones_cleared(tmp_path, fxp):
    cache = tmp_path / "cache"
    fake_entry(cache, "a" * 24, 1000, time.time())
    killed, running = cache / f"{'b' * 24}.tmp-{dead_pid()}", cache / f"{'c' * 24}.tmp-{os.getpid()}"
    for d in (killed, running):
        d.mkdir()
        (d / "0.npy").write_bytes(b"\0" * 2**20)
    r = fxp("cache", "ls", "--dir", cache)
    assert r.returncode == 0 and "1 cache(s)" in r.stdout and "2 unfinished, 2.0 MB" in r.stdout, r
    assert f"{killed.name}  unfinished" in r.stdout and "left by a killed build" in r.stdout, r
    assert f"{running.name}  unfinished" in r.stdout and "being built" in r.stdout, r
    r = fxp("cache", "clear", "--dir", cache)
    assert r.returncode == 0 and "removed 1 cache(s) and 1 unfinished, 1.0 MB freed" in r.stdout, r
    assert [p.name for p in cache.iterdir()] == [running.name]  # a build under way is left alone


def test_prune_removes_the_least_recently_used_beyond_max(tmp_path, fxp):
    cache, now = tmp_path / "cache", time.time()
    old, mid, new = (fake_entry(cache, c * 24, 100_000, now - age) for c, age in (("o", 300), ("m", 200), ("n", 100)))
    r = fxp("cache", "prune", "--dir", cache, "--max", "250k")
    assert r.returncode == 0 and "removed 1 cache(s)" in r.stdout, r
    assert sorted(p.name for p in cache.iterdir()) == sorted([mid.name, new.name])
    r = fxp("cache", "prune", "--dir", cache, "--max", "lots")
    assert r.returncode == 2 and "--max 'lots' is not a size" in r.stderr, r


def test_cache_max_evicts_after_a_build(tmp_path, monkeypatch, capsys):
    cache = tmp_path / "cache"
    train_pixels(class_dls(write_images(tmp_path / "one"), cache))
    (first,) = entries(cache)
    one = sum(f.stat().st_size for f in (cache / first).iterdir())
    monkeypatch.setenv("FXP_CACHE_MAX", str(int(one * 1.5)))  # room for one such entry, not two
    train_pixels(class_dls(write_images(tmp_path / "two", seed=1), cache))
    assert len(entries(cache)) == 1 and first not in entries(cache)
    assert "1 least recently used cache(s) removed" in capsys.readouterr().out
    monkeypatch.setenv("FXP_CACHE_MAX", "2 gigs")
    with pytest.raises(FxpError, match="FXP_CACHE_MAX='2 gigs' is not a size"):
        class_dls(write_images(tmp_path / "two", seed=1), cache)


def test_cache_verify_takes_its_choices(fxp):
    r = fxp("train", "data.cache_verify=crc")
    assert r.returncode == 2 and "data.cache_verify" in r.stderr and "full" in r.stderr, r
