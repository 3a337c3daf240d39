#!/usr/bin/env bash
# The GPU half of "Scaling out" (issue 15), for a machine with CUDA: prepared, not yet run (no GPU in the session that
# wrote it). From the repo root, with fxp installed (pip install -e ".[dist,ray]"):
#   bash bench/gpu_ddp_check.sh [DATA_DIR]        # DATA_DIR holds mnist_tiny (default ../shared/data)
# Prints each step's command and the summary fields that say whether it worked; exit 1 at the first failure.
set -euo pipefail
DATA=${1:-../shared/data}
OUT=${OUT:-$(mktemp -d)/gpu_ddp}
mkdir -p "$OUT"
GPUS=$(nvidia-smi --query-gpu=index --format=csv,noheader | wc -l)
echo "GPUs: $GPUS; runs under $OUT"
nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader

show() {  # a run folder's verdict: status, world size, device, throughput, final accuracy, wall time
  python - "$1" <<'PY'
import json, sys
s = json.load(open(f"{sys.argv[1]}/summary.json"))
print({k: s.get(k) for k in ("status", "world_size", "global_bs", "device", "items_per_s", "wall_time_s")},
      "accuracy", s["final_metrics"].get("accuracy"))
sys.exit(s["status"] != "completed")
PY
}
run() { echo "+ fxp $*"; fxp "$@"; }

# 1. The launcher path: 2 ranks on CUDA (NCCL) if there are 2 GPUs; then one GPU, one process, same global batch.
N=$(( GPUS >= 2 ? 2 : 1 ))
if [ "$N" = 2 ]; then
  run train task=mnist data.path="$DATA/mnist_tiny" trainer.devices=2 trainer.device=cuda hydra.run.dir="$OUT/ddp2"
  show "$OUT/ddp2"
else  # NCCL takes one GPU per rank, and trainer.devices=1 trains in-process (no launcher): the launcher on CPU instead
  echo "one GPU: a 2-rank NCCL run needs 2 GPUs; running 2 ranks on CPU (gloo), then the 1-GPU run to compare"
  run train task=mnist data.path="$DATA/mnist_tiny" trainer.devices=2 trainer.device=cpu hydra.run.dir="$OUT/ddp2_cpu"
  show "$OUT/ddp2_cpu"
fi
run train task=mnist data.path="$DATA/mnist_tiny" trainer.device=cuda trainer.bs=128 hydra.run.dir="$OUT/one_gpu"
show "$OUT/one_gpu"

# 2. bf16 + channels_last under DDP (the GPU speed path), when there are 2 GPUs.
if [ "$N" = 2 ]; then
  run train task=mnist data.path="$DATA/mnist_tiny" trainer.devices=2 trainer.device=cuda trainer.precision=bf16 \
    trainer.channels_last=true hydra.run.dir="$OUT/ddp2_bf16"
  show "$OUT/ddp2_bf16"
fi

# 3. One GPU per local parallel job: each job's summary says which GPU it was given.
run train -m hydra/launcher=joblib hydra.launcher.n_jobs="$GPUS" trainer.device=cuda trainer.seed=1,2 \
  trainer.epochs=1 hydra.sweep.dir="$OUT/joblib"
python - "$OUT/joblib" <<'PY'
import json, pathlib, sys
for job in sorted(pathlib.Path(sys.argv[1]).glob("[0-9]*")):
    s = json.load(open(job / "summary.json"))
    print(job.name, s["status"], s.get("resources"), s.get("device"))
PY

# 4. A Ray sweep with a GPU per job (Ray sets CUDA_VISIBLE_DEVICES for each task).
run train -m hydra/launcher=ray hydra.launcher.remote.num_gpus=1 trainer.device=cuda trainer.seed=1,2 \
  trainer.epochs=1 hydra.sweep.dir="$OUT/ray"
cat "$OUT/ray/sweep.csv"
echo "all GPU checks passed: $OUT"
