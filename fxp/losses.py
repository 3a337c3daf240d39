"""Losses fastai does not ship: lesson 7's feature (perceptual) loss for super-resolution.

`FeatureLoss` compares the generated and target images through a frozen image network (VGG16 with batch norm in the
lesson): pixel L1, plus the L1 between their activations at a few layers (each with its weight), plus the L1 between
the Gram matrices of those activations (style, weighted by the layer's weight squared times `gram`). Each term of the
last batch stays on the loss (`pixel_loss`, `feat_loss_0`, ..., `gram_loss_0`, ...), so fastai's `LossMetrics` record
them in metrics.csv as the notebook's `LossMetrics` callback did. Imported by the gan kind only (it imports torch).
"""
from __future__ import annotations

from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

from fxp.errors import FxpError
from fxp.models import pretrained_weights

PROBE = 64  # px of the image that finds a network's blocks: every block of the usual backbones keeps 2 px or more
RANDOM_SEED = 0  # a random feature network (pretrained=false) is the same every time: a reloaded loss scores alike


def gram_matrix(x):
    "(n, c, c): each image's channel-by-channel products of its activations (n, c, h, w), divided by c·h·w."
    with torch.autocast(x.device.type, enabled=False):  # fp16 sums of h·w products overflow
        n, c, h, w = x.shape
        x = x.float().reshape(n, c, h * w)
        return x @ x.transpose(1, 2) / (c * h * w)


def layers(net: nn.Module) -> list[nn.Module]:
    "The network as modules run one after the other: nested nn.Sequential containers opened, other modules kept whole."
    if isinstance(net, nn.Sequential):
        return [m for child in net for m in layers(child)]
    return [net]


def backbone(arch: str, pretrained: bool) -> list[nn.Module]:
    """torchvision's `arch` (ImageNet weights if `pretrained`, else random ones, the same each time) cut before its
    pooling head, as a list of layers: its `features` where it has them (VGG, DenseNet, MobileNet, EfficientNet,
    ConvNeXt), else fastai's `create_body`."""
    import torchvision

    names = torchvision.models.list_models(module=torchvision.models)
    if arch not in names:
        raise FxpError(f"{arch!r} is not a torchvision image classification model; choose e.g. vgg16_bn, vgg19_bn, "
                       f"resnet34 (all {len(names)}: torchvision.models.list_models())")
    with torch.random.fork_rng(devices=[]):  # the run's random state is left as it was
        torch.manual_seed(RANDOM_SEED)
        if pretrained:
            return layers(body_of(torchvision.models.get_model(arch, weights="DEFAULT")))
        return layers(random_body(arch))


def body_of(model: nn.Module) -> nn.Module:
    from fastai.vision.learner import create_body

    return model.features if isinstance(getattr(model, "features", None), nn.Sequential) else create_body(model)


def random_body(arch: str) -> nn.Module:
    """The body of `arch` with random weights drawn as torchvision draws them (convolutions: He's normal over fan-out;
    norms: 1 and 0), made on the meta device and only its body filled: VGG's random head (100M parameters) takes
    seconds to draw. Made in full where a module's own tensors have no `reset_parameters`."""
    import torchvision

    with torch.device("meta"):
        body = body_of(torchvision.models.get_model(arch))
    own = [m for m in body.modules() if next(m.parameters(recurse=False), None) is not None
           or next(m.buffers(recurse=False), None) is not None]
    if not all(hasattr(m, "reset_parameters") for m in own):
        return body_of(torchvision.models.get_model(arch))
    body.to_empty(device="cpu")
    for m in own:
        m.reset_parameters()
        if isinstance(m, nn.modules.conv._ConvNd):  # PyTorch's own default shrinks activations layer after layer
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return body


def blocks(mods: list[nn.Module]) -> list[int]:
    """The index of the last layer at each resolution: where the activations are about to be pooled or strided down
    (VGG16_bn: the ReLU before each max-pool, the notebook's [5, 12, 22, 32, 42]), then the last layer."""
    x, sizes = torch.zeros(1, 3, PROBE, PROBE), []
    with torch.no_grad():
        for m in mods:
            x = m.eval()(x)
            sizes.append(tuple(x.shape[-2:]))
    return [i for i, s in enumerate(sizes) if i == len(sizes) - 1 or sizes[i + 1] != s]


class FeatureLoss(nn.Module):
    """Lesson 7's feature loss on normalized images: pixel L1 + Σ w·L1(features) + Σ w²·gram·L1(Gram matrices), the
    features taken at `layer_ids` (indices into the network's `blocks`) of a frozen torchvision `arch`. `key` names
    the config node that chose the network, for the message when its weights cannot be had."""

    def __init__(self, arch: str, pretrained: bool, layer_ids: list[int], weights: list[float], gram: float,
                 key: str):
        super().__init__()
        self.arch, self.pretrained, self.key = arch, pretrained, key
        self.layer_ids, self.weights, self.gram = list(layer_ids), list(weights), gram
        self.names = (["pixel_loss"] + [f"feat_loss_{i}" for i in range(len(self.weights))]
                      + [f"gram_loss_{i}" for i in range(len(self.weights))])
        self.body = self.build()

    def build(self) -> nn.Sequential:
        "The network, frozen, cut after the deepest layer the loss reads; `self.ids`: the layers read, in order."
        with pretrained_weights(SimpleNamespace(arch=self.arch, pretrained=self.pretrained), self.key,
                                "use random features (for tests only: they measure nothing learnt) with"):
            mods = backbone(self.arch, self.pretrained)
        ends = blocks(mods)
        bad = [i for i in self.layer_ids if not 0 <= i < len(ends)]
        if bad:
            raise FxpError(f"{self.key}.layers={self.layer_ids}: {self.arch} has {len(ends)} blocks (0 to "
                           f"{len(ends) - 1}, the last layer at each resolution); {bad} is not one of them")
        self.ids = [ends[i] for i in self.layer_ids]
        return nn.Sequential(*mods[:max(self.ids) + 1]).eval().requires_grad_(False)

    def features(self, x) -> list:
        "The activations at the layers read, in the order of `layer_ids`."
        out = {}
        for i, m in enumerate(self.body):
            x = out[i] = m(x)
        return [out[i] for i in self.ids]

    def forward(self, pred, targ):
        if self.body is None:  # a loss loaded from model.pkl: its network is made again on first use
            self.body = self.build()
        if next(self.body.parameters()).device != pred.device:
            self.body.to(pred.device)
        with torch.no_grad():
            want = self.features(targ)
        got = self.features(pred)
        terms = [F.l1_loss(pred, targ)]
        terms += [F.l1_loss(g, t) * w for g, t, w in zip(got, want, self.weights)]
        terms += [F.l1_loss(gram_matrix(g), gram_matrix(t)) * w**2 * self.gram
                  for g, t, w in zip(got, want, self.weights)]
        self.__dict__.update(zip(self.names, (t.detach() for t in terms)))  # what LossMetrics read after the batch
        return sum(terms)

    def __getstate__(self):
        "Pickled without the network (made again from its name on first use): model.pkl keeps only the generator."
        state = self.__dict__.copy()
        state["_modules"] = {**self._modules, "body": None}
        return state
