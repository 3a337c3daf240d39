"""CPU benchmark of image FILES: fxp's decode-once cache vs a raw PyTorch loop on decode-once tensors and plain fastai.

Three cases, each the same files, split and model three (four) ways in one process:
  (a) mnist_tiny PNG class folders (28 px grey, 3 vs 7), fxp.models.small_cnn, 5 epochs, bs 64
  (b) the Oxford-IIIT Pet JPEGs of shared/data (breed from the file name) at 128 px (Resize crop), aug_transforms
      for fastai and fxp, resnet18 from random init (fastai's vision_learner body + head), 3 epochs, bs 16
  (c) camvid_tiny (96x128 frames, 32 codes) with a small U-Net (fastai's DynamicUnet on fxp's unet_small
      encoder, random init), 2 epochs, bs 8

  raw      the files decoded once with PIL into uint8 tensors (the decode timed apart), then a hand-written loop:
           shuffled batches by indexing, /255 (for (b) a flip, rotation, zoom and brightness change per batch, as
           aug_transforms does), AdamW + OneCycleLR as fastai's
           fit_one_cycle, a validation pass per epoch
  fastai   the lessons' code: DataBlock / ImageDataLoaders / SegmentationDataLoaders over the files, fastai's default
           workers, Learner / vision_learner / unet_learner, fit_one_cycle
  fxp off  `fxp train` with data.cache=off: the per-item file pipeline fxp had before the cache (the "before")
  fxp      `fxp train` with the decode-once cache (built by the warm-up round, its build time shown apart)

Training seconds: the fit only (raw, fastai) or the sum of metrics.csv's epoch times (fxp, as bench/cpu_default.py).
Loader images/s: a full pass over the training loader after a first one (so fxp reads its built cache), no model.
Each way runs a warm-up round (not counted) then ROUNDS timed ones; the minimum is shown. The machine's load average
is printed: other processes on a 2-core box distort every figure.

Run:  .venv/bin/python bench/image_files.py [a b c]   (about 3-5 minutes on a quiet 2-core CPU; BENCH_THREADS=1
      on a busy one)
The last line of each case is `fxp/raw=<ratio>` (training seconds, the one-time decode and cache build left out of
both); `fxp off/raw=` above it is the same ratio before the cache.
"""
from __future__ import annotations

import contextlib
import io
import math
import os
import re
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

warnings.filterwarnings("ignore")
import torch  # noqa: E402

# BENCH_THREADS=1 on a shared box: torch's threads spin-wait when other processes hold the cores, and then every way
# is slowed tens of times, unevenly
THREADS = int(os.environ.get("BENCH_THREADS") or os.cpu_count() or 1)
torch.set_num_threads(THREADS)

import fastai.callback.all  # noqa: E402,F401
import numpy as np  # noqa: E402
from fastai.data.all import CategoryBlock, DataBlock, GrandparentSplitter, get_image_files, parent_label  # noqa: E402
from fastai.learner import Learner  # noqa: E402
from fastai.losses import CrossEntropyLossFlat  # noqa: E402
from fastai.metrics import accuracy  # noqa: E402
from fastai.vision.all import (  # noqa: E402
    ImageBlock,
    ImageDataLoaders,
    PILImageBW,
    Resize,
    SegmentationDataLoaders,
    aug_transforms,
    create_unet_model,
    create_vision_model,
    resnet18,
    unet_learner,
    vision_learner,
)
from fastcore.basics import noop  # noqa: E402
from PIL import Image, ImageOps  # noqa: E402
from torch import nn  # noqa: E402

import fxp.config  # noqa: E402
import fxp.train  # noqa: E402
from fxp import dispatch  # noqa: E402
from fxp.models import small_cnn, small_encoder  # noqa: E402
from fxp.runs import read_metrics  # noqa: E402
from fxp.writer import Run  # noqa: E402

