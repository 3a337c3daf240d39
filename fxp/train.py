"""The training recipe: a kind's steps, each built, attached and fitted through its stages with fxp's callbacks;
then export, evaluate and plot."""
from __future__ import annotations

import inspect
import logging
import pickle
import re
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*")  # fastai's import-time jit use
    import fastai.callback.all  # noqa: F401  (patches Learner with fit_one_cycle, fine_tune, lr_find, to_fp16, ...)
import numpy as np
import torch
from fastai.callback.core import CancelEpochException
from fastai.callback.progress import ProgressCallback
from fastai.learner import Learner
from fastai.torch_core import rank_distrib, set_seed
from hydra.utils import instantiate
from omegaconf import OmegaConf

from fxp import batchsize, dispatch, plots, precision, profiling, techniques
from fxp.callbacks import (
    DivergenceGuard,
    EarlyStop,
    LastCheckpoint,
    MetricsCSV,
    Resumed,
    SaveBest,
    TrialReport,
    checkpoint_types,
    guarded,
    load_checkpoint,
    progress,
)
from fxp.errors import FxpError, building
from fxp.init import initialize
from fxp.learner import FxpLearner
from fxp.runs import CHECKPOINTS, LAST, MODEL, PLOTS, best_metrics, final_metrics, first_line, read_metrics
from fxp.schema import Trainer
from fxp.show import BATCH, DATABLOCK, batch_png, datablock_summary, guarded_batch_png
from fxp.writer import Run, write_atomic, write_pickle

log = logging.getLogger("fxp")


def device_of(trainer) -> torch.device:
    if trainer.device == "cuda" and not torch.cuda.is_available():
        raise FxpError("trainer.device=cuda but no CUDA device is available; use trainer.device=auto or cpu")
    if trainer.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(trainer.device)


def check_device(tr) -> torch.device:
    "The device `trainer.device` names, if there is one and it can train at `trainer.precision` (auto: any)."
    device = device_of(tr)
    if tr.precision not in ("fp32", "auto") and device.type != "cuda":
        raise FxpError(f"trainer.precision={tr.precision} needs a CUDA device (fastai autocasts on CUDA only); "
                       f"use trainer.precision=fp32 on {device.type}")
    return device


def setup(cfg) -> torch.device:
    "The device for `cfg.trainer`, checked, with every random generator seeded."
    tr = cfg.trainer
    device = check_device(tr)
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


def speedups(learn, tr, precision: str) -> None:
    "channels_last, `precision` (the trainer's, or what auto chose for the step) and compile, as the trainer says."
    if tr.channels_last:
        learn.to_channelslast(use_amp=False)
    if precision == "fp16":
        learn.to_fp16()
    elif precision == "bf16":
        learn.to_bf16()
    if tr.compile:
        learn.model.compile()  # in place: parameters, freezing and the splitter keep working


def callbacks(cfg, learn, n_stages: int, monitor=None, step: str = "train", keep: int | None = None) -> list:
    "fxp's callbacks for a step's fits; `keep` (fxp resume): metrics.csv's rows to keep, those its checkpoint holds."
    tr, mon = cfg.trainer, monitor or cfg.task.monitor
    names = ["train_loss", "valid_loss", *(m.name for m in learn.metrics)]
    if mon.metric not in names:
        raise FxpError(f"monitor metric {mon.metric!r} is not recorded; choose from: {', '.join(names)} "
                       f"(task.monitor.metric=...)")
    comp = np.less if mon.mode == "min" else np.greater
    carried = dispatch.declared(dispatch.kind_module(cfg.task.kind), "CARRIED")
    cbs = [MetricsCSV(keep=keep), *progress(n_stages), DivergenceGuard(), LastCheckpoint(step, carried),
           *loggers(cfg.logger), *techniques.callbacks(tr), *profiling.callbacks(tr),
           *(_built(f"trainer.cbs.{name}", node) for name, node in cfg.trainer.cbs.items())]
    if tr.save_best:
        cbs.append(SaveBest(mon.metric, comp))
    if tr.early_stopping.patience is not None:
        cbs.append(EarlyStop(monitor=mon.metric, comp=comp, min_delta=tr.early_stopping.min_delta,
                             patience=tr.early_stopping.patience))
    return cbs


