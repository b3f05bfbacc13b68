"""Built-in models: the paper's All-CNN, a small CNN with a depth parameter, and an MLP.

Layers are named (``conv1``, ``conv2``, ..., ``fc``) because the Fisher metric reports one
trace per convolution or linear layer under its module name.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING

from critui.hookspecs import hookimpl
from critui.kinds import Model
from critui.params import Param

if TYPE_CHECKING:
    from torch import nn

# torch is imported inside the functions that build, not here: listing the plugins and
# checking a run's settings then never pay its import (see critui/builtin/datasets.py).


def conv_bn(c_in: int, c_out: int, kernel: int, stride: int = 1) -> nn.Sequential:
    from torch import nn

    # Bias off: BatchNorm's shift makes it redundant (PAPER.md, All-CNN).
    return nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
            bn=nn.BatchNorm2d(c_out),
            relu=nn.ReLU(inplace=True),
        )
    )


def named_stack(layers: list[tuple[str, nn.Module]]) -> nn.Sequential:
    """The layers in order, each under its name (``conv1``, ..., ``fc``)."""
    from torch import nn

    return nn.Sequential(OrderedDict(layers))


# (channels, kernel, stride) per layer, from PAPER.md's All-CNN table.
ALLCNN_LAYERS = [
    (96, 3, 1), (96, 3, 1), (96, 3, 2),
    (192, 3, 1), (192, 3, 1), (192, 3, 2),
    (192, 3, 1), (192, 1, 1),
]


class AllCNN(Model):
    name = "allcnn"
    description = "All-CNN-C as in the paper: 9 conv layers with BN, global average pooling."
    params = (
        Param("width", "float", 1.0, "channel multiplier (1.0 = the paper's 96/192)", min=0.01, max=16.0),
        Param("dropout", "float", 0.0, "dropout after each stride-2 block (0 = off)", min=0.0, max=0.9),
    )

    def build(self, input_shape, num_classes, width=1.0, dropout=0.0):
        from torch import nn

        c_in = input_shape[0]
        layers: list[tuple[str, nn.Module]] = []
        for i, (channels, kernel, stride) in enumerate(ALLCNN_LAYERS, start=1):
            c_out = max(1, round(channels * width))
            layers.append((f"conv{i}", conv_bn(c_in, c_out, kernel, stride)))
            if stride == 2 and dropout > 0:
                layers.append((f"drop{i}", nn.Dropout(dropout)))
            c_in = c_out
        # The classifier is the ninth conv (1x1 to num_classes), then global average pooling.
        layers.append((f"conv{len(ALLCNN_LAYERS) + 1}", conv_bn(c_in, num_classes, 1)))
        layers.append(("pool", nn.AdaptiveAvgPool2d(1)))
        layers.append(("flatten", nn.Flatten()))
        return named_stack(layers)


class SmallCNN(Model):
    name = "cnn"
    description = "A small conv-BN net (16-16-32s2-32-64s2-64 at depth 6), the CPU default; depth is a parameter."
    params = (
        Param(
            "depth",
            "int",
            6,
            "number of conv layers; the 3rd and the 5th or second-to-last (whichever is later) "
            "downsample by 2 while the feature map is at least 4 pixels wide",
            min=1,
            max=32,
        ),
        Param("width", "int", 16, "channels of the first layers; doubled at each downsampling", min=1, max=1024),
    )

    def build(self, input_shape, num_classes, depth=6, width=16):
        from torch import nn

        c_in, h, _ = input_shape
        layers: list[tuple[str, nn.Module]] = []
        channels, side = width, h
        # Two downsamplings at most: at layer 3, and at layer 5 or the second-to-last layer,
        # whichever is later, so that a deeper net adds its layers at 8x8 with 32 channels
        # (on 16x16 inputs) rather than a third downsampling to 2x2 with 128: with that, depth 8
        # memorised the demo (100% train, about 50% test; docs/results.md). Depths 1-6 build
        # the layers they always did, for any input size.
        downsample = {3, max(5, depth - 1)}
        for i in range(1, depth + 1):
            stride = 2 if i in downsample and side >= 4 else 1
            if stride == 2:
                channels *= 2
                side = (side + 1) // 2
            layers.append((f"conv{i}", conv_bn(c_in, channels, 3, stride)))
            c_in = channels
        layers += [("pool", nn.AdaptiveAvgPool2d(1)), ("flatten", nn.Flatten()), ("fc", nn.Linear(c_in, num_classes))]
        return named_stack(layers)


class FullyConnected(Model):
    name = "fc"
    description = "A fully connected net with BN + ReLU (the paper's depth experiment); depth and width are parameters."
    params = (
        Param("depth", "int", 3, "number of hidden layers", min=0, max=64),
        Param("width", "int", 512, "units per hidden layer", min=1, max=100_000),
    )

    def build(self, input_shape, num_classes, depth=3, width=512):
        from torch import nn

        size = 1
        for d in input_shape:
            size *= d
        layers: list[tuple[str, nn.Module]] = [("flatten", nn.Flatten())]
        for i in range(1, depth + 1):
            block = nn.Sequential(
                OrderedDict(linear=nn.Linear(size, width, bias=False), bn=nn.BatchNorm1d(width), relu=nn.ReLU(inplace=True))
            )
            layers.append((f"fc{i}", block))
            size = width
        layers.append(("fc", nn.Linear(size, num_classes)))
        return named_stack(layers)


@hookimpl
def critui_register_models(register):
    for cls in (AllCNN, SmallCNN, FullyConnected):
        register(cls)
