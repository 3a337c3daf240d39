"""The Python parts of bench/gpu_check.sh, one subcommand each, so that each can be tried on its own (on a CPU too):

  jpegs SRC DEST N          N 500 px JPEGs made from the pet photos in SRC (random crops and flips, named
                            <Breed>_<n>.jpg as task=pets reads them), in parallel
  raw PETS RATES [DEVICE]   a raw PyTorch loop on decode-once tensors (bf16 autocast + channels_last on CUDA, crop and
                            flip on the device) and plain fastai as lesson 1 writes it, resnet34 at 224 px, bs 256
                            (BS to change): each one's images/s appended to the RATES file
  fxp RUN NAME RATES        an fxp run's images/s (its training loop, metrics.csv's data_s + step_s, in the epochs
                            after the first: those hold the cache build and compilation) appended to RATES
  table RATES               the ways side by side: images/s and the ratio to the raw loop

RATES is a tab-separated file: way, images/s, batch size, precision.
"""
from __future__ import annotations

import csv
import json
import os
import random
import re
import sys
import time
import warnings
from multiprocessing import Pool
from pathlib import Path

SIZE, CROP, EPOCHS = 256, 224, 3  # decoded at 256 px, trained on random 224 px crops
PATTERN = r"^(.+)_\d+\.\w+$"  # task=pets' label from a file name


# ---------------------------------------------------------------- the images


def jpegs(src: str, dest: str, n: str) -> None:
    files, out = sorted(Path(src).glob("*.jpg")), Path(dest)
    out.mkdir(parents=True, exist_ok=True)
    with Pool() as pool:
        pool.starmap(_jpeg, [(files[i % len(files)], out, i) for i in range(int(n))])
    print(f"{n} JPEGs in {out}")


def _jpeg(f: Path, out: Path, i: int) -> None:
    from PIL import Image, ImageOps

    rng = random.Random(i)
    im = Image.open(f).convert("RGB")
    s = int(min(im.size) * rng.uniform(0.7, 1.0))
    x, y = rng.randint(0, im.width - s), rng.randint(0, im.height - s)
    im = im.crop((x, y, x + s, y + s)).resize((500, 500))
    if rng.random() < 0.5:
        im = ImageOps.mirror(im)
    im.save(out / f"{f.stem.rsplit('_', 1)[0]}_{i}.jpg", quality=90)


def _decoded(f):
    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(f).convert("RGB").resize((SIZE, SIZE)))


# ---------------------------------------------------------------- raw PyTorch and plain fastai


def raw(pets: str, rates: str, device: str = "cuda") -> None:
    warnings.filterwarnings("ignore")
    import numpy as np
    import torch
    from fastai.vision.all import create_vision_model, get_image_files, resnet34
    from torch import nn

    path, bs, dev = Path(pets), int(os.environ.get("BS", 256)), torch.device(device)
    files = sorted(get_image_files(path / "images"))
    labels = [re.match(PATTERN, f.name).group(1) for f in files]
    vocab = sorted(set(labels))
    t0 = time.perf_counter()
    with Pool() as pool:
        x = torch.from_numpy(np.stack(pool.map(_decoded, files, chunksize=32))).permute(0, 3, 1, 2).contiguous()
    print(f"raw decode once: {len(files)} images in {time.perf_counter() - t0:.1f} s")
    x, y = x.to(dev), torch.tensor([vocab.index(v) for v in labels]).to(dev)
    model = create_vision_model(resnet34, len(vocab), pretrained=False).to(dev).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    mean = torch.tensor([0.485, 0.456, 0.406], device=dev).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], device=dev).view(1, 3, 1, 1)
    amp = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda")

    def step(b):
        i, j = np.random.randint(0, SIZE - CROP + 1, 2)
        xb = x[b, :, i:i + CROP, j:j + CROP].float().div_(255)
        xb = torch.where(torch.rand(len(b), 1, 1, 1, device=dev) < 0.5, xb.flip(-1), xb)
        xb = ((xb - mean) / std).contiguous(memory_format=torch.channels_last)
        with amp:
            loss = nn.functional.cross_entropy(model(xb), y[b])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def epoch():
        n = 0
        for b in torch.randperm(len(x), device=dev).split(bs):
            if len(b) == bs:
                step(b)
                n += bs
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return n

    epoch()  # warm-up: cuDNN's autotuning, the allocator
    t0 = time.perf_counter()
    n = epoch() + epoch()
    precision = "bf16" if dev.type == "cuda" else "fp32"  # autocast on CUDA only, as fxp's
    record(rates, f"raw PyTorch ({precision}, channels_last)", n / (time.perf_counter() - t0), bs, precision)
    fastai(path, files, bs, dev, rates)


