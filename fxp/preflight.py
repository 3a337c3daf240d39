"""`fxp check`'s pre-flight: the run's real training path (fxp.train.run_steps: the kind's steps, fxp's callbacks,
precision, loss, metrics) with every fit cut to one training and one validation batch; the data doctor on each step's
loaders; the model exported, reloaded and asked for two predictions; `--overfit`: one batch learnt by heart.

Every piece is timed and recorded (`Pieces`); the first that fails stops the check and is named in one line.
"""
from __future__ import annotations

import itertools
import time
import traceback
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

from fastai.callback.core import Callback, CancelFitException, CancelValidException
from omegaconf import OmegaConf

from fxp import batchsize, dispatch, doctor, train
from fxp.errors import FxpError, describe

LOG = "check.log"  # the traceback of a piece that failed
FIXED_LR = 1e-3  # instead of trainer.lr=find: the LR finder alone would take longer than the whole check


class Pieces:
    "The pieces of a check in the order they ran: name, passed or failed, seconds, what failed."

    def __init__(self):
        self.rows: list[dict] = []
        self.open: dict | None = None

    def start(self, name: str) -> None:
        self.done()
        self.open = {"piece": name, "ok": None, "seconds": time.perf_counter(), "detail": ""}

    def done(self, detail: str = "") -> None:
        if self.open is not None:
            self.open.update(ok=True, seconds=round(time.perf_counter() - self.open["seconds"], 3),
                             detail=detail or self.open["detail"])
            self.rows.append(self.open)
            self.open = None

    def fail(self, e: BaseException) -> None:
        "The open piece (or a last one) failed with `e`."
        row = self.open or {"piece": "check", "seconds": time.perf_counter()}
        detail = str(e) if isinstance(e, FxpError) else describe(e)
        row.update(ok=False, seconds=round(time.perf_counter() - row["seconds"], 3), detail=detail)
        self.rows.append(row)
        self.open = None

    @contextmanager
    def piece(self, name: str):
        self.start(name)
        yield self
        self.done()


class CutFit(Callback):  # not OneBatch: a callback is set on the learner by its snake name (one_batch)
    """Each fit: one training batch, one validation batch, then the fit ends (its after_fit still runs); the LR finder
    and get_preds are left alone. The loaders are cut, not the loops (fastai's Recorder drops a cancelled phase's
    numbers, which fxp's callbacks read). Marks the pieces as it goes."""
    order = 100  # last: every other callback has seen the batch and the epoch

    def __init__(self, pieces: Pieces, step: str):
        self.pieces, self.name_ = pieces, step

    def _on(self) -> bool:
        # not in the LR finder nor in get_preds (a step's `after` may predict)
        return not (hasattr(self.learn, "lr_finder") or hasattr(self.learn, "gather_preds"))

    def before_train(self):
        if self._on():
            self.pieces.start(f"train batch ({self.name_})")
            self.learn.dl = First(self.learn.dl)

    def before_validate(self):
        if self._on():
            self.pieces.start(f"valid batch ({self.name_})")
            self.learn.dl = First(self.learn.dl)

    def after_batch(self):
        if self._on():
            self.pieces.done(f"loss {float(self.learn.loss.detach()):.4g}")

    def after_epoch(self):
        if self._on():
            raise CancelFitException


class First:
    "A loader's first batch only (its other attributes are the loader's)."

    def __init__(self, dl):
        self.dl = dl

    def __len__(self) -> int:
        return 1

    def __iter__(self):
        return itertools.islice(iter(self.dl), 1)

    def __getattr__(self, name):
        return getattr(self.dl, name)


