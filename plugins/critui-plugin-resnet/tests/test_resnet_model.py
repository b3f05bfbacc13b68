"""The architecture, checked against the paper's description and critui's model contract."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
import torch
from critui_resnet import DEPTHS, ResNet18, ResNet34, resnet
from torch import nn

# kuangliu/pytorch-cifar's PreActResNet18 for 10 classes has 11,171,146 parameters; ours adds
# the final BN (2 x 512) of He et al.'s pre-activation design.
RESNET18_PARAMETERS = 11_171_146 + 2 * 512


def convs(model: nn.Module) -> list[nn.Conv2d]:
    return [m for m in model.modules() if isinstance(m, nn.Conv2d)]


def test_resnet18_is_the_cifar_preactivation_variant():
    model = resnet("resnet18", (3, 32, 32), 10)
    assert sum(p.numel() for p in model.parameters()) == RESNET18_PARAMETERS
    stem = model.stem
    assert (stem.kernel_size, stem.stride, stem.out_channels) == ((3, 3), (1, 1), 64)
    assert [len(getattr(model, f"layer{i}")) for i in range(1, 5)] == [2, 2, 2, 2]
    assert [getattr(model, f"layer{i}")[0].conv2.out_channels for i in range(1, 5)] == [64, 128, 256, 512]
    assert model.fc.in_features == 512 and model.fc.out_features == 10
    # Pre-activation: every block starts with BN on its input; 3x3 convs only, plus 1x1 shortcuts.
    block = model.layer2[0]
    assert isinstance(block.bn1, nn.BatchNorm2d) and block.bn1.num_features == 64
    assert block.shortcut.kernel_size == (1, 1) and block.shortcut.stride == (2, 2)
    assert model.layer1[0].shortcut is None
    assert len(convs(model)) == 1 + 16 + 3


def test_resnet34_has_stages_3_4_6_3():
    model = resnet("resnet34", (3, 32, 32), 100)
    assert [len(getattr(model, f"layer{i}")) for i in range(1, 5)] == list(DEPTHS["resnet34"]) == [3, 4, 6, 3]
    assert model.fc.out_features == 100


def test_width_scales_every_stage():
    model = ResNet18().build((3, 32, 32), 10, width=8)
    assert [getattr(model, f"layer{i}")[-1].conv2.out_channels for i in range(1, 5)] == [8, 16, 32, 64]


def test_shapes_through_the_network():
    model = resnet("resnet18", (1, 16, 16), 7, width=4).eval()
    sizes = []
    for i in range(1, 5):
        getattr(model, f"layer{i}").register_forward_hook(lambda m, inp, out: sizes.append(tuple(out.shape[1:])))
    with torch.no_grad():
        assert model(torch.randn(2, 1, 16, 16)).shape == (2, 7)
    assert sizes == [(4, 16, 16), (8, 8, 8), (16, 4, 4), (32, 2, 2)]


def test_fisher_layer_names_are_readable():
    from critui.train.fisher import fisher_layers

    names = list(fisher_layers(resnet("resnet18", (3, 32, 32), 10, width=2)))
    assert names[:3] == ["stem", "layer1.0.conv1", "layer1.0.conv2"]
    assert "layer2.0.shortcut" in names and names[-1] == "fc"
    assert len(names) == 21


@pytest.mark.parametrize("cls", [ResNet18, ResNet34])
def test_meets_the_model_contract(critui_contract, cls):
    critui_contract.check_model(cls, {"width": 2}, input_shape=(3, 32, 32), num_classes=10)
    critui_contract.check_model(cls, {"width": 1}, input_shape=(1, 16, 16), num_classes=3, fisher=False)


def test_is_registered_with_this_distribution(critui_contract):
    try:
        installed = version("critui-plugin-resnet")
    except PackageNotFoundError:
        pytest.skip("critui-plugin-resnet is not installed here; test_resnet_install.py installs it")
    for plugin_id in ("models.resnet18", "models.resnet34"):
        critui_contract.check_registered(plugin_id, distribution="critui-plugin-resnet", version=installed)


def test_importing_the_plugin_does_not_import_torch():
    """critui imports every plugin to list them (`critui plugins`, the TUI's start): torch's
    import, about a second, waits until a model is built."""
    check = "import sys, critui_resnet; print('torch' in sys.modules, callable(critui_resnet.resnet))"
    # From the package's folder: the source checkout's copy when the distribution is not installed.
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[1], check=True).stdout.split()
    assert out == ["False", "True"]
