"""Every kind the plugin provides passes critui's contract kit, on the task it is meant for."""

from __future__ import annotations

import subprocess
import sys

import pytest
from critui_deeplinear import (
    DeepLinear,
    Hierarchy,
    MatrixCompletion,
    PathwayFreeze,
    PathwayShare,
    SingularValues,
    TaskSwitch,
    TwoPathway,
)
from critui_deeplinear.networks import Factorisation, Pathways

SMALL = {"n": 12, "rank": 2, "observed": 40}


@pytest.fixture(scope="module")
def completion():
    from critui.testing import check_dataset

    return check_dataset(MatrixCompletion, SMALL)


@pytest.fixture(scope="module")
def hierarchy():
    from critui.testing import check_dataset

    return check_dataset(Hierarchy)


def test_registered_from_this_distribution(critui_contract):
    for plugin_id in ("datasets.matrix-completion", "datasets.hierarchy", "models.deep-linear", "models.two-pathway",
                      "deficits.task-switch", "deficits.pathway-freeze", "metrics.singular-values",
                      "metrics.pathway-share"):
        critui_contract.check_registered(plugin_id, "critui-plugin-deeplinear")


def test_datasets_are_deterministic_regressions(completion, hierarchy):
    assert completion.loss == "half_mse" and hierarchy.loss == "half_sse"
    assert completion.train_x.shape == (40, 2) and completion.test_x.shape == (144, 2)
    assert hierarchy.train_x.shape == (8, 8) and hierarchy.train_y.shape == (8, 15)


def test_models(critui_contract, completion, hierarchy):
    critui_contract.check_model(DeepLinear, {"n": 12, "depth": 3}, data=completion)
    critui_contract.check_model(DeepLinear, {"n": 12, "depth": 1}, data=completion)
    critui_contract.check_model(TwoPathway, {"width": 6, "depth": 3}, data=hierarchy)


def test_deficits(critui_contract, completion, hierarchy):
    critui_contract.check_deficit(TaskSwitch, {"n": 12, "rank": 3, "end": 4}, data=completion)
    critui_contract.check_deficit(PathwayFreeze, {"end": 4}, data=hierarchy, model=Pathways(8, 15, 2, 4, 0.01))


def test_metrics(critui_contract, completion, hierarchy):
    critui_contract.check_metric(SingularValues, {"k": 3}, model=Factorisation(12, 2, 1e-3), data=completion)
    critui_contract.check_metric(PathwayShare, model=Pathways(8, 15, 2, 4, 0.01), data=hierarchy)


def test_importing_the_plugin_does_not_import_torch():
    """Listing the plugins and the TUI's start import every plugin: they must not pay torch's import."""
    out = subprocess.run([sys.executable, "-c", "import critui_deeplinear, sys; print('torch' in sys.modules)"],
                         capture_output=True, text=True, check=True, timeout=120).stdout
    assert out.strip() == "False"
