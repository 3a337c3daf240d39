"""Cross-cutting run behaviour as fastai callbacks: metrics.csv, progress, divergence, the best and last checkpoints,
early stopping; and what a checkpoint holds for `fxp resume` (`checkpoint`, `load_checkpoint`, `Resumed`)."""
from __future__ import annotations

import copy
import json
import logging
import math
import random
import time
import warnings

import numpy as np
import torch

with warnings.catch_warnings():  # the first fastai import of most commands (train's, and the trackers')
    warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*")  # fastai's import-time jit use
    from fastai.callback.core import Callback, CancelFitException
from fastai.callback.fp16 import AMPMode, MixedPrecision
from fastai.callback.tracker import EarlyStoppingCallback, SaveModelCallback, TrackerCallback
from fastai.learner import AvgSmoothLoss, save_model
from fastai.torch_core import get_model, num_distrib, rank_distrib
from fastcore.foundation import L

from fxp.errors import Diverged, Pruned
from fxp.runs import LAST, METRICS, csv_line, read_metrics
from fxp.writer import signals_deferred, truncate_metrics, write_atomic

log = logging.getLogger("fxp")


def _active(cb) -> bool:
    "False while the LR finder or get_preds drive the learner: they are not epochs of the run."
    return not (hasattr(cb.learn, "lr_finder") or hasattr(cb.learn, "gather_preds"))


class MetricsCSV(Callback):
    """A row per epoch in metrics.csv (rewritten whole): stage, epoch (across stages), losses, metrics, lr, seconds;
    and of the training seconds, those waiting for batches (data_s) and those in forward, backward and step (step_s)."""
    order = 60  # after the Recorder has logged the epoch
    carried = ("epochs_done", "train_items", "train_time")  # into checkpoints, for fxp resume

    def __init__(self, fname: str = METRICS, keep: int | None = None):
        self.fname, self.epochs_done, self.train_items, self.train_time = fname, 0, 0, 0.0
        self.keep = keep  # fxp resume: the rows the file keeps (its checkpoint's epochs; the rest are retrained)

    def before_fit(self):
        self.run_ = _active(self)
        if self.run_ and self.keep is not None and not rank_distrib():  # rank 0 writes the run folder
            truncate_metrics(self.path, self.keep)
            self.keep = None  # once: the step's later fits add to the file

    def before_epoch(self):
        self.t0 = time.perf_counter()

    def before_train(self):
        self.t_train = self.t_batch = time.perf_counter()
        self.data_s = self.step_s = 0.0

    # Where an epoch's training time goes, with no device sync of fxp's own: `data_s` runs from the end of one step to
    # the start of the next (waiting for the loader, its batch transforms, the callbacks that prepare the batch),
    # `step_s` from there to after the Recorder (order 50), whose smoothed loss is copied to the CPU every batch: that
    # copy waits for the device to finish the step. Work a step left queued would make the next batch's copy to the
    # device wait instead: time could move between the two, never out of their sum, the training loop's time.
    def before_batch(self):
        if self.training:
            now = time.perf_counter()
            self.data_s, self.t_batch = self.data_s + now - self.t_batch, now

    def after_batch(self):
        if self.training:
            now = time.perf_counter()
            self.step_s, self.t_batch = self.step_s + now - self.t_batch, now

    def after_train(self):
        if self.run_:
            dl = self.dls.train
            ranks = max(num_distrib(), 1)  # a DDP run's throughput is all its processes'
            self.train_items += min(len(dl) * dl.bs * ranks, dl.n)  # counted per epoch: no work per batch
            self.train_time += time.perf_counter() - self.t_train

    def after_epoch(self):
        if not self.run_:
            return
        self.epochs_done += 1
        names = self.recorder.metric_names[1:-1]  # without fastai's epoch and formatted time
        row = dict(stage=getattr(self.learn, "stage", 1), epoch=self.epochs_done,
                   **{n: _plain(v) for n, v in zip(names, self.recorder.log[1:-1])},
                   lr=self.opt.hypers[-1]["lr"], time=round(time.perf_counter() - self.t0, 3),
                   data_s=round(self.data_s, 3), step_s=round(self.step_s, 3))
        self.learn.last_row = row
        if rank_distrib():  # rank 0 writes the run folder
            return
        path = self.path / self.fname
        old = ""
        if path.exists():
            with open(path, newline="") as f:
                old = f.read()
        write_atomic(path, old + csv_line(row, header=not old))

    @property
    def items_per_s(self) -> float | None:
        return round(self.train_items / self.train_time, 1) if self.train_time else None


