"""The course's training techniques, each one trainer key (fxp.schema.Trainer), each fastai's own: the optimizer
(`trainer.opt`, lessons 5 and 9), mixup and cutmix (lesson 12), gradient clipping and accumulation (callbacks),
test-time augmentation (fastbook 7: `learn.tta`) and activation statistics through hooks (lessons 10-11)."""
from __future__ import annotations

from functools import partial
from pathlib import Path
from types import SimpleNamespace

import torch
from fastai import optimizer
from fastai.callback.hook import ActivationStats, has_params
from fastai.callback.mixup import CutMix, MixUp
from fastai.callback.training import GradientAccumulation, GradientClip
from fastai.layers import flatten_model
from fastai.losses import BCEWithLogitsLossFlat
from fastai.torch_core import to_detach

from fxp.callbacks import _active
from fxp.schema import OPT_HYPERS

OPTIMIZERS = {"adam": optimizer.Adam, "sgd": optimizer.SGD, "rmsprop": optimizer.RMSProp, "lamb": optimizer.Lamb,
              "ranger": optimizer.ranger}
NEAR_ZERO_ABOVE = 0.9  # a layer whose activations are this share near zero (≤ 0.05, fastai's) over an epoch collapsed
PLOT = Path("plots") / "activation_stats.png"
HIST_LAYERS = 8  # the colorful-dimension panels: at most this many layers, spread from first to last


def use_opt(learn, tr) -> None:
    """The learner trains with `trainer.opt` and the hyper-parameters set for it; what a kind's recipe gave that same
    optimizer (the GAN step's Adam without momentum) stays unless set. An optimizer made already (a pretrained body is
    frozen when the learner is made) is made again, frozen as it was."""
    fn, own = OPTIMIZERS[tr.opt], learn.opt_func
    base, kept = (own.func, own.keywords) if isinstance(own, partial) else (own, {})
    given = {k: tr[k] for k in OPT_HYPERS[tr.opt] if tr[k] is not None}
    if base is fn and not given:
        return
    learn.opt_func = partial(fn, **{**(kept if base is fn else {}), **given})
    if learn.opt is not None:
        frozen = learn.opt.frozen_idx
        learn.create_opt()
        learn.opt.freeze_to(frozen)


def callbacks(tr) -> list:
    "The fastai callbacks of the techniques the trainer turns on, for every fit."
    cbs = [MixUp(tr.mixup)] if tr.mixup else []
    cbs += [CutMix(tr.cutmix)] if tr.cutmix else []
    cbs += [GradientClip(tr.clip)] if tr.clip is not None else []
    cbs += [Accumulate(n_acc=tr.accumulate * tr.bs)] if tr.accumulate > 1 else []  # fastai counts items
    return cbs + ([LayerStats()] if tr.activation_stats else [])


class Accumulate(GradientAccumulation):
    """fastai's GradientAccumulation, whose gradients pending at an epoch's end (its batches not a multiple of the
    step's) go into the checkpoint with its count: fxp resume goes on as if never stopped."""
    carried = ("count", "pending")

    def after_epoch(self):  # before LastCheckpoint writes the epoch's checkpoint
        self.pending = [p.grad for p in self.learn.model.parameters()] if self.count else None

    def before_train(self):
        "A resumed fit's pending gradients back in place (otherwise they are there already: the same tensors)."
        for p, g in zip(self.learn.model.parameters(), self.__dict__.get("pending") or ()):
            if g is not None and p.grad is not g:
                p.grad = g


def tta_metrics(learn) -> dict:
    """fastai's test-time augmentation on the valid set (the predictions on 4 augmented copies of each item, averaged,
    mixed with the plain one's), scored by each of the learner's metrics: `tta_<metric>`."""
    probs, targs = learn.tta()
    seen = SimpleNamespace(pred=as_logits(probs, learn.loss_func), y=targs, yb=(targs,), to_detach=to_detach)
    out = {}
    for m in learn.metrics:
        m.reset()
        m.accumulate(seen)
        out[f"tta_{m.name}"] = round(float(m.value), 6)
    return out


def as_logits(probs, loss_func):
    """Probabilities back to outputs the metrics take (they apply the activation themselves): the inverse of the
    sigmoid for multi-label ones; for softmax ones the log, which softmax turns back into them."""
    if isinstance(loss_func, BCEWithLogitsLossFlat):
        return torch.logit(probs, eps=1e-6)
    return probs.log()


# --- activation statistics (lessons 10-11) ----------------------------------------------------------------------


