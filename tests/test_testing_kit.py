"""The contract kit catches broken plugins, and says what is wrong and how to fix it."""

from __future__ import annotations

import random
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from critui.builtin.deficits import VerticalFlip
from critui.kinds import Dataset, DatasetTensors, Deficit, Metric, Model
from critui.params import Param
from critui.testing import (
    check_dataset,
    check_deficit,
    check_metric,
    check_model,
    check_registered,
)


def failure(check, *args, **kwargs) -> str:
    with pytest.raises(AssertionError) as caught:
        check(*args, **kwargs)
    message = str(caught.value)
    assert "Fix:" in message or "Fix" in message, message
    return message


# --- deficits ----------------------------------------------------------------------------------


class MutatesTestSet(Deficit):
    name = "halve-in-place"
    description = "Halves the batch in place (broken)."

    def apply(self, x, y, epoch, generator):
        return x.mul_(0.5), y


class GlobalRandom(Deficit):
    name = "global-noise"
    description = "Adds noise from the global RNG (broken)."

    def apply(self, x, y, epoch, generator):
        return x + torch.randn_like(x), y


class CountsCalls(Deficit):
    name = "counter"
    description = "Output depends on how often it was called (broken)."

    def __init__(self, params, seed, num_classes, input_shape):
        super().__init__(params, seed, num_classes, input_shape)
        self.calls = 0

    def apply(self, x, y, epoch, generator):
        self.calls += 1
        return x * self.calls, y


class UnseededState(Deficit):
    name = "unseeded"
    description = "Fixed state drawn from an unseeded RNG (broken)."

    def __init__(self, params, seed, num_classes, input_shape):
        super().__init__(params, seed, num_classes, input_shape)
        self.offset = random.Random().random()

    def apply(self, x, y, epoch, generator):
        return x + self.offset, y


class ReseedsGlobal(Deficit):
    name = "reseeds"
    description = "Deterministic, but reseeds the global RNG (broken)."

    def apply(self, x, y, epoch, generator):
        torch.manual_seed(self.seed)
        return x + torch.rand(x.shape), y


class Shrinks(Deficit):
    name = "shrink"
    description = "Downsamples without upsampling back (broken)."

    def apply(self, x, y, epoch, generator):
        return F.avg_pool2d(x, 2), y


class Doubles(Deficit):
    name = "double"
    description = "Returns float64 (broken)."

    def apply(self, x, y, epoch, generator):
        return x.double(), y


class ShiftsLabels(Deficit):
    name = "shift-labels"
    description = "y + 1 without wrapping around (broken)."
    level = "high"

    def apply(self, x, y, epoch, generator):
        return x, y + 1


class ReturnsImagesOnly(Deficit):
    name = "images-only"
    description = "Forgets the labels (broken)."

    def apply(self, x, y, epoch, generator):
        return x


class DeclaresWindow(Deficit):
    name = "own-window"
    description = "Declares start itself (broken)."
    params = (Param("start", "int", 0, "clashes with the window"),)

    def apply(self, x, y, epoch, generator):
        return x, y


def test_a_deficit_that_mutates_the_test_set_is_caught():
    message = failure(check_deficit, MutatesTestSet)
    assert message.startswith("deficits.halve-in-place (tests.test_testing_kit.MutatesTestSet) modified its input x in place")
    assert "test set" in message and "x.mul_(a)" in message and "x = x.clone()" in message
    assert "the most at index" in message and "now " in message and "before " in message  # the value


def test_a_deficit_that_is_not_deterministic_is_caught():
    message = failure(check_deficit, CountsCalls)
    assert "deficits.counter" in message and "is not deterministic under a seed" in message
    assert "called twice with generators seeded equally" in message
    assert "keep no state that changes from call to call" in message

    message = failure(check_deficit, UnseededState)
    assert "is not deterministic under a seed" in message and "a second instance built with the same run seed" in message
    assert "from `seed`" in message


def test_a_deficit_that_uses_or_reseeds_the_global_rng_is_caught():
    for cls in (GlobalRandom, ReseedsGlobal):
        message = failure(check_deficit, cls)
        assert "changed process-wide torch state: apply changed the global RNG" in message
        assert "generator" in message


