"""Semantic segmentation (lesson 3, CamVid): images/x.png with a mask labels/x_P.png whose pixels index codes.txt.

Masks may have another extension than their images (`task.label_ext`: JPEG photos with PNG masks, the Oxford-IIIT Pet
trimaps) and the codes may be given as a list in the config (`task.codes: [a, b, c]`) where no codes file exists.

A U-Net (fastai's unet_learner) on the model's encoder. The split is valid.txt (image names) when present, else
random. Module top stays light (the schema is read before anything heavy); fastai is imported where it is used.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from fxp.checks import check_model
from fxp.errors import ConfigError, FxpError
from fxp.schema import Images, Split, TaskBase

# pixel accuracy leaving out the `void` code: the name lesson 3 gave it, and a name for data sets other than CamVid
PIXEL_ACCURACY = ("acc_camvid", "pixel_accuracy")
INPUT = "image"


@dataclass
class Task(Images, Split, TaskBase):
    "Image keys (fxp.schema.Images: the item Resize and aug apply to the masks too); valid_pct when no valid_file."
    kind: str = "segmentation"
    images: str = "images"  # image folder, relative to data.path
    labels: str = "labels"  # mask folder: the mask of images/x.png is labels/x{label_suffix}{label_ext}
    label_suffix: str = "_P"
    label_ext: Optional[str] = None  # the masks' extension (.png for JPEG photos); null: the image's
    codes: Any = "codes.txt"  # a file of one class name a line (relative to data.path), or the names as a list;
    # mask pixel value i is codes[i]
    void: Optional[str] = "Void"  # the code acc_camvid leaves out; null counts every pixel
    valid_file: str = "valid.txt"  # image names of the validation set; if absent, a random valid_pct split
    resize_method: str = "squish"  # crop | pad | squish


def check(cfg) -> None:
    "Value checks a schema type cannot express, done before any heavy import."
    from omegaconf import OmegaConf

    t = cfg.task
    check_model(cfg, ("arch",), "a U-Net encoder, e.g. model=unet_resnet34 or resnet18")
    if OmegaConf.is_list(t.codes):
        if not t.codes or not all(isinstance(c, str) and c.strip() for c in t.codes):
            raise ConfigError(f"task.codes={list(t.codes)} must name each class (mask value i = codes[i]), "
                              f"e.g. task.codes=[pet,background,border]; or give a codes file: task.codes=codes.txt")
    elif not isinstance(t.codes, str):
        raise ConfigError(f"task.codes={t.codes!r} must be a codes file (relative to data.path) or a list of names")


class LabelFile:
    "images/x.png → labels/x_P.png, or with `ext` labels/x_P.png for x.jpg (a class, so the exported learner pickles)."

    ext = None  # learners exported before task.label_ext unpickle without it: the image's suffix

    def __init__(self, folder: Path, suffix: str, ext: str | None = None):
        self.folder, self.suffix, self.ext = Path(folder), suffix, ext and "." + ext.lstrip(".")

    def __call__(self, fn) -> Path:
        fn = Path(fn)
        return self.folder / f"{fn.stem}{self.suffix}{self.ext or fn.suffix}"


def read_codes(root: Path, codes) -> tuple[list[str], str]:
    "The class names (task.codes: a file under `root`, or the names) and where they come from, for messages."
    if not isinstance(codes, str):
        return [str(c).strip() for c in codes], "task.codes"
    path = root / codes
    if not path.is_file():
        raise FxpError(f"codes file not found: {path}; it lists one class name a line (mask value i = line i): "
                       f"set task.codes= (a file relative to data.path, or the names: task.codes=[a,b]) or data.path=")
    names = [c.strip() for c in path.read_text().splitlines() if c.strip()]
    if not names:
        raise FxpError(f"codes file {path} is empty; it must list one class name a line (mask value i = line i)")
    return names, str(path)


def check_masks(files: list[Path], get_y: LabelFile, codes: list[str], where: str) -> None:
    "Every image has a mask of its size, and no mask value is past the last code (`where` the codes come from)."
    from PIL import Image

    top = (-1, None)
    for f in files:
        mask = get_y(f)
        if not mask.is_file():
            raise FxpError(f"no mask for {f}: expected {mask}; {_mask_hint(mask)}")
        with Image.open(f) as im, Image.open(mask) as m:
            if im.size != m.size:
                raise FxpError(f"mask {mask} is {m.size[0]}x{m.size[1]} but its image {f} is "
                               f"{im.size[0]}x{im.size[1]}; a mask must match its image pixel for pixel")
            hi = m.convert("L").getextrema()[1]  # as fastai's PILMask reads it
        top = max(top, (hi, mask))
    if top[0] >= len(codes):
        fix = "name them all in task.codes" if where == "task.codes" else \
            f"add the missing class names to {Path(where).name} or set task.codes="
        raise FxpError(f"mask {top[1]} has value {top[0]} but {where} lists only {len(codes)} codes (values "
                       f"0..{len(codes) - 1}); {fix}")


def _mask_hint(mask: Path) -> str:
    "What to set when a mask is not where it was looked for: its extension when a file of that name has another."
    others = (sorted(p for p in mask.parent.glob(f"{mask.stem}.*") if p.suffix != mask.suffix)
              if mask.parent.is_dir() else [])
    if others:
        return f"{others[0].name} is there: set task.label_ext={others[0].suffix} (the masks' extension)"
    return "check task.labels=, task.label_suffix= and task.label_ext= (the masks' extension; null: the image's)"


def dls(cfg, device):
    "A DataBlock of (image, mask) pairs, split by valid.txt when the data set has one."
    from fastai.data.block import DataBlock
    from fastai.data.transforms import FileSplitter
    from fastai.vision.data import ImageBlock, MaskBlock

    from fxp import folds, vision
    from fxp.data import check_images, data_path, image_files, splitter

    t = cfg.task
    root = data_path(cfg)
    codes, where = read_codes(root, t.codes)
    if t.void is not None and t.void not in codes:
        raise FxpError(f"task.void={t.void!r} is not in {where}; name one of its codes, "
                       f"or set task.void=null to count every pixel")
    files, bad = check_images(image_files(root / t.images), cfg.data.skip_bad)
    get_y = LabelFile(root / t.labels, t.label_suffix, t.label_ext)
    check_masks(files, get_y, codes, where)
    valid_file = root / t.valid_file
    split = folds.splitter(cfg, FileSplitter(valid_file) if valid_file.is_file() else splitter(t))
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
    """A U-Net with one output channel per code; `acc_camvid` (or `pixel_accuracy`) is pixel accuracy leaving out
    `task.void`."""
    from fxp import vision
    from fxp.learner import CrossEntropyLossPlain
    from fxp.metrics import PixelAccuracy, metrics

    codes = _codes(dls)
    void = codes.index(cfg.task.void) if cfg.task.void is not None else None
    mets = [PixelAccuracy(void, name=m) if m in PIXEL_ACCURACY else metrics([m])[0]
            for m in cfg.task.metrics]
    return vision.unet(cfg, dls, n_out=len(codes), metrics=mets, loss_func=CrossEntropyLossPlain(axis=1))


def _codes(dls) -> list[str]:
    "The class names, held by the masks' AddMaskCodes item transform (kept in an exported learner)."
    return list(dls.valid.after_item.vocab)


def evaluate(learn, cfg) -> dict:
    "Each code's IoU and Dice over the validation pixels (task.void's left out, as acc_camvid does), and its pixels."
    from fxp.metrics import confusion_counts, per_class

    codes = _codes(learn.dls)
    void = codes.index(cfg.task.void) if cfg.task.void is not None else None
    cm = _confusion(learn, len(codes), void)
    rows = per_class(codes, *confusion_counts(cm), columns=("iou", "dice", "support"))
    return {"per_class": {c: v for i, (c, v) in enumerate(rows.items()) if i != void}}


def _confusion(learn, n: int, void: int | None):
    "The pixel confusion matrix (rows: true code, columns: predicted) of the validation split, a batch at a time."
    import torch

    cm = torch.zeros(n * n, dtype=torch.long)
    learn.model.eval()
    with torch.no_grad():
        for xb, yb in learn.dls.valid:
            pred, targ = learn.model(xb).argmax(1).flatten().cpu(), yb.flatten().cpu().long()
            keep = targ != void if void is not None else torch.ones_like(targ, dtype=torch.bool)
            cm += torch.bincount(targ[keep] * n + pred[keep], minlength=n * n)
    return cm.view(n, n)


def baseline(learn, cfg) -> dict:
    """Per metric, the stronger of two predictors that never look at the image: every pixel the most common training
    class, and each pixel the class most common at its place in the training masks (the per-pixel mode); both leave
    out `task.void`, as the metrics do. Scored with the run's metrics on the valid split."""
    import torch

    from fxp.baselines import label_logits, score, stronger

    codes = _codes(learn.dls)
    totals, places = _class_counts(learn.dls.test_dl(learn.dls.train_ds.items, with_labels=True), len(codes))
    if cfg.task.void is not None:  # never predicted
        totals[codes.index(cfg.task.void)] = places[codes.index(cfg.task.void)] = -1
    masks = [mask.cpu().long() for _, mask in learn.dls.valid]
    majority = int(totals.argmax())
    out = score(learn, ((label_logits(torch.full_like(m, majority), len(codes)), m) for m in masks),
                f"every pixel {codes[majority]!r}")
    mode = places.argmax(0)
    if all(m.shape[1:] == mode.shape for m in masks):
        out = stronger(out, score(learn, ((label_logits(mode.expand_as(m), len(codes)), m) for m in masks),
                                  "each pixel's most common training class"))
    return out


