"""`model.init`: how a model trained from scratch starts, applied to a step's fresh learner before its first epoch.

- `default`: as its layers made themselves (PyTorch's, or fastai's kaiming normal in its ConvLayer);
- `kaiming`: He et al.'s normal init for ReLU networks (std √(2/fan_in)) on every conv and linear weight, biases 0;
- `lsuv`: layer-sequential unit variance (Mishkin & Matas 2015; course-v3 lesson 11, 07a_lsuv): on one training batch,
  each conv and linear layer in turn, its output measured through a hook and its weights divided by that std and its
  bias shifted by that mean, until the output has std 1 (and mean 0 where there is a bias) within TOL, at most
  MAX_ITERS times. Layers after it are set after it, so each one sees the inputs it will start training with.

The batch is drawn leaving every random state as it was (fxp.show.untouched), so a run with another init sees the same
data in the same order. Measured in eval mode and without gradients: no BatchNorm statistics or dropout in the count.
"""
from __future__ import annotations

import torch
from torch import nn

from fxp.errors import FxpError
from fxp.runs import first_line

LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
TOL = 1e-3  # the notebook's: |std - 1| and |mean| within it
MAX_ITERS = 10  # adjustments per layer (one is exact for a layer with a bias; more guard against what is not linear)


def initialize(learn, how: str) -> dict:
    "Apply `how` (model.init) to the learner's model; the summary's record of it ({} for default)."
    if how == "default":
        return {}
    layers = [(name, m) for name, m in learn.model.named_modules() if isinstance(m, LAYERS)]
    if how == "kaiming":
        kaiming(layers)
        return {"init": {"method": "kaiming", "layers": len(layers)}}
    model = learn.model
    xb = training_batch(learn.dls, next(model.parameters()).device)
    return {"init": {"method": "lsuv", "tol": TOL, "layers": lsuv(model, layers, xb)}}


def kaiming(layers: list) -> None:
    with torch.no_grad():
        for _, m in layers:
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                m.bias.zero_()


def training_batch(dls, device) -> tuple:
    "The inputs of one training batch on `device`, drawn without a trace on any random state or on the loader's order."
    from fxp.show import untouched

    with untouched(dls.train):
        b = dls.train.one_batch()
        n_inp = getattr(dls, "n_inp", 1)  # fastai may draw a batch to count them
    return tuple(t.to(device) for t in b[:n_inp])


def lsuv(model: nn.Module, layers: list, xb: tuple, tol: float = TOL, max_iters: int = MAX_ITERS) -> list[dict]:
    "Each of `layers` ((name, module), in forward order) set to unit variance on batch `xb`; a record per layer."
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return [{"layer": f"{name} {type(m).__name__}", **unit_variance(model, m, xb, tol, max_iters)}
                    for name, m in layers]
    finally:
        model.train(training)


def unit_variance(model: nn.Module, m: nn.Module, xb: tuple, tol: float, max_iters: int) -> dict:
    """Scale `m`'s weights (and shift its bias) until its output on `xb` has std 1 (mean 0) within `tol`: y' = (y - μ)/σ
    is (W/σ)x + (b - μ)/σ. Returns the total scale, the output's final mean and std, the adjustments made."""
    seen = {}
    hook = m.register_forward_hook(lambda mod, inp, out: seen.update(mean=out.mean().item(), std=out.std().item()))
    scale, i = 1.0, 0
    try:
        for i in range(max_iters + 1):
            run(model, xb)
            if not seen:
                return {"skipped": "not run on the batch"}
            mean, std = seen["mean"], seen["std"]
            if std < 1e-8:  # a dead layer: no scale gives it a spread
                return {"skipped": f"its output is constant ({mean:.3g}) on the batch"}
            if i == max_iters or abs(std - 1) <= tol and (m.bias is None or abs(mean) <= tol):
                break
            if m.bias is not None:
                m.bias.sub_(mean).div_(std)
            m.weight.div_(std)
            scale /= std
    finally:
        hook.remove()
    return {"scale": round(scale, 6), "mean": round(mean, 6) + 0.0, "std": round(std, 6), "iters": i}  # no -0.0


def run(model: nn.Module, xb: tuple) -> None:
    try:
        model(*xb)
    except Exception as e:  # a model that takes more than its batch's inputs (a GAN's pair): not LSUV's to guess
        raise FxpError(f"model.init=lsuv: the model does not run on a training batch ({type(e).__name__}: "
                       f"{first_line(e)}); use model.init=kaiming or default") from e