def _plain(v):
    return float(v) if hasattr(v, "__float__") else v


class EpochLog(Callback):
    "A line per epoch (its metrics.csv row) in train.log and on the console."
    order = 65

    def __init__(self, console):
        self.console = console

    def after_epoch(self):
        row = getattr(self.learn, "last_row", None)
        if row is not None and _active(self):
            line = "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items())
            log.info(line)
            self.console.print(line, highlight=False, soft_wrap=True)


class RichProgress(Callback):
    "A rich progress bar on a terminal: stage, epoch, batches, smoothed loss, ETA."
    order = 66

    def __init__(self, n_stages: int, console):
        self.n_stages, self.console, self.bar = n_stages, console, None

    def before_fit(self):
        if not _active(self):
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("loss {task.fields[loss]}"), TimeRemainingColumn(), console=self.console,
                            transient=True)
        self.bar.start()

    def before_epoch(self):
        if self.bar is not None:
            desc = f"stage {getattr(self.learn, 'stage', 1)}/{self.n_stages} epoch {self.epoch + 1}/{self.n_epoch}"
            self.task = self.bar.add_task(desc, total=len(self.dls.train) + len(self.dls.valid), loss="-")

    def after_batch(self):
        if self.bar is not None:
            loss = f"{self.smooth_loss.item():.4f}" if self.training else "(valid)"
            self.bar.update(self.task, advance=1, loss=loss)

    def after_epoch(self):
        if self.bar is not None:
            self.bar.remove_task(self.task)

    def after_fit(self):
        self.release()

    def release(self):
        "The live bar stopped (a terminal's display thread): after a fit, or one that failed (fxp.train.fit)."
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


def progress(n_stages: int) -> list:
    "Epoch lines always; a live bar only on a terminal (piped or logged output gets no per-batch work)."
    from rich.console import Console

    console = Console()
    return [EpochLog(console)] + ([RichProgress(n_stages, console)] if console.is_terminal else [])


class DivergenceGuard(Callback):
    """Stop with status `diverged` as soon as the training loss is NaN or infinite; under fp16 mixed precision the line
    says what to change first (fp16's small range overflows where bf16 and fp32 do not)."""
    order = 55
    every = 8  # checking forces a device sync: every few batches is soon enough

    def after_batch(self):
        if self.training and self.iter % self.every == 0:
            self._check(self.smooth_loss)

    def after_epoch(self):
        if _active(self):
            self._check(self.recorder.log[1])
            self._check(self.recorder.log[2] if len(self.recorder.log) > 2 else 0.0)

    def _check(self, loss):
        value = float(loss) if loss is not None else 0.0
        if not math.isfinite(value):
            where = f"loss became {value} in stage {getattr(self.learn, 'stage', 1)} epoch {self.epoch + 1}"
            if in_fp16(self.learn):
                raise Diverged(f"{where} under fp16 mixed precision; train in bf16 where the GPU has it "
                               f"(trainer.precision=bf16) or in fp32 (trainer.precision=fp32), or lower the learning "
                               f"rate (trainer.lr=...)")
            raise Diverged(f"{where}; lower the learning rate (trainer.lr=...) and try again")


def in_fp16(learn) -> bool:
    "Whether `learn` trains under fastai's fp16 mixed precision (`to_fp16`)."
    return any(isinstance(cb, MixedPrecision) and cb.amp_mode == AMPMode.FP16 for cb in learn.cbs)


