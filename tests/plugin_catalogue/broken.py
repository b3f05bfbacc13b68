"""A catalogue of broken plugins, each with the words its contract check must fail with.

Every class here passes ``register`` or breaks only its declaration, and each breaks one
thing critui relies on, the way a plugin author actually gets it wrong. ``CATALOGUE`` pairs
each class with the options for its check and the words the failure must contain: the
property that failed, named for what really went wrong. Classes live at module level so
that the two-process determinism check can import them.
"""

from __future__ import annotations

import math
import random
import time

import torch
import torch.nn.functional as F
from torch import nn

from critui.kinds import Dataset, DatasetTensors, Deficit, Metric, Model
from critui.params import Param

# --- deficits ----------------------------------------------------------------------------------


class _Deficit(Deficit):
    description = "A broken deficit from the catalogue."

    def apply(self, x, y, epoch, generator):
        return x, y


class HashSeeded(_Deficit):
    name = "hash-seeded"

    def __init__(self, params, seed, num_classes, input_shape):
        super().__init__(params, seed, num_classes, input_shape)
        # hash() of a str differs between processes: resume and fork rebuild it differently.
        self.offset = (hash(f"offset-{seed}") % 10**9) / 10**9

    def apply(self, x, y, epoch, generator):
        return x + self.offset, y


class SetOrderSeeded(_Deficit):
    name = "set-order"

    def __init__(self, params, seed, num_classes, input_shape):
        super().__init__(params, seed, num_classes, input_shape)
        names = {f"channel-{i}" for i in range(40)}
        # The whole iteration order counts: it changes with PYTHONHASHSEED.
        self.shift = sum(i * int(name.split("-")[1]) for i, name in enumerate(names)) / 1e4

    def apply(self, x, y, epoch, generator):
        return x + self.shift, y


class EpochSeeded(_Deficit):
    name = "epoch-seeded"

    def apply(self, x, y, epoch, generator):
        own = torch.Generator(device=x.device).manual_seed(epoch)
        mask = torch.rand(x.shape, generator=own, device=x.device) < 0.5
        return torch.where(mask, torch.zeros_like(x), x), y


class NanOnConstant(_Deficit):
    name = "standardise"

    def apply(self, x, y, epoch, generator):
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        return (x - mean) / x.std(dim=(1, 2, 3), keepdim=True), y


class NanOnZeros(_Deficit):
    name = "log-contrast"

    def apply(self, x, y, epoch, generator):
        return torch.log(x.abs()) * 0.1, y


class OverflowOnExtremes(_Deficit):
    name = "exp-gamma"

    def apply(self, x, y, epoch, generator):
        return torch.exp(x * 8.0) / 1e30, y


class InPlaceX(_Deficit):
    name = "halve-in-place"

    def apply(self, x, y, epoch, generator):
        return x.mul_(0.5), y


class InPlaceY(_Deficit):
    name = "relabel-in-place"
    level = "high"

    def apply(self, x, y, epoch, generator):
        y[y == 0] = 1
        return x, y


class GlobalRng(_Deficit):
    name = "global-noise"

    def apply(self, x, y, epoch, generator):
        return x + torch.randn_like(x), y


class GradOff(_Deficit):
    name = "no-grad"

    def apply(self, x, y, epoch, generator):
        torch.set_grad_enabled(False)
        return x.flip(-1), y


class DefaultDtype(_Deficit):
    name = "double-default"

    def __init__(self, params, seed, num_classes, input_shape):
        super().__init__(params, seed, num_classes, input_shape)
        torch.set_default_dtype(torch.float64)


class CountsCalls(_Deficit):
    name = "counter"

    def __init__(self, params, seed, num_classes, input_shape):
        super().__init__(params, seed, num_classes, input_shape)
        self.calls = 0

    def apply(self, x, y, epoch, generator):
        self.calls += 1
        return x * self.calls, y


class PythonRandomState(_Deficit):
    name = "python-random"

    def __init__(self, params, seed, num_classes, input_shape):
        super().__init__(params, seed, num_classes, input_shape)
        self.offset = random.Random().random()

    def apply(self, x, y, epoch, generator):
        return x + self.offset, y


class ClockState(_Deficit):
    name = "clock"

    def __init__(self, params, seed, num_classes, input_shape):
        super().__init__(params, seed, num_classes, input_shape)
        self.offset = (time.perf_counter_ns() % 10**9) / 10**9  # two builds never share a nanosecond

    def apply(self, x, y, epoch, generator):
        return x + self.offset, y


