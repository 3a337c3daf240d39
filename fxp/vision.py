"Pieces every image kind shares: transforms from config, the learner, item names."
from __future__ import annotations

from pathlib import Path

from fastai.learner import Learner
from fastai.vision.augment import Resize, ResizeMethod, aug_transforms
from fastai.vision.learner import vision_learner
from hydra.utils import get_method, instantiate
from omegaconf import OmegaConf

from fxp import data
from fxp.errors import FxpError, building
from fxp.metrics import PixelAccuracy, metrics  # noqa: F401  (PixelAccuracy: old runs' model.pkl name it here)
from fxp.models import pretrained_weights

RESIZE_METHODS = {"crop": ResizeMethod.Crop, "pad": ResizeMethod.Pad, "squish": ResizeMethod.Squish}


def item_tfms(task) -> list:
    "Resize every item to `task.size` (int or [h, w]) by crop, pad or squish; nothing if no size."
    if task.size is None:
        return []
    size = tuple(task.size) if OmegaConf.is_list(task.size) else task.size
    return [Resize(size, method=RESIZE_METHODS[task.resize_method], pad_mode=task.pad_mode)]


def batch_tfms(task) -> list:
    "fastai's aug_transforms with the task's knobs; none when `task.aug` is null."
    if task.aug is None:
        return []
    kw = OmegaConf.to_container(task.aug)
    if isinstance(kw.get("size"), list):
        kw["size"] = tuple(kw["size"])
    return aug_transforms(**kw)


def dataloaders(block, source, cfg, device, fix: str, cache: bool = True):
    """An image DataBlock's loaders over `source` (its item and batch transforms applied), empty splits in one line;
    batches from the decode-once cache (fxp.imcache) unless data.cache=off or the items are not the same each epoch
    (`cache=False`: noise inputs)."""
    from fxp import cachedir, imcache

    folder = cachedir.root(cfg.data.cache) if cache else None
    kw = dict(dl_type=imcache.CachedDL) if folder else {}
    dls = data.dataloaders(block, source, cfg, device, fix, cached=folder is not None, after_item=block.item_tfms,
                           after_batch=block.batch_tfms, **kw)
    if folder:
        imcache.attach(dls, block, source, folder, cfg.data.cache_verify)
    return dls


def factories(cfg) -> list:
    "What `learner` passes `model.kwargs` to: vision_learner for `model.arch`, fastai's Learner for `model.net`."
    return [Learner] if cfg.model.arch is None else [vision_learner]


def unet_factories() -> list:
    "unet_learner takes its own arguments and passes the rest to the DynamicUnet (blur, self_attention, ...)."
    from fastai.vision.learner import unet_learner
    from fastai.vision.models.unet import DynamicUnet

    return [unet_learner, DynamicUnet]


def learner(cfg, dls, n_out: int, **kwargs) -> Learner:
    "A vision_learner on `model.arch` (pretrained or not), or a plain Learner on the `model.net` node."
    m, n_in = cfg.model, n_channels(dls)
    kwargs = {**OmegaConf.to_container(m.kwargs), **kwargs, "metrics": metrics(cfg.task.metrics)}
    if m.arch is None:
        if m.net is None:
            raise FxpError("the model has neither model.arch nor model.net; pick one with model=NAME (see fxp tasks)")
        with building("model.net"):
            net = instantiate(m.net, n_in=n_in, n_out=n_out)
            forward_once(net, dls)
        return Learner(dls, net, **kwargs)
    with building("model.arch"):
        arch = get_method(m.arch)
    with pretrained_weights(m):
        return vision_learner(dls, arch, n_in=n_in, n_out=n_out, pretrained=m.pretrained, **kwargs)


def forward_once(net, dls) -> None:
    "Two valid items through `net` (eval mode, CPU, no gradients): a network its own arguments break fails here."
    import torch

    x = dls.valid.one_batch()[0][:2].cpu()  # the valid loader: the training shuffle stays as it was
    with torch.no_grad():
        net.eval()(x)
    net.train()


def n_channels(dls) -> int:
    "The input channels of the loaders' images (1 for grey, 3 for RGB), from a batch."
    return dls.one_batch()[0].shape[1]


def item_names(dl, idxs, col=None) -> list[str]:
    """The file names of the items of `dl` at `idxs`: a path's name, or a table row's `col` cell (a name or a position);
    empty for in-memory tensors (digits)."""
    items = getattr(dl.dataset, "items", None)
    if items is None:
        return [""] * len(idxs)
    if hasattr(items, "iloc"):
        rows = items.iloc[list(idxs)]
        cells = rows.iloc[:, col or 0] if col is None or isinstance(col, int) else rows[col]
        return [Path(str(c)).name for c in cells]
    return [Path(str(items[i])).name for i in idxs]


def valid_items(dl, idxs) -> list:
    "The inputs of `dl` at `idxs` as tensors to show (item transforms applied, batch ones not), from memory or re-read."
    if hasattr(dl.dataset, "tensors"):
        return list(dl.dataset.tensors[0][idxs])
    return [dl.do_batch([dl.do_item(i)])[0][0] for i in idxs]


# --- segmentation: a U-Net on `model.arch` ---------------------------------------------------


def unet(cfg, dls, n_out: int, **kwargs) -> Learner:
    "fastai's unet_learner with `model.arch` as encoder (self_attention, blur, ... from `model.kwargs`)."
    from fastai.vision.learner import unet_learner

    m = cfg.model
    if m.arch is None:
        raise FxpError("a U-Net needs an encoder in model.arch (this model has none); "
                       "pick one with model=unet_resnet34 or model=resnet18 (see fxp tasks)")
    kwargs = {**OmegaConf.to_container(m.kwargs), **kwargs}
    with building("model.arch"):
        arch = get_method(m.arch)
    with pretrained_weights(m):
        return unet_learner(dls, arch, n_out=n_out, pretrained=m.pretrained, **kwargs)