def released(cbs) -> None:
    """What the callbacks hold open through a fit (`release()`: a terminal's live bar, a TensorBoard event file), let
    go after a fit that failed: fastai calls after_fit only when a fit ends, and the process may go on (the retry after
    running out of memory, the next job of a sweep run in this process)."""
    for cb in cbs:
        try:
            if callable(getattr(cb, "release", None)):
                cb.release()
        except Exception as e:  # the fit's own error is the one to report
            log.warning(f"{type(cb).__name__} could not let go after the failed fit ({type(e).__name__}: {e})")


def loggers(nodes) -> list:
    "The chosen loggers' callbacks (`logger=[a,b]`; null: none), each unable to stop the run if its service fails."
    return [guarded(_built(f"logger.{name}", node), name) for name, node in (nodes or {}).items() if node is not None]


def _built(key: str, node):
    "The object a `_target_` node of the config (`key`) builds."
    with building(key):
        return instantiate(node)


def resolve_lr(learn, lr, run: Run):
    "A number, a discriminative slice from [lo, hi], or the LR finder's suggestion (recorded in the summary)."
    if lr == "find":
        found = float(learn.lr_find(show_plot=False).valley)
        run.info.setdefault("lr_found", []).append(found)
        return found
    return slice(*lr) if OmegaConf.is_list(lr) or isinstance(lr, list) else lr


@dataclass
class Part:
    "One fastai fit of a stage, after an optional freeze: `learn.<method>(epochs, **args(lr))`."
    method: str
    epochs: int
    args: Callable
    freeze: Any = None


def parts(stage, tr) -> list[Part]:
    "A stage's fits: one, or fine_tune's two (frozen, then unfrozen), so that `fxp resume` can enter either."
    epochs = tr.epochs if stage.epochs is None else stage.epochs
    extra = {} if stage.pct_start is None else {"pct_start": stage.pct_start}
    if stage.policy == "fit_one_cycle":
        return [Part("fit_one_cycle", epochs, lambda lr: dict(lr_max=lr, wd=tr.wd, moms=tuple(tr.moms), **extra))]
    if stage.policy == "fine_tune":
        return fine_tune(epochs, stage.freeze_epochs, tr.wd, **extra)
    return [Part("fit", epochs, lambda lr: dict(lr=lr, wd=tr.wd))]


def fine_tune(epochs: int, freeze_epochs: int, wd, pct_start=None) -> list[Part]:
    "fastai's `Learner.fine_tune` as its two fits, with its own defaults (lr_mult, div, pct_start of the second)."
    d = {k: p.default for k, p in inspect.signature(Learner.fine_tune).parameters.items()}

    def one_lr(lr):
        if isinstance(lr, slice):
            raise FxpError("a fine_tune stage takes one lr (it sets the discriminative rates itself)")
        return lr

    def frozen(lr):
        return dict(lr_max=slice(one_lr(lr)), pct_start=0.99, wd=wd)

    def unfrozen(lr):
        half = one_lr(lr) / 2
        pct = d["pct_start"] if pct_start is None else pct_start
        return dict(lr_max=slice(half / d["lr_mult"], half), pct_start=pct, div=d["div"], wd=wd)

    return [Part("fit_one_cycle", freeze_epochs, frozen, freeze=True),
            Part("fit_one_cycle", epochs, unfrozen, freeze=False)]


def set_freeze(learn, freeze) -> None:
    "True: freeze the body; False: unfreeze; -n: train the last n parameter groups (ULMFiT); None: as is."
    if freeze is True:
        learn.freeze()
    elif freeze is False:
        learn.unfreeze()
    elif freeze is not None:
        learn.freeze_to(freeze)


