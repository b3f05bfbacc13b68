"""Pre-activation ResNets for CIFAR-sized images (He et al., *Identity Mappings in Deep
Residual Networks*, 2016), as in PAPER.md: a 3×3 stem, four stages at base, 2·base, 4·base and
8·base channels, global average pooling and a linear classifier.

Nothing but the model lives here; :mod:`critui_resnet` wraps it as critui plugins.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Residual blocks per stage.
DEPTHS = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}


class PreActBlock(nn.Module):
    """BN-ReLU-conv3×3, BN-ReLU-conv3×3, plus the identity (or a 1×1 conv when the shape changes).

    Pre-activation: the shortcut carries the block's input unnormalised, so the identity
    path stays clean from the stem to the classifier. When the shape changes, the 1×1
    projection reads the *activated* input, as in the paper's reference code.
    """

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.shortcut = (
            nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)
            if stride != 1 or c_in != c_out
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + skip


class PreActResNet(nn.Module):
    """Stem, ``layer1``..``layer4`` (strides 1, 2, 2, 2), a final BN-ReLU, average pool, ``fc``.

    Module names are what the Fisher metric reports: ``stem``, ``layer1.0.conv1``, ...,
    ``layer2.0.shortcut``, ``fc``.
    """

    def __init__(self, depths: tuple[int, ...], in_channels: int, num_classes: int, width: int = 64):
        super().__init__()
        # CIFAR variant: a 3×3 stride-1 stem and no max-pool, so 32-pixel inputs keep their
        # resolution through the first stage (the ImageNet 7×7/2 stem would discard it).
        self.stem = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
        c_in = width
        for index, blocks in enumerate(depths):
            c_out = width * 2**index
            stride = 1 if index == 0 else 2
            stage = nn.Sequential(
                *(PreActBlock(c_in if b == 0 else c_out, c_out, stride if b == 0 else 1) for b in range(blocks))
            )
            self.add_module(f"layer{index + 1}", stage)
            c_in = c_out
        # The last block ends in a convolution: normalise and activate once before pooling.
        self.bn = nn.BatchNorm2d(c_in)
        self.fc = nn.Linear(c_in, num_classes)
        self.stages = len(depths)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.stem(x)
        for index in range(1, self.stages + 1):
            out = getattr(self, f"layer{index}")(out)
        out = F.relu(self.bn(out))
        # Adaptive pooling: 32-pixel inputs end at 4×4 like the paper's, smaller ones still work.
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.fc(out)


def resnet(arch: str, input_shape: tuple[int, int, int], num_classes: int, width: int = 64) -> PreActResNet:
    """Build ``arch`` (a key of ``DEPTHS``) for C×H×W inputs."""
    return PreActResNet(DEPTHS[arch], input_shape[0], num_classes, width)
