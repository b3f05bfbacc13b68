"""Built-in deficits: blur, noise, vertical flip and label permutation (PAPER.md, "Deficits").

Each runs batched on the device, on normalised images, and only while the run's window
``start <= epoch < end`` is open; the worker never passes test data through a deficit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from critui.hookspecs import hookimpl
from critui.kinds import Deficit
from critui.params import Param

if TYPE_CHECKING:
    import torch

# torch is imported inside the functions that compute, not here: listing the plugins and
# checking a run's settings then never pay its import (see critui/builtin/datasets.py).


class Blur(Deficit):
    name = "blur"
    description = "Downsample (antialiased) then upsample bilinearly: fine detail is lost, coarse shape kept."
    level = "low"
    params = (
        Param(
            "size",
            "int",
            8,
            "side the image is downsampled to, for 32-pixel images (the paper's 8); "
            "other image sizes keep the same ratio, so 16-pixel images go to size/2",
            min=1,
            max=1024,
        ),
    )

    def target_side(self, height: int) -> int:
        return max(1, round(self.settings["size"] * height / 32))

    def apply(self, x, y, epoch, generator):
        import torch.nn.functional as F
        h, w = x.shape[-2:]
        side = self.target_side(h)
        if side >= h:
            return x, y
        small = F.interpolate(x, size=(side, round(side * w / h)), mode="bilinear", antialias=True, align_corners=False)
        return F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False), y


class Noise(Deficit):
    name = "noise"
    description = "Replace every image by i.i.d. noise N(0, std^2) in normalised space, keeping labels."
    level = "low"
    # Far above any useful noise, and far below what overflows float32 (1e308 gave inf, then NaN).
    params = (Param("std", "float", 1.0, "standard deviation of the noise, in normalised units", min=0.0, max=1000.0),)

    def apply(self, x, y, epoch, generator):
        import torch
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return noise * self.settings["std"], y


class VerticalFlip(Deficit):
    name = "flip"
    aliases = ("vflip",)
    description = "Flip every image upside down: input statistics kept, the task changed."
    level = "high"

    def apply(self, x, y, epoch, generator):
        import torch
        return torch.flip(x, dims=(-2,)), y


def derangement(num_classes: int, seed: int) -> torch.Tensor:
    """A permutation of range(num_classes) with no fixed point, determined by ``seed``."""
    import torch
    if num_classes < 2:
        raise ValueError("a label permutation needs at least 2 classes")
    generator = torch.Generator().manual_seed(seed)
    while True:  # about e tries on average
        perm = torch.randperm(num_classes, generator=generator)
        if not bool((perm == torch.arange(num_classes)).any()):
            return perm


class LabelPermutation(Deficit):
    name = "label-permutation"
    description = "Relabel classes by a fixed derangement drawn from the seed (not per-sample shuffling)."
    level = "high"

    def __init__(self, params, seed, num_classes, input_shape):
        super().__init__(params, seed, num_classes, input_shape)
        # Offset the seed so the permutation is not correlated with the batch order.
        self.permutation = derangement(num_classes, seed + 7919)

    def apply(self, x, y, epoch, generator):
        return x, self.permutation.to(y.device)[y]


@hookimpl
def critui_register_deficits(register):
    for cls in (Blur, Noise, VerticalFlip, LabelPermutation):
        register(cls)
