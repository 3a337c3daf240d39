"""CPU benchmark of fxp's default task: the training-loop overhead of fxp vs a raw PyTorch loop and plain fastai.

What it measures: the same work done three ways in one process -- scikit-learn's digits (8x8 grey, 10 classes,
20% stratified validation split), `fxp.models.small_cnn(1, 10, (16, 32, 64))`, 5 epochs of one-cycle training
at lr_max 1e-2 (pct_start 0.25, cosine, moms 0.95/0.85/0.95, Adam with 0.01 decoupled weight decay), train bs 64
(shuffled, last partial batch dropped), valid bs 128, a validation pass (loss + accuracy) after every epoch:

  raw     a hand-written PyTorch loop over in-memory tensors (AdamW + OneCycleLR configured like fastai's,
          batchnorm and bias parameters without weight decay as in fastai's Learner)
  fastai  a plain fastai `Learner` on TfmdDL DataLoaders over lists of (x, y) items, `fit_one_cycle(5, 1e-2)`
  fxp     exactly what `fxp train` does: Hydra compose + `fxp.config.validate`, a `Run` folder, `fxp.train.train`

Times are `time.perf_counter` around the fit only (no imports, no data loading). For fxp the loop time is the
sum of the per-epoch `time` column of the run's metrics.csv (train + valid of each epoch), as the brief asks;
the whole `train()` (build, fit, export, plots) and the wall time of its fit stages (which also include the
per-epoch checkpoint saves that fall outside the csv's epoch timer) are reported beside it.
Each way runs REPEATS times, interleaved; the first round is a warm-up (shown, not counted) and the table shows
the minimum of the remaining rounds. Other CPU-heavy processes distort the numbers badly on a 2-core machine
(torch's 2 threads then oversubscribe the cores: a 0.25 s fit has been seen to take 30-50 s), so every round is
printed with the load average; rerun on a quiet machine if the rounds of a way disagree.

Run:  .venv/bin/python bench/cpu_default.py        (about 25 s on a quiet 2-core CPU)
The last line is `fxp/raw=<ratio>`, the line before it `fastai/raw=<ratio>`.
"""
from __future__ import annotations

import contextlib
import io
import os
import tempfile
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*")
import torch  # noqa: E402

# Before any other work, so every way runs with the same intra-op thread pool.
THREADS = os.cpu_count() or 1
torch.set_num_threads(THREADS)

import fastai.callback.all  # noqa: E402,F401  (fit_one_cycle, no_bar)
from fastai.data.core import DataLoaders, TfmdDL  # noqa: E402
from fastai.learner import Learner  # noqa: E402
from fastai.losses import CrossEntropyLossFlat  # noqa: E402
from fastai.metrics import accuracy  # noqa: E402
from fastcore.basics import noop  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from torch import nn  # noqa: E402

import fxp.config  # noqa: E402
import fxp.train  # noqa: E402
from fxp.models import small_cnn  # noqa: E402
from fxp.runs import read_metrics  # noqa: E402
from fxp.writer import Run  # noqa: E402

EPOCHS, BS, VALID_BS, LR, SEED = 5, 64, 128, 1e-2, 42
PCT_START, MOMS, WD, EPS, SQR_MOM = 0.25, (0.95, 0.85, 0.95), 0.01, 1e-5, 0.99  # fastai's Adam/one-cycle defaults
DIV, DIV_FINAL = 25.0, 1e5  # fastai: start at lr_max/25, end at lr_max/1e5
REPEATS = 5  # round 1 is the warm-up; the min of the rest resists other processes on a 2-core box


def digits():
    "Train/valid tensors split exactly as fxp's digits task splits them."
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16
    y = torch.tensor(d.target)
    _, valid_idx = train_test_split(range(len(y)), test_size=0.2, random_state=SEED, stratify=d.target)
    is_valid = torch.zeros(len(y), dtype=torch.bool)
    is_valid[valid_idx] = True
    return x[~is_valid], y[~is_valid], x[is_valid], y[is_valid]


def new_model() -> nn.Module:
    torch.manual_seed(SEED)  # same initial weights for raw and fastai (fxp seeds itself with the same seed)
    return small_cnn(n_in=1, n_out=10, channels=(16, 32, 64))


# ---------------------------------------------------------------- raw PyTorch


def raw_validate(model, xv, yv) -> tuple[float, float]:
    model.eval()
    loss, correct = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(xv), VALID_BS):
            out = model(xv[i:i + VALID_BS])
            yb = yv[i:i + VALID_BS]
            loss += nn.functional.cross_entropy(out, yb, reduction="sum").item()
            correct += (out.argmax(1) == yb).sum().item()
    return loss / len(xv), correct / len(xv)


def param_groups(model) -> list[dict]:
    "fastai's Learner (wd_bn_bias=False) decays neither batchnorm weights nor biases: the 1-d parameters here."
    params = list(model.parameters())
    return [dict(params=[p for p in params if p.ndim > 1], weight_decay=WD),
            dict(params=[p for p in params if p.ndim <= 1], weight_decay=0.0)]


def raw_fit(data) -> tuple[float, float]:
    "Seconds and final valid accuracy of a hand-written loop doing fastai's one-cycle recipe."
    xt, yt, xv, yv = data
    model = new_model()
    n_batches = len(xt) // BS  # drop_last
    # fastai's Adam with true_wd is AdamW; its mom schedule drives beta1, sqr_mom is beta2.
    opt = torch.optim.AdamW(param_groups(model), lr=LR, betas=(MOMS[0], SQR_MOM), eps=EPS)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=LR, total_steps=EPOCHS * n_batches, pct_start=PCT_START, anneal_strategy="cos",
        cycle_momentum=True, base_momentum=MOMS[1], max_momentum=MOMS[0], div_factor=DIV,
        final_div_factor=DIV_FINAL / DIV)  # torch divides the final lr by div * final_div
    g = torch.Generator().manual_seed(SEED)
    t0 = time.perf_counter()
    for _ in range(EPOCHS):
        model.train()
        perm = torch.randperm(len(xt), generator=g)
        for b in perm[:n_batches * BS].split(BS):
            loss = nn.functional.cross_entropy(model(xt[b]), yt[b])
            loss.backward()
            opt.step()
            opt.zero_grad()
            sched.step()
        _, acc = raw_validate(model, xv, yv)
    return time.perf_counter() - t0, acc


