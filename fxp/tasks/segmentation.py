"""Semantic segmentation (lesson 3, CamVid): images/x.png with a mask labels/x_P.png whose pixels index codes.txt.

A U-Net (fastai's unet_learner) on the model's encoder. The split is valid.txt (image names) when present, else
random. Module top stays light (the schema is read before anything heavy); fastai is imported where it is used.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from fxp.checks import check_images, check_model
from fxp.errors import FxpError
from fxp.schema import Images, Split, TaskBase

VOID_ACCURACY = "acc_camvid"  # the metric name lesson 3 gave pixel accuracy that ignores the `void` code


@dataclass
class Task(Images, Split, TaskBase):
    "Image keys (fxp.schema.Images: the item Resize and aug apply to the masks too); valid_pct when no valid_file."
    kind: str = "segmentation"
    images: str = "images"  # image folder, relative to data.path
    labels: str = "labels"  # mask folder: the mask of images/x.png is labels/x{label_suffix}.png
    label_suffix: str = "_P"
    codes: str = "codes.txt"  # one class name a line; mask pixel value i is codes[i]
    void: Optional[str] = "Void"  # the code acc_camvid leaves out; null counts every pixel
    valid_file: str = "valid.txt"  # image names of the validation set; if absent, a random valid_pct split
    resize_method: str = "squish"  # crop | pad | squish


def check(cfg) -> None:
    "Value checks a schema type cannot express, done before any heavy import."
    check_images(cfg.task)
    check_model(cfg, ("arch",), "a U-Net encoder, e.g. model=unet_resnet34 or resnet18")


class LabelFile:
    "images/x.png → labels/x_P.png (a class, not a lambda, so the exported learner pickles)."

    def __init__(self, folder: Path, suffix: str):
        self.folder, self.suffix = Path(folder), suffix

    def __call__(self, fn) -> Path:
        fn = Path(fn)
        return self.folder / f"{fn.stem}{self.suffix}{fn.suffix}"


def read_codes(path: Path) -> list[str]:
    if not path.is_file():
        raise FxpError(f"codes file not found: {path}; it lists one class name a line (mask value i = line i): "
                       f"set task.codes= (relative to data.path) or data.path=")
    codes = [c.strip() for c in path.read_text().splitlines() if c.strip()]
    if not codes:
        raise FxpError(f"codes file {path} is empty; it must list one class name a line (mask value i = line i)")
    return codes


def check_masks(files: list[Path], get_y: LabelFile, codes: list[str], path: Path) -> None:
    "Every image has a mask of its size, and no mask value is past the last code."
    from PIL import Image

    top = (-1, None)
    for f in files:
        mask = get_y(f)
        if not mask.is_file():
            raise FxpError(f"no mask for {f}: expected {mask}; check task.labels= and task.label_suffix=")
        with Image.open(f) as im, Image.open(mask) as m:
            if im.size != m.size:
                raise FxpError(f"mask {mask} is {m.size[0]}x{m.size[1]} but its image {f} is "
                               f"{im.size[0]}x{im.size[1]}; a mask must match its image pixel for pixel")
            hi = m.convert("L").getextrema()[1]  # as fastai's PILMask reads it
        top = max(top, (hi, mask))
    if top[0] >= len(codes):
        raise FxpError(f"mask {top[1]} has value {top[0]} but {path} lists only {len(codes)} codes (values "
                       f"0..{len(codes) - 1}); add the missing class names to {path.name} or set task.codes=")


def dls(cfg, device):
    "A DataBlock of (image, mask) pairs, split by valid.txt when the data set has one."
    from fastai.data.block import DataBlock
    from fastai.data.transforms import FileSplitter
    from fastai.vision.data import ImageBlock, MaskBlock

    from fxp import vision
    from fxp.data import check_images, data_path, image_files, splitter

    t = cfg.task
    root = data_path(cfg)
    codes = read_codes(root / t.codes)
    if t.void is not None and t.void not in codes:
        raise FxpError(f"task.void={t.void!r} is not in {root / t.codes}; name one of its codes, "
                       f"or set task.void=null to count every pixel")
    files, bad = check_images(image_files(root / t.images), cfg.data.skip_bad)
    get_y = LabelFile(root / t.labels, t.label_suffix)
    check_masks(files, get_y, codes, root / t.codes)
    valid_file = root / t.valid_file
    split = FileSplitter(valid_file) if valid_file.is_file() else splitter(t)
    block = DataBlock(blocks=(ImageBlock, MaskBlock(codes)), get_y=get_y, splitter=split,
                      item_tfms=vision.item_tfms(t), batch_tfms=vision.batch_tfms(t))
    how = f"{valid_file} names none of the images" if valid_file.is_file() else "check task.valid_pct"
    out = vision.dataloaders(block, files, cfg, device, how)
    out.skipped = bad
    return out


def factories(cfg) -> list:
    from fxp import vision

    return vision.unet_factories()


def learner(cfg, dls):
    "A U-Net with one output channel per code; `acc_camvid` is pixel accuracy leaving out `task.void`."
    from fxp import vision
    from fxp.learner import CrossEntropyLossPlain
    from fxp.metrics import metrics

    codes = _codes(dls)
    void = codes.index(cfg.task.void) if cfg.task.void is not None else None
    mets = [vision.PixelAccuracy(void, name=m) if m == VOID_ACCURACY else metrics([m])[0]
            for m in cfg.task.metrics]
    return vision.unet(cfg, dls, n_out=len(codes), metrics=mets, loss_func=CrossEntropyLossPlain(axis=1))


def _codes(dls) -> list[str]:
    "The class names, held by the masks' AddMaskCodes item transform (kept in an exported learner)."
    return list(dls.valid.after_item.vocab)


def evaluate(learn, cfg) -> dict:
    return {}


def plots(learn, cfg, dest: Path, evaluation: dict, n: int = 4) -> None:
    "Image, true mask and predicted mask (over the image) for the first few validation images."
    from fxp.plots import displayable, plt, save

    items = learn.dls.valid_ds.items[:n]
    dl = learn.dls.test_dl(items, with_labels=True, bs=len(items))
    inp, probs, targs = learn.get_preds(dl=dl, with_input=True)
    images = dl.decode((inp, targs))[0]
    codes, preds = _codes(learn.dls), probs.argmax(1)
    void = codes.index(cfg.task.void) if cfg.task.void is not None else -1
    fig, axs = plt.subplots(len(items), 3, figsize=(10, 2.6 * len(items)), squeeze=False)
    for row, f, im, targ, pred in zip(axs, items, images, targs, preds):
        im = displayable(im)
        keep = targ != void
        acc = (pred[keep] == targ[keep]).float().mean().item() if keep.any() else float("nan")
        for ax, mask, title in zip(row, (None, targ, pred), (Path(f).name, "true mask", f"predicted ({acc:.2f})")):
            ax.imshow(im)
            if mask is not None:
                ax.imshow(mask.cpu(), cmap="tab20", vmin=0, vmax=len(codes) - 1, alpha=0.6, interpolation="nearest")
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    save(fig, dest / "masks.png")


def predict(learn, cfg, inputs: list[str], out: Path = Path("predictions")) -> list[dict]:
    """Write each image's predicted mask to `out`/<name>_mask.png (pixel = code index, the image's size; an existing
    file is never overwritten) and return the share of pixels of each predicted class, largest first."""
    import numpy as np
    from PIL import Image

    from fxp.data import free_path, input_images

    files = input_images(inputs)
    probs, _ = learn.get_preds(dl=learn.dls.test_dl(files))
    codes, rows, used = _codes(learn.dls), [], set()
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    for f, p in zip(files, probs):
        with Image.open(f) as im:
            size = im.size
        mask = Image.fromarray(p.argmax(0).numpy().astype(np.uint8)).resize(size, Image.NEAREST)
        dest = free_path(out / f"{f.stem}_mask.png", used)
        mask.save(dest)
        counts = np.bincount(np.asarray(mask).ravel(), minlength=len(codes)) / (size[0] * size[1])
        shares = {codes[i]: round(float(counts[i]), 4) for i in np.argsort(-counts) if counts[i] > 0}
        rows.append({"input": str(f), "mask": str(dest), "shares": shares})
    return rows
