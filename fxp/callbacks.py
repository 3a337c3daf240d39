"Cross-cutting run behaviour as fastai callbacks: metrics.csv, progress, divergence, the last checkpoint."
from __future__ import annotations

import csv
import logging
import math
import time

from fastai.callback.core import Callback
from fastai.callback.tracker import SaveModelCallback, TrackerCallback

from fxp.errors import Diverged
from fxp.runs import METRICS

log = logging.getLogger("fxp")


def _active(cb) -> bool:
    "False while the LR finder or get_preds drive the learner: they are not epochs of the run."
    return not (hasattr(cb.learn, "lr_finder") or hasattr(cb.learn, "gather_preds"))


class MetricsCSV(Callback):
    "A row per epoch in metrics.csv: stage, epoch (counted across stages), losses, metrics, lr, seconds."
    order = 60  # after the Recorder has logged the epoch

    def __init__(self, fname: str = METRICS):
        self.fname, self.epochs_done, self.train_items, self.train_time = fname, 0, 0, 0.0

    def before_fit(self):
        self.run_ = _active(self)

    def before_epoch(self):
        self.t0 = time.perf_counter()

    def before_train(self):
        self.t_train = time.perf_counter()

    def after_train(self):
        if self.run_:
            dl = self.dls.train
            self.train_items += min(len(dl) * dl.bs, dl.n)  # counted per epoch: no work per batch
            self.train_time += time.perf_counter() - self.t_train

    def after_epoch(self):
        if not self.run_:
            return
        self.epochs_done += 1
        names = self.recorder.metric_names[1:-1]  # without fastai's epoch and formatted time
        row = dict(stage=getattr(self.learn, "stage", 1), epoch=self.epochs_done,
                   **{n: _plain(v) for n, v in zip(names, self.recorder.log[1:-1])},
                   lr=self.opt.hypers[-1]["lr"], time=round(time.perf_counter() - self.t0, 3))
        path = self.path / self.fname
        new = not path.exists()
        with open(path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(row))
            if new:
                w.writeheader()
            w.writerow(row)
        self.learn.last_row = row

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
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


def progress(n_stages: int) -> list:
    "Epoch lines always; a live bar only on a terminal (piped or logged output gets no per-batch work)."
    from rich.console import Console

    console = Console()
    return [EpochLog(console)] + ([RichProgress(n_stages, console)] if console.is_terminal else [])


class DivergenceGuard(Callback):
    "Stop with status `diverged` as soon as the training loss is NaN or infinite."
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
            raise Diverged(f"loss became {value} in stage {getattr(self.learn, 'stage', 1)} epoch "
                           f"{self.epoch + 1}; lower the learning rate (trainer.lr=...) and try again")


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
                log.warning(f"logger {name} failed in {event_name} ({type(e).__name__}: {e}); the run goes on without it")
                object.__setattr__(cb, "failed", True)
        return call

    for event_name in (n for n in vars(event) if not n.startswith("_")):
        handler = getattr(type(cb), event_name, None)
        if callable(handler):
            object.__setattr__(cb, event_name, guard(event_name, getattr(cb, event_name)))
    return cb


class LastCheckpoint(Callback):
    "Save checkpoints/last.pth after every epoch, so an interrupted run keeps its last state."
    order = 70

    def after_epoch(self):
        if _active(self):
            self.learn.save("last")


class SaveBest(SaveModelCallback):
    """checkpoints/best.pth: the best epoch of the whole step, across its stages (fastai's SaveModelCallback would
    reset at each `fit` and reload that stage's best, so the next stage would not start where this one ended).
    `restore` loads it once, after the last stage."""

    def __init__(self, monitor: str, comp):
        super().__init__(monitor=monitor, comp=comp, fname="best", reset_on_fit=False)
        self.best_epoch = None  # counted across stages, as metrics.csv's epoch column

    def after_epoch(self):
        TrackerCallback.after_epoch(self)
        if self.new_best:
            self.best_epoch = self.learn.last_row["epoch"]
            log.info(f"best {self.monitor} so far: {self.best:.4g} (epoch {self.best_epoch}), saved")
            self._save(self.fname)

    def after_fit(self):
        TrackerCallback.after_fit(self)

    def restore(self) -> None:
        if self.best_epoch is not None:
            self.learn.load(self.fname, with_opt=False, weights_only=False)