# ---------------------------------------------------------------- plain fastai


def fastai_dls(data) -> DataLoaders:
    "The usual fastai loaders: per-item datasets of (x, y) tuples, collated by fastai's TfmdDL."
    xt, yt, xv, yv = data
    train = TfmdDL(list(zip(xt, yt)), bs=BS, shuffle=True, drop_last=True)
    valid = TfmdDL(list(zip(xv, yv)), bs=VALID_BS)
    return DataLoaders(train, valid, device=torch.device("cpu"))


def fastai_fit(data) -> tuple[float, float]:
    learn = Learner(fastai_dls(data), new_model(), loss_func=CrossEntropyLossFlat(), metrics=accuracy)
    learn.logger = noop
    with learn.no_bar():
        t0 = time.perf_counter()
        learn.fit_one_cycle(EPOCHS, LR)
        secs = time.perf_counter() - t0
    return secs, float(learn.recorder.values[-1][-1])  # values: train_loss, valid_loss, accuracy


# ---------------------------------------------------------------- fxp


def fxp_cfg():
    "fxp's default config, composed and validated the way `fxp train` does it."
    from hydra import compose, initialize_config_module

    with initialize_config_module("fxp.conf", version_base="1.3"):
        cfg = compose("config", overrides=[])
    return fxp.config.validate(cfg)


class StageTimer:
    "Wraps fxp.train.fit_stage (looked up as a module global by train()) to time the fit itself."

    def __init__(self):
        self.secs, self.orig = 0.0, fxp.train.fit_stage

    def __call__(self, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return self.orig(*args, **kwargs)
        finally:
            self.secs += time.perf_counter() - t0

    def __enter__(self):
        fxp.train.fit_stage = self
        return self

    def __exit__(self, *exc):
        fxp.train.fit_stage = self.orig


def fxp_fit(tmp: Path, i: int) -> dict:
    "Loop seconds (metrics.csv), fit-stage seconds, whole train() seconds and final accuracy of one fxp run."
    cfg = fxp_cfg()
    # fxp prints a line per epoch; captured (as when piped to a file) so the table stays readable.
    with Run(tmp / f"run{i}", cfg, overrides=[], task="digits") as run, StageTimer() as stages, \
            contextlib.redirect_stdout(io.StringIO()):
        t0 = time.perf_counter()
        fxp.train.train(cfg, run)
        whole = time.perf_counter() - t0
    rows = read_metrics(run.path)
    assert len(rows) == EPOCHS, rows
    return dict(loop=sum(r["time"] for r in rows), fit=stages.secs, whole=whole, acc=rows[-1]["accuracy"])


# ---------------------------------------------------------------- report


def check_config(cfg) -> None:
    "Fail loudly if fxp's defaults drift from the work the other two ways do."
    tr = cfg.trainer
    got = (tr.bs, tr.epochs, float(tr.lr), tuple(tr.moms), tr.wd, [s.policy for s in tr.stages], tr.device)
    want = (BS, EPOCHS, LR, MOMS, None, ["fit_one_cycle"], "auto")
    assert got == want, f"fxp defaults changed: {got} != {want}"


def main() -> None:
    # Other jobs on the same cores distort every number; the load average is printed to show it.
    load = os.getloadavg()[0]
    check_config(fxp_cfg())
    data = digits()
    times = {"raw": [], "fastai": [], "fxp": []}
    accs, extra = {}, {"fit": [], "whole": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(REPEATS):  # interleaved, so drift in machine load hits every way alike
            for way, fn in (("raw", raw_fit), ("fastai", fastai_fit)):
                secs, accs[way] = fn(data)
                times[way].append(secs)
            res = fxp_fit(Path(tmp), r)
            times["fxp"].append(res["loop"])
            accs["fxp"] = res["acc"]
            for k in extra:
                extra[k].append(res[k])
    assert torch.get_num_threads() == THREADS, "something changed the thread count"
    best = {k: min(v[1:]) for k, v in {**times, **extra}.items()}  # drop the warm-up round

    print(f"torch {torch.__version__}, {THREADS} threads, {len(data[0])} train / {len(data[2])} valid items, "
          f"min of {REPEATS - 1} timed rounds after 1 warm-up, load average {load:.2f}")
    print(f"{'way':<8}{'seconds':>9}{'valid acc':>11}   all rounds (s), 1st = warm-up")
    for way in times:
        print(f"{way:<8}{best[way]:>9.3f}{accs[way]:>11.4f}   " + " ".join(f"{t:.3f}" for t in times[way]))
    print(f"fxp fit_stage wall (incl. per-epoch checkpoint saves): {best['fit']:.3f} s; "
          f"whole train() (build, fit, export, plots): {best['whole']:.3f} s")
    if max(accs.values()) - min(accs.values()) > 0.03 or min(accs.values()) < 0.9:
        print(f"WARNING: accuracies differ or are low {accs}: the three ways are not doing the same work")
    print(f"fastai/raw={best['fastai'] / best['raw']:.2f}")
    print(f"fxp/raw={best['fxp'] / best['raw']:.2f}")


if __name__ == "__main__":
    main()