class TrialReport(Callback):
    """An Optuna trial's value of the monitored metric after every epoch, at the run's epoch across its stages (the
    study's step); the run ends as `pruned` when the study's pruner says so, after the epoch's line and checkpoint
    (fxp resume --extend can go on with it). A resumed trial first reports the epochs metrics.csv kept that the study
    lacks: a kill after an epoch's checkpoint and before its report leaves the epoch done but never reported."""
    order = 70  # after MetricsCSV (60) has cut a resumed run's metrics.csv back to its checkpoint

    def __init__(self, trial, metric: str):
        self.trial, self.metric = trial, metric

    def before_fit(self):
        if not _active(self):
            return
        (frozen,) = (t for t in self.trial.study.get_trials(deepcopy=False) if t.number == self.trial.number)
        for row in read_metrics(self.path):
            if int(row["epoch"]) not in frozen.intermediate_values:
                self.report(row)

    def after_epoch(self):
        if _active(self):
            self.report(self.learn.last_row)

    def report(self, row: dict) -> None:
        value, epoch = row.get(self.metric), int(row["epoch"])
        if not isinstance(value, float) or not math.isfinite(value):
            return
        self.trial.report(value, epoch)
        if self.trial.should_prune():
            raise Pruned(f"trial {self.trial.number} pruned after epoch {epoch}: {self.metric} {value:.4g} "
                         f"({type(self.trial.study.pruner).__name__})")


def guarded(cb: Callback, name: str) -> Callback:
    """`cb` with each of its event handlers made harmless: a logger whose service is down or whose disk is full logs
    one warning and goes quiet, and the run goes on (its metrics.csv is the core's, not a logger's)."""
    from fastai.callback.core import event

    def guard(event_name, handler):
        def call():
            if getattr(cb, "failed", False):
                return None
            try:
                return handler()
            except Exception as e:  # fastai's Cancel* control flow is not an Exception a logger raises
                log.warning(f"logger {name} failed in {event_name} ({type(e).__name__}: {e}); "
                            "the run goes on without it")
                object.__setattr__(cb, "failed", True)
        return call

    for event_name in (n for n in vars(event) if not n.startswith("_")):
        handler = getattr(type(cb), event_name, None)
        if callable(handler):
            object.__setattr__(cb, event_name, guard(event_name, getattr(cb, event_name)))
    return cb


DURABLE_AFTER_S = 2.0  # epochs this long get checkpoints flushed to disk (fsync) before they replace the old ones


def durable(learn) -> bool:
    """Whether to fsync the epoch's checkpoint: a kill needs no fsync (the rename is atomic), only a power cut or a
    crash of the machine does; for epochs shorter than DURABLE_AFTER_S, redoing the epoch costs less than the fsync
    (5-20 ms here, more than writing a digits checkpoint) would, each epoch."""
    row = getattr(learn, "last_row", None) or {}
    return row.get("time", DURABLE_AFTER_S) >= DURABLE_AFTER_S


class LastCheckpoint(Callback):
    """checkpoints/last.pth after every epoch: what `fxp resume` goes on from (see `checkpoint`), written whole, and
    last.json beside it saying where it stands (read without torch: `fxp runs`, the interrupted message)."""
    order = 64  # after metrics.csv, save-best and early stopping have seen the epoch; before its line is printed

    def __init__(self, step: str, carried: dict | None = None):
        self.step, self.carried = step, carried or {}  # carried: the kind's (its CARRIED, fxp.dispatch.OPTIONAL)

    def after_epoch(self):
        if not _active(self) or rank_distrib():
            return
        state, place = checkpoint(self.learn, self.carried), self.learn.place
        point = dict(step=self.step, stage=place["stage"], epoch=place["before"] + self.epoch + 1,
                     epochs=self.learn.last_row["epoch"], time=time.time())
        folder = self.path / self.model_dir
        folder.mkdir(parents=True, exist_ok=True)
        with signals_deferred():  # a Ctrl-C acts once both are written
            write_atomic(folder / f"{LAST}.pth", lambda f: torch.save(state, f), fsync=durable(self.learn))
            write_atomic(folder / f"{LAST}.json", json.dumps(point))