def fit_stage(learn, stage, tr, run: Run, at: dict | None = None, sized=None, probe=None) -> None:
    """Resize, freeze, then the stage's fits. `at` (fxp resume: where the step's checkpoint stands, and its `state`):
    stages and fits before it are only set up again (sizes and freezing as they were), the one it is in loads the
    checkpoint and goes on from the epoch after it, without a new LR search. `sized` (fxp.batchsize.Sized): the step's
    batch size and learning-rate factor; a stage entered afresh whose images grow calls `probe(freeze)` if it probes
    (bs=auto), at the freezing of the stage's last fit."""
    i = learn.stage
    grown = stage.size is not None and resize(learn.dls, stage.size)
    set_freeze(learn, stage.freeze)
    if at is not None and i < at["stage"]:
        for part in parts(stage, tr):
            set_freeze(learn, part.freeze)
        return
    resumed = at is not None and i == at["stage"]
    if grown and not resumed and sized is not None and sized.probes:
        probe(parts(stage, tr)[-1].freeze)
    given = tr.lr if stage.lr is None else stage.lr
    lr = at["lr"] if resumed else resolve_lr(learn, given, run)
    scale = sized.lr_scale if sized is not None else 1.0
    before = 0
    for j, part in enumerate(parts(stage, tr), 1):
        # what LastCheckpoint records: lr before the factor, which a halving after this checkpoint may change
        learn.place = dict(stage=i, part=j, before=before, lr=lr, bs=learn.dls.train.bs, lr_scale=scale)
        set_freeze(learn, part.freeze)
        before += part.epochs
        start, cbs = 0, None
        if at is not None and (i, j) <= (at["stage"], at["part"]):
            if (i, j) < (at["stage"], at["part"]):
                continue
            load_checkpoint(learn, at["state"])
            start, cbs = (part.epochs if at["stopped"] else at["epoch"]), Resumed(at["state"])
        if start < part.epochs or start == 0:  # a fit of 0 epochs still runs (its before_fit/after_fit), as fastai's
            with starting_at(learn, start):
                getattr(learn, part.method)(part.epochs, cbs=cbs, **part.args(scaled(lr, scale)))


def scaled(lr, factor: float):
    "A learning rate (a number or a discriminative slice) times `factor`."
    if factor == 1:
        return lr
    if isinstance(lr, slice):
        return slice(*(None if v is None else v * factor for v in (lr.start, lr.stop, lr.step)))
    return lr * factor


@contextmanager
def starting_at(learn, epoch: int):
    """The next fit begins at `epoch` of its schedule (fxp resume), the epochs before it firing no event at all.
    fastai's `start_epoch` (SkipToEpoch) would still send each skipped epoch through every callback's after_epoch:
    rows, checkpoints and logger entries for epochs that never ran."""
    if not epoch:
        yield
        return

    def _do_fit():
        for e in range(epoch, learn.n_epoch):
            learn.epoch = e
            learn._with_events(learn._do_epoch, "epoch", CancelEpochException)

    learn._do_fit = _do_fit
    try:
        yield
    finally:
        del learn._do_fit


def resize(dls, size) -> bool:
    "Progressive resizing: give every Resize transform of the loaders the new size. Whether the images grew."
    from fastai.vision.augment import Resize, _process_sz

    tfms = [t for dl in dls.loaders for t in getattr(getattr(dl, "after_item", None), "fs", [])
            if isinstance(t, Resize)]
    if not tfms:
        raise FxpError("a stage sets size= but the task's images have no Resize (set task.size for image files)")
    new = _process_sz(tuple(size) if OmegaConf.is_list(size) else size)
    grew = any(new[0] * new[1] > t.size[0] * t.size[1] for t in tfms)
    for t in tfms:
        t.size = new
    return grew