def _class_counts(dl, n: int):
    """How many training pixels have class i, (n,); and at each place, (n, h, w) (zeros if the masks differ in size:
    then there is no per-pixel mode)."""
    import torch

    totals, places = torch.zeros(n, dtype=torch.long), None
    for _, masks in dl:
        for m in masks.cpu().long():
            totals += torch.bincount(m.flatten(), minlength=n)
            if places is None:
                places = torch.zeros(n, *m.shape, dtype=torch.long)
            if places.shape[1:] == m.shape:
                places.view(n, -1).scatter_add_(0, m.view(1, -1), torch.ones(1, m.numel(), dtype=torch.long))
            else:
                places = torch.zeros(n, 0, dtype=torch.long)
    return totals, places


def plots(learn, cfg, dest: Path, evaluation: dict, n: int = 4) -> None:
    """Image, true mask and predicted mask (over the image) for the first few validation images, one colour per code
    and a legend of the codes they show; each prediction titled with its pixel accuracy (leaving out task.void)."""
    from fxp.plots import displayable, plt, save

    items = learn.dls.valid_ds.items[:n]
    dl = learn.dls.test_dl(items, with_labels=True, bs=len(items))
    inp, probs, targs = learn.get_preds(dl=dl, with_input=True)
    images = dl.decode((inp, targs))[0]
    codes, preds = _codes(learn.dls), probs.argmax(1)
    void = codes.index(cfg.task.void) if cfg.task.void is not None else -1
    colours = code_colours(len(codes))
    fig, axs = plt.subplots(len(items), 3, figsize=(10, 2.8 * len(items)), squeeze=False)
    for row, f, im, targ, pred in zip(axs, items, images, targs, preds):
        im = displayable(im)
        keep = targ != void
        acc = (pred[keep] == targ[keep]).float().mean().item() if keep.any() else float("nan")
        titles = (Path(f).name, "true mask", f"predicted (accuracy {acc:.2f})")
        for ax, mask, title in zip(row, (None, targ, pred), titles):
            ax.imshow(im)
            if mask is not None:
                ax.imshow(colours[mask.cpu().numpy()], alpha=0.55, interpolation="nearest")
            ax.set_title(title, fontsize=9)
            ax.axis("off")
    shown = sorted(set(targs.unique().tolist()) | set(preds.unique().tolist()))
    legend(fig, [(colours[i], codes[i] + (" (void)" if i == void else "")) for i in shown])
    save(fig, dest / "masks.png")