class SaveBest(SaveModelCallback):
    """checkpoints/best.pth: the best epoch of the whole step, across its stages (fastai's SaveModelCallback would
    reset at each `fit` and reload that stage's best, so the next stage would not start where this one ended).
    Written whole (temp + rename); `restore` loads it once, after the last stage."""
    carried = ("best", "best_epoch")

    def __init__(self, monitor: str, comp):
        super().__init__(monitor=monitor, comp=comp, fname="best", reset_on_fit=False)
        self.best_epoch = None  # counted across stages, as metrics.csv's epoch column

    def after_epoch(self):
        TrackerCallback.after_epoch(self)
        if self.new_best:
            self.best_epoch = self.learn.last_row["epoch"]
            log.info(f"best {self.monitor} so far: {self.best:.4g} (epoch {self.best_epoch}), saved")
            self._save(self.fname)

    def _save(self, name):
        if rank_distrib():
            return
        file = self.path / self.model_dir / f"{name}.pth"
        file.parent.mkdir(parents=True, exist_ok=True)
        with signals_deferred():
            write_atomic(file, lambda f: save_model(f, self.learn.model, self.learn.opt, with_opt=self.with_opt),
                         fsync=durable(self.learn))
        self.last_saved_path = file

    def after_fit(self):
        TrackerCallback.after_fit(self)

    def restore(self) -> None:
        if self.best_epoch is not None:
            self.learn.load(self.fname, with_opt=False)  # fastai's weights_only load: best.pth holds weights only


class EarlyStop(EarlyStoppingCallback):
    """fastai's early stopping, which decides after an epoch and ends the stage's fit before the next one (fastai's
    raises inside after_epoch), so the stopping epoch still gets its line and its checkpoint, which records the stop."""
    carried = ("best", "wait", "stop")

    def before_fit(self):
        super().before_fit()
        self.stop = False

    def before_epoch(self):
        if self.stop:
            raise CancelFitException()

    def after_epoch(self):
        TrackerCallback.after_epoch(self)
        if self.new_best:
            self.wait = 0
        else:
            self.wait += 1
            if self.wait >= self.patience:
                line = f"no improvement in {self.monitor} since epoch {self.epoch - self.wait}: early stopping"
                log.info(line)
                print(line, flush=True)
                self.stop = True


# --- what a checkpoint holds, for fxp resume --------------------------------------------------------------------

# fastai callbacks whose state goes on from one epoch to the next within a fit (fxp's say so in `carried`; a kind's
# learner's own, in its CARRIED)
FASTAI_CARRIED = {"Recorder": ("smooth_loss",)}


def checkpoint_types() -> list:
    """What a checkpoint holds beyond tensors and plain data, the only types `torch.load(weights_only=True)` may build
    from one: numpy arrays, scalars and dtypes (the RNG states, some hyper-parameters), a slice (a stage's
    discriminative lr), fastcore's L (the optimizer's hypers), the smoothed losses of the Recorder and of a kind's
    callbacks, fastai's tensor types (a smoothed loss's value) as imported by now (the run's kind). Anything else is
    refused, not run."""
    try:
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct, scalar
    from fastai.torch_core import TensorBase

    return [_reconstruct, scalar, np.ndarray, np.dtype, *(getattr(np.dtypes, n) for n in np.dtypes.__all__), slice, L,
            AvgSmoothLoss, *_subclasses(TensorBase)]


def _subclasses(cls: type) -> list:
    return [cls, *(s for sub in cls.__subclasses__() for s in _subclasses(sub))]