def fit(learn, cfg, run: Run, plan, stages=None, monitor=None, step: str = "train", at: dict | None = None,
        keep: int | None = None) -> dict:
    """Run `stages` (default: the trainer's) with fxp's callbacks, which write into `learn.path`. Each stage starts
    where the last one ended (the course's recipes); after the last, the learner goes back to the best epoch of all
    stages when save-best is on. `at`: go on from the step's checkpoint (fxp resume; see `fit_stage`), `keep`: the
    metrics.csv rows it holds; `plan` (fxp.batchsize.Plan): the step's size and precision, as `build` set them.
    Running out of memory ends it as fxp.batchsize.OutOfMemory (a run over one process). Returns the step's summary
    fields: which epoch the learner now holds, throughput."""
    stages = cfg.trainer.stages if stages is None else stages
    sized = plan.steps[step]
    cbs = (callbacks(cfg, learn, len(stages), monitor, step, keep) + trial_report(cfg, run, monitor)
           + batchsize.injected(bool(plan.halvings(step))))
    learn.add_cbs(cbs)
    speedups(learn, cfg.trainer, plan.precision[step])

    def probe(freeze):  # a stage with larger images: bs=auto again, on the learner as it stands, put back as it was
        with learn.removed_cbs(cbs), batchsize.unchanged(learn):
            set_freeze(learn, freeze)
            found = batchsize.probe(learn, cfg.trainer, learn.dls.device)
        batchsize.set_bs(learn.dls, found["chosen"])
        sized.bs = found["chosen"]
        sized.info.setdefault("bs_auto", {}).setdefault("resized", []).append(dict(stage=learn.stage, **found))
        announce(f"bs=auto: {found['chosen']} for stage {learn.stage}'s larger images ({found['reason']})")

    oom = None
    try:
        for i, stage in enumerate(stages, 1):
            learn.stage = i
            fit_stage(learn, stage, cfg.trainer, run, at, sized, probe)
    except Exception as e:
        released(cbs)
        if not batchsize.is_oom(e) or distributed_run():
            raise
        oom = batchsize.oom_at(e, step, learn, sized.lr_scale)
    if oom is not None:  # raised out here: the error's traceback, which holds the batch's tensors, is gone
        raise oom
    csv_rows, best = (next((cb for cb in cbs if isinstance(cb, t)), None) for t in (MetricsCSV, SaveBest))
    if best is not None:  # every rank (fastai's load waits for all of them: the file is whole)
        best.restore()
    last = csv_rows.epochs_done or None
    facts = {"model_epoch": best.best_epoch if best is not None and best.best_epoch else last,
             "items_per_s": csv_rows.items_per_s, "bs": learn.dls.train.bs}
    for cb in cbs:  # a callback's own record of the step (activation statistics), with the files it writes
        if getattr(type(cb), "step_done", None):
            facts.update(cb.step_done(learn.path))
    learn.remove_cbs(cbs)
    return facts


def trial_report(cfg, run: Run, monitor=None) -> list:
    """An Optuna trial's job (fxp.trials): the step that `task.monitor` judges reports to its trial after every epoch.
    A run over several processes has no trial (fxp.apps.job): its other ranks would wait for a pruned rank 0."""
    from fxp import trials

    if monitor is not None or "trial" not in run.info:
        return []
    trial = trials.attach(run.info["trial"])
    return [TrialReport(trial, cfg.task.monitor.metric)] if trial is not None else []


def distributed_run() -> bool:
    "This process is one of a DDP run's (its ranks cannot each go on at a batch of their own)."
    from fastai.torch_core import num_distrib

    return num_distrib() > 1


def train(cfg, run: Run, resume: bool = False) -> None:
    """Train the kind's steps, then export the learner that predicts, evaluate it and plot. `resume` (fxp resume):
    each step goes on from its checkpoint if it has one."""
    conclude(trained(cfg, run, resume), cfg, run)