DATA = Path(os.environ.get("FXP_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
SEED, ROUNDS = 42, 2
MOMS, WD, EPS, SQR_MOM, PCT_START, DIV, DIV_FINAL = (0.95, 0.85, 0.95), 0.01, 1e-5, 0.99, 0.25, 25.0, 1e5


@dataclass
class Case:
    name: str
    what: str
    epochs: int
    bs: int
    lr: float
    overrides: list = field(default_factory=list)
    aug: bool = False  # aug_transforms for fastai and fxp; for raw, the same work in plain torch (`raw_aug`)


CASES = {
    "a": Case("a", "mnist_tiny PNG folders, small CNN", 5, 64, 1e-2,
              ["task=mnist", f"data.path={DATA / 'mnist_tiny'}"]),
    "b": Case("b", "pet JPEGs at 128 px, resnet18 (random init)", 3, 16, 1e-3,
              ["task=pets", f"data.path={DATA / 'oxford-iiit-pet'}", "model=resnet18", "model.pretrained=false",
               "trainer=default", "task.size=128"], aug=True),
    "c": Case("c", "camvid_tiny 96x128, small U-Net", 2, 8, 1e-3,
              ["task=camvid", f"data.path={DATA / 'camvid_tiny'}", "model=unet_small", "trainer=default"]),
}


def fxp_cfg(case: Case, *extra: str):
    from hydra import compose, initialize_config_module

    overrides = [*case.overrides, f"trainer.epochs={case.epochs}", f"trainer.bs={case.bs}", f"trainer.lr={case.lr}",
                 *extra]
    with initialize_config_module("fxp.conf", version_base="1.3"):
        return fxp.config.validate(compose("config", overrides=overrides)), overrides


# ---------------------------------------------------------------- the items: fxp's own split, read without decoding


def items(case: Case):
    "(train files, train targets, valid files, valid targets, n_out) as fxp's DataBlock splits them."
    cfg, _ = fxp_cfg(case, "data.cache=off")
    dls = dispatch.kind_module(cfg.task.kind).dls(cfg, torch.device("cpu"))
    out = []
    for ds in (dls.train_ds, dls.valid_ds):
        files = list(ds.items)
        ys = [ds.tls[1].tfms.fs[0](f) for f in files] if case.name == "c" else [int(y) for y in ds.tls[1]]
        out += [files, ys]
    return (*out, len(dls.vocab) if case.name != "c" else len(dls.valid.after_item.vocab))


def decode(files, case: Case, mask: bool = False) -> torch.Tensor:
    "Files → one uint8 tensor (N, C, H, W) or (N, H, W) for masks, resized as fxp's item Resize does."
    def one(f):
        im = Image.open(f)
        if mask:
            return np.asarray(im.convert("L"))
        if case.name == "a":
            return np.asarray(im.convert("L"))[None]
        im = im.convert("RGB")
        if case.name == "b":
            im = ImageOps.fit(im, (128, 128), Image.BILINEAR)
        return np.asarray(im).transpose(2, 0, 1)
    return torch.from_numpy(np.stack([one(f) for f in files]))


# ---------------------------------------------------------------- raw PyTorch


def new_model(case: Case, n_out: int) -> nn.Module:
    torch.manual_seed(SEED)
    if case.name == "a":
        return small_cnn(n_in=1, n_out=n_out, channels=(16, 32, 64))
    if case.name == "b":
        return create_vision_model(resnet18, n_out, pretrained=False)
    return create_unet_model(small_encoder, n_out, (96, 128), pretrained=False)


def raw_aug(xb):
    """aug_transforms' work in plain torch, per batch: a flip, rotation (±10°), zoom (1-1.1) and perspective warp
    (±0.2) as one grid sample with reflection padding, then brightness and contrast (±0.2) in logit space."""
    n, h, w = len(xb), *xb.shape[-2:]
    angle, zoom = (torch.rand(n) * 2 - 1) * math.radians(10), 1 / (1 + torch.rand(n) * 0.1)
    flip = torch.where(torch.rand(n) < 0.5, -1.0, 1.0)
    cos, sin, zero = torch.cos(angle) * zoom, torch.sin(angle) * zoom, torch.zeros(n)
    theta = torch.stack([torch.stack([cos * flip, -sin, zero], 1), torch.stack([sin * flip, cos, zero], 1)], 1)
    grid = nn.functional.affine_grid(theta, [n, 3, h, w], align_corners=False)
    persp = (torch.rand(n, 1, 1, 2) * 2 - 1) * 0.2  # x' = x / (1 + p·x), y' likewise
    grid = grid / (1 + (grid * persp).sum(-1, keepdim=True))
    xb = nn.functional.grid_sample(xb, grid, padding_mode="reflection", align_corners=False)
    contrast = torch.exp((torch.rand(n, 1, 1, 1) * 2 - 1) * math.log(1.25))
    bright = (torch.rand(n, 1, 1, 1) * 2 - 1) * 0.8  # logit(0.7) ~ 0.85: ±0.2 around mid-grey
    return torch.sigmoid(torch.logit(xb, eps=1e-6) * contrast + bright)


def raw_batches(x, y, idx, bs, aug, drop_last=True):
    for i in range(0, len(idx), bs):
        b = idx[i:i + bs]
        if drop_last and len(b) < bs:
            break
        xb, yb = x[b].float() / 255, y[b]
        yield (raw_aug(xb) if aug else xb), yb


def raw_fit(case: Case, data, n_out: int) -> float:
    xt, yt, xv, yv = data
    model = new_model(case, n_out)
    params = list(model.parameters())
    groups = [dict(params=[p for p in params if p.ndim > 1], weight_decay=WD),
              dict(params=[p for p in params if p.ndim <= 1], weight_decay=0.0)]
    n_batches = len(xt) // case.bs
    opt = torch.optim.AdamW(groups, lr=case.lr, betas=(MOMS[0], SQR_MOM), eps=EPS)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=case.lr, total_steps=case.epochs * n_batches, pct_start=PCT_START, anneal_strategy="cos",
        base_momentum=MOMS[1], max_momentum=MOMS[0], div_factor=DIV, final_div_factor=DIV_FINAL / DIV)
    g = torch.Generator().manual_seed(SEED)
    t0 = time.perf_counter()
    for _ in range(case.epochs):
        model.train()
        for xb, yb in raw_batches(xt, yt, torch.randperm(len(xt), generator=g), case.bs, case.aug):
            nn.functional.cross_entropy(model(xb), yb).backward()
            opt.step()
            opt.zero_grad()
            sched.step()
        model.eval()
        with torch.no_grad():
            for xb, yb in raw_batches(xv, yv, torch.arange(len(xv)), case.bs * 2, False, drop_last=False):
                nn.functional.cross_entropy(model(xb), yb)
    return time.perf_counter() - t0


def raw_loader(case: Case, data) -> float:
    xt, yt = data[:2]
    n = 0
    t0 = time.perf_counter()
    for xb, _ in raw_batches(xt, yt, torch.randperm(len(xt)), case.bs, case.aug):
        n += len(xb)
    return n / (time.perf_counter() - t0)


# ---------------------------------------------------------------- plain fastai, as the lessons write it


def fastai_dls(case: Case):
    if case.name == "a":
        path = DATA / "mnist_tiny"
        block = DataBlock(blocks=(ImageBlock(PILImageBW), CategoryBlock), get_items=get_image_files,
                          splitter=GrandparentSplitter(), get_y=parent_label)
        return block.dataloaders(path, bs=case.bs)
    if case.name == "b":
        files = get_image_files(DATA / "oxford-iiit-pet" / "images")
        return ImageDataLoaders.from_name_re(DATA / "oxford-iiit-pet", files, r"^(.+)_\d+\.\w+$", valid_pct=0.2,
                                             seed=SEED, item_tfms=Resize(128), batch_tfms=aug_transforms(),
                                             bs=case.bs)
    path = DATA / "camvid_tiny"
    codes = np.loadtxt(path / "codes.txt", dtype=str)
    return SegmentationDataLoaders.from_label_func(
        path, bs=case.bs, fnames=get_image_files(path / "images"), codes=codes, valid_pct=0.2, seed=SEED,
        label_func=lambda o: path / "labels" / f"{o.stem}_P{o.suffix}")


def fastai_fit(case: Case, n_out: int) -> float:
    dls = fastai_dls(case)
    torch.manual_seed(SEED)
    if case.name == "a":
        learn = Learner(dls, new_model(case, n_out), loss_func=CrossEntropyLossFlat(), metrics=accuracy)
    elif case.name == "b":
        learn = vision_learner(dls, resnet18, pretrained=False, metrics=accuracy)
    else:
        learn = unet_learner(dls, small_encoder, pretrained=False)
    learn.logger = noop
    with learn.no_bar():
        t0 = time.perf_counter()
        learn.fit_one_cycle(case.epochs, case.lr)
        return time.perf_counter() - t0


def loader_rate(dl) -> float:
    for _ in dl:  # a first pass: workers started, caches built
        pass
    n, t0 = 0, time.perf_counter()
    for b in dl:
        n += len(b[0])
    return n / (time.perf_counter() - t0)


# ---------------------------------------------------------------- fxp


def fxp_fit(case: Case, tmp: Path, tag: str, *extra: str) -> tuple[float, str]:
    "The epochs' seconds of one `fxp train` (metrics.csv) and what it printed."
    cfg, overrides = fxp_cfg(case, *extra)
    out = io.StringIO()
    with Run(tmp / tag, cfg, overrides=overrides, task=cfg.task.kind) as run, contextlib.redirect_stdout(out):
        fxp.train.train(cfg, run)
    rows = read_metrics(run.path)
    return sum(r["time"] for r in rows), out.getvalue()


def fxp_loader(case: Case, *extra: str) -> float:
    cfg, _ = fxp_cfg(case, *extra)
    return loader_rate(dispatch.kind_module(cfg.task.kind).dls(cfg, torch.device("cpu")).train)


# ---------------------------------------------------------------- report


def run_case(case: Case, tmp: Path) -> None:
    cache = f"data.cache={tmp / 'cache'}"
    xt_f, yt, xv_f, yv, n_out = items(case)
    t0 = time.perf_counter()
    xt, xv = decode(xt_f, case), decode(xv_f, case)
    seg = case.name == "c"
    yt = decode(yt, case, mask=True).long() if seg else torch.tensor(yt)
    yv = decode(yv, case, mask=True).long() if seg else torch.tensor(yv)
    decode_s = time.perf_counter() - t0
    data = (xt, yt, xv, yv)
    ways = {"raw": lambda r: raw_fit(case, data, n_out), "fastai": lambda r: fastai_fit(case, n_out),
            "fxp off": lambda r: fxp_fit(case, tmp, f"off{r}", "data.cache=off")[0],
            "fxp": lambda r: fxp_fit(case, tmp, f"on{r}", cache)[0]}
    times = {w: [] for w in ways}
    build = fxp_fit(case, tmp, "build", cache)[1]  # the warm-up round of fxp builds the cache
    built = [(float(mb), float(s)) for mb, s in re.findall(r"\(([\d.]+) MB, ([\d.]+) s\)", build)]
    for r in range(ROUNDS + 1):  # round 0: warm-up; interleaved, so machine load hits every way alike
        for w, fn in ways.items():
            times[w].append(fn(r))
    rates = {"raw": raw_loader(case, data), "fastai": loader_rate(fastai_dls(case).train),
             "fxp off": fxp_loader(case, "data.cache=off"), "fxp": fxp_loader(case, cache)}
    best = {w: min(t[1:]) for w, t in times.items()}
    print(f"\n({case.name}) {case.what}: {len(xt)} train / {len(xv)} valid images, {case.epochs} epochs, bs {case.bs}, "
          f"{THREADS} threads, load average {os.getloadavg()[0]:.2f}")
    print(f"{'way':<9}{'loader img/s':>13}{'train s':>9}   all rounds (s), 1st = warm-up")
    for w in ways:
        print(f"{w:<9}{rates[w]:>13,.0f}{best[w]:>9.2f}   " + " ".join(f"{t:.2f}" for t in times[w]))
    print(f"one-time: raw decode {decode_s:.2f} s; fxp cache build {sum(s for _, s in built):.2f} s "
          f"({sum(mb for mb, _ in built):.1f} MB)")
    print(f"loader fxp/raw={rates['fxp'] / rates['raw']:.2f} (before: {rates['fxp off'] / rates['raw']:.2f})")
    print(f"fastai/raw={best['fastai'] / best['raw']:.2f}")
    print(f"fxp off/raw={best['fxp off'] / best['raw']:.2f}")
    print(f"fxp/raw={best['fxp'] / best['raw']:.2f}", flush=True)


def main(names: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for name in names or list(CASES):
            run_case(CASES[name], Path(tmp) / name)


if __name__ == "__main__":
    main(sys.argv[1:])