class LayerStats(ActivationStats):
    """fastai's ActivationStats (mean, std, share near zero and histogram of each layer's activations, per training
    batch) over all the fits of a step, where each epoch's batches end, and the hooks left on the device (fastai's
    copy every activation to the CPU). `step_done` writes plots/activation_stats.png and returns the summary's
    collapsed layers."""
    carried = ("stats", "ends")  # for fxp resume

    def __init__(self):
        super().__init__(with_hist=True, cpu=False)
        self.ends = []

    def before_fit(self):
        if self.modules is None:  # set here, not by fastai's `self.modules =`, which warns of the model's `modules`
            self.__dict__["modules"] = [m for m in flatten_model(self.model) if has_params(m)]
        stats = self.__dict__.get("stats")
        super().before_fit()
        if stats is not None:  # a later stage goes on with the same record
            self.stats = stats

    def after_batch(self):
        if _active(self):
            super().after_batch()

    def after_epoch(self):
        if _active(self):
            self.ends.append(len(self.stats))

    def hook(self, m, i, o):
        "An RNN's (nested) tuple of outputs: the statistics of its first tensor, the output."
        return super().hook(m, i, first_tensor(o))

    def ran(self) -> list[int]:
        "The hooked layers that ran in every recorded batch (an AWD-LSTM holds modules it calls only by their weights)."
        return [i for i in range(len(self.modules)) if all(batch[i] is not None for batch in self.stats)]

    def names(self, layers: list[int]) -> list[str]:
        "Each of `layers` as `<path in the model> <class>` (`0.0 Conv2d`)."
        paths = {id(m): n for n, m in self.learn.model.named_modules()}
        return [f"{paths.get(id(self.modules[i]), '?')} {type(self.modules[i]).__name__}" for i in layers]

    def table(self, layers: list[int]) -> torch.Tensor:
        "(batches, layers, 3): each training batch's mean, std and near-zero share of each of `layers`."
        return torch.tensor([[[batch[i][k] for k in ("mean", "std", "near_zero")] for i in layers]
                             for batch in self.stats])

    def hists(self, layers: list[int]) -> torch.Tensor:
        "(layers, 40 bins, batches): fastai's histograms of the activations of each of `layers`, log(1 + count)."
        counts = torch.stack([torch.stack([batch[i]["hist"] for i in layers]) for batch in self.stats], -1)
        return counts.float().cpu().log1p()

    def step_done(self, folder: Path) -> dict:
        "plots/activation_stats.png under `folder`, and the summary's record: the layers, those that collapsed."
        layers = self.ran() if self.__dict__.get("stats") else []  # none: no fit ran (a resumed step that had ended)
        if not layers:
            return {}
        table, names = self.table(layers), self.names(layers)
        plot(table, self.hists(layers), names, self.ends, folder / PLOT)
        return {"activation_stats": dict(layers=len(names), near_zero_above=NEAR_ZERO_ABOVE,
                                         collapsed=collapsed(table, self.ends, names), plot=PLOT.as_posix())}


def first_tensor(o):
    return first_tensor(o[0]) if isinstance(o, (tuple, list)) else o


def collapsed(table: torch.Tensor, ends: list[int], names: list[str]) -> list[dict]:
    """Each layer whose activations' near-zero share, averaged over an epoch, is above NEAR_ZERO_ABOVE: the first such
    epoch. The last layer, the network's output (logits: mostly negative, so 'near zero' by fastai's measure), is left
    out."""
    out, starts = [], [0, *ends]
    for layer, name in enumerate(names[:-1]):
        for epoch, (a, b) in enumerate(zip(starts, ends), 1):
            share = float(table[a:b, layer, 2].mean()) if b > a else 0.0
            if share > NEAR_ZERO_ABOVE:
                out.append(dict(layer=name, index=layer, epoch=epoch, near_zero=round(share, 4)))
                break
    return out


def plot(table: torch.Tensor, hists: torch.Tensor, names: list[str], ends: list[int], dest: Path) -> None:
    """Top: each layer's activation mean, std and near-zero share per training batch (colour: depth; dotted: epoch
    ends). Below: lesson 10's 'colorful dimension' of up to HIST_LAYERS layers, spread from first to last."""
    from fxp.plots import plt, save

    shown = torch.linspace(0, len(names) - 1, min(HIST_LAYERS, len(names))).round().int().unique().tolist()
    fig = plt.figure(figsize=(15, 7.5))
    grid = fig.add_gridspec(2, len(shown))
    curves(fig, grid[0, :].subgridspec(1, 3, wspace=0.25), table, names, shown, ends)
    for j, layer in enumerate(shown):
        color_dim(fig.add_subplot(grid[1, j]), hists[layer], names[layer])
    fig.suptitle("activations per layer over training; below: their histograms per batch ('colorful dimension')",
                 fontsize=10)
    save(fig, dest)


def curves(fig, grid, table: torch.Tensor, names: list[str], shown: list[int], ends: list[int]) -> None:
    "Mean, std and near-zero share of every layer per batch; the legend (the `shown` layers) beside the figure."
    from fxp.plots import plt

    colors = plt.cm.viridis(torch.linspace(0, 0.9, len(names)).tolist())
    for k, title in enumerate(("mean", "std", "share near zero (≤ 0.05)")):
        ax = fig.add_subplot(grid[0, k])
        for layer, color in enumerate(colors):
            label = names[layer] if k == 0 and layer in shown else None
            ax.plot(table[:, layer, k], color=color, linewidth=1, label=label)
        for end in ends[:-1]:
            ax.axvline(end, color="grey", linestyle=":", linewidth=0.8)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("training batch")
    # beside the figure, where tight_layout leaves it be and the saved image's tight box takes it in
    fig.legend(loc="upper left", bbox_to_anchor=(1.0, 0.95), fontsize=7, title="layer (colour: depth)")


def color_dim(ax, hist: torch.Tensor, name: str) -> None:
    "fastai's `color_dim`: a layer's histogram of activations (0 to 10, bottom to top) per batch, brighter where more."
    ax.imshow(hist, origin="lower", aspect="auto")
    ax.set_title(name, fontsize=8)
    ax.axis("off")