class ShrinksImages(_Deficit):
    name = "downsample"

    def apply(self, x, y, epoch, generator):
        return F.avg_pool2d(x, 2), y


class ReturnsDouble(_Deficit):
    name = "double"

    def apply(self, x, y, epoch, generator):
        return x.double(), y


class ReturnsInt32Labels(_Deficit):
    name = "int-labels"

    def apply(self, x, y, epoch, generator):
        return x, y.int()


class ReturnsImagesOnly(_Deficit):
    name = "images-only"

    def apply(self, x, y, epoch, generator):
        return x.flip(-1)


class ShiftsLabels(_Deficit):
    name = "shift-labels"
    level = "high"

    def apply(self, x, y, epoch, generator):
        return x, y + 1


class NeedsGrad(_Deficit):
    name = "learned-filter"

    def __init__(self, params, seed, num_classes, input_shape):
        super().__init__(params, seed, num_classes, input_shape)
        self.gain = torch.ones(1, requires_grad=True)

    def apply(self, x, y, epoch, generator):
        return x * self.gain, y


class BadLevel(_Deficit):
    name = "medium"
    level = "medium"


class NoApply(Deficit):
    name = "no-apply"
    description = "Forgot apply."


class OldSignature(_Deficit):
    name = "old-signature"

    def __init__(self, params):
        super().__init__(params, 0, 10, (3, 16, 16))


class FullBatchOnly(_Deficit):
    name = "full-batch-only"

    def apply(self, x, y, epoch, generator):
        if len(x) != 8:
            raise ValueError("expected a batch of 8")
        return x, y


class DescriptionMissing(_Deficit):
    name = "undescribed"
    description = ""


class DottedName(_Deficit):
    name = "my.blur"


class DuplicateParams(_Deficit):
    name = "duplicate"
    params = (Param("size", "int", 3, "kernel size"), Param("size", "int", 5, "kernel size again"))


class OwnWindow(_Deficit):
    name = "own-window"
    params = (Param("end", "int", 4, "when it ends"),)


class ReservedId(_Deficit):
    name = "reserved"
    params = (Param("id", "str", "x", "an id"),)


class BadDefault(_Deficit):
    name = "bad-default"
    params = (Param("size", "int", 0, "kernel size", min=1),)


class NotParams(_Deficit):
    name = "not-params"
    params = ("size",)


# --- models ------------------------------------------------------------------------------------


class _Model(Model):
    description = "A broken model from the catalogue."


def _head(input_shape, num_classes):
    c, h, w = input_shape
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, num_classes))


class Softmaxed(_Model):
    name = "softmaxed"

    def build(self, input_shape, num_classes):
        return nn.Sequential(_head(input_shape, num_classes), nn.Softmax(dim=1))


class NanInit(_Model):
    name = "nan-init"

    def build(self, input_shape, num_classes):
        model = _head(input_shape, num_classes)
        with torch.no_grad():
            model[1].bias.fill_(math.nan)
        return model


class Float64(_Model):
    name = "float64"

    def build(self, input_shape, num_classes):
        return _head(input_shape, num_classes).double()


class ExtraClass(_Model):
    name = "extra-class"

    def build(self, input_shape, num_classes):
        return _head(input_shape, num_classes + 1)


class SqueezesBatch(_Model):
    name = "squeezes"

    def build(self, input_shape, num_classes):
        class Squeeze(nn.Module):
            def __init__(self):
                super().__init__()
                self.net = _head(input_shape, num_classes)

            def forward(self, x):
                return self.net(x).squeeze(0)

        return Squeeze()


class InPlaceInput(_Model):
    name = "inplace-input"

    def build(self, input_shape, num_classes):
        return nn.Sequential(nn.ReLU(inplace=True), _head(input_shape, num_classes))


class UnusedLayer(_Model):
    name = "unused-layer"

    def build(self, input_shape, num_classes):
        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.head = _head(input_shape, num_classes)
                self.spare = nn.Linear(4, 4)

            def forward(self, x):
                return self.head(x)

        return Net()


class NotAModule(_Model):
    name = "function"

    def build(self, input_shape, num_classes):
        return lambda x: x.flatten(1)[:, :num_classes]


class Lazy(_Model):
    name = "lazy"

    def build(self, input_shape, num_classes):
        return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes))


class PythonRandomInit(_Model):
    name = "python-random-init"

    def build(self, input_shape, num_classes):
        model = _head(input_shape, num_classes)
        with torch.no_grad():
            model[1].bias.fill_(random.Random().random())
        return model


