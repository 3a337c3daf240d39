"""GANs (lesson 7): super-resolution from "crappified" images, and a Wasserstein GAN from noise.

`recipe: superres` trains in three steps, each writing into the run folder: a U-Net generator pre-trained to
undo the crappification (gen/), a critic pre-trained to tell real images from its outputs (critic/), then
fastai's `GANLearner.from_learners` with a loss-driven switcher (the run folder itself). Inputs are each image
downscaled by `task.scale` and saved as a JPEG, once, in a cache keyed by the source folder and those settings.
The generator is what the run exports: `fxp predict` enhances images with it. Metrics `psnr` and `ssim` (pixel space),
beside bicubic upsampling's as the baseline. `loss: feature` trains the generator alone (lesson 7's superres notebook,
"instead of a GAN") with the feature loss of fxp.losses, each of its terms a metrics.csv column.
`recipe: wgan` is `GANLearner.wgan` from noise with fastai's basic generator and critic.
Both record `gen_loss` and `crit_loss` on the validation set each epoch.
Module top stays light (the schema is read before anything heavy); fastai is imported where it is used.
"""
from __future__ import annotations

import hashlib
import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

from fxp.checks import check_model, check_stages, check_y_range
from fxp.errors import ConfigError, FxpError, building
from fxp.schema import Aug, Monitor, Split, Stage, TaskBase, valid
from fxp.tasks import moved

# names old runs (model.pkl, config.yaml) give here, which live elsewhere now
__getattr__ = moved(__name__, {"small_encoder": "fxp.models", "basic_gan": "fxp.models", "PSNR": "fxp.metrics"})
RECIPES = ("superres", "wgan")
LOSSES = ("mse", "feature")
INPUT = "image"  # superres: images to enhance (a wgan run generates from noise: fxp predict says so)
# fastai's GANTrainer: which of the two models trains and their smoothed losses go on from epoch to epoch
CARRIED = {"GANTrainer": ("gen_mode", "gen_loss", "crit_loss")}
ADVERSARIAL = ("gen_loss", "crit_loss")  # the GAN step's metrics.csv columns
CRITIC_CLASSES = ["generated", "real"]  # sorted: real is 1, as fastai's GAN critic loss expects
NO_FOLDS = "its critic trains on images its generator makes, which one split of the items does not carry through"


@dataclass
class Critic:
    "fastai's gan_critic for the superres recipe."
    nf: int = field(default=128, metadata=valid("[1, inf)"))
    n_blocks: int = field(default=3, metadata=valid("[0, inf)"))
    p: float = field(default=0.15, metadata=valid("[0, 1)"))


@dataclass
class FeatureNet:
    "loss=feature: the frozen torchvision network the generated and target images are compared through (lesson 7)."
    arch: str = "vgg16_bn"  # any torchvision image classification model by name (torchvision.models.list_models())
    pretrained: bool = True  # ImageNet weights (downloaded once); false: random ones, for tests (they learn nothing)
    # which of its blocks (the last layer at each resolution: VGG16_bn's ReLU before each max-pool) the loss reads;
    # the notebook's blocks[2:5], with the weight of each one's feature L1; its Gram L1 weighs weight² × gram
    layers: List[int] = field(default_factory=lambda: [2, 3, 4])
    weights: List[float] = field(default_factory=lambda: [5.0, 15.0, 2.0])
    gram: float = field(default=5e3, metadata=valid("[0, inf)", why="the Gram terms' weight; 0: no style terms"))


