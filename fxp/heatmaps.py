"""Where an image model looks (lesson 6, fastbook ch. 18): CAM and Grad-CAM heatmaps made with fastai's hooks, on the
CPU, laid over the input it saw (denormalised), one PNG per item and label. The image kinds, and audio over its
spectrograms, explain their runs through `explain`; the module top stays light (torch is imported where it is used).

- CAM: the features a global pooling layer averages, each position sent through what follows the pool (a linear map:
  body → pool → linear), so a class's map averages to its logit. Only models of that shape have one.
- Grad-CAM: a layer's feature maps weighted by the mean gradient of the class score over each map, kept where
  positive; any CNN, at any convolutional layer (`--layer`), by default the one the pool reads.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fxp.errors import FxpError
from fxp.runs import TOP_LOSS

METHODS = ("gradcam", "cam")  # the first is the default
SPREAD = 4  # validation items explained by default, spread evenly over the split
TOP = 4  # and the validation items with the highest loss
BATCH = 64  # items through the model at once


@dataclass
class Item:
    "One input to explain: its name, the model's input (C, H, W), what is drawn (the input denormalised), why chosen."
    name: str
    x: Any
    shown: Any
    why: str
    truth: str = ""


# --- the items: given files, or validation items and top losses -------------------------------------------------------


def input_items(names: list[str], x, dl=None) -> list[Item]:
    "The model's inputs `x` (a batch) of the files `names`, drawn as `dl` (if any) decodes them: normalisation undone."
    shown = decoded(dl, x)
    return [Item(n, xi, si, "input") for n, xi, si in zip(names, x, shown)]


def file_items(learn, files: list[Path]) -> list[Item]:
    "Image files through the learner's validation pipeline (`test_dl`), as fxp predict reads them."
    import torch

    dl = learn.dls.test_dl(files)
    x = torch.cat([b[0] for b in dl])
    return input_items([Path(f).stem for f in files], x, dl)


def valid_items(learn, names=None) -> list[Item]:
    """SPREAD validation items spread over the split and the TOP highest losses among the rest, with their true
    labels; `names(idx)` gives the items' names (default: their files, `fxp.vision.item_names`)."""
    import torch

    from fxp import vision

    dl = learn.dls.valid
    _, targs, losses = learn.get_preds(dl=dl, with_loss=True)
    spread = sorted(set(torch.linspace(0, len(losses) - 1, min(SPREAD, len(losses))).round().long().tolist()))
    top = [i for i in losses.argsort(descending=True).tolist() if i not in spread][:TOP]
    idx = spread + top
    x = gathered(dl, idx)
    found = (names or (lambda i: vision.item_names(dl, i)))(idx)
    vocab = list(learn.dls.vocab)
    return [Item(Path(n).stem if n else f"valid_{i}", xi, si, TOP_LOSS if i in top else "valid",
                 _truth(targs[i], vocab)) for i, n, xi, si in zip(idx, found, x, decoded(dl, x))]


def gathered(dl, idx: list[int]):
    "The inputs of the (unshuffled) loader `dl` at `idx`, in that order, taken from its batches as the model sees them."
    import torch

    want, out, seen = set(idx), {}, 0
    for b in dl:
        x = b[0]
        for j in range(len(x)):
            if seen + j in want:
                out[seen + j] = x[j]
        seen += len(x)
        if len(out) == len(want):
            break
    return torch.stack([out[i] for i in idx])


def decoded(dl, x):
    "`x` as `dl` decodes a batch (Normalize undone); as it is where the loader decodes nothing (in-memory tensors)."
    decode = getattr(dl, "decode", None)
    return decode((x,))[0] if decode else x


def _truth(targ, vocab: list) -> str:
    "A target as its label (single-label) or its tags (a 0/1 row)."
    if targ.ndim:
        return " ".join(str(vocab[j]) for j in targ.nonzero().flatten().tolist())
    return str(vocab[int(targ)])


# --- the layers: CAM's pool and what follows it, Grad-CAM's layer -----------------------------------------------------


def sequence(model, prefix: str = "") -> list[tuple[str, Any]]:
    "The model as the modules it runs in order, nested nn.Sequential flattened, each with its name in named_modules."
    from torch import nn

    if not isinstance(model, nn.Sequential):
        return [(prefix.rstrip("."), model)]
    return [leaf for name, child in model.named_children() for leaf in sequence(child, f"{prefix}{name}.")]


def _global_pool(m) -> bool:
    from fastai.layers import AdaptiveConcatPool2d
    from torch import nn

    size = getattr(m, "size", None) if isinstance(m, AdaptiveConcatPool2d) else getattr(m, "output_size", None)
    return isinstance(m, (nn.AdaptiveAvgPool2d, AdaptiveConcatPool2d)) and size in (1, (1, 1))


def _affine(m) -> bool:
    "A module that maps features linearly in eval mode (what may follow CAM's pool)."
    from fastai.layers import Flatten
    from torch import nn

    return isinstance(m, (nn.Linear, nn.BatchNorm1d, nn.Dropout, nn.Identity, nn.Flatten, Flatten))