class NoTorchLayers(_Model):
    name = "raw-matrix"

    def build(self, input_shape, num_classes):
        c, h, w = input_shape

        class Raw(nn.Module):
            def __init__(self):
                super().__init__()
                self.weight = nn.Parameter(torch.randn(c * h * w, num_classes) * 0.01)

            def forward(self, x):
                return x.flatten(1) @ self.weight

        return Raw()


class MissingParamArgument(_Model):
    name = "no-width-arg"
    params = (Param("width", "int", 8, "channels", min=1),)

    def build(self, input_shape, num_classes):
        return _head(input_shape, num_classes)


class ReturnsFeaturesToo(_Model):
    name = "features-too"

    def build(self, input_shape, num_classes):
        class Both(nn.Module):
            def __init__(self):
                super().__init__()
                self.head = _head(input_shape, num_classes)

            def forward(self, x):
                return self.head(x), x

        return Both()


class LogOfNegative(_Model):
    name = "log-negative"

    def build(self, input_shape, num_classes):
        class Logs(nn.Module):
            def __init__(self):
                super().__init__()
                self.head = _head(input_shape, num_classes)

            def forward(self, x):
                return torch.log(self.head(x) - 1e6)

        return Logs()


class ArgmaxOutput(_Model):
    name = "argmax"

    def build(self, input_shape, num_classes):
        class Hard(nn.Module):
            def __init__(self):
                super().__init__()
                self.head = _head(input_shape, num_classes)

            def forward(self, x):
                return F.one_hot(self.head(x).argmax(1), num_classes)

        return Hard()


class NoBuild(Model):
    name = "no-build"
    description = "Forgot build."


# --- datasets ----------------------------------------------------------------------------------


class _Dataset(Dataset):
    description = "A broken dataset from the catalogue."
    changes: dict = {}

    def load(self, params, seed):
        g = torch.Generator().manual_seed(seed)
        x = torch.randint(0, 256, (40, 3, 8, 8), generator=g, dtype=torch.uint8)
        y = torch.arange(40) % 4
        mean = tuple((x.float() / 255).mean(dim=(0, 2, 3)).tolist())
        std = tuple((x.float() / 255).std(dim=(0, 2, 3)).tolist())
        fields = dict(train_x=x, train_y=y, test_x=x[:20], test_y=y[:20], classes=["a", "b", "c", "d"],
                      mean=mean, std=std)
        fields.update(self.changed(fields))
        return DatasetTensors(**fields)

    def changed(self, fields):
        return {}


class StatsIn255(_Dataset):
    name = "stats-255"

    def changed(self, f):
        return {"mean": tuple(v * 255 for v in f["mean"]), "std": tuple(v * 255 for v in f["std"])}


class ChannelsLast(_Dataset):
    name = "nhwc"

    def changed(self, f):
        return {"train_x": torch.randint(0, 256, (40, 16, 16, 3), dtype=torch.uint8),
                "test_x": torch.randint(0, 256, (20, 16, 16, 3), dtype=torch.uint8)}


class ZeroStd(_Dataset):
    name = "zero-std"

    def changed(self, f):
        return {"std": (0.0, 0.25, 0.25)}


class LabelsFromOne(_Dataset):
    name = "labels-from-one"

    def changed(self, f):
        return {"train_y": f["train_y"] + 1}


class FloatPixels255(_Dataset):
    name = "float-255"

    def changed(self, f):
        return {"train_x": f["train_x"].float(), "test_x": f["test_x"].float()}


class FloatLabels(_Dataset):
    name = "float-labels"

    def changed(self, f):
        return {"train_y": f["train_y"].float()}


class ShortLabels(_Dataset):
    name = "short-labels"

    def changed(self, f):
        return {"test_y": f["test_y"][:10]}


class TestShapeDiffers(_Dataset):
    name = "test-shape"

    def changed(self, f):
        return {"test_x": torch.zeros((20, 3, 4, 4), dtype=torch.uint8)}


class RepeatedClasses(_Dataset):
    name = "repeated-classes"

    def changed(self, f):
        return {"classes": ["a", "b", "a", "d"]}


class BadAugment(_Dataset):
    name = "bad-augment"

    def changed(self, f):
        return {"augment": "random-crop"}


class UnseededLoad(_Dataset):
    name = "unseeded-load"

    def changed(self, f):
        return {"train_x": torch.randint(0, 256, (40, 3, 8, 8), dtype=torch.uint8,
                                         generator=torch.Generator().manual_seed(random.Random().randrange(10**9)))}


