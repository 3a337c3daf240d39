"""Batch sizes that fit the device (`trainer.bs=auto`), and a run that outlives running out of memory.

bs=auto (`probe`) runs real training steps of the step's learner as it will train (fastai's fit cut to a few batches:
forward, backward, optimizer step, with the run's augmentation, precision, channels_last, compile and techniques) at
growing sizes (`candidates`: powers of two from 2, or multiples of trainer.bs_step; never above the training set):
- on CUDA (`by_memory`) it keeps the largest size that ran with its peak memory (torch's max_memory_allocated since the
  size began) under trainer.mem_fraction of the device's; the first size that runs out of memory or peaks over it ends
  the doubling, and with bs_step a binary search over its multiples between the last size that fit and the first that
  did not follows. If even the first size does not fit: one line saying what to change.
- on the CPU (`by_speed`) memory rarely limits and time does: sizes from 16 to 256 (CPU_SIZES), each timed by its
  quickest step after the first (over CPU_TIMED_S at least); it keeps the smallest whose items/s is within 10% of the
  best (about the same speed, more optimizer steps an epoch), and tries no larger size once a step takes CPU_SLOW_S.
A later stage that grows the images (progressive resizing) probes again on the learner as it stands, which is then put
back as it was (`unchanged`).

Out of memory mid-run: fxp.train.fit turns the error into `OutOfMemory` (where, at what size); fxp.train.trained then
halves the step's batch (`Plan.halve`: not below 2), scales its learning rate as the batch (×0.5) where
trainer.scale_lr, and goes on from the step's last checkpoint through fxp resume's path. summary.json's `bs_changes`
lists each halving.

Test hook: FXP_INJECT_OOM=epoch:E raises torch.OutOfMemoryError at the first training batch of the run's epoch E
(metrics.csv's count) while the step's batch has not been halved yet: the recovery runs where no GPU is (`injected`).
"""
from __future__ import annotations

import gc
import math
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from fastai.callback.core import Callback, CancelFitException, CancelValidException
from fastai.torch_core import apply, get_model, get_random_states, set_random_states

from fxp.callbacks import MetricsCSV
from fxp.errors import FxpError, describe

GIB = 2 ** 30
STEPS = 3  # training steps a size at least: the first warms up (cuDNN's autotuning, compile, the allocator)
CPU_TIMED_S = 0.25  # the CPU rule times each size's steps after the first for this long at least (on a busy machine
MAX_STEPS = 64  # some step misses the preemptions: the quickest is kept), up to MAX_STEPS steps
CPU_SIZES = (16, 256)  # the sizes the CPU rule tries lie in this range
CPU_NEAR = 0.9  # the CPU rule keeps the smallest size at least this share of the best items/s
CPU_SLOW_S = 2.0  # the CPU rule tries no larger size once a step takes this long
INJECT = "FXP_INJECT_OOM"


def is_oom(e: BaseException) -> bool:
    "torch's out-of-memory error (CUDA), or the RuntimeError another backend raises ('MPS backend out of memory')."
    return isinstance(e, torch.OutOfMemoryError) or isinstance(e, RuntimeError) and "out of memory" in str(e)


def free_memory() -> None:
    """What running out of memory left behind: tensors only reference cycles still hold, the allocator's cached blocks,
    and an autocast that the failed forward pass entered and never left (fastai's MixedPrecision leaves it after the
    loss). Called outside the `except` block: the error's traceback holds the batch's tensors."""
    gc.collect()
    if not torch.cuda.is_available():
        return
    torch.cuda.empty_cache()
    if torch.is_autocast_enabled("cuda"):
        torch.set_autocast_enabled("cuda", False)
        torch.autocast_decrement_nesting()
        torch.clear_autocast_cache()


# --- which sizes, and which of them: the rules, on any `train(n)` -----------------------------------------------------


def smallest(tr) -> int:
    "The first size bs=auto tries: 2, or trainer.bs_step if larger."
    return max(2, tr.bs_step or 2)


def candidates(n_train: int, step: int | None = None, lo: int = 2, hi: int | None = None) -> list[int]:
    """Doubling sizes: powers of two, or with `step` its multiples step·2^k, from the first one ≥ `lo` (and ≥ 2) to the
    training set's size `n_train` (and `hi`)."""
    n = max(2, step or 2)  # smallest()
    while n < lo:
        n *= 2
    top, out = min(n_train, hi or n_train), []
    while n <= top:
        out.append(n)
        n *= 2
    return out