def run(cfg, dest: Path, data_only: bool = False, overfit: dict | None = None,
        min_per_class: int = doctor.MIN_PER_CLASS) -> dict:
    """Check `cfg` (validated) into `dest`; returns what check.json holds: the pieces, the data's counts and findings,
    the overfit's losses. Never raises for a failing piece: it is recorded."""
    pieces, out = Pieces(), {"counts": {}, "findings": []}
    skip_bad, cfg.data.skip_bad = cfg.data.skip_bad, True  # an unreadable file is the doctor's finding, not a stop
    fixed_bs(cfg)
    try:
        with pieces.piece("device"):
            device = train.setup(cfg)
        kind = dispatch.kind_module(cfg.task.kind)
        steps = dispatch.steps(kind, cfg)
        if data_only:
            ctx = train.StepContext(device, dest, dest, {})
            with pieces.piece(f"data ({steps[0].name})"):
                dls = steps[0].dls(ctx)
            examined(dls, kind, min_per_class, skip_bad, pieces, out, steps[0].name)
        else:
            full(cfg, dest, kind, steps, device, pieces, out, (min_per_class, skip_bad), overfit)
    except Exception as e:  # the piece's one line in the table; its traceback in check.log
        from fxp.writer import write_atomic

        write_atomic(dest / LOG, "".join(traceback.format_exception(e)))
        pieces.fail(e)
    out["pieces"] = pieces.rows
    return out


def examined(dls, kind, min_per_class: int, skip_bad: bool, pieces: Pieces, out: dict, step: str) -> None:
    "The data doctor on a step's loaders: its counts and findings into `out` (a finding seen before is not repeated)."
    with pieces.piece(f"data doctor ({step})"):
        counts, findings = doctor.examine(dls, kind, min_per_class, skip_bad=skip_bad)
        out["counts"][step] = counts
        seen = {f["what"] for f in out["findings"]}
        out["findings"] += [f.as_dict() for f in findings if f.what not in seen]
        errors = sum(f.level == doctor.ERROR for f in findings)
        pieces.open["detail"] = f"{len(findings)} finding(s), {errors} error(s)" if findings else "nothing found"
    pieces.rows[-1]["ok"] = not any(f.level == doctor.ERROR for f in findings)


def full(cfg, dest: Path, kind, steps: list, device, pieces: Pieces, out: dict, doctoring: tuple,
         overfit: dict | None) -> None:
    """Every step through the training path, each fit cut to a batch (the doctor on each step's data: `doctoring` is
    its (min_per_class, skip_bad)); the export reloaded and predicting; `overfit`."""
    first = {}

    def data(step):
        def build(ctx):
            with pieces.piece(f"data ({step.name})"):
                dls = step.dls(ctx)
            examined(dls, kind, *doctoring, pieces, out, step.name)
            first.setdefault("dls", dls)
            pieces.start(f"learner ({step.name})")
            return dls
        return build

    def learner(step):
        def build(dls, ctx):
            learn = step.learner(dls, ctx)
            pieces.done(type(learn.model).__name__)
            learn.add_cb(CutFit(pieces, step.name))
            return learn
        return build

    fixed_lr(cfg)
    cfg.trainer.check = False  # the doctor ran on each step's data above, with all its checks
    cut = [replace(s, dls=data(s), learner=learner(s), about="") for s in steps]
    learn = train.run_steps(cut, cfg, SimpleNamespace(path=dest, info={}, resume=None), device)
    learn.remove_cbs([cb for cb in learn.cbs if isinstance(cb, CutFit)])
    exported(learn, dest, pieces)
    if overfit is not None:
        out["overfit"] = overfitted(steps[0], first["dls"], train.StepContext(device, dest, dest, {}), cfg,
                                    pieces, **overfit)


def fixed_bs(cfg) -> None:
    """trainer.bs=auto as the first size it would try (fxp.batchsize.smallest): a batch checks the path, not the memory
    (fxp train probes that), and a batch this small fits wherever anything does."""
    if cfg.trainer.bs == "auto":
        cfg.trainer.bs = batchsize.smallest(cfg.trainer)


def fixed_lr(cfg) -> None:
    "trainer.lr=find (and a stage's) as FIXED_LR: one batch tells nothing of the LR, and the finder takes long."
    if cfg.trainer.lr == "find":
        cfg.trainer.lr = FIXED_LR
    for stage in cfg.trainer.stages:
        if stage.lr == "find":
            stage.lr = FIXED_LR


