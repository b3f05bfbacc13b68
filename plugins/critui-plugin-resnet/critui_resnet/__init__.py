"""critui-plugin-resnet: pre-activation ResNet-18 and ResNet-34 for critui.

critui loads this module through the entry point in ``pyproject.toml`` (group ``critui``)
and calls :func:`critui_register_models`, which registers ``models.resnet18`` and
``models.resnet34``. ``width`` is the first stage's channel count (64 in the paper); the
stages use width, 2·width, 4·width and 8·width.
"""

from __future__ import annotations

from typing import Any

from critui.hookspecs import hookimpl
from critui.kinds import Model
from critui.params import Param

__all__ = ["DEPTHS", "PreActResNet", "ResNet18", "ResNet34", "resnet"]

# The network (critui_resnet.preact) imports torch, so it is imported when a model is built,
# not here: critui imports this module whenever it lists its plugins or checks a run's
# settings (`critui plugins`, the TUI's start), and torch's import takes about a second.
_FROM_PREACT = ("DEPTHS", "PreActResNet", "resnet")


def __getattr__(name: str) -> Any:
    """``from critui_resnet import resnet`` (and DEPTHS, PreActResNet) still works."""
    if name in _FROM_PREACT:
        from critui_resnet import preact

        return getattr(preact, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

WIDTH = Param(
    "width",
    "int",
    64,
    "channels of the stem and first stage (the paper's 64); the later stages use 2x, 4x and 8x",
    min=1,
    max=4096,
)


class ResNet18(Model):
    name = "resnet18"
    description = (
        "Pre-activation ResNet-18, CIFAR variant (as in Achille et al. 2019): 3x3 stem, stages [2,2,2,2] at "
        "64/128/256/512 channels, average pool, linear."
    )
    params = (WIDTH,)

    def build(self, input_shape, num_classes, width=64):
        from critui_resnet.preact import resnet

        return resnet(self.name, input_shape, num_classes, width)


class ResNet34(ResNet18):
    """Same builder; ``resnet(self.name, ...)`` picks the [3,4,6,3] stages by name."""

    name = "resnet34"
    description = (
        "Pre-activation ResNet-34, CIFAR variant: 3x3 stem, stages [3,4,6,3] at "
        "64/128/256/512 channels, average pool, linear."
    )


@hookimpl
def critui_register_models(register):
    register(ResNet18)
    register(ResNet34)
