#!/usr/bin/env bash
# The GPU path, measured and tested in one command (issue 12 item 4, issue 26 item 5): images/s of resnet34 at 224 px
# on a folder of N JPEGs made from shared/data's pet photos, side by side in one table —
#   raw      a raw PyTorch loop on decode-once tensors (bf16 autocast + channels_last, crop and flip on the GPU)
#   fastai   plain fastai as lesson 1 writes it (Resize item transform + aug_transforms, worker processes, to_bf16)
#   fxp      `fxp train task=pets` at bf16 + channels_last (bs 256); the same + trainer.compile=true; and
#            trainer.bs=auto trainer.precision=auto + channels_last (what they chose is in the table), each fxp figure
#            its training loop's (metrics.csv's data_s + step_s) in the epochs after the first, which holds the
#            decode-once cache's build and the compilation
# — then `fxp train task=pets` end to end on shared/data's pets, and the tests marked gpu (`pytest -m gpu`).
# Target: fxp >= 0.8x raw. The whole script: under 8 minutes on one H100 (each section prints its start time).
#
# Run from the repository root on a machine with one CUDA GPU:  bash bench/gpu_check.sh
# N JPEGs (default 5000) in $WORK (default a temp folder); FXP_DATA points at shared/data. Exit 1 if a run or a test
# failed (the others still run), 2 at once without a CUDA device.
set -euo pipefail
PY=${PY:-.venv/bin/python}
FXP=${FXP:-$(dirname "$PY")/fxp}
DATA=${FXP_DATA:-$(cd .. && pwd)/shared/data}
WORK=${WORK:-$(mktemp -d)}
N=${N:-5000}
export FXP_DATA=$DATA FXP_CACHE_DIR=$WORK/cache
RATES=$WORK/rates.tsv
FAILED=()
HERE=$(dirname "$0")

stop() { echo "gpu_check.sh: $*" >&2; exit 2; }
section() { echo "== [${SECONDS} s] $*"; }

command -v nvidia-smi >/dev/null || stop "no NVIDIA driver on this machine (nvidia-smi not found); run it where there is a CUDA GPU"
why=$("$PY" -c "import torch; print('' if torch.cuda.is_available() else f'torch {torch.__version__} sees no CUDA device')") \
  || stop "$PY cannot import torch (PY=/path/to/python)"
[ -z "$why" ] || stop "$why (torch.cuda.is_available() is False); run it where there is one"
[ -d "$DATA/oxford-iiit-pet/images" ] || stop "no pet photos in $DATA/oxford-iiit-pet/images (FXP_DATA=/path/to/shared/data)"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
: > "$RATES"

section "making $N JPEGs in $WORK/pets/images"
"$PY" "$HERE/gpu_check.py" jpegs "$DATA/oxford-iiit-pet/images" "$WORK/pets/images" "$N"

section "raw PyTorch loop and plain fastai"
"$PY" "$HERE/gpu_check.py" raw "$WORK/pets" "$RATES" || FAILED+=("raw/fastai")

fxp_run() {  # fxp_run TAG OVERRIDES...: one fxp train on the JPEGs, 3 epochs; its images/s into the table
  local tag=$1; shift
  section "fxp $tag"
  if "$FXP" train task=pets data.path="$WORK/pets" model=resnet34 model.pretrained=false trainer=default \
      trainer.epochs=3 task.size=256 task.aug.size=224 trainer.channels_last=true hydra.run.dir="$WORK/runs/$tag" \
      "$@" > "$WORK/$tag.log" 2>&1; then
    grep -E "image cache|epoch|auto" "$WORK/$tag.log" || true
    "$PY" "$HERE/gpu_check.py" fxp "$WORK/runs/$tag" "$tag" "$RATES" || FAILED+=("fxp $tag (its figures)")
  else
    tail -5 "$WORK/$tag.log"
    FAILED+=("fxp $tag")
  fi
}
fxp_run bf16-channels_last trainer.bs=256 trainer.precision=bf16
fxp_run bf16-channels_last-compile trainer.bs=256 trainer.precision=bf16 trainer.compile=true
fxp_run auto-bs-precision trainer.bs=auto trainer.precision=auto

section "fxp train task=pets end to end (shared/data's pets)"
"$FXP" train task=pets data.path="$DATA/oxford-iiit-pet" model.pretrained=false trainer=default trainer.epochs=2 \
  trainer.bs=16 hydra.run.dir="$WORK/runs/pets" | tail -12 || FAILED+=("fxp task=pets")

section "tests marked gpu"
"$PY" -m pytest -q -p no:cacheprovider -m gpu tests/ || FAILED+=("pytest -m gpu")

section "images/s of the training loop, resnet34 at 224 px, $N JPEGs (80% train)"
"$PY" "$HERE/gpu_check.py" table "$RATES"
echo "== done in ${SECONDS} s (target: under 480 s on one H100)"
if [ ${#FAILED[@]} -gt 0 ]; then
  printf 'gpu_check.sh: failed: %s\n' "${FAILED[@]}" >&2
  exit 1
fi