def trained(cfg, run: Run, resume: bool = False):
    """The kind's steps trained (see `train`): the learner that predicts. Running out of memory halves the step's batch
    and goes on from its last checkpoint (fxp.batchsize), as often as it takes; config's trainer.bs stays as given."""
    kind = dispatch.kind_module(cfg.task.kind)
    device = setup(cfg)
    if resume:
        announce(run.resume["note"])
    plan, given = batchsize.Plan(cfg.trainer, run.info), cfg.trainer.bs
    try:
        while True:
            try:
                return run_steps(dispatch.steps(kind, cfg), cfg, run, device, resume, plan)
            except batchsize.OutOfMemory as oom:
                line = plan.halve(oom)
            batchsize.free_memory()  # out of the except block: nothing holds the failed fit's tensors now
            log.warning(line)
            print(line, flush=True)
            device, resume = setup(cfg), True  # seeded again: a step with no checkpoint yet starts as a new run would
    finally:
        cfg.trainer.bs = given


def conclude(learn, cfg, run: Run) -> None:
    "The trained learner exported, evaluated and plotted into the run folder."
    kind = dispatch.kind_module(cfg.task.kind)
    export(learn, run.path / MODEL)
    evaluation = kind.evaluate(learn, cfg)
    run.info.update(evaluation, baselines=kind.baseline(learn, cfg))
    if cfg.trainer.plots:
        plots.loss_curves(run.path)
        kind.plots(learn, cfg, run.path / PLOTS, evaluation)
    if cfg.trainer.tta:
        run.info.update(techniques.tta_metrics(learn))


def export(learn, file: Path) -> None:
    """model.pkl (fastai's `export`), written whole (a kill leaves the old file or the new one), its hash recorded. A
    model trained on images at their own size (no item Resize) keeps that size, `input_size` (w, h): fxp predict
    resizes inputs to it."""
    learn.input_size = own_image_size(learn.dls)
    write_pickle(file, learn.export, fsync=True)


def own_image_size(dls) -> tuple[int, int] | None:
    "The (w, h) of a DataBlock's input images when no item transform resizes them (one size: data.same_size)."
    from PIL import Image

    if not hasattr(dls, "block") or any(hasattr(t, "size") for t in dls.block.item_tfms):
        return None
    x = dls.valid_ds[0][0]
    return tuple(x.size) if isinstance(x, Image.Image) else None


def run_steps(steps: list, cfg, run: Run, device, resume: bool = False, plan=None):
    """Build, attach and fit each step in turn; earlier steps write into their subfolders, with their curves and
    metrics under their name in the summary. Returns the learner that predicts (the step that `exports`, else the last).

    `resume`: a step with a checkpoint is rebuilt and goes on from it; one that had ended is not retrained (its fits
    are done: its best epoch is loaded back and its `after` runs again, as the steps after it need); metrics.csv
    rows after the checkpoint's epoch are dropped (they are retrained: MetricsCSV's `keep`). `plan`
    (fxp.batchsize.Plan): the steps' sizes and precisions, kept across the retries after running out of memory. A
    fresh step's model starts as `model.init` says, unless a checkpoint's weights replace it."""
    done, plan = {}, plan or batchsize.Plan(cfg.trainer, run.info)
    for step in steps:
        ctx = StepContext(device, run.path / (step.folder or ""), run.path, done)
        at = saved_place(ctx.path, device, (run.resume or {}).get("trust", False)) if resume else None
        learn = build(step, cfg, run, ctx, plan, at)
        size = {"model_size": model_size(learn, cfg)}  # as built, before compilation and the stages' freezing
        init = initialize(learn, cfg.model.init) if step.fresh and at is None else {}
        with warnings.catch_warnings():
            for message in step.ignore_warnings:
                warnings.filterwarnings("ignore", message=message)
            keep = (at["epochs"] if at else 0) if resume else None
            facts = fit(learn, cfg, run, plan, step.stages, step.monitor, step.name, at, keep)
        extra = {**size, **init, **facts, **((step.after(learn, ctx) if step.after else None) or {})}
        if step.folder:
            if cfg.trainer.plots:
                plots.loss_curves(ctx.path)
            rows = read_metrics(ctx.path)
            run.info[step.name] = {**run.info.get(step.name, {}), **extra, "final_metrics": final_metrics(rows),
                                   "best_metrics": best_metrics(rows, step.monitor or cfg.task.monitor)}
        else:
            run.info.update(extra)
        done[step.name] = learn
    return next((done[s.name] for s in steps if s.exports), learn)


