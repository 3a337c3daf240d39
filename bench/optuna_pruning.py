"""Benchmark of Optuna pruning on fxp's default task: the same seeded search with and without the median pruner.

What it runs, one after the other in one go, each the installed command in its own temporary sweep folder:

  pruned    fxp train -m hydra/sweeper=optuna_search hydra.sweeper.n_trials=12 hydra.sweeper.pruner=median
  unpruned  the same with hydra.sweeper.pruner=none

(the preset's TPE sampler seeded 42 over lr, wd and epochs 1-4; the median pruner prunes after each epoch once 5
trials completed). It prints each search's wall time, its best value of task.monitor (best.json) and how its trials
ended, side by side, then whether pruning was faster and within TOLERANCE of the unpruned best. Wall times on a
shared machine vary with the load: the load average is printed beside them.

Run:  .venv/bin/python bench/optuna_pruning.py        (several minutes on a quiet 2-core CPU)
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

SEARCH = ["train", "-m", "hydra/sweeper=optuna_search", "hydra.sweeper.n_trials=12"]
WAYS = {"pruned": ["hydra.sweeper.pruner=median"], "unpruned": ["hydra.sweeper.pruner=none"]}
TOLERANCE = 0.01  # how far the pruned search's best may fall short of the unpruned one's


def fxp() -> list[str]:
    "The installed fxp beside this interpreter, else `python -m fxp`."
    exe = Path(sys.executable).with_name("fxp")
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "fxp"]


def search(extra: list[str], where: Path) -> dict:
    "One search: its wall time, best value and the count of each trial status."
    sweep = where / "sweep"
    t0 = time.perf_counter()
    p = subprocess.run([*fxp(), *SEARCH, *extra, f"hydra.sweep.dir={sweep}"], cwd=where, capture_output=True,
                       text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"{' '.join(extra)} failed ({p.returncode}):\n{p.stderr[-2000:]}")
    best = json.loads((sweep / "best.json").read_text())
    with open(sweep / "sweep.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return dict(wall=wall, best=best["value"], metric=best["metric"], load=os.getloadavg()[0],
                statuses=Counter(r["status"] for r in rows), epochs=sum(int(r["epochs"]) for r in rows))


def main() -> int:
    root = Path(tempfile.mkdtemp(prefix="fxp-optuna-bench-"))
    try:
        results = {}
        for way, extra in WAYS.items():
            (root / way).mkdir()
            results[way] = search(extra, root / way)
            r = results[way]
            print(f"{way:9} {r['wall']:7.1f} s  best {r['metric']} {r['best']:.4f}  {r['epochs']:3d} epochs  "
                  f"{dict(r['statuses'])}  (load {r['load']:.1f})", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    pruned, unpruned = results["pruned"], results["unpruned"]
    faster = pruned["wall"] < unpruned["wall"]
    close = abs(pruned["best"] - unpruned["best"]) <= TOLERANCE
    print(f"pruning: {unpruned['wall'] / pruned['wall']:.2f}x faster ({'yes' if faster else 'NO'}), best "
          f"{pruned['best'] - unpruned['best']:+.4f} vs unpruned ({'within' if close else 'NOT within'} {TOLERANCE})")
    return 0 if faster and close else 1


if __name__ == "__main__":
    sys.exit(main())