@dataclass
class Task(Split, TaskBase):
    kind: str = "gan"
    recipe: str = field(default="superres", metadata=valid(choices=RECIPES))
    folder: Optional[str] = None  # the images: every image file under data.path/folder
    size: int = 128  # training size (square): superres targets, wgan samples (a power of 2)
    valid_pct: float = 0.1
    aug: Optional[Aug] = None  # superres: fastai's aug_transforms on input and target alike; null: none
    # superres: crappified inputs and the pre-training steps
    # inputs are downscaled to size/scale pixels (shorter side), then resized back up
    scale: float = field(default=2.0, metadata=valid("[1, inf)", why="inputs are the images downscaled by it"))
    quality: List[int] = field(default_factory=lambda: [10, 70],  # JPEG quality of each input, drawn in [lo, hi]
                               metadata=valid("[1, 100]", items=2, scalar=False, whole=True,
                                                             why="[q, q] for a fixed one"))
    cache_dir: Optional[str] = None  # where crappified copies go; null: $XDG_CACHE_HOME or ~/.cache, /fxp/crappified
    # the generator's loss: mse (then a critic and the GAN: lesson7-superres-gan), or feature (the generator alone,
    # lesson7-superres: pixel, feature and Gram terms through task.feature_net)
    loss: str = field(default="mse", metadata=valid(choices=LOSSES))
    feature_net: FeatureNet = field(default_factory=FeatureNet)
    gen_stages: List[Stage] = field(default_factory=lambda: [Stage()])
    gen_monitor: Monitor = field(default_factory=lambda: Monitor("psnr", "max"))
    crit_stages: List[Stage] = field(default_factory=lambda: [Stage()])
    crit_monitor: Monitor = field(default_factory=Monitor)
    critic: Critic = field(default_factory=Critic)
    weights_gen: List[float] = field(default_factory=lambda: [1.0, 50.0],  # generator loss: critic, pixel MSE
                                     metadata=valid("[0, inf)", items=2, scalar=False))
    critic_thresh: float = 0.65  # AdaptiveGANSwitcher: back to the generator once the critic loss is below
    # GANDiscriminativeLR: the critic's learning rate multiplier
    mult_lr: float = field(default=5.0, metadata=valid("(0, inf)"))
    y_range: List[float] = field(default_factory=lambda: [-3.0, 3.0])  # the generator's outputs (normalized pixels)
    # wgan
    noise_size: int = field(default=100, metadata=valid("[1, inf)"))
    n_crit: int = field(default=5, metadata=valid("[1, inf)"))  # critic batches per generator batch
    clip: float = field(default=0.01, metadata=valid("(0, inf)"))  # critic weight clipping
    mom: float = field(default=0.0, metadata=valid("[0, 1)"))  # Adam's momentum in the GAN step (lesson 7: 0)


def check(cfg) -> None:
    "Rules across keys, checked before any heavy import (each key's own values: the schema's `valid`)."
    task = cfg.task
    _check_superres(task) if task.recipe == "superres" else _check_wgan(task)
    if task.recipe == "superres":
        check_model(cfg, ("arch",), "model=unet_superres or unet_small")
    else:
        check_model(cfg, ("net",), "model=basic_gan")


def _check_superres(t) -> None:
    _check_feature_net(t.feature_net)
    if t.scale > t.size / 4:
        raise ConfigError(f"task.scale={t.scale} must leave inputs of 4 px or more (task.size / task.scale, size "
                          f"{t.size}; inputs are the images downscaled by it, 2: half size)")
    if t.quality[0] > t.quality[1]:
        raise ConfigError(f"task.quality={list(t.quality)} must be [lo, hi] with lo ≤ hi (JPEG quality; [q, q] for a "
                          f"fixed one)")
    if t.loss == "mse" and t.size >> (t.critic.n_blocks + 1) < 4:  # loss=feature has no critic
        raise ConfigError(f"task.size={t.size} is too small for a critic of task.critic.n_blocks="
                          f"{t.critic.n_blocks} (it needs size ≥ {4 << (t.critic.n_blocks + 1)}); raise the "
                          f"size or lower n_blocks")
    check_y_range(t.y_range)
    check_stages("task.gen_stages", t.gen_stages)
    check_stages("task.crit_stages", t.crit_stages)


def _check_feature_net(f) -> None:
    if not f.layers or len(f.layers) != len(f.weights):
        raise ConfigError(f"task.feature_net.layers={list(f.layers)} and task.feature_net.weights={list(f.weights)} "
                          f"must be lists of the same length, at least one (a weight for each layer)")
    if not all(isinstance(i, int) and i >= 0 for i in f.layers):
        raise ConfigError(f"task.feature_net.layers={list(f.layers)} must be block indices 0, 1, ... (the last layer "
                          f"at each resolution of task.feature_net.arch)")
    if not all(w >= 0 for w in f.weights):
        raise ConfigError(f"task.feature_net.weights={list(f.weights)} must be numbers ≥ 0")


