"""The training recipe: a kind's steps, each built, attached and fitted through its stages with fxp's callbacks;
then export, evaluate and plot."""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*")  # fastai's import-time jit use
    import fastai.callback.all  # noqa: F401  (patches Learner with fit_one_cycle, fine_tune, lr_find, to_fp16, ...)
import numpy as np
import torch
from fastai.callback.progress import ProgressCallback
from fastai.callback.tracker import EarlyStoppingCallback
from fastai.learner import Learner
from fastai.torch_core import set_seed
from hydra.utils import instantiate
from omegaconf import OmegaConf

from fxp import dispatch, plots
from fxp.callbacks import DivergenceGuard, LastCheckpoint, MetricsCSV, SaveBest, guarded, progress
from fxp.errors import FxpError
from fxp.learner import FxpLearner
from fxp.runs import CHECKPOINTS, MODEL, PLOTS, Run, best_metrics, final_metrics, read_metrics

log = logging.getLogger("fxp")


def device_of(trainer) -> torch.device:
    if trainer.device == "cuda" and not torch.cuda.is_available():
        raise FxpError("trainer.device=cuda but no CUDA device is available; use trainer.device=auto or cpu")
    if trainer.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(trainer.device)


def setup(cfg) -> torch.device:
    "The device for `cfg.trainer`, checked, with every random generator seeded."
    tr = cfg.trainer
    device = device_of(tr)
    if tr.precision != "fp32" and device.type != "cuda":
        raise FxpError(f"trainer.precision={tr.precision} needs a CUDA device (fastai autocasts on CUDA only); "
                       f"use trainer.precision=fp32 on {device.type}")
    set_seed(tr.seed, reproducible=True)
    if tr.num_threads is not None:
        torch.set_num_threads(tr.num_threads)
    return device


def check_batches(dls, bs: int) -> None:
    if len(dls.train) == 0:
        raise FxpError(f"trainer.bs={bs} is larger than the training set ({len(dls.train_ds)} items); "
                       f"lower trainer.bs")


def attach(learn, path: Path):
    "Make a kind's learner write into `path` (a run folder or a step's subfolder) and report through fxp."
    if type(learn) is Learner:  # subclasses (TabularLearner, TextLearner, GANLearner) keep their own methods
        learn.__class__ = FxpLearner  # fastai's factories (vision_learner, ...) take no learner class
    Path(path).mkdir(parents=True, exist_ok=True)  # a step's subfolder of the run folder
    learn.path, learn.model_dir = Path(path), CHECKPOINTS
    learn.remove_cb(ProgressCallback)
    learn.logger = lambda *_: None  # fxp's EpochLog callback reports each epoch
    return learn


def speedups(learn, tr) -> None:
    if tr.channels_last:
        learn.to_channelslast(use_amp=False)
    if tr.precision == "fp16":
        learn.to_fp16()
    elif tr.precision == "bf16":
        learn.to_bf16()
    if tr.compile:
        learn.model.compile()  # in place: parameters, freezing and the splitter keep working


def callbacks(cfg, learn, n_stages: int, monitor=None) -> list:
    tr, mon = cfg.trainer, monitor or cfg.task.monitor
    names = ["train_loss", "valid_loss", *(m.name for m in learn.metrics)]
    if mon.metric not in names:
        raise FxpError(f"monitor metric {mon.metric!r} is not recorded; choose from: {', '.join(names)} "
                       f"(task.monitor.metric=...)")
    comp = np.less if mon.mode == "min" else np.greater
    cbs = [MetricsCSV(), *progress(n_stages), DivergenceGuard(), LastCheckpoint(), *loggers(cfg.logger),
           *(instantiate(node) for node in cfg.trainer.cbs.values())]
    if tr.save_best:
        cbs.append(SaveBest(mon.metric, comp))
    if tr.early_stopping.patience is not None:
        cbs.append(EarlyStoppingCallback(monitor=mon.metric, comp=comp, min_delta=tr.early_stopping.min_delta,
                                         patience=tr.early_stopping.patience))
    return cbs


def loggers(nodes) -> list:
    "The chosen loggers' callbacks (`logger=[a,b]`; null: none), each unable to stop the run if its service fails."
    return [guarded(instantiate(node), name) for name, node in (nodes or {}).items() if node is not None]


def resolve_lr(learn, lr, run: Run):
    "A number, a discriminative slice from [lo, hi], or the LR finder's suggestion (recorded in the summary)."
    if lr == "find":
        found = float(learn.lr_find(show_plot=False).valley)
        run.info.setdefault("lr_found", []).append(found)
        return found
    return slice(*lr) if OmegaConf.is_list(lr) or isinstance(lr, list) else lr


def fit_stage(learn, stage, tr, run: Run) -> None:
    if stage.size is not None:
        resize(learn.dls, stage.size)
    if stage.freeze is True:
        learn.freeze()
    elif stage.freeze is False:
        learn.unfreeze()
    elif stage.freeze is not None:
        learn.freeze_to(stage.freeze)  # ULMFiT's gradual unfreezing: -2, then -3, ...
    epochs = tr.epochs if stage.epochs is None else stage.epochs
    lr = resolve_lr(learn, tr.lr if stage.lr is None else stage.lr, run)
    extra = {} if stage.pct_start is None else {"pct_start": stage.pct_start}
    if stage.policy == "fit_one_cycle":
        learn.fit_one_cycle(epochs, lr, wd=tr.wd, moms=tuple(tr.moms), **extra)
    elif stage.policy == "fine_tune":
        if isinstance(lr, slice):
            raise FxpError("a fine_tune stage takes one lr (it sets the discriminative rates itself)")
        learn.fine_tune(epochs, lr, freeze_epochs=stage.freeze_epochs, wd=tr.wd, **extra)
    else:
        learn.fit(epochs, lr, wd=tr.wd)


