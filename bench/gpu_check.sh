#!/usr/bin/env bash
# The GPU path, measured (issue 12 item 4): images/s of resnet34 at 224 px, bs 256, on a folder of a few thousand
# JPEGs, four ways — a raw PyTorch loop on decode-once tensors (bf16 autocast + channels_last, crop/flip on the GPU),
# plain fastai as lesson 1 writes it (Resize item transform + aug_transforms, worker processes), fxp with
# trainer.precision=bf16 trainer.channels_last=true without and with trainer.compile=true (its decode-once cache
# built by a first epoch, timed apart) — then one `fxp train task=pets` end to end on the GPU. Target: fxp ≥ 0.8x raw.
#
# Run from the repository root on a machine with one CUDA GPU:  bash bench/gpu_check.sh   (about 5 minutes)
# Data: N JPEGs (default 3000) made from the pet photos of shared/data (random 500 px crops and flips of each,
# named <Breed>_<n>.jpg as task=pets reads them) in $WORK (default a temp folder); FXP_DATA points at shared/data.
set -euo pipefail
PY=${PY:-.venv/bin/python}
DATA=${FXP_DATA:-$(cd .. && pwd)/shared/data}
WORK=${WORK:-$(mktemp -d)}
N=${N:-3000}
export FXP_CACHE_DIR=$WORK/cache
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader

echo "== making $N JPEGs in $WORK/pets/images"
$PY - "$DATA/oxford-iiit-pet/images" "$WORK/pets/images" "$N" <<'EOF'
import random, sys
from pathlib import Path
from PIL import Image, ImageOps
src, dest, n = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
dest.mkdir(parents=True, exist_ok=True)
files, rng = sorted(src.glob("*.jpg")), random.Random(0)
for i in range(n):
    f = files[i % len(files)]
    im = Image.open(f).convert("RGB")
    s = int(min(im.size) * rng.uniform(0.7, 1.0))
    x, y = rng.randint(0, im.width - s), rng.randint(0, im.height - s)
    im = im.crop((x, y, x + s, y + s)).resize((500, 500))
    if rng.random() < 0.5:
        im = ImageOps.mirror(im)
    im.save(dest / f"{f.stem.rsplit('_', 1)[0]}_{i}.jpg", quality=90)
EOF

echo "== raw PyTorch loop and plain fastai"
$PY - "$WORK/pets" <<'EOF'
import re, sys, time, warnings
from pathlib import Path
warnings.filterwarnings("ignore")
import numpy as np, torch
from PIL import Image
from torch import nn
from fastai.vision.all import (ImageDataLoaders, Resize, aug_transforms, create_vision_model, get_image_files,
                               resnet34, vision_learner)
from fastcore.basics import noop

path, bs, dev = Path(sys.argv[1]), 256, torch.device("cuda")
files = sorted(get_image_files(path / "images"))
labels = [re.match(r"^(.+)_\d+\.\w+$", f.name).group(1) for f in files]
vocab = sorted(set(labels))

t0 = time.perf_counter()
x = torch.from_numpy(np.stack([np.asarray(Image.open(f).convert("RGB").resize((256, 256))) for f in files]))
x = x.permute(0, 3, 1, 2).contiguous()
y = torch.tensor([vocab.index(l) for l in labels])
print(f"raw decode once: {len(files)} images in {time.perf_counter() - t0:.1f} s")
x, y = x.to(dev), y.to(dev)
model = create_vision_model(resnet34, len(vocab), pretrained=False).to(dev).to(memory_format=torch.channels_last)
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
mean = torch.tensor([0.485, 0.456, 0.406], device=dev).view(1, 3, 1, 1)
std = torch.tensor([0.229, 0.224, 0.225], device=dev).view(1, 3, 1, 1)

def step(b):
    i, j = np.random.randint(0, 33, 2)
    xb = x[b, :, i:i + 224, j:j + 224].float().div_(255)
    xb = torch.where(torch.rand(len(b), 1, 1, 1, device=dev) < 0.5, xb.flip(-1), xb)
    xb = ((xb - mean) / std).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = nn.functional.cross_entropy(model(xb), y[b])
    loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)

def epoch():
    n = 0
    for b in torch.randperm(len(x), device=dev).split(bs):
        if len(b) == bs:
            step(b); n += bs
    torch.cuda.synchronize()
    return n

epoch()
t0 = time.perf_counter(); n = epoch() + epoch()
print(f"raw bf16+channels_last: {n / (time.perf_counter() - t0):,.0f} img/s")

dls = ImageDataLoaders.from_name_re(path, files, r"^(.+)_\d+\.\w+$", item_tfms=Resize(256),
                                    batch_tfms=aug_transforms(size=224), bs=bs, seed=42, device=dev)
learn = vision_learner(dls, resnet34, pretrained=False).to_bf16()
learn.logger = noop
with learn.no_bar():
    learn.fit(1, 1e-3)
    t0 = time.perf_counter(); learn.fit(1, 1e-3); secs = time.perf_counter() - t0
print(f"fastai (lesson 1 pipeline, {dls.train.fake_l.num_workers} workers, bf16): "
      f"{len(dls.train) * bs / secs:,.0f} img/s (train epoch incl. its validation)")
EOF

fxp() {  # one fxp run: its epochs' img/s from metrics.csv (the first epoch builds the cache; shown apart)
  local tag=$1; shift
  .venv/bin/fxp train task=pets data.path="$WORK/pets" model=resnet34 model.pretrained=false trainer=default \
    trainer.bs=256 trainer.epochs=3 task.size=256 task.aug.size=224 trainer.precision=bf16 trainer.channels_last=true \
    hydra.run.dir="$WORK/runs/$tag" "$@" | grep -E "image cache|epoch"
  $PY - "$WORK/runs/$tag" "$tag" <<'EOF'
import csv, json, sys
rows = list(csv.DictReader(open(f"{sys.argv[1]}/metrics.csv")))
n = json.load(open(f"{sys.argv[1]}/summary.json")).get("items_train", 0)
rate = [n / float(r["time"]) for r in rows]
print(f"fxp {sys.argv[2]}: " + ", ".join(f"epoch {i + 1} {r:,.0f} img/s" for i, r in enumerate(rate)))
EOF
}
echo "== fxp"
fxp bf16
fxp bf16-compile trainer.compile=true

echo "== fxp train task=pets end to end on the GPU (shared/data's pets)"
.venv/bin/fxp train task=pets data.path="$DATA/oxford-iiit-pet" model.pretrained=false trainer=default \
  trainer.epochs=2 trainer.bs=16 hydra.run.dir="$WORK/runs/pets" | tail -12