def _check_wgan(t) -> None:
    if t.loss != "mse":
        raise ConfigError(f"task.loss={t.loss} is for recipe superres; a wgan trains with its critic's loss")
    if t.size < 8 or t.size & (t.size - 1):
        raise ConfigError(f"task.size={t.size} must be a power of 2, at least 8, for the basic generator and critic")


# --- crappified inputs ------------------------------------------------------------------------------------


def crappify(files: list[Path], root: Path, t) -> tuple[Path, list[Path], int]:
    """The cache folder, each image's crappified copy (made only if missing or older than the image) and how many
    were made now. The folder is keyed by the source folder and the settings, so changing one makes a new set."""
    from fastcore.parallel import parallel

    px = round(t.size / t.scale)
    key = hashlib.sha1(f"{root}|{px}|{t.quality[0]}|{t.quality[1]}".encode()).hexdigest()[:10]
    cache = _cache_root(t) / f"{root.name}-{px}px-q{t.quality[0]}-{t.quality[1]}-{key}"
    if cache.is_relative_to(root):
        raise FxpError(f"the crappified copies' folder {cache} is inside the image folder {root}, so they would "
                       f"become training images; set task.cache_dir= to a folder outside it")
    dests = [cache / f.relative_to(root).with_name(f"{f.name}.jpg") for f in files]
    todo = [(f, d) for f, d in zip(files, dests) if not d.exists() or d.stat().st_mtime < f.stat().st_mtime]
    parallel(Crappifier(root, px, tuple(t.quality)), todo, n_workers=0 if len(todo) < 1000 else None)
    return cache, dests, len(todo)


def _cache_root(t) -> Path:
    if t.cache_dir is not None:
        return Path(t.cache_dir).expanduser().resolve()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fxp" / "crappified"


class Crappifier:
    "Lesson 7's crappify, without its text overlay: shorter side to `px` pixels, then JPEG at a quality in range."

    def __init__(self, root: Path, px: int, quality: tuple[int, int]):
        self.root, self.px, self.quality = root, px, quality

    def __call__(self, pair: tuple[Path, Path]) -> None:
        from fastai.vision.utils import resize_to
        from PIL import Image

        from fxp.data import load_image

        src, dest = pair
        im = load_image(src)
        im = im.resize(resize_to(im, self.px, use_min=True), Image.BILINEAR)
        quality = random.Random(str(src.relative_to(self.root))).randint(*self.quality)  # the same every time
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")  # a crash or a parallel job never leaves half a file
        im.save(tmp, format="JPEG", quality=quality)
        tmp.replace(dest)


class SourceOf:
    "cache/a/b.jpg.jpg → root/a/b.jpg: the target of a crappified input (a class, so the exported learner pickles)."

    def __init__(self, cache: Path, root: Path):
        self.cache, self.root = cache, root

    def __call__(self, f) -> Path:
        return self.root / Path(f).relative_to(self.cache).with_suffix("")


# --- data -------------------------------------------------------------------------------------------------


def _image_files(cfg) -> tuple[Path, list[Path], list[str]]:
    from fxp.data import check_images, data_path, image_files, image_folder

    root = image_folder(cfg.task, data_path(cfg))
    if not root.is_dir():
        raise FxpError(f"image folder not found: {root}; check data.path= and task.folder=")
    files, bad = check_images(sorted(image_files(root)), cfg.data.skip_bad)
    return root, files, bad


def superres_dls(cfg, device):
    "Crappified inputs and their images, both resized (squished, so they stay aligned) to task.size, normalized."
    from fastai.data.block import DataBlock
    from fastai.data.transforms import Normalize
    from fastai.vision.augment import Resize, ResizeMethod
    from fastai.vision.core import imagenet_stats
    from fastai.vision.data import ImageBlock

    from fxp import vision
    from fxp.data import splitter

    t = cfg.task
    root, files, bad = _image_files(cfg)
    cache, inputs, made = crappify(files, root, t)
    block = DataBlock(blocks=(ImageBlock, ImageBlock), get_y=SourceOf(cache, root), splitter=splitter(t),
                      item_tfms=Resize(t.size, method=ResizeMethod.Squish),
                      batch_tfms=[*vision.batch_tfms(t), Normalize.from_stats(*imagenet_stats)])
    out = vision.dataloaders(block, inputs, cfg, device, "check task.valid_pct")
    out.skipped, out.target_of = bad, block.get_y
    out.crappified = {"cache": str(cache), "made": made, "reused": len(inputs) - made}
    return out