def exported(learn, dest: Path, pieces: Pieces) -> None:
    "model.pkl as a run exports it, loaded back as fxp predict loads it, and two validation items predicted."
    from fxp import saved

    with pieces.piece("export"):
        train.export(learn, dest / "model.pkl")
    with pieces.piece("reload"):
        loaded = saved.load(dest / "model.pkl", "fxp check")
    with pieces.piece("predict 2 items"):
        shape = two_predictions(loaded, learn.dls)
        pieces.open["detail"] = f"output {shape}"


def two_predictions(loaded, dls) -> tuple:
    "The reloaded learner's outputs for the first two validation items (one if it has one), given raw (as read)."
    import torch

    ds = dls.valid_ds
    n = min(2, len(ds))
    if not hasattr(ds, "items"):  # in-memory data: a batch of its valid loader is what the model takes
        batch = dls.valid.one_batch()
        with torch.no_grad():
            preds = loaded.model.eval().cpu()(*[x[:n].cpu() for x in batch[:getattr(dls, "n_inp", 1)]])
    else:
        items = doctor.raw_rows(dls, ds) if hasattr(ds, "y_names") else ds.items
        preds = loaded.get_preds(dl=loaded.dls.test_dl(items[:n]))[0]
    preds = preds[0] if isinstance(preds, (tuple, list)) else preds
    if len(preds) != n or not torch.isfinite(preds.float()).all():
        raise ValueError(f"the reloaded model gave {len(preds)} outputs for {n} items, or outputs that are not finite")
    return tuple(preds.shape)


def overfitted(step, dls, ctx, cfg, pieces: Pieces, steps: int, fall: float) -> dict:
    """A fresh learner of the first step fitted on one fixed training batch for `steps` steps at the trainer's LR (a
    plain fit: no schedule, no validation): it passes when the loss falls by `fall` (0.9: to a tenth). A recipe that
    cannot learn (the LR, the loss, frozen layers, shuffled labels) fails here."""
    import torch

    with pieces.piece(f"overfit ({step.name})"):
        learn = train.attach(step.learner(dls, ctx), ctx.path)
        lr = cfg.trainer.lr[-1] if OmegaConf.is_list(cfg.trainer.lr) else cfg.trainer.lr  # [lo, hi]: the head's
        same = SameBatch(dls.one_batch(), steps, fall)
        learn.fit(1, float(lr), wd=cfg.trainer.wd, cbs=[same])
        losses = same.losses
        first_loss, last = losses[0], losses[-1]
        fell = 1 - last / first_loss if first_loss > 0 else 0.0
        result = {"steps": steps, "lr": float(lr), "first_loss": first_loss, "last_loss": last, "fell": fell,
                  "wanted": fall, "losses": losses}
        line = f"loss {first_loss:.4g} → {last:.4g} in {len(losses)} steps at lr {float(lr):g}: fell {fell:.0%}"
        if not (torch.isfinite(torch.tensor(losses)).all() and fell >= fall):
            raise OverfitFailed(f"{line}, not {fall:.0%}: the recipe does not learn one batch by heart "
                                f"(check trainer.lr, the loss, frozen layers, the labels)")
        pieces.open["detail"] = line
    return result


class SameBatch(Callback):
    """The training loader as `batch` given `steps` times; no validation; each step's loss recorded; the fit ends once
    the loss fell by `fall`."""
    order = 100

    def __init__(self, batch, steps: int, fall: float):
        self.batch, self.steps, self.fall, self.losses = batch, steps, fall, []

    def before_train(self):
        self.learn.dl = Repeated(self.learn.dl, self.batch, self.steps)

    def after_loss(self):
        if self.training:
            self.losses.append(float(self.learn.loss.detach()))

    def after_batch(self):
        if self.training and self.losses[-1] <= (1 - self.fall) * self.losses[0]:
            raise CancelFitException  # learnt: the steps left would only wait on ever smaller numbers

    def before_validate(self):
        raise CancelValidException


class Repeated(First):
    "A loader giving one batch `n` times (its other attributes are the loader's)."

    def __init__(self, dl, batch, n: int):
        super().__init__(dl)
        self.batch, self.n = batch, n

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        return itertools.repeat(self.batch, self.n)


class OverfitFailed(FxpError):
    "The loss did not fall enough on one batch."
