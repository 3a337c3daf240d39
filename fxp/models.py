"Architectures fastai does not ship, built from its layers."
from fastai.layers import ConvLayer, Flatten
from torch import nn


def small_cnn(n_in: int = 1, n_out: int = 10, channels=(16, 32, 64)) -> nn.Sequential:
    "Stride-2 conv blocks then a linear head: enough for 8x8 digits and 28x28 MNIST."
    chans = [n_in, *channels]
    convs = [ConvLayer(ci, co, stride=2) for ci, co in zip(chans[:-1], chans[1:])]
    return nn.Sequential(*convs, nn.AdaptiveAvgPool2d(1), Flatten(), nn.Linear(chans[-1], n_out))