@pytest.mark.parametrize(
    ("cls", "expected"),
    [
        (Shrinks, "changed the shape of x: apply got (8, 3, 16, 16) and returned (8, 3, 8, 8)"),
        (Doubles, "changed the dtype of x: apply got torch.float32 and returned torch.float64"),
        (ShiftsLabels, "returned labels outside the class range: label 10 with 10 classes (valid: 0..9)"),
        (ReturnsImagesOnly, "returned the wrong thing from apply: it returned Tensor"),
        (DeclaresWindow, "declares a window parameter itself"),
    ],
)
def test_deficit_shape_dtype_label_and_declaration_errors(cls, expected):
    assert expected in failure(check_deficit, cls)


def test_bad_parameters_for_a_check_are_reported():
    message = failure(check_deficit, VerticalFlip, {"strength": 2})
    assert "deficits.flip" in message and "deficits.flip.strength is not a setting" in message


def test_a_sound_deficit_passes_on_other_shapes_and_windows():
    check_deficit(VerticalFlip, {"start": 2, "end": 5}, input_shape=(1, 8, 8), num_classes=2, batch=2)


# --- models ------------------------------------------------------------------------------------


class UnusedLayer(Model):
    name = "unused-layer"
    description = "Registers a layer it never calls (broken)."

    def build(self, input_shape, num_classes):
        c, h, w = input_shape

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(c * h * w, num_classes)
                self.spare = nn.Linear(4, 4)

            def forward(self, x):
                return self.fc(x.flatten(1))

        return Net()


class WrongOutputs(Model):
    name = "wrong-outputs"
    description = "One output too many (broken)."

    def build(self, input_shape, num_classes):
        c, h, w = input_shape
        return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, num_classes + 1))


class Lazy(Model):
    name = "lazy"
    description = "Sizes inferred at the first forward pass (unsupported)."

    def build(self, input_shape, num_classes):
        return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes))


class ReluOnInput(Model):
    name = "relu-on-input"
    description = "In-place ReLU applied to the input itself (broken)."

    def build(self, input_shape, num_classes):
        c, h, w = input_shape
        return nn.Sequential(nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(c * h * w, num_classes))


class RandomInit(Model):
    name = "random-init"
    description = "Initialised from an unseeded generator (broken)."

    def build(self, input_shape, num_classes):
        c, h, w = input_shape
        layer = nn.Linear(c * h * w, num_classes)
        with torch.no_grad():
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=torch.Generator().manual_seed(random.getrandbits(32))))
        return nn.Sequential(nn.Flatten(), layer)


def test_broken_models_are_caught():
    message = failure(check_model, UnusedLayer)
    assert "models.unused-layer" in message and "'spare.weight' got no gradient" in message
    assert "expected (4, 10)" in failure(check_model, WrongOutputs)
    assert "modified its input in place in forward" in failure(check_model, ReluOnInput)
    assert "does not build deterministically under torch.manual_seed" in failure(check_model, RandomInit)
    assert "has uninitialised (lazy) parameters: '1.weight'" in failure(check_model, Lazy)


# --- datasets ----------------------------------------------------------------------------------


def tensors(**changes) -> DatasetTensors:
    gen = torch.Generator().manual_seed(0)
    data = dict(
        train_x=torch.randint(0, 256, (12, 1, 8, 8), generator=gen, dtype=torch.uint8),
        train_y=torch.arange(12) % 3,
        test_x=torch.randint(0, 256, (6, 1, 8, 8), generator=gen, dtype=torch.uint8),
        test_y=torch.arange(6) % 3,
        classes=["a", "b", "c"],
        mean=(0.5,),
        std=(0.25,),
    )
    data.update(changes)
    return DatasetTensors(**data)


def dataset(name: str, **changes) -> type[Dataset]:
    return type(name, (Dataset,), {"name": name, "description": "a test dataset",
                                   "load": lambda self, params, seed: tensors(**changes)})


def test_a_sound_dataset_passes_and_is_returned():
    data = check_dataset(dataset("good"), input_shape=(1, 8, 8), num_classes=3)
    assert data.classes == ["a", "b", "c"]


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"train_y": torch.arange(12) % 4}, "has train labels outside the class range: label 3 with 3 class names"),
        ({"test_x": torch.rand(6, 1, 8, 8) * 255}, "has float test images outside 0..1"),
        ({"test_x": torch.zeros(6, 1, 4, 4, dtype=torch.uint8)}, "train (1, 8, 8), test (1, 4, 4)"),
        ({"mean": (0.5, 0.5, 0.5)}, "has an invalid `mean`"),
        ({"classes": ["a", "a", "b"]}, "has too few or repeated class names"),
        ({"augment": "mixup"}, "names an unknown augmentation: augment is 'mixup'"),
        ({"train_y": (torch.arange(12) % 3).float()}, "has non-integer train labels"),
    ],
)
def test_broken_datasets_are_caught(changes, expected):
    assert expected in failure(check_dataset, dataset("broken", **changes))