class Float64Images(_Dataset):
    name = "float64-images"

    def changed(self, f):
        return {"train_x": f["train_x"].double() / 255, "test_x": f["test_x"].double() / 255}


class SwappedMeans(_Dataset):
    name = "swapped-means"

    def changed(self, f):
        x = f["train_x"].clone()
        x[:, 0] = 240
        x[:, 2] = 10
        mean = tuple((x.float() / 255).mean(dim=(0, 2, 3)).tolist())
        return {"train_x": x, "test_x": x[:20], "mean": mean[::-1], "std": (0.2, 0.2, 0.2)}


class MissingFile(_Dataset):
    name = "missing-file"

    def load(self, params, seed):
        return {"x": open("/nonexistent/critui-catalogue.npz")}  # noqa: SIM115


class ReturnsDict(_Dataset):
    name = "returns-dict"

    def load(self, params, seed):
        return {"train_x": torch.zeros(1)}


class OneClass(_Dataset):
    name = "one-class"

    def changed(self, f):
        return {"classes": ["only"], "train_y": f["train_y"] * 0, "test_y": f["test_y"] * 0}


class NoLoad(Dataset):
    name = "no-load"
    description = "Forgot load."


# --- metrics -----------------------------------------------------------------------------------


class _Metric(Metric):
    description = "A broken metric from the catalogue."


class NanAfterFour(_Metric):
    name = "nan-after-four"

    def compute(self, ctx):
        return {"value": math.nan if ctx.epoch >= 4 else 1.0}


class ReturnsTensor(_Metric):
    name = "tensor"

    def compute(self, ctx):
        return {"norm": ctx.model[0].weight.norm()}


class UnstableKeys(_Metric):
    name = "unstable-keys"

    def compute(self, ctx):
        return {f"epoch-{ctx.epoch}": 1.0}


class ChangesWeights(_Metric):
    name = "changes-weights"

    def compute(self, ctx):
        with torch.no_grad():
            ctx.model.fc.bias.add_(1.0)
        return {"value": 1.0}


class LeavesEvalMode(_Metric):
    name = "leaves-eval"

    def compute(self, ctx):
        ctx.model.eval()
        return {"value": 1.0}


class LeavesGradients(_Metric):
    name = "leaves-grads"

    def compute(self, ctx):
        was_training = ctx.model.training
        ctx.model.eval()  # BatchNorm statistics stay put; only the gradients are left behind
        F.cross_entropy(ctx.model(ctx.test_x[:4]), ctx.test_y[:4]).backward()
        ctx.model.train(was_training)
        return {"value": 1.0}


class NeverRuns(_Metric):
    name = "never-runs"

    def when(self, epoch, epochs):
        return False

    def compute(self, ctx):
        return {"value": 1.0}


class WhenReturnsInt(_Metric):
    name = "when-int"

    def when(self, epoch, epochs):
        return epoch % 2

    def compute(self, ctx):
        return {"value": 1.0}


class RaisesLate(_Metric):
    name = "raises-late"

    def compute(self, ctx):
        if ctx.epoch == ctx.epochs - 1:
            raise KeyError("last")
        return {"value": 1.0}


class RandomValues(_Metric):
    name = "random-values"

    def compute(self, ctx):
        return {"value": random.Random().random()}


class MutatesData(_Metric):
    name = "mutates-data"

    def compute(self, ctx):
        ctx.train_x.mul_(1.5)
        return {"value": 1.0}


class StringValue(_Metric):
    name = "string-value"

    def compute(self, ctx):
        return {"value": "1.0"}


class ReturnsList(_Metric):
    name = "returns-list"

    def compute(self, ctx):
        return [1.0]


class TurnsGradOff(_Metric):
    name = "grad-off"

    def compute(self, ctx):
        torch.set_grad_enabled(False)
        return {"value": 1.0}


class NoCompute(Metric):
    name = "no-compute"
    description = "Forgot compute."


class OldMetricSignature(_Metric):
    name = "old-metric-signature"

    def __init__(self):
        super().__init__({}, 0)

    def compute(self, ctx):
        return {"value": 1.0}


class InfiniteRatio(_Metric):
    name = "infinite-ratio"

    def compute(self, ctx):
        return {"ratio": math.inf}