def wgan_dls(cfg, device):
    "Noise vectors as inputs, the images (cropped to task.size, scaled to [-1, 1]) as targets (lesson 7)."
    from functools import partial

    import torch
    from fastai.data.block import DataBlock, TransformBlock
    from fastai.data.transforms import Normalize
    from fastai.vision.augment import Resize, ResizeMethod
    from fastai.vision.data import ImageBlock
    from fastai.vision.gan import generate_noise

    from fxp import vision
    from fxp.data import splitter

    t = cfg.task
    _, files, bad = _image_files(cfg)
    half = torch.tensor([0.5, 0.5, 0.5])
    block = DataBlock(blocks=(TransformBlock, ImageBlock), get_x=partial(generate_noise, size=t.noise_size),
                      splitter=splitter(t), item_tfms=Resize(t.size, method=ResizeMethod.Crop),
                      batch_tfms=Normalize.from_stats(half, half))
    out = vision.dataloaders(block, files, cfg, device, "check task.valid_pct", cache=False)  # new noise each epoch
    out.skipped = bad
    return out


# --- metrics: callables fastai wraps in AvgMetric (a batch's mean, weighted by its size) ----------------------


class CriticLoss:
    """crit_loss: the critic's loss on the validation set, real targets against generated images. (fastai's
    LossMetric repeats the last training batch's critic loss there: the critic does not run in validation.)"""

    __name__ = "crit_loss"

    def __init__(self, critic, crit_loss_func):
        self.critic, self.crit_loss_func = critic, crit_loss_func

    def __call__(self, pred, targ):
        return self.crit_loss_func(self.critic(targ), self.critic(pred))


def _normalize(dls):
    from fastai.data.transforms import Normalize

    return next(t for t in dls.after_batch.fs if isinstance(t, Normalize))


def to_pixels(x, dls):
    "Model-space images back to pixels in [0, 1], undoing the loaders' Normalize."
    norm = _normalize(dls)
    return (x * norm.std.to(x.device) + norm.mean.to(x.device)).clamp(0, 1)


def task_metrics(t, dls) -> list:
    "`psnr` and `ssim` by name (in pixel space), any other fastai metric by name (on normalized images)."
    from fxp.metrics import PSNR, SSIM, metrics

    own = {"psnr": PSNR, "ssim": SSIM}
    return [own[m](_normalize(dls)) if m in own else metrics([m])[0] for m in t.metrics]


# --- learners ---------------------------------------------------------------------------------------------


def generator(cfg, dls):
    """A U-Net on `model.arch` (lesson 7: blur, self-attention, weight norm) into `task.y_range`, trained with pixel MSE
    or the feature loss (`task.loss`), whose terms are metrics too."""
    from fxp import vision

    loss, terms = gen_loss(cfg.task)
    return vision.unet(cfg, dls, n_out=3, loss_func=loss, metrics=task_metrics(cfg.task, dls) + terms,
                       y_range=tuple(cfg.task.y_range), **_norm_type(cfg.model))


def gen_loss(t) -> tuple:
    "The generator's loss, and the metrics that record its terms (fastai's LossMetrics: the notebook's way)."
    from fastai.losses import MSELossFlat
    from fastai.metrics import LossMetrics

    from fxp.losses import FeatureLoss

    if t.loss == "mse":
        return MSELossFlat(), []
    f = t.feature_net
    loss = FeatureLoss(f.arch, f.pretrained, list(f.layers), list(f.weights), f.gram, key="task.feature_net")
    return loss, LossMetrics(loss.names)


def _norm_type(m) -> dict:
    "`model.kwargs.norm_type` by name (Weight, Spectral, Batch, ...) as unet_learner takes it."
    from fastai.layers import NormType

    if "norm_type" not in m.kwargs:
        return {}
    if m.kwargs.norm_type not in NormType.__members__:
        raise FxpError(f"model.kwargs.norm_type={m.kwargs.norm_type!r} is not valid; choose from: "
                       f"{', '.join(NormType.__members__)}")
    return {"norm_type": NormType[m.kwargs.norm_type]}