def between(lo: int, hi: int, step: int) -> int | None:
    "The middle multiple of `step` strictly between `lo` and `hi`; None if there is none."
    ks = range(lo // step + 1, -(-hi // step))
    return ks[len(ks) // 2] * step if ks else None


def by_memory(train, peak, limit: float, sizes: list[int], top: int, step: int | None = None) -> dict:
    """The largest of `sizes` (doubling) whose training steps (`train(n)`) ran and peaked (`peak()`: bytes since the
    size began) under `limit` bytes; with `step`, then the largest multiple of it that does, by a binary search between
    the last size that fit and the first that did not (or `top`, the training set, if all did). The first size that
    fails ends the doubling. {tried, chosen, peak_mem_gb, reason}; one line (FxpError) if the first size fails."""
    tried = []

    def fits(n: int) -> bool:
        oom = False
        try:
            train(n)
        except Exception as e:
            if not is_oom(e):
                raise
            oom = True  # the error and its traceback (the batch's tensors) are gone once out of this block
        if oom:
            free_memory()
            tried.append(dict(bs=n, result="out of memory"))
            return False
        used = peak()
        tried.append(dict(bs=n, peak_mem_gb=round(used / GIB, 3)))
        if used > limit:
            tried[-1]["result"] = "over mem_fraction"
        return used <= limit

    good = bad = None
    for n in sizes:
        if not fits(n):
            bad = n
            break
        good = n
    if step and good is not None:
        hi = bad if bad is not None else top // step * step + step
        while (m := between(good, hi, step)) is not None:
            good, hi = (m, hi) if fits(m) else (good, m)
    if good is None:
        raise FxpError(no_fit(tried[0] if tried else None, limit))
    chosen = next(t for t in tried if t["bs"] == good)
    return dict(tried=tried, chosen=good, peak_mem_gb=chosen["peak_mem_gb"], reason=memory_reason(good, tried, top))


def no_fit(first: dict | None, limit: float) -> str:
    "The line when not even the first size fits (or the training set is smaller than it)."
    if first is None:
        return "trainer.bs=auto: the training set is smaller than a batch of 2; add items or lower task.valid_pct"
    what = (f"peaked at {first['peak_mem_gb']:.2f} GiB" if "peak_mem_gb" in first else "ran out of memory")
    return (f"trainer.bs=auto: a batch of {first['bs']} does not fit: its training step {what}, over the "
            f"{limit / GIB:.2f} GiB allowed (trainer.mem_fraction of the device's memory); use a smaller model or "
            f"images (task.size=...), trainer.precision=bf16 or fp16, or raise trainer.mem_fraction")


def memory_reason(good: int, tried: list[dict], top: int) -> str:
    "Why `good`: its peak, and what the next size did (or that the training set ends there)."
    peak = next(t["peak_mem_gb"] for t in tried if t["bs"] == good)
    failed = [t for t in tried if "result" in t and t["bs"] > good]
    nxt = min(failed, key=lambda t: t["bs"]) if failed else None
    after = (f"{nxt['bs']} {nxt['result']}" if nxt else f"the training set has {top} items")
    return f"the largest size that trained under the memory allowed (peak {peak:.2f} GiB); {after}"


def by_speed(train, sizes: list[int]) -> dict:
    """The smallest of `sizes` whose items/s (n / `train(n)`, seconds a step) is within CPU_NEAR of the best measured;
    no larger size once a step takes CPU_SLOW_S. {tried, chosen, peak_mem_gb (None), reason}."""
    tried = []
    for n in sizes:
        s = max(train(n), 1e-9)
        tried.append(dict(bs=n, items_s=round(n / s, 1)))
        if s > CPU_SLOW_S:
            break
    best = max(tried, key=lambda t: t["items_s"])
    chosen = next(t for t in tried if t["items_s"] >= CPU_NEAR * best["items_s"])
    reason = (f"the most items/s measured ({best['items_s']:g})" if chosen is best else
              f"{chosen['items_s']:g} items/s, within {1 - CPU_NEAR:.0%} of the most measured ({best['bs']}: "
              f"{best['items_s']:g}): about as fast, with more optimizer steps an epoch")
    return dict(tried=tried, chosen=chosen["bs"], peak_mem_gb=None, reason=reason)


# --- the real training steps ----------------------------------------------------------------------------------------


class Cut(Callback):
    """Ends a fit after `n` training batches and `timed_s` seconds of them after the first (at most MAX_STEPS
    batches), validating none; `seconds`: the quickest batch after the first (as timeit takes the best run: what else
    runs on the machine only ever adds time)."""
    order = 100  # after every other callback has seen the batch

    def __init__(self, n: int, timed_s: float = 0.0):
        self.n, self.timed_s, self.done, self.last, self.times = n, timed_s, 0, 0.0, []

    def before_validate(self):
        raise CancelValidException()

    def after_batch(self):
        if not self.training:
            return
        self.done, now = self.done + 1, _clock()
        if self.done > 1:
            self.times.append(now - self.last)
        self.last = now
        if self.done >= self.n and sum(self.times) >= self.timed_s or self.done >= MAX_STEPS:
            raise CancelFitException()

    @property
    def seconds(self) -> float:
        return min(self.times, default=math.nan)


def _clock() -> float:
    if torch.cuda.is_initialized():
        torch.cuda.synchronize()  # the GPU's work queued so far is done
    return time.perf_counter()


def probe(learn, tr, device) -> dict:
    """bs=auto on `learn`, set up as it trains (precision, techniques), its training loader remade at each size: the
    rule of `device` (memory on CUDA, speed on the CPU). The loader is put back afterwards, the learner is not
    (`unchanged` does that)."""
    n_train, dl = len(learn.dls.train_ds), learn.dls.train

    def train(n: int) -> float:
        learn.dls.loaders[0] = dl.new(bs=n)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        cut = Cut(STEPS, 0.0 if device.type == "cuda" else CPU_TIMED_S)  # on CUDA only the memory counts
        learn.fit(MAX_STEPS, cbs=cut)  # as many epochs as steps: a size may be a whole epoch's one batch
        return cut.seconds

    try:
        if device.type != "cuda":
            sizes = candidates(n_train, tr.bs_step, *CPU_SIZES) or candidates(n_train, tr.bs_step)[-1:]
            if not sizes:
                raise FxpError(no_fit(None, 0))
            return dict(by_speed(train, sizes), device=str(device))
        total = torch.cuda.get_device_properties(device).total_memory
        found = by_memory(train, lambda: torch.cuda.max_memory_allocated(device), tr.mem_fraction * total,
                          candidates(n_train, tr.bs_step), n_train, tr.bs_step)
        return dict(found, device=f"{torch.cuda.get_device_name(device)}, {total / GIB:.1f} GiB × "
                                  f"mem_fraction {tr.mem_fraction:g}")
    finally:
        learn.dls.loaders[0] = dl


@contextmanager
def unchanged(learn):
    """The learner as it was once what runs inside (a probe's training steps) is done: its weights, optimizer state,
    which parameters hold a gradient, its iteration count and every random generator. The copies wait on the CPU, so
    that a probe inside measures the memory training takes."""
    model = get_model(learn.model)
    weights = {k: _cpu_copy(v) for k, v in model.state_dict().items()}
    opt = apply(_cpu_copy, learn.opt.state_dict()) if learn.opt is not None else None
    no_grad = [p.grad is None for p in model.parameters()]
    states, train_iter = get_random_states(), learn.train_iter if hasattr(learn, "train_iter") else None
    try:
        yield
    finally:
        model.load_state_dict(weights)
        if opt is not None:
            dev = next(model.parameters()).device
            learn.opt.load_state_dict(apply(lambda t: t.to(dev) if torch.is_tensor(t) else t, opt))
        for p, none in zip(model.parameters(), no_grad):
            if none:
                p.grad = None
        set_random_states(**states)
        if train_iter is not None:
            learn.train_iter = train_iter


def _cpu_copy(x):
    "A tensor's copy on the CPU (never the tensor itself, which training changes in place); anything else as is."
    return x.detach().to("cpu", copy=True) if torch.is_tensor(x) else x


def set_bs(dls, bs: int) -> None:
    "The loaders of `dls` at batch size `bs` in place, each keeping its share of the training one (valid: 2×, ...)."
    old = dls.train.bs
    for dl in dls.loaders:
        dl.bs = max(1, round(dl.bs * bs / old))


# --- out of memory mid-run ------------------------------------------------------------------------------------------


class OutOfMemory(Exception):
    """A step ran out of memory in its fit (fxp.train.fit): where and at what size, as plain data; the error itself is
    dropped, with the tensors its traceback holds."""

    def __init__(self, step: str, stage: int, epoch: int, bs: int, lr_scale: float, error: str):
        super().__init__(f"{error} (step {step}, stage {stage}, epoch {epoch}, batch size {bs})")
        self.step, self.stage, self.epoch, self.bs, self.lr_scale, self.error = step, stage, epoch, bs, lr_scale, error


@dataclass
class Sized:
    """A step's batch size, its learning-rate factor, whether a later stage with larger images probes again, and the
    step's summary fields (`info`: run.info, or its part for a step in a subfolder)."""
    bs: int
    lr_scale: float = 1.0
    probes: bool = False
    info: dict = field(default_factory=dict)


class Plan:
    """What a run fits to the device, step by step, with what summary.json records of it (`info`: run.info): each
    step's size (`sized`), its precision (`precision`, by step name), the halvings after running out of memory."""

    def __init__(self, tr, info: dict):
        self.auto, self.given, self.scale_lr, self.info = tr.bs == "auto", tr.bs, tr.scale_lr, info
        self.steps: dict[str, Sized] = {}  # by step name, as `fxp.train.build` set them
        self.precision: dict[str, str] = {}
        self.said: set[str] = set()  # the precision lines printed: each once a run

    def halvings(self, step: str) -> list[dict]:
        return [c for c in self.info.get("bs_changes", []) if c["step"] == step]

    def sized(self, step: str, at: dict | None) -> Sized | None:
        """The step's size if it has one already: its last halving (kept across fxp resume), its checkpoint's (where
        fxp resume goes on), or trainer.bs; None: bs=auto probes it."""
        halved = self.halvings(step)
        if halved:
            return Sized(halved[-1]["to"], halved[-1]["lr_scale"])
        if at is not None and "bs" in at:
            return Sized(at["bs"], at.get("lr_scale", 1.0), self.auto)
        return None if self.auto else Sized(self.given)

    def halve(self, oom: OutOfMemory) -> str:
        """After `oom`: the step's next size and learning-rate factor recorded in `bs_changes`, and the line that says
        so; at a batch of 2 already, one line (FxpError) saying what to change."""
        where = f"stage {oom.stage} epoch {oom.epoch}"
        if oom.bs <= 2:
            raise FxpError(f"out of memory at batch size {oom.bs} ({where}: {oom.error}); nothing smaller trains: "
                           f"use a smaller model or images (task.size=...), trainer.precision=bf16 or fp16, or a "
                           f"device with more memory")
        to = max(2, oom.bs // 2)
        scale = oom.lr_scale * (to / oom.bs if self.scale_lr else 1.0)  # the linear scaling rule
        self.info.setdefault("bs_changes", []).append(
            {"step": oom.step, "stage": oom.stage, "epoch": oom.epoch, "from": oom.bs, "to": to, "lr_scale": scale,
             "error": oom.error})
        lr = f", learning rate × {scale:g} (trainer.scale_lr)" if self.scale_lr else ""
        return (f"out of memory at batch size {oom.bs} ({where}); going on from the last checkpoint at batch size "
                f"{to}{lr}")


def injected(halved: bool) -> list:
    "The test hook's callback (FXP_INJECT_OOM=epoch:E, see the module's doc) for a step not yet halved; else none."
    spec = os.environ.get(INJECT)
    if not spec or halved:
        return []
    key, _, epoch = spec.partition(":")
    if key != "epoch" or not epoch.isdigit():
        raise FxpError(f"{INJECT}={spec}: the test hook takes epoch:E (an out-of-memory error at epoch E)")
    return [InjectedOOM(int(epoch))]


class InjectedOOM(Callback):
    "torch.OutOfMemoryError at the first training batch of the run's epoch `epoch` (a test hook: FXP_INJECT_OOM)."
    order = -10  # before the batch reaches anything else

    def __init__(self, epoch: int):
        self.at = epoch

    def before_batch(self):
        csv = next((cb for cb in self.learn.cbs if isinstance(cb, MetricsCSV)), None)
        if self.training and self.iter == 0 and csv is not None and csv.epochs_done + 1 == self.at:
            raise torch.OutOfMemoryError(f"CUDA out of memory (injected: {INJECT}=epoch:{self.at})")


def oom_at(e: BaseException, step: str, learn, lr_scale: float) -> OutOfMemory:
    "`e`, an out-of-memory error in `learn`'s fit of `step`, as plain data."
    csv = next((cb for cb in learn.cbs if isinstance(cb, MetricsCSV)), None)
    epoch = csv.epochs_done + 1 if csv is not None else learn.epoch + 1
    return OutOfMemory(step, getattr(learn, "stage", 1), epoch, learn.dls.train.bs, lr_scale, describe(e))