def fastai(path: Path, files, bs: int, dev, rates: str) -> None:
    "Lesson 1's pipeline: JPEGs decoded by worker processes each epoch, aug_transforms on the device, to_bf16."
    from fastai.vision.all import ImageDataLoaders, Resize, aug_transforms, resnet34, vision_learner
    from fastcore.basics import noop

    dls = ImageDataLoaders.from_name_re(path, files, PATTERN, item_tfms=Resize(SIZE),
                                        batch_tfms=aug_transforms(size=CROP), bs=bs, seed=42, device=dev)
    learn = vision_learner(dls, resnet34, pretrained=False)
    learn = learn.to_bf16() if dev.type == "cuda" else learn
    learn.logger = noop
    with learn.no_bar():
        learn.fit(1, 1e-3)  # warm-up: workers, cuDNN
        t0 = time.perf_counter()
        learn.fit(1, 1e-3)
        secs = time.perf_counter() - t0
    record(rates, f"fastai, lesson 1 ({dls.train.fake_l.num_workers} workers; epoch with its validation)",
           len(dls.train) * bs / secs, bs, "bf16" if dev.type == "cuda" else "fp32")


# ---------------------------------------------------------------- fxp's runs


def fxp(run: str, name: str, rates: str) -> None:
    import yaml

    folder = Path(run)
    s = json.loads((folder / "summary.json").read_text())
    trainer = yaml.safe_load((folder / "config.yaml").read_text())["trainer"]
    rows = list(csv.DictReader(open(folder / "metrics.csv")))
    bs = trainer["bs"] if isinstance(trainer["bs"], int) else chosen(s, "tried")
    precision = trainer["precision"] if trainer["precision"] != "auto" else chosen(s, "precision")
    if bs is None:
        sys.exit(f"fxp {name}: no batch size in {folder}/summary.json (a record with `tried` and `chosen`)")
    items = s["items_train"] // bs * bs  # drop_last
    times = [(float(r["data_s"]), float(r["step_s"])) for r in rows]
    rate = [items / (data + step) for data, step in times]
    print(f"fxp {name}: " + ", ".join(f"epoch {i} {_rate(r)} img/s (data {data:.2f} s, step {step:.2f} s)"
                                      for i, (r, (data, step)) in enumerate(zip(rate, times), 1)))
    later = rate[1:] or rate
    record(rates, f"fxp {name}", sum(later) / len(later), bs, precision)


def chosen(summary: dict, what: str):
    """What trainer.bs=auto or precision=auto chose, as summary.json records it: the `chosen` of its record (the one
    that lists what it `tried`, for the batch size; the one naming a precision, for the precision); None if none."""
    for v in summary.values():
        if isinstance(v, dict) and "chosen" in v:
            if what == "tried" and "tried" in v:
                return int(v["chosen"])
            if what == "precision" and str(v["chosen"]) in ("fp32", "fp16", "bf16"):
                return str(v["chosen"])
    return None


# ---------------------------------------------------------------- the table


def record(rates: str, name: str, rate: float, bs: int, precision: str) -> None:
    print(f"{name}: {_rate(rate)} img/s", flush=True)
    with open(rates, "a") as f:
        f.write(f"{name}\t{rate:.1f}\t{bs}\t{precision}\n")


def table(rates: str) -> None:
    rows = [line.rstrip("\n").split("\t") for line in open(rates) if line.strip()]
    raw_rate = next((float(r[1]) for r in rows if r[0].startswith("raw")), None)
    width = max(len(r[0]) for r in rows)
    print(f"{'way':<{width}}  {'img/s':>7}  {'x raw':>6}  {'bs':>5}  precision")
    for name, rate, bs, precision in rows:
        ratio = f"{float(rate) / raw_rate:.2f}" if raw_rate else "-"
        print(f"{name:<{width}}  {_rate(float(rate)):>7}  {ratio:>6}  {bs:>5}  {precision}")


def _rate(rate: float) -> str:
    return f"{rate:,.0f}" if rate >= 100 else f"{rate:.3g}"


if __name__ == "__main__":
    commands = {"jpegs": jpegs, "raw": raw, "fxp": fxp, "table": table}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        sys.exit(__doc__)
    commands[sys.argv[1]](*sys.argv[2:])