def code_colours(n: int):
    "An (n, 3) array of distinct RGB colours, one per code (tab10, tab20, then tab20 + tab20b + tab20c, repeating)."
    import numpy as np
    from matplotlib import colormaps

    names = ["tab10"] if n <= 10 else ["tab20"] if n <= 20 else ["tab20", "tab20b", "tab20c"]
    cols = np.concatenate([np.asarray(colormaps[m].colors)[:, :3] for m in names])
    return cols[np.arange(n) % len(cols)]


def legend(fig, entries) -> None:
    "A legend of (colour, name) patches below the figure's axes."
    from matplotlib.patches import Patch

    handles = [Patch(facecolor=c, edgecolor="black", linewidth=0.5, label=name) for c, name in entries]
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0), ncol=min(6, len(handles)), fontsize=9,
               frameon=False)


def predict(learn, cfg, inputs: list[str], out: Path = Path("predictions")) -> list[dict]:
    """Write each image's predicted mask to `out`/<name>_mask.png (pixel = code index, the image's size; an existing
    file is never overwritten) and return the share of pixels of each predicted class, largest first."""
    import numpy as np
    from PIL import Image

    from fxp.data import free_path, input_images, save_png

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
        save_png(mask, dest)
        counts = np.bincount(np.asarray(mask).ravel(), minlength=len(codes)) / (size[0] * size[1])
        shares = {codes[i]: round(float(counts[i]), 4) for i in np.argsort(-counts) if counts[i] > 0}
        rows.append({"input": str(f), "mask": str(dest), "shares": shares})
    return rows