def cam_parts(model):
    """The global pool whose input CAM reads and the modules after it, if the model is body → pool → linear; else one
    line saying what it is instead, and that Grad-CAM works."""
    from torch import nn

    leaves = sequence(model)
    pools = [i for i, (_, m) in enumerate(leaves) if _global_pool(m)]
    if not pools:
        raise not_cam("it has no global average pooling layer its features go through")
    at = pools[-1]
    after = leaves[at + 1:]
    other = next(((n, m) for n, m in after if not _affine(m)), None)
    if other is not None:
        raise not_cam(f"after its pooling layer {leaves[at][0]} comes {other[0]} ({type(other[1]).__name__}), not only "
                      f"linear layers")
    if not any(isinstance(m, nn.Linear) for _, m in after):
        raise not_cam(f"no linear layer follows its pooling layer {leaves[at][0]}")
    return leaves[at][1], [m for _, m in after]


def not_cam(why: str) -> FxpError:
    return FxpError(f"fxp explain: --method cam needs a model that ends body → global pool → linear, and this one "
                    f"does not ({why}); use --method gradcam, which works for any CNN")


def _has_conv(m) -> bool:
    from torch import nn

    return any(isinstance(c, nn.Conv2d) for c in m.modules())


def default_layer(model) -> str:
    "Grad-CAM's layer: the one the global pool reads (the body's output), else the last with a convolution."
    leaves = sequence(model)
    pools = [i for i, (_, m) in enumerate(leaves) if _global_pool(m)]
    if pools and pools[-1] > 0:
        return leaves[pools[-1] - 1][0]
    convs = conv_layers(model)
    if not convs:
        raise FxpError("fxp explain draws heatmaps of convolutional networks, and this model has no convolution")
    return convs[-1]