def resize(dls, size) -> None:
    "Progressive resizing: give every Resize transform of the loaders the new size."
    from fastai.vision.augment import Resize, _process_sz

    tfms = [t for dl in dls.loaders for t in getattr(getattr(dl, "after_item", None), "fs", [])
            if isinstance(t, Resize)]
    if not tfms:
        raise FxpError("a stage sets size= but the task's images have no Resize (set task.size for image files)")
    for t in tfms:
        t.size = _process_sz(tuple(size) if OmegaConf.is_list(size) else size)


def fit(learn, cfg, run: Run, stages=None, monitor=None) -> dict:
    """Run `stages` (default: the trainer's) with fxp's callbacks, which write into `learn.path`. Each stage starts
    where the last one ended (the course's recipes); after the last, the learner goes back to the best epoch of all
    stages when save-best is on. Returns the step's summary fields: which epoch the learner now holds, throughput."""
    stages = cfg.trainer.stages if stages is None else stages
    cbs = callbacks(cfg, learn, len(stages), monitor)
    learn.add_cbs(cbs)
    speedups(learn, cfg.trainer)
    for i, stage in enumerate(stages, 1):
        learn.stage = i
        fit_stage(learn, stage, cfg.trainer, run)
    csv_rows, best = (next((cb for cb in cbs if isinstance(cb, t)), None) for t in (MetricsCSV, SaveBest))
    if best is not None:
        best.restore()
    learn.remove_cbs(cbs)
    last = csv_rows.epochs_done or None
    return {"model_epoch": best.best_epoch if best is not None and best.best_epoch else last,
            "items_per_s": csv_rows.items_per_s}


def train(cfg, run: Run) -> None:
    "Train the kind's steps, then export the learner that predicts, evaluate it and plot."
    kind = dispatch.kind_module(cfg.task.kind)
    device = setup(cfg)
    learn = run_steps(dispatch.steps(kind, cfg), cfg, run, device)
    learn.export(run.path / MODEL)
    plots.loss_curves(run.path)
    evaluation = kind.evaluate(learn, cfg)
    run.info.update(evaluation)
    kind.plots(learn, cfg, run.path / PLOTS, evaluation)


def run_steps(steps: list, cfg, run: Run, device):
    """Build, attach and fit each step in turn; earlier steps write into their subfolders, with their curves and
    metrics under their name in the summary. Returns the learner that predicts (the step that `exports`, else the last)."""
    done = {}
    for step in steps:
        ctx = StepContext(device, run.path / (step.folder or ""), run.path, done)
        learn = build(step, cfg, run, ctx)
        with warnings.catch_warnings():
            for message in step.ignore_warnings:
                warnings.filterwarnings("ignore", message=message)
            facts = fit(learn, cfg, run, step.stages, step.monitor)
        extra = {**facts, **((step.after(learn, ctx) if step.after else None) or {})}
        if step.folder:
            plots.loss_curves(ctx.path)
            rows = read_metrics(ctx.path)
            run.info[step.name] = {**extra, "final_metrics": final_metrics(rows),
                                   "best_metrics": best_metrics(rows, step.monitor or cfg.task.monitor)}
        else:
            run.info.update(extra)
        done[step.name] = learn
    return next((done[s.name] for s in steps if s.exports), learn)


@dataclass
class StepContext:
    "What a step's functions may use: the device, the step's folder, the run folder, earlier steps' learners by name."
    device: torch.device
    path: Path
    run_path: Path
    done: dict


def build(step, cfg, run: Run, ctx: StepContext):
    "The step's DataLoaders and Learner, writing into its folder; the run's data counts come from its last step."
    if step.about:
        announce(step.about)
    dls = step.dls(ctx)
    check_batches(dls, cfg.trainer.bs)
    learn = attach(step.learner(dls, ctx), ctx.path)
    if step.folder is None:
        run.info.update(device=str(ctx.device), items_train=len(dls.train_ds), items_valid=len(dls.valid_ds),
                        skipped_images=len(getattr(dls, "skipped", [])))
    return learn


def announce(line: str) -> None:
    "A line before a step's epoch lines, on the console and in train.log."
    log.info(line)
    print(line, flush=True)


def lr_find(cfg, run: Run) -> None:
    "Only the LR finder, on the kind's first step: its plot and suggestions in the run folder."
    kind = dispatch.kind_module(cfg.task.kind)
    device = setup(cfg)
    step = dispatch.steps(kind, cfg)[0]
    learn = build(replace(step, folder=None), cfg, run, StepContext(device, run.path, run.path, {}))
    res = learn.lr_find(suggest_funcs=_suggest_funcs(), show_plot=True)
    plots.save_current(run.path / PLOTS / "lr_find.png")
    run.info["suggested_lrs"] = {k: float(v) for k, v in res._asdict().items()}


def _suggest_funcs():
    from fastai.callback.schedule import minimum, slide, steep, valley

    return (valley, slide, steep, minimum)