def critic_dls(cfg, gen, dest: Path, device):
    """Real images against the generator's outputs for the same inputs (saved under `dest`), with the generator's
    split, size and transforms: lesson 7 pre-trains the critic on them before the GAN starts."""
    from fastai.data.block import CategoryBlock, DataBlock
    from fastai.data.transforms import IndexSplitter, ItemGetter
    from fastai.vision.augment import Resize, ResizeMethod
    from fastai.vision.data import ImageBlock

    from fxp import vision

    t = cfg.task
    split = {}
    for name, ds in (("train", gen.dls.train_ds), ("valid", gen.dls.valid_ds)):
        fakes = save_generated(gen, list(ds.items), dest / name)
        reals = [gen.dls.target_of(f) for f in ds.items]
        split[name] = [(f, "real") for f in reals] + [(f, "generated") for f in fakes]
    items = split["train"] + split["valid"]
    block = DataBlock(blocks=(ImageBlock, CategoryBlock(vocab=CRITIC_CLASSES)), get_x=ItemGetter(0),
                      get_y=ItemGetter(1), splitter=IndexSplitter(range(len(split["train"]), len(items))),
                      item_tfms=Resize(t.size, method=ResizeMethod.Squish),
                      batch_tfms=[*vision.batch_tfms(t), _normalize(gen.dls)])
    return vision.dataloaders(block, items, cfg, device, "check task.valid_pct")


def save_generated(gen, inputs: list, dest: Path) -> list[Path]:
    "The generator's output for each input as a PNG under `dest` (a batch at a time: the set may not fit in memory)."
    import torch
    from PIL import Image

    from fxp.data import save_png

    dest.mkdir(parents=True, exist_ok=True)
    files = []
    gen.model.eval()
    with torch.no_grad():
        for (xb,) in gen.dls.test_dl(inputs):
            for im in to_pixels(gen.model(xb), gen.dls):
                files.append(dest / f"{len(files):05d}.png")
                save_png(Image.fromarray((im.permute(1, 2, 0) * 255).round().byte().cpu().numpy()), files[-1])
    return files


def critic(cfg, dls):
    "fastai's gan_critic, BCE on real (1) against generated (0), lesson 7's thresholded accuracy."
    from fastai.learner import Learner
    from fastai.vision.gan import AdaptiveLoss, accuracy_thresh_expand, gan_critic
    from torch import nn

    c = cfg.task.critic
    return Learner(dls, gan_critic(n_channels=3, nf=c.nf, n_blocks=c.n_blocks, p=c.p),
                   loss_func=AdaptiveLoss(nn.BCEWithLogitsLoss()), metrics=accuracy_thresh_expand)


def superres_gan(cfg, gen, crit):
    "Lesson 7's GAN of the pre-trained pair: critic loss and 50x pixel MSE for the generator, Adam without momentum."
    from functools import partial

    from fastai.callback.core import Callback
    from fastai.optimizer import Adam
    from fastai.vision.gan import AdaptiveGANSwitcher, GANDiscriminativeLR, GANLearner

    t = cfg.task
    learn = GANLearner.from_learners(gen, crit, switcher=AdaptiveGANSwitcher(critic_thresh=t.critic_thresh),
                                     weights_gen=tuple(t.weights_gen), show_img=False,
                                     opt_func=partial(Adam, mom=t.mom), cbs=GANDiscriminativeLR(mult_lr=t.mult_lr),
                                     metrics=task_metrics(t, gen.dls))
    learn.add_cb(Callback(before_validate=_generator_eval))  # after GANTrainer, which sets it to train mode there
    return _valid_critic_loss(learn)


def _generator_eval(cb) -> None:
    "Validate the generator as it predicts, in eval mode (no batch statistics, no BatchNorm updates from valid data)."
    cb.model.generator.eval()


