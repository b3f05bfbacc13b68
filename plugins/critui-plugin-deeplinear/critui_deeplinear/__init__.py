"""critui plugin: critical learning periods in deep linear networks.

Reproduces Kleinman, Achille & Soatto, "Critical Learning Periods Emerge Even in Deep Linear
Networks" (ICLR 2024): deep matrix completion with a task switch, and two competing
pathways with one frozen. Registers, through critui's hooks:

- datasets ``matrix-completion`` and ``hierarchy`` (regressions: critui scores them by test MSE);
- models ``deep-linear`` (deep matrix factorisation) and ``two-pathway``;
- deficits ``task-switch`` (train on a first target during the window) and
  ``pathway-freeze`` (detach a pathway: acts on the model, not the data);
- metrics ``singular-values`` (of the end-to-end map) and ``pathway-share``.
"""

from __future__ import annotations

from critui.hookspecs import hookimpl
from critui_deeplinear.metrics import PathwayShare, SingularValues
from critui_deeplinear.models import DeepLinear, PathwayFreeze, TwoPathway
from critui_deeplinear.tasks import Hierarchy, MatrixCompletion, TaskSwitch

__all__ = ["DeepLinear", "Hierarchy", "MatrixCompletion", "PathwayFreeze", "PathwayShare", "SingularValues",
           "TaskSwitch", "TwoPathway"]


@hookimpl
def critui_register_datasets(register):
    register(MatrixCompletion)
    register(Hierarchy)


@hookimpl
def critui_register_models(register):
    register(DeepLinear)
    register(TwoPathway)


@hookimpl
def critui_register_deficits(register):
    register(TaskSwitch)
    register(PathwayFreeze)


@hookimpl
def critui_register_metrics(register):
    register(SingularValues)
    register(PathwayShare)