def saved_place(folder: Path, device, trust: bool = False) -> dict | None:
    """Where the step's last checkpoint stands (stage, part, epoch, lr, ...) with its `state`; None without one. Read
    as data (torch's weights_only, with the few types a checkpoint holds): a file that holds more is refused in one
    line unless `trust` (fxp resume --trust), as loading it could run any code."""
    file = folder / CHECKPOINTS / f"{LAST}.pth"
    if not file.is_file():
        return None
    try:
        with torch.serialization.safe_globals(checkpoint_types()):
            state = torch.load(file, map_location=device, weights_only=not trust)
    except Exception as e:
        if isinstance(e, pickle.UnpicklingError) and "weights only" in str(e).lower():
            what = re.search(r"GLOBAL (\S+)", str(e)) or re.search(r"WeightsUnpickler error:\s*(.+)", str(e))
            raise FxpError(f"{file} holds more than a checkpoint's data ({what[1] if what else 'an object'}), and "
                           f"loading it could run any code: it was not written by fxp, or was replaced; resume only if "
                           f"you trust it (fxp resume RUN_DIR --trust)") from None
        raise FxpError(f"{file} cannot be read ({type(e).__name__}: {first_line(e)}); it cannot be resumed") from None
    if not isinstance(state, dict) or "at" not in state:
        raise FxpError(f"{file} was written by an older fxp (no resume state in it); it cannot be resumed")
    return {**state["at"], "state": state}


def model_size(learn, cfg) -> dict:
    "The model's parameters and, where the kind's input item has one size, its multiply-accumulates (fxp.profiling)."
    return profiling.model_size(learn, dispatch.declared(dispatch.kind_module(cfg.task.kind), "INPUT"))


@dataclass
class StepContext:
    "What a step's functions may use: the device, the step's folder, the run folder, earlier steps' learners by name."
    device: torch.device
    path: Path
    run_path: Path
    done: dict


def build(step, cfg, run: Run, ctx: StepContext, plan=None, at: dict | None = None):
    """The step's DataLoaders and Learner, writing into its folder; the run's data counts come from its last step.
    Its batch size is `plan`'s (fxp.batchsize.Plan: a halving's, the checkpoint `at`'s, trainer.bs, or bs=auto's probe),
    set as trainer.bs while the step trains; its precision trainer.precision's, or what auto chooses."""
    if step.about:
        announce(step.about)
    plan = plan or batchsize.Plan(cfg.trainer, run.info)
    info = run.info if step.folder is None else run.info.setdefault(step.name, {})
    sized = plan.sized(step.name, at) or probed(step, cfg, ctx, plan, info)
    sized.info = info
    plan.steps[step.name] = sized
    cfg.trainer.bs = sized.bs
    dls = step.dls(ctx)
    check_batches(dls, cfg.trainer.bs)
    if cfg.trainer.check:
        warn_findings(dls, cfg)
    if cfg.trainer.plots and not rank_distrib():  # rank 0 writes the run folder
        guarded_batch_png(dls, ctx.path / PLOTS / BATCH)  # see the data first; the training order is untouched
    learn = attach(step.learner(dls, ctx), ctx.path)
    techniques.use_opt(learn, cfg.trainer)
    if step.name not in plan.precision:
        choose_precision(learn, cfg.trainer, ctx.device, plan, step.name, info)
    if step.folder is None:
        run.info.update(device=str(ctx.device), items_train=len(dls.train_ds), items_valid=len(dls.valid_ds),
                        skipped_images=len(getattr(dls, "skipped", [])), **getattr(dls, "curated", {}))
    return learn


