"Architectures fastai does not ship, built from its layers."
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from fastai.layers import AdaptiveConcatPool2d, ConvLayer, Flatten, NormType, ResBlock
from torch import nn

from fxp.errors import FxpError


def small_cnn(n_in: int = 1, n_out: int = 10, channels=(16, 32, 64), bn: bool = True) -> nn.Sequential:
    "Stride-2 conv blocks (conv, BatchNorm unless not `bn`, ReLU), a linear head: enough for 8x8 digits and MNIST."
    chans = [n_in, *channels]
    norm = NormType.Batch if bn else None
    convs = [ConvLayer(ci, co, stride=2, norm_type=norm) for ci, co in zip(chans[:-1], chans[1:])]
    return nn.Sequential(*convs, nn.AdaptiveAvgPool2d(1), Flatten(), nn.Linear(chans[-1], n_out))


def audio_cnn(n_in: int = 1, n_out: int = 10, channels=(16, 32, 64, 64), p: float = 0.2) -> nn.Sequential:
    """Conv blocks (conv, BatchNorm, ReLU, 2x2 max-pool) over a spectrogram, global average and max pooling, dropout,
    a linear head: the small CNN of spoken-digit tutorials, which trains on a CPU in seconds."""
    chans = [n_in, *channels]
    blocks = [nn.Sequential(ConvLayer(ci, co), nn.MaxPool2d(2)) for ci, co in zip(chans[:-1], chans[1:])]
    return nn.Sequential(*blocks, AdaptiveConcatPool2d(1), Flatten(), nn.Dropout(p), nn.Linear(2 * chans[-1], n_out))


class Standardize(nn.Module):
    """Inputs to zero mean and unit variance, as a network's first layer (an exported model includes it): each item by
    its own statistics (`per_item`), or by fixed ones (a training set's `mean` and `std`)."""

    def __init__(self, per_item: bool = True, mean: float = 0.0, std: float = 1.0):
        super().__init__()
        self.per_item = per_item
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))

    def forward(self, x):
        if self.per_item:
            dims = tuple(range(1, x.ndim))
            return (x - x.mean(dim=dims, keepdim=True)) / (x.std(dim=dims, keepdim=True) + 1e-5)
        return (x - self.mean) / (self.std + 1e-5)


def plain_cnn(n_in: int = 1, n_out: int = 10, depth: int = 20, width: int = 32, strides: int = 2) -> nn.Sequential:
    """`depth` layers without normalisation or shortcuts: depth - 1 3x3 convs with ReLU (`strides` of them stride 2,
    spread evenly), average pooling, a linear head; PyTorch's default init. Lesson 11's deep plain net, which a good
    init (model.init=kaiming or lsuv) has to start."""
    n_conv = depth - 1
    down = {round((k + 1) * n_conv / (strides + 1)) for k in range(strides)}
    chans = [n_in, *[width] * n_conv]
    convs = [nn.Sequential(nn.Conv2d(ci, co, 3, stride=2 if i in down else 1, padding=1), nn.ReLU())
             for i, (ci, co) in enumerate(zip(chans[:-1], chans[1:]))]
    return nn.Sequential(*convs, nn.AdaptiveAvgPool2d(1), Flatten(), nn.Linear(width, n_out))


def resnet_mnist(n_in: int = 1, n_out: int = 10) -> nn.Sequential:
    "course-v3 lesson 7's MNIST net: stride-2 convs each followed by a residual block, no pooling head."
    def conv_and_res(ni, nf):
        return nn.Sequential(ConvLayer(ni, nf, stride=2), ResBlock(1, nf, nf))

    return nn.Sequential(conv_and_res(n_in, 8), conv_and_res(8, 16), conv_and_res(16, 32), conv_and_res(32, 16),
                         ConvLayer(16, n_out, stride=2), Flatten())


# --- next-word language models (fastbook ch. 12, course-v3 lesson 7), for the word_lm kind ---------------------


class LMModel1(nn.Module):
    "Three words in, the next one out: an embedding, one linear layer per step, shared (fastbook's first model)."
    min_words = 3

    def __init__(self, vocab_sz: int, n_hidden: int = 64):
        super().__init__()
        self.i_h, self.h_h, self.h_o = nn.Embedding(vocab_sz, n_hidden), nn.Linear(n_hidden, n_hidden), \
            nn.Linear(n_hidden, vocab_sz)

    def forward(self, x):
        x = x[:, -3:]  # the last three words (task.seq_len=3 is the book's data)
        h = F.relu(self.h_h(self.i_h(x[:, 0])))
        h = h + self.i_h(x[:, 1])
        h = F.relu(self.h_h(h))
        h = h + self.i_h(x[:, 2])
        return self.h_o(F.relu(self.h_h(h)))


class LMModel2(LMModel1):
    "LMModel1 as a loop over the words: a recurrent neural network."
    min_words = 1

    def forward(self, x):
        h = 0
        for i in range(x.shape[1]):
            h = F.relu(self.h_h(h + self.i_h(x[:, i])))
        return self.h_o(h)


class Stateful(nn.Module):
    """A model whose hidden state `h` goes on from batch to batch (detached: gradients flow within a batch), reset by
    fastai's ModelResetter at each epoch's training and validation."""

    def reset(self):
        self.h = None

    def state(self, x, shape):
        "The hidden state for batch `x`: zeros at the start (or when the batch size changes), else the last one."
        if self.h is None or self.h.shape[-2] != x.shape[0]:
            self.h = torch.zeros(*shape, x.shape[0], self.n_hidden, device=x.device)
        return self.h


