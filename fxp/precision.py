"""`trainer.precision=auto`: the precision a step trains at, and why.

- On CUDA with bf16 (Ampere and later): bf16, which has fp32's range (no loss scaling, nothing overflows).
- On CUDA without it: fp16 if a validation batch through the model in fp16 (autocast, as fastai's MixedPrecision
  trains) gives a finite loss and outputs within TOLERANCE of fp32's (of the outputs' largest magnitude); else fp32.
- Elsewhere (the CPU): fp32, as fastai's mixed precision autocasts on CUDA only.

The check runs the model in eval mode without gradients and leaves every random generator as it was, so choosing
changes nothing else of the run.
"""
from __future__ import annotations

import torch
from fastai.torch_core import to_float

from fxp.errors import describe
from fxp.show import untouched

TOLERANCE = 0.05  # fp16 keeps about 3 significant digits; a deep net's rounding stays far below this, an overflow not


def choose(learn, device) -> dict:
    "{chosen, reason} for `learn` on `device` (see the module's doc)."
    if device.type != "cuda":
        return dict(chosen="fp32", reason=f"fastai's mixed precision autocasts on CUDA only: the {device.type} trains "
                                          f"in fp32")
    name = torch.cuda.get_device_name(device)
    with torch.cuda.device(device):
        native = torch.cuda.is_bf16_supported(including_emulation=False)  # emulated bf16 (before Ampere) is slow
    if native:
        return dict(chosen="bf16", reason=f"{name} computes in bf16, which has fp32's range (no loss scaling)")
    try:
        why = fp16_differs(*outputs(learn))
    except Exception as e:  # a model the check cannot run on one batch (a GAN's) trains as it always could
        why = f"could not be checked ({describe(e)})"
    if why is None:
        return dict(chosen="fp16", reason=f"{name} has no bf16; fp16 agreed with fp32 on a validation batch (finite "
                                          f"loss, outputs within {TOLERANCE:.0%})")
    return dict(chosen="fp32", reason=f"{name} has no bf16, and fp16 {why}")


def outputs(learn) -> tuple:
    """The model's outputs on a validation batch in fp32, then in fp16 with its loss (autocast, as fastai's
    MixedPrecision): eval mode, no gradients, the random generators untouched."""
    dl = learn.dls.valid
    with untouched(dl):
        b = dl.one_batch()
    n_inp = getattr(learn.dls, "n_inp", 1 if len(b) == 1 else len(b) - 1)  # as fastai's Learner splits a batch
    xb, yb = b[:n_inp], b[n_inp:]
    model, was_training = learn.model.to(learn.dls.device), learn.model.training
    model.eval()
    try:
        with torch.no_grad():
            out32 = model(*xb)
            with torch.autocast("cuda", dtype=torch.float16):
                out16 = model(*xb)
                loss16 = learn.loss_func(to_float(out16), *yb)
    finally:
        model.train(was_training)
    return out32, out16, loss16


def fp16_differs(out32, out16, loss16) -> str | None:
    "What fp16 got wrong against fp32 (a non-finite loss or output, outputs too far apart), as words; None: nothing."
    if not torch.isfinite(torch.as_tensor(loss16)).all():
        return f"gave a loss of {float(loss16)} on a validation batch"
    a, b = (_first(o).float() for o in (out32, out16))
    if not torch.isfinite(b).all():
        return "gave outputs that are not finite on a validation batch"
    gap = float((b - a).abs().max() / a.abs().max().clamp_min(1e-12))
    if gap > TOLERANCE:
        return f"outputs differed from fp32's by {gap:.0%} of their magnitude on a validation batch"
    return None


def _first(out):
    "A model's output, or the first of several (a text classifier returns logits and its hidden states)."
    return _first(out[0]) if isinstance(out, (tuple, list)) else out