def checkpoint(learn, kinds: dict | None = None) -> dict:
    """Everything an epoch leaves that the next one uses, so a resumed run goes on exactly as if never stopped: the
    weights, the optimizer state (and which parameters hold a gradient: fastai's optimizer steps every parameter
    that has one, zeroed or frozen since), where in the recipe (`place`: stage, part of it, epoch within, its lr), each
    callback's carried state (`kinds`: the kind's callbacks' {name: attributes}), the iteration count, the grad scaler
    and every random state (torch, numpy, Python, and each DataLoader's own generator, which shuffles)."""
    scaler = learn.__dict__.get("scaler")
    stopped = any(getattr(cb, "stop", False) for cb in learn.cbs if isinstance(cb, EarlyStop))
    return dict(model=get_model(learn.model).state_dict(), opt=learn.opt.state_dict(),
                grads=[p.grad is not None for p in learn.model.parameters()],
                at=dict(learn.place, epoch=learn.epoch + 1, epochs=learn.last_row["epoch"], stopped=stopped),
                train_iter=learn.train_iter, scaler=scaler.state_dict() if scaler is not None else None,
                callbacks=carried(learn, kinds or {}), rng=rng_states(learn.dls))


def carried(learn, kinds: dict) -> dict:
    out, known = {}, {**FASTAI_CARRIED, **kinds}
    for cb in learn.cbs:
        names = getattr(type(cb), "carried", None) or known.get(type(cb).__name__, ())
        if names:
            out[type(cb).__name__] = {n: cb.__dict__[n] for n in names if n in cb.__dict__}
    return out


def rng_states(dls) -> dict:
    cuda = [s.numpy() for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_initialized() else None
    return dict(torch=torch.get_rng_state().numpy(), cuda=cuda, numpy=np.random.get_state(), python=random.getstate(),
                loaders=[loader_state(dl) for dl in dls.loaders])


def loader_state(dl) -> dict:
    """A DataLoader's own state that goes on from epoch to epoch: its random generator, and the order of the items
    of a loader that shuffles them in place, each epoch from the last (fastai's LMDataLoader: `items.idxs`)."""
    items = dl.__dict__.get("items")
    return dict(rng=dl.rng.getstate() if hasattr(dl, "rng") else None,
                idxs=list(items.idxs) if hasattr(items, "idxs") and hasattr(items, "shuffle") else None)


def load_loader_state(dl, state: dict) -> None:
    if state["rng"] is not None:
        dl.rng.setstate(state["rng"])
    if state["idxs"] is not None:
        idxs = dl.items.idxs  # set in place: the loader's other collections (lens) share it
        (idxs.items if isinstance(getattr(idxs, "items", None), list) else idxs)[:] = state["idxs"]
        if hasattr(dl, "make_chunks"):
            dl.make_chunks()


def load_checkpoint(learn, state: dict) -> None:
    """Put `learn` (built and set up as it was: stage, freezing, size) back at the end of the epoch `state` holds.
    The weights and optimizer state leave `state` (the learner has them now: no second copy on the device)."""
    get_model(learn.model).load_state_dict(state.pop("model"))
    if learn.opt is None:
        learn.create_opt()
    learn.opt.load_state_dict(state.pop("opt"))
    for p, had in zip(learn.model.parameters(), state["grads"]):
        if had and p.grad is None:  # zeroed after the last step; fastai's optimizer still steps such parameters
            p.grad = torch.zeros_like(p)
    restore(learn, state)
    rng = state["rng"]
    torch.set_rng_state(torch.from_numpy(rng["torch"]))
    if rng["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.from_numpy(s) for s in rng["cuda"]])
    np.random.set_state(rng["numpy"])
    random.setstate(rng["python"])
    for dl, s in zip(learn.dls.loaders, rng["loaders"]):
        load_loader_state(dl, s)


def restore(learn, state: dict) -> None:
    "The callbacks' carried state, the iteration count and the grad scaler, as the checkpoint has them."
    learn.train_iter = state["train_iter"]
    if state["scaler"] is not None and learn.__dict__.get("scaler") is not None:
        learn.scaler.load_state_dict(state["scaler"])
    for cb in learn.cbs:  # copies: a fit's before_fit resets objects such as the Recorder's smoothed loss in place
        cb.__dict__.update(copy.deepcopy(state["callbacks"].get(type(cb).__name__, {})))


class Resumed(Callback):
    "For the one fit `fxp resume` enters mid-way: puts back, after every `before_fit`, what fastai resets there."
    order = 1000

    def __init__(self, state: dict):
        self.state = state

    def before_fit(self):
        restore(self.learn, self.state)
