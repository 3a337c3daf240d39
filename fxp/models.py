"Architectures fastai does not ship, built from its layers."
from fastai.layers import ConvLayer, Flatten, NormType, ResBlock
from torch import nn


def small_cnn(n_in: int = 1, n_out: int = 10, channels=(16, 32, 64), bn: bool = True) -> nn.Sequential:
    "Stride-2 conv blocks (conv, BatchNorm unless not `bn`, ReLU), a linear head: enough for 8x8 digits and MNIST."
    chans = [n_in, *channels]
    norm = NormType.Batch if bn else None
    convs = [ConvLayer(ci, co, stride=2, norm_type=norm) for ci, co in zip(chans[:-1], chans[1:])]
    return nn.Sequential(*convs, nn.AdaptiveAvgPool2d(1), Flatten(), nn.Linear(chans[-1], n_out))


def resnet_mnist(n_in: int = 1, n_out: int = 10) -> nn.Sequential:
    "course-v3 lesson 7's MNIST net: stride-2 convs each followed by a residual block, no pooling head."
    def conv_and_res(ni, nf):
        return nn.Sequential(ConvLayer(ni, nf, stride=2), ResBlock(1, nf, nf))

    return nn.Sequential(conv_and_res(n_in, 8), conv_and_res(8, 16), conv_and_res(16, 32), conv_and_res(32, 16),
                         ConvLayer(16, n_out, stride=2), Flatten())