def test_a_dataset_that_changes_between_loads_is_caught():
    class Drifting(Dataset):
        name = "drifting"
        description = "Draws from the global RNG (broken)."

        def load(self, params, seed):
            return tensors(train_x=torch.randint(0, 256, (12, 1, 8, 8), dtype=torch.uint8))

    message = failure(check_dataset, Drifting)
    assert "does not load deterministically" in message and "train_x" in message


def test_expected_shape_and_classes_are_checked():
    assert "expected (3, 32, 32)" in failure(check_dataset, dataset("small"), input_shape=(3, 32, 32))
    assert "3 names; expected 10" in failure(check_dataset, dataset("few"), num_classes=10)


# --- metrics -----------------------------------------------------------------------------------


def metric(name: str, compute, when=None) -> type[Metric]:
    body = {"name": name, "description": "a test metric", "compute": lambda self, ctx: compute(ctx)}
    if when is not None:
        body["when"] = lambda self, epoch, epochs: when(epoch, epochs)
    return type(name, (Metric,), body)


def test_broken_metrics_are_caught():
    cases = [
        (metric("tensor", lambda ctx: {"norm": ctx.train_x.norm()}), "returned a tensor instead of a float"),
        (metric("unstable", lambda ctx: {f"epoch{ctx.epoch}": 1.0}), "returned unstable keys: epoch 0 gave ['epoch0'] and epoch 1 gave ['epoch1']"),
        (metric("nan", lambda ctx: {"x": float("nan")}), "returned a non-finite value: epoch 0: x=nan"),
        (metric("silent", lambda ctx: {}), "returned no values"),
        (metric("never", lambda ctx: {"x": 1.0}, when=lambda e, n: False), "never ran"),
        (metric("trains-bn", lambda ctx: {"x": float(ctx.model(ctx.train_x).mean().detach())}), "changed the model: 'bn.running_mean' differs"),
        (metric("scales-data", lambda ctx: {"x": float(ctx.test_x.mul_(2).mean())}), "modified ctx.test_x in place"),
    ]
    for cls, expected in cases:
        message = failure(check_metric, cls)
        assert f"metrics.{cls.name}" in message and expected in message, message


def test_a_metric_that_drifts_between_instances_is_caught():
    draws = iter(range(100))
    message = failure(check_metric, metric("drifts", lambda ctx: {"x": float(next(draws))}))
    assert "is not deterministic under a seed" in message


# --- registration and the pytest plugin --------------------------------------------------------


def test_an_unregistered_id_says_how_to_install_it():
    with pytest.raises(AssertionError) as caught:
        check_registered("deficits.not-installed")
    message = str(caught.value)
    assert "deficits.not-installed is not registered" in message and "deficits.blur" in message
    assert "pip install -e ." in message and "[project.entry-points.critui]" in message
    assert check_registered("deficits.blur", distribution="critui").distribution == "critui"
    with pytest.raises(AssertionError, match="registered by critui .*, not by critui-plugin-blur"):
        check_registered("deficits.blur", distribution="critui-plugin-blur")


def test_the_fixture_is_available_in_every_session(critui_contract):
    critui_contract.check_deficit(VerticalFlip)
    assert critui_contract.device == "cpu"


BROKEN_PLUGIN_TEST = '''
from critui.kinds import Deficit


class Halve(Deficit):
    name = "halve"
    description = "halves in place"

    def apply(self, x, y, epoch, generator):
        x /= 2
        return x, y


def test_contract(critui_contract):
    critui_contract.check_deficit(Halve)
'''


def test_a_plugin_authors_pytest_run_shows_the_failure(tmp_path):
    """What an author sees: pytest, with critui's fixture from the pytest11 entry point."""
    (tmp_path / "test_halve.py").write_text(textwrap.dedent(BROKEN_PLUGIN_TEST))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_halve.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "fixture 'critui_contract' not found" not in result.stdout
    assert "AssertionError: deficits.halve (test_halve.Halve) modified its input x in place" in result.stdout
    assert "Fix: use out-of-place operations" in result.stdout