def wgan(cfg, dls):
    "GANLearner.wgan on `model.net`'s generator and critic: weight clipping, task.n_crit critic batches a turn."
    from functools import partial

    from fastai.optimizer import Adam
    from fastai.vision.gan import FixedGANSwitcher, GANLearner
    from hydra.utils import instantiate

    t = cfg.task
    with building("model.net"):
        gen, crit = instantiate(cfg.model.net, size=t.size, n_channels=3, in_sz=t.noise_size)
    learn = GANLearner.wgan(dls, gen, crit, switcher=FixedGANSwitcher(n_crit=t.n_crit, n_gen=1), clip=t.clip,
                            opt_func=partial(Adam, mom=t.mom), metrics=task_metrics(t, dls))
    return _valid_critic_loss(learn)


def _valid_critic_loss(learn):
    "Swap fastai's crit_loss LossMetric (stale in validation) for the critic's loss on the validation batches."
    learn.metrics = [*learn.metrics[:-1], CriticLoss(learn.model.critic, learn.loss_func.crit_loss_func)]
    return learn


# --- training: the steps ----------------------------------------------------------------------------------

# GANTrainer stores the generator and critic on itself, which fastai warns shadows the learner's: moot here
SHADOWING = (r"You are shadowing an attribute",)


def factories(cfg) -> list:
    "superres: the generator's unet_learner (and its DynamicUnet); wgan builds its nets from model.net."
    from fxp import vision

    return vision.unet_factories() if cfg.task.recipe == "superres" else []


def steps(cfg) -> list:
    """superres: the generator pre-trained into gen/ (what the run exports), the critic pre-trained into critic/ on
    its outputs, then the GAN of both (the run folder); wgan: one GAN step."""
    from fxp.step import Step

    if cfg.task.recipe == "wgan":
        return [Step("gan", dls=lambda ctx: wgan_dls(cfg, ctx.device), learner=lambda dls, ctx: wgan(cfg, dls),
                     after=_freeze_for_export, ignore_warnings=SHADOWING)]
    t = cfg.task
    if t.loss == "feature":
        return [Step("gen", stages=t.gen_stages, about=f"generator with the feature loss of {t.feature_net.arch}",
                     dls=lambda ctx: superres_dls(cfg, ctx.device), learner=lambda dls, ctx: generator(cfg, dls))]
    return [
        Step("gen", folder="gen", stages=t.gen_stages, monitor=t.gen_monitor, exports=True,
             about="generator pre-training, in gen/", dls=lambda ctx: superres_dls(cfg, ctx.device),
             learner=lambda dls, ctx: generator(cfg, dls), after=_pretrained),
        Step("critic", folder="critic", stages=t.crit_stages, monitor=t.crit_monitor,
             about="critic pre-training on the generator's outputs, in critic/",
             dls=lambda ctx: critic_dls(cfg, ctx.done["gen"], ctx.path / "generated", ctx.device),
             learner=lambda dls, ctx: critic(cfg, dls),
             # only the critic's pre-training reads the generated images; a run folder need not keep a copy
             after=lambda learn, ctx: shutil.rmtree(ctx.path / "generated")),
        Step("gan", about="GAN of the pre-trained generator and critic", dls=lambda ctx: ctx.done["gen"].dls,
             learner=lambda dls, ctx: superres_gan(cfg, ctx.done["gen"], ctx.done["critic"]),
             after=_freeze_for_export, ignore_warnings=SHADOWING, fresh=False),
    ]


def _pretrained(gen, ctx) -> dict:
    "The pre-trained generator's pictures, and its own baselines (gen/'s metrics beside bicubic's in the final table)."
    superres_grid(gen, ctx.run_path / "plots" / "superres_pretrained.png")
    return {"baselines": bicubic(gen.dls)}


def _freeze_for_export(learn, ctx) -> None:
    "GANTrainer leaves one side frozen; export rebuilds the optimizer on all."
    from fastai.vision.gan import set_freeze_model

    set_freeze_model(learn.model, True)


def evaluate(learn, cfg) -> dict:
    "superres: where the crappified inputs are."
    return {"crappified": learn.dls.crappified} if cfg.task.recipe == "superres" else {}


def baseline(learn, cfg) -> dict:
    "superres: the valid PSNR and SSIM of the inputs upsampled by bicubic interpolation, what the generator must beat."
    return bicubic(learn.dls) if cfg.task.recipe == "superres" else {}