class LMModel3(Stateful):
    "LMModel2 keeping its hidden state between batches."

    def __init__(self, vocab_sz: int, n_hidden: int = 64):
        super().__init__()
        self.n_hidden = n_hidden
        self.i_h, self.h_h, self.h_o = nn.Embedding(vocab_sz, n_hidden), nn.Linear(n_hidden, n_hidden), \
            nn.Linear(n_hidden, vocab_sz)
        self.reset()

    def steps(self, x):
        h = self.state(x, ())
        for i in range(x.shape[1]):
            h = F.relu(self.h_h(h + self.i_h(x[:, i])))
            yield h
        self.h = h.detach()

    def forward(self, x):
        return self.h_o(list(self.steps(x))[-1])


class LMModel4(LMModel3):
    "LMModel3 predicting every next word, not only the last: more signal per sequence."

    def forward(self, x):
        return self.h_o(torch.stack(list(self.steps(x)), dim=1))


class LMModel5(Stateful):
    "PyTorch's multi-layer RNN (nn.RNN), or any of its cells (`cell`: RNN, GRU, LSTM); `bn`: the lesson's BatchNorm."

    def __init__(self, vocab_sz: int, n_hidden: int = 64, n_layers: int = 2, cell: str = "RNN", bn: bool = False,
                 p: float = 0.0):
        super().__init__()
        self.n_hidden, self.n_layers, self.lstm = n_hidden, n_layers, cell.upper() == "LSTM"
        self.i_h = nn.Embedding(vocab_sz, n_hidden)
        self.rnn = getattr(nn, cell.upper())(n_hidden, n_hidden, n_layers, batch_first=True)
        self.drop = nn.Dropout(p)
        self.bn = nn.BatchNorm1d(n_hidden) if bn else None
        self.h_o = nn.Linear(n_hidden, vocab_sz)
        self.reset()

    def recur(self, x):
        "The RNN's output for batch `x`, its state kept (detached) for the next batch."
        h = self.state(x, (2, self.n_layers) if self.lstm else (self.n_layers,))
        res, h = self.rnn(self.i_h(x), tuple(h) if self.lstm else h)
        self.h = (torch.stack(h) if self.lstm else h).detach()
        return res

    def forward(self, x):
        out = self.drop(self.recur(x))
        if self.bn is not None:  # fastai's BatchNorm1dFlat: over every (item, word) row
            out = self.bn(out.flatten(0, 1)).view_as(out)
        return self.h_o(out)


class LMModel6(LMModel5):
    "A 2-layer LSTM (fastbook's LMModel6)."

    def __init__(self, vocab_sz: int, n_hidden: int = 64, n_layers: int = 2):
        super().__init__(vocab_sz, n_hidden, n_layers, cell="LSTM")


class LMModel7(LMModel5):
    """LMModel6 with dropout, weight tying and AR/TAR regularization (`alpha`, `beta`: fastai's RNNRegularizer):
    the output, the raw and the dropped-out activations, as fastai's RNNCallback takes them."""

    def __init__(self, vocab_sz: int, n_hidden: int = 64, n_layers: int = 2, p: float = 0.5, alpha: float = 2.0,
                 beta: float = 1.0):
        super().__init__(vocab_sz, n_hidden, n_layers, cell="LSTM", p=p)
        self.h_o.weight = self.i_h.weight
        self.alpha, self.beta = alpha, beta

    def forward(self, x):
        raw = self.recur(x)
        out = self.drop(raw)
        return self.h_o(out), raw, out


# --- GANs (the gan kind, lesson 7) --------------------------------------------------------------------------


def small_encoder(pretrained: bool = False):
    """A 4-block stride-2 conv encoder (16 to 128 channels) for a U-Net small enough to train on a CPU in seconds
    (a ResNet U-Net spends most of its work at full resolution on 64+ channels): `model.arch` of model=unet_small."""
    if pretrained:
        raise FxpError("model=unet_small has no pretrained weights; set model.pretrained=false")
    chans = [3, 16, 32, 64, 128]
    return nn.Sequential(*(ConvLayer(ci, co, stride=2) for ci, co in zip(chans[:-1], chans[1:])),
                         nn.AdaptiveAvgPool2d(1))  # unet_learner cuts the encoder at its last pooling layer


def basic_gan(size: int, n_channels: int, in_sz: int, n_features: int = 64, n_extra_layers: int = 1,
              slope: float = 0.2):
    "fastai's basic_generator and basic_critic (LeakyReLU critic, lesson 7's WGAN): a `model.net` target."
    from functools import partial

    from fastai.vision.gan import basic_critic, basic_generator

    return (basic_generator(size, n_channels, in_sz=in_sz, n_features=n_features, n_extra_layers=n_extra_layers),
            basic_critic(size, n_channels, n_features=n_features, n_extra_layers=n_extra_layers,
                         act_cls=partial(nn.LeakyReLU, negative_slope=slope)))


@contextmanager
def pretrained_weights(m, key: str = "model", way_out: str = "train from scratch with"):
    "A failed download of `m.arch`'s weights (no network) becomes one line with the way out (`key`.pretrained=false)."
    try:
        yield
    except OSError as e:  # urllib's URLError and socket errors both derive from OSError
        if not m.pretrained:
            raise
        raise FxpError(f"pretrained weights for {m.arch} are not available ({type(e).__name__}: {e}); "
                       f"connect once to download them, or {way_out} {key}.pretrained=false") from e