def conv_layers(model) -> list[str]:
    "The names of the model's layers in order that hold a convolution (the body's blocks where it is a sequence)."
    from torch import nn

    leaves = [n for n, m in sequence(model) if n and _has_conv(m)]
    return leaves or [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def layer_named(model, name: str):
    "The module `name` of model.named_modules(); else one line with a few of the valid names."
    modules = dict(model.named_modules())
    if not name or name not in modules:
        few = conv_layers(model)[-6:]
        raise FxpError(f"fxp explain: --layer {name!r} is not a layer of this model; its convolutional layers end "
                       f"with: {', '.join(few)} (any name of model.named_modules() works)")
    return modules[name]


# --- the maps ---------------------------------------------------------------------------------------------------------


def heat(model, x, classes: list[int], method: str = METHODS[0], layer: str | None = None):
    """The `method` heatmap of class `classes[i]` for each input `x[i]`: (N, H, W) at the input's size, each in [0, 1]
    (its highest point 1). The model in eval mode, on the CPU."""
    import torch
    import torch.nn.functional as F

    model = model.eval().cpu()
    cls = torch.as_tensor(classes, dtype=torch.long)
    maps = []
    for xb, cb in zip(x.split(BATCH), cls.split(BATCH)):
        maps.append(cam(model, xb, cb, layer) if method == "cam" else gradcam(model, xb, cb, layer))
    m = F.interpolate(torch.cat(maps)[:, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    low = m.flatten(1).min(1).values[:, None, None]
    high = m.flatten(1).max(1).values[:, None, None]
    return (m - low) / (high - low).clamp(min=1e-8)


def cam(model, x, cls, layer: str | None = None):
    """Class activation maps (N, h, w): each position's features (what the pool averages) through the linear layers
    after the pool. A concat pool (max and average) gets each position's features in both halves."""
    import torch
    from fastai.callback.hook import Hook
    from fastai.layers import AdaptiveConcatPool2d

    if layer is not None:
        raise FxpError("fxp explain: --layer picks Grad-CAM's layer; CAM reads the layer its global pool averages "
                       "(use --method gradcam with --layer)")
    pool, after = cam_parts(model)
    with torch.no_grad(), Hook(pool, lambda m, i, o: i[0]) as hook:
        model(x)
        feats = hook.stored  # (N, C, h, w)
        n, c, h, w = feats.shape
        f = feats.permute(0, 2, 3, 1).reshape(-1, c)
        if isinstance(pool, AdaptiveConcatPool2d):
            f = torch.cat([f, f], 1)
        for m in after:
            f = m(f)
    return f.view(n, h, w, -1)[torch.arange(n), :, :, cls]


def gradcam(model, x, cls, layer: str | None = None):
    "Grad-CAM maps (N, h, w) of `layer` (default_layer if None): its maps weighted by their mean gradient, kept > 0."
    import torch
    from fastai.callback.hook import hook_output

    name = layer or default_layer(model)
    module = layer_named(model, name)
    x = x.clone().requires_grad_(True)  # a frozen body's activations get a gradient too
    with torch.enable_grad(), hook_output(module, detach=False) as hook:
        out = _logits(model(x))
        acts = hook.stored
        if not isinstance(acts, torch.Tensor) or acts.ndim != 4:
            shape = tuple(acts.shape) if isinstance(acts, torch.Tensor) else type(acts).__name__
            raise FxpError(f"fxp explain: --layer {name} gives {shape}, not feature maps (N, C, H, W); pick a "
                           f"convolutional layer: {', '.join(conv_layers(model)[-6:])}")
        grads, = torch.autograd.grad(out[torch.arange(len(out)), cls].sum(), acts)
    weights = grads.mean((2, 3), keepdim=True)
    return torch.relu((weights * acts).sum(1)).detach()


def _logits(out):
    "A model's class scores (a text classifier's first output)."
    return out[0] if isinstance(out, (tuple, list)) else out


# --- labels, drawing, the rows ----------------------------------------------------------------------------------------


def probabilities(model, x, multi: bool):
    "Softmax (single-label) or sigmoid (multi-label) outputs of `model` for `x`, in eval mode on the CPU."
    import torch

    model = model.eval().cpu()
    with torch.no_grad():
        out = torch.cat([_logits(model(xb)) for xb in x.split(BATCH)])
    return torch.sigmoid(out) if multi else torch.softmax(out, 1)


def labels(probs, vocab: list, thresh: float | None, target: str | None) -> list[list[int]]:
    """The classes to explain for each item: `target` alone; else the predicted class (`thresh` None), or each class
    over `thresh` (multi-label; the likeliest one where none is)."""
    if target is not None:
        return [[class_index(vocab, target)]] * len(probs)
    if thresh is None:
        return [[int(p.argmax())] for p in probs]
    return [(p > thresh).nonzero().flatten().tolist() or [int(p.argmax())] for p in probs]


def class_index(vocab: list, label: str) -> int:
    "The index of `label` in the run's classes; else one line listing them."
    names = [str(v) for v in vocab]
    if label not in names:
        shown = ", ".join(names[:30]) + (f" ... ({len(names)} in all)" if len(names) > 30 else "")
        raise FxpError(f"fxp explain: --target {label!r} is not one of the run's classes: {shown}")
    return names.index(label)


def explain(learn, items: list[Item], dest: Path, method: str | None = None, target: str | None = None,
            layer: str | None = None, thresh: float | None = None, flip: bool = False) -> list[dict]:
    """A PNG per item and label in `dest` (`<item>_<label>.png`): the `method` heatmap over the item, titled with the
    label, its probability, the true label where known and why the item was chosen. `thresh`: multi-label (each label
    over it); `flip`: drawn upside down (a spectrogram's low frequencies at the bottom). The rows of fxp explain."""
    import torch

    from fxp.data import free_path

    method = method or METHODS[0]
    if method not in METHODS:
        raise FxpError(f"fxp explain: --method {method}: choose from {', '.join(METHODS)}")
    if not items:
        raise FxpError("fxp explain: no items to explain (the validation split is empty)")
    vocab = list(learn.dls.vocab)
    x = torch.stack([i.x for i in items])
    probs = probabilities(learn.model, x, thresh is not None)
    chosen = labels(probs, vocab, thresh, target)
    pairs = [(i, c) for i, cs in enumerate(chosen) for c in cs]
    maps = heat(learn.model, x[[i for i, _ in pairs]], [c for _, c in pairs], method, layer)
    rows, used = [], set()
    for (i, c), m in zip(pairs, maps):
        item, label, p = items[i], str(vocab[c]), float(probs[i, c])
        file = free_path(dest / f"{_safe(item.name)}_{_safe(label)}.png", used)
        shown, m = (item.shown.flip(-2), m.flip(-2)) if flip else (item.shown, m)
        draw(shown, m, _title(item, label, p, method), file)
        rows.append({"input": item.name, "why": item.why, "label": label, "probability": round(p, 4),
                     "true": item.truth, "heatmap": file.name})
    return rows


def _title(item: Item, label: str, p: float, method: str) -> str:
    true = f", true {item.truth}" if item.truth else ""
    return f"{item.name} ({item.why}{true})\n{method}: {label} p={p:.2f}"


def draw(image, heatmap, title: str, dest: Path) -> None:
    "The heatmap in colour over the image in grey or colour, titled, saved whole to `dest`."
    from fxp.plots import displayable, plt, save

    fig, ax = plt.subplots(figsize=(3.4, 3.6))
    ax.imshow(displayable(image), cmap="gray")
    ax.imshow(heatmap.numpy(), cmap="jet", alpha=0.45, interpolation="bilinear")
    ax.set_title(title, fontsize=8)
    ax.axis("off")
    save(fig, dest)


def _safe(name: str) -> str:
    "A name as part of a file name: characters other than letters, digits, `.`, `-` and `_` as `_`."
    return re.sub(r"[^\w.-]", "_", name)[:80] or "_"