def bicubic(data) -> dict:
    """{psnr, ssim: {value, by}}: the score on the valid split of each crappified input (as cached, small) upsampled
    to its target's size by bicubic interpolation: super-resolution's classic baseline."""
    import numpy as np
    import torch
    from PIL import Image

    from fxp.data import load_image
    from fxp.metrics import psnr, ssim

    items, scores, done = list(data.valid_ds.items), {"psnr": [], "ssim": []}, 0
    with torch.no_grad():
        for _, y in data.valid:  # in the items' order: the valid loader does not shuffle
            targ = to_pixels(y, data).float().cpu()
            size = (targ.shape[-1], targ.shape[-2])  # PIL's (w, h)
            ups = [load_image(f).resize(size, Image.BICUBIC) for f in items[done:done + len(targ)]]
            done += len(targ)
            x = torch.from_numpy(np.stack([np.asarray(im, dtype=np.float32) / 255 for im in ups])).permute(0, 3, 1, 2)
            scores["psnr"].append(psnr(x, targ))
            scores["ssim"].append(ssim(x, targ))
    return {k: {"value": round(torch.cat(v).mean().item(), 4), "by": "bicubic upsampling"} for k, v in scores.items()}


# --- plots ------------------------------------------------------------------------------------------------


def plots(learn, cfg, dest: Path, evaluation: dict) -> None:
    "superres: input, output and target of a few validation images; wgan: a grid of generated samples."
    if cfg.task.recipe == "superres":
        superres_grid(learn, dest / "superres.png")
    else:
        samples_grid(learn, cfg, dest / "samples.png")


def superres_grid(gen, dest: Path, n: int = 4) -> None:
    from fxp.metrics import psnr
    from fxp.plots import image_grid

    items = gen.dls.valid_ds.items[:n]
    inp, preds, targs = gen.get_preds(dl=gen.dls.test_dl(items, with_labels=True), with_input=True)
    inp, preds, targs = (to_pixels(x, gen.dls) for x in (inp, preds, targs))
    scores = psnr(preds, targs)
    images = [im for row in zip(inp, preds, targs) for im in row]
    titles = [t for f, s in zip(items, scores.tolist())
              for t in (f"input {Path(f).with_suffix('').name}", f"output ({s:.1f} dB)", "target")]
    image_grid(images, titles, dest)


def samples(learn, noise_size: int, n: int, seed: int = 0):
    "`n` generated images in pixels [0, 1], from a fixed noise draw."
    import torch

    gen = learn.model.generator.eval()
    noise = torch.randn(n, noise_size, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return to_pixels(gen(noise.to(next(gen.parameters()).device)), learn.dls).cpu()


def samples_grid(learn, cfg, dest: Path, n: int = 16) -> None:
    from fxp.plots import image_grid

    image_grid(list(samples(learn, cfg.task.noise_size, n)), [f"sample {i}" for i in range(n)], dest, ncols=4)


# --- predict ----------------------------------------------------------------------------------------------


def predict(learn, cfg, inputs: list[str], out: Path = Path("predictions")) -> list[dict]:
    """superres: each image enlarged by task.scale and enhanced by the generator, written to `out`/<name>_enhanced.png
    (an existing file is never overwritten); returns input, output file and its size."""
    from fxp.data import free_path, input_images, load_image, save_png

    if cfg.task.recipe != "superres":
        raise FxpError(f"fxp predict enhances images with a superres run; a {cfg.task.recipe} run has no inputs "
                       f"(its generated samples are in plots/samples.png of its run folder)")
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    rows, used = [], set()
    for f in input_images(inputs):
        im = enhance(learn, load_image(f), cfg.task.scale)
        dest = free_path(out / f"{f.stem}_enhanced.png", used)
        save_png(im, dest)
        rows.append({"input": str(f), "output": str(dest), "size": f"{im.width}x{im.height}"})
    return rows


def enhance(gen, im, scale: float):
    """The image resized up by `scale` (as training inputs were), through the generator at that full size (a U-Net
    takes any size), as a PIL image."""
    from fastai.data.transforms import ToTensor
    from PIL import Image

    big = im.resize((round(im.width * scale), round(im.height * scale)), Image.BILINEAR)
    pred, _ = gen.get_preds(dl=gen.dls.test_dl([big], after_item=[ToTensor()]))
    return Image.fromarray((to_pixels(pred, gen.dls)[0].permute(1, 2, 0) * 255).round().byte().numpy())