def probed(step, cfg, ctx: StepContext, plan, info: dict):
    """bs=auto: the step's loaders and learner built at the smallest size, set up as the step trains (its precision,
    the techniques' callbacks), its training steps probed (fxp.batchsize.probe), then dropped; every random generator
    is left as it was, so the run goes on as one given that size would. Recorded in summary.json (`bs_auto`)."""
    from fastai.torch_core import get_random_states, set_random_states

    tr, states = cfg.trainer, get_random_states()
    try:
        tr.bs = batchsize.smallest(tr)
        learn = attach(step.learner(step.dls(ctx), ctx), ctx.path)
        techniques.use_opt(learn, tr)
        choose_precision(learn, tr, ctx.device, plan, step.name, info)
        speedups(learn, tr, plan.precision[step.name])
        learn.add_cbs(techniques.callbacks(tr))
        found = batchsize.probe(learn, tr, ctx.device)
    finally:
        learn = None  # the probe's learner and loaders go before the step's are built
        batchsize.free_memory()
        set_random_states(**states)
    info["bs_auto"] = found
    announce(f"bs=auto: {found['chosen']} ({found['device']}: {found['reason']})")
    return batchsize.Sized(found["chosen"], 1.0, probes=True)


def choose_precision(learn, tr, device, plan, step: str, info: dict) -> None:
    "The step's precision: trainer.precision's, or (auto) fxp.precision's choice, recorded and said once a run."
    if tr.precision != "auto":
        plan.precision[step] = tr.precision
        return
    chosen = precision.choose(learn, device)
    plan.precision[step], info["precision"] = chosen["chosen"], chosen
    line = f"precision: {chosen['chosen']} ({chosen['reason']})"
    if line not in plan.said:
        plan.said.add(line)
        announce(line)


def warn_findings(dls, cfg) -> None:
    "The data doctor's cheap findings (fxp.doctor) as warnings before the first epoch, on the console and in train.log."
    import sys

    from fxp import doctor

    _, findings = doctor.examine(dls, dispatch.kind_module(cfg.task.kind), cheap=True, skip_bad=cfg.data.skip_bad)
    for f in findings:
        if f.level != doctor.INFO:
            log.warning(f"data: {f.line()}")
            print(f"fxp: warning: data: {f.line()} (fxp check --data: all checks; trainer.check=false: none)",
                  file=sys.stderr, flush=True)


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
    run.info.update(initialize(learn, cfg.model.init) if step.fresh else {})
    res = learn.lr_find(suggest_funcs=_suggest_funcs(), show_plot=True)
    plots.save_current(run.path / PLOTS / "lr_find.png")
    run.info["suggested_lrs"] = {k: float(v) for k, v in res._asdict().items()}


def _suggest_funcs():
    from fastai.callback.schedule import minimum, slide, steep, valley

    return (valley, slide, steep, minimum)


def show(cfg, run: Run) -> None:
    """fxp show: only the first step's DataLoaders: a training batch in plots/batch.png and the DataBlock summary
    (printed and in datablock.txt), so a wrong label function or split is seen before any training; and the size of
    the step's model, built but not trained."""
    kind = dispatch.kind_module(cfg.task.kind)
    device = setup(cfg)
    if cfg.trainer.bs == "auto":  # nothing trains, so nothing to fit: a batch of the size a run is given by default
        cfg.trainer.bs = Trainer.bs
    step = dispatch.steps(kind, cfg)[0]
    ctx = StepContext(device, run.path, run.path, {})
    dls = step.dls(ctx)
    check_batches(dls, cfg.trainer.bs)
    batch_png(dls, run.path / PLOTS / BATCH)
    text = datablock_summary(dls)
    write_atomic(run.path / DATABLOCK, text)
    print(text, flush=True)
    run.info.update(items_train=len(dls.train_ds), items_valid=len(dls.valid_ds), shown=f"{PLOTS}/{BATCH}")
    try:
        run.info["model_size"] = model_size(step.learner(dls, ctx), cfg)
    except FxpError as e:  # the data is what fxp show is for: a model it cannot build yet (weights offline) is a note
        run.info["model_size"] = {"error": str(e)}