# (class, check options, words the failure must contain)
CATALOGUE: list[tuple[type, dict, str]] = [
    (HashSeeded, {}, "not deterministic across processes"),
    (SetOrderSeeded, {}, "not deterministic across processes"),
    (EpochSeeded, {}, "draws the same randomness for every run seed"),
    (NanOnConstant, {}, "non-finite images"),
    (NanOnZeros, {}, "non-finite images"),
    (OverflowOnExtremes, {}, "non-finite images"),
    (InPlaceX, {}, "modified its input x in place"),
    (InPlaceY, {}, "modified its input y in place"),
    (GlobalRng, {}, "the global RNG"),
    (GradOff, {}, "grad mode"),
    (DefaultDtype, {}, "the default dtype"),
    (CountsCalls, {}, "not deterministic under a seed"),
    (PythonRandomState, {}, "not deterministic under a seed"),
    (ClockState, {}, "not deterministic under a seed"),
    (ShrinksImages, {}, "changed the shape of x"),
    (ReturnsDouble, {}, "changed the dtype of x"),
    (ReturnsInt32Labels, {}, "changed the dtype of y"),
    (ReturnsImagesOnly, {}, "returned the wrong thing from apply"),
    (ShiftsLabels, {}, "labels outside the class range"),
    (NeedsGrad, {}, "requires grad"),
    (BadLevel, {}, "unknown `level`"),
    (NoApply, {}, "does not implement apply"),
    (OldSignature, {}, "could not be built"),
    (FullBatchOnly, {}, "raised in apply"),
    (DescriptionMissing, {}, "has no `description`"),
    (DottedName, {}, "no usable `name`"),
    (DuplicateParams, {}, "declares a parameter twice"),
    (OwnWindow, {}, "declares a window parameter itself"),
    (ReservedId, {}, "reserved name"),
    (BadDefault, {}, "default is invalid"),
    (NotParams, {}, "not a Param"),
    (Softmaxed, {}, "returns probabilities, not logits"),
    (NanInit, {}, "non-finite initial weights"),
    (Float64, {}, "not float32"),
    (ExtraClass, {}, "logits of the wrong shape"),
    (SqueezesBatch, {}, "logits of the wrong shape"),
    (InPlaceInput, {}, "modified its input in place"),
    (UnusedLayer, {}, "a parameter the loss does not reach"),
    (NotAModule, {}, "not a torch.nn.Module"),
    (Lazy, {}, "lazy"),
    (PythonRandomInit, {}, "does not build deterministically"),
    (NoTorchLayers, {}, "no convolution or linear layer"),
    (MissingParamArgument, {}, "could not be built"),
    (ReturnsFeaturesToo, {}, "logits of the wrong shape"),
    (LogOfNegative, {}, "non-finite or non-float logits"),
    (ArgmaxOutput, {}, "non-finite or non-float logits"),
    (NoBuild, {}, "does not implement build"),
    (StatsIn255, {}, "in the wrong units"),
    (ChannelsLast, {}, "channels-last images"),
    (ZeroStd, {}, "zero or negative `std`"),
    (LabelsFromOne, {}, "train labels outside the class range"),
    (FloatPixels255, {}, "outside 0..1"),
    (FloatLabels, {}, "non-integer train labels"),
    (ShortLabels, {}, "test labels that do not match"),
    (TestShapeDiffers, {}, "different shapes"),
    (RepeatedClasses, {}, "repeated class names"),
    (BadAugment, {}, "unknown augmentation"),
    (UnseededLoad, {}, "does not load deterministically"),
    (Float64Images, {}, "unsupported dtype"),
    (SwappedMeans, {}, "far from its images' own"),
    (MissingFile, {}, "could not be loaded"),
    (ReturnsDict, {}, "returned the wrong thing from load"),
    (OneClass, {}, "too few or repeated class names"),
    (NoLoad, {}, "does not implement load"),
    (NanAfterFour, {}, "non-finite value"),
    (ReturnsTensor, {}, "a tensor instead of a float"),
    (UnstableKeys, {}, "unstable keys"),
    (ChangesWeights, {}, "changed the model"),
    (LeavesEvalMode, {}, "train/eval mode"),
    (LeavesGradients, {}, "left gradients"),
    (NeverRuns, {}, "never ran"),
    (WhenReturnsInt, {}, "non-bool from when"),
    (RaisesLate, {}, "raised in compute"),
    (RandomValues, {}, "not deterministic under a seed"),
    (MutatesData, {}, "modified ctx.train_x in place"),
    (StringValue, {}, "not a number"),
    (ReturnsList, {}, "returned the wrong thing from compute"),
    (TurnsGradOff, {}, "grad mode"),
    (NoCompute, {}, "does not implement compute"),
    (OldMetricSignature, {}, "could not be built"),
    (InfiniteRatio, {}, "non-finite value"),
]
