"""The epoch loop: device-resident data, deficits and augmentation as batched tensor ops.

Read top to bottom: ``prepare_data`` puts the whole dataset on the device once, normalised;
``train_epoch`` walks a seeded permutation in index slices, applies the deficit while its
window is open, then augmentation, and keeps loss and accuracy sums on the device, so there
is no host-device sync inside an epoch; ``evaluate`` scores clean test data in large batches.

On a GPU a :class:`Speed` adds the usual fast settings (``resolve_speed``): bf16 autocast,
channels_last and ``torch.compile``. On the CPU they resolve to plain float32, eager, which
is exactly the code path the CPU's bit-identical resume and fork guarantees are made on.

Randomness is derived, not carried: every epoch's batch order, augmentation and deficit
noise come from generators seeded by (seed, epoch, purpose). A run resumed or forked at an
epoch boundary therefore continues exactly as if it had never stopped.
"""

from __future__ import annotations

import copy
import math
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from critui.config import RunSpec
from critui.kinds import DatasetTensors, Deficit
from critui.train.schedule import lr_at  # noqa: F401 - here too, where the worker and tests look
from critui.train.seeds import derive_seed, generator


@dataclass
class DeviceData:
    """The dataset on the device: float32, normalised, test set always clean.

    ``loss`` is the dataset's (:class:`critui.kinds.DatasetTensors`): ``cross_entropy`` for a
    classification (``num_classes`` labels), else a regression with float targets
    (``num_classes`` is then the width of one target).
    """

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    augment: str
    loss: str = "cross_entropy"

    @property
    def regression(self) -> bool:
        return self.loss != "cross_entropy"


def prepare_data(data: DatasetTensors, device: torch.device, augment: str) -> DeviceData:
    """Move the dataset to the device once and normalise it there."""
    regression = data.loss != "cross_entropy"
    shape = (1, -1, 1, 1) if not regression else (1,) * data.train_x.dim()
    mean = torch.tensor(data.mean, dtype=torch.float32, device=device).view(shape)
    std = torch.tensor(data.std, dtype=torch.float32, device=device).view(shape)

    def normalise(x: torch.Tensor) -> torch.Tensor:
        x = x.to(device)
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        return ((x - mean) / std).contiguous()

    target = torch.float32 if regression else torch.long
    return DeviceData(
        train_x=normalise(data.train_x),
        train_y=data.train_y.to(device=device, dtype=target),
        test_x=normalise(data.test_x),
        test_y=data.test_y.to(device=device, dtype=target),
        num_classes=(int(data.train_y[0].numel()) if regression else len(data.classes)),
        augment=data.augment if augment == "auto" else augment,
        loss=data.loss,
    )


def task_loss(output: torch.Tensor, y: torch.Tensor, loss: str) -> torch.Tensor:
    """The training loss: cross-entropy on logits, or ½ · the mean (``half_mse``) or sum
    (``half_sse``) of the squared errors, the deep-linear literature's convention (its
    gradient flow has no factor 2)."""
    if loss == "cross_entropy":
        return F.cross_entropy(output, y)
    output = output.float()
    if output.shape != y.shape:  # a (N, 1) output for (N,) targets; a reshape is one more op a step
        output = output.reshape(y.shape)
    squared = (output - y).pow(2)
    return 0.5 * (squared.sum() if loss == "half_sse" else squared.mean())


@dataclass(frozen=True)
class Speed:
    """How training and evaluation steps run. The default is the CPU's: float32, NCHW, eager."""

    precision: str = "fp32"  # "fp32" or "bf16" (autocast; weights and optimiser stay float32)
    channels_last: bool = False
    compile: bool = False

    def autocast(self, device: torch.device) -> AbstractContextManager:
        if self.precision == "bf16":
            return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        return nullcontext()

    def layout(self, x: torch.Tensor) -> torch.Tensor:
        """A batch in the memory format the model was put in."""
        if self.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def as_train(self) -> dict[str, str]:
        """The resolved values, as the ``train`` section of a spec spells them."""
        return {
            "precision": self.precision,
            "channels_last": "on" if self.channels_last else "off",
            "compile": "on" if self.compile else "off",
        }


FP32 = Speed()


def resolve_speed(train: dict[str, Any], device: torch.device) -> Speed:
    """Resolve ``train.precision``, ``train.channels_last`` and ``train.compile`` for ``device``.

    ``auto`` means the fast settings on CUDA (bf16 where the GPU supports it, channels_last,
    compile) and float32, NCHW, eager elsewhere. A spec written before these settings
    existed has none of the keys: it resolves to what it was trained with, fp32 and eager.
    """
    cuda = device.type == "cuda"
    precision = train.get("precision", "fp32")
    if precision == "auto":
        precision = "bf16" if cuda and torch.cuda.is_bf16_supported() else "fp32"
    channels_last = train.get("channels_last", "off")
    compile_ = train.get("compile", "off")
    return Speed(
        precision=precision,
        channels_last=cuda if channels_last == "auto" else channels_last == "on",
        compile=cuda if compile_ == "auto" else compile_ == "on",
    )


def compile_model(
    model: torch.nn.Module, data: DeviceData, speed: Speed, batch_size: int, eval_batch_size: int
) -> torch.nn.Module:
    """``torch.compile(model)``, already compiled for a training and an evaluation batch.

    Compiling is lazy, so a compiler that cannot handle the model fails at the first call;
    this makes that call here, on one real batch, and puts the weights, BatchNorm statistics
    and gradients back as they were, so that the caller can fall back to the eager model.
    The compiled module shares its parameters with ``model``; checkpoints and metrics keep
    using ``model`` itself. Shapes are static: the batch size and the last, smaller batch
    each get their own graph, instead of a slower dynamic-shape one.
    """
    fast = torch.compile(model, dynamic=False)
    saved = copy.deepcopy(model.state_dict())
    was_training = model.training
    try:
        model.train()
        x, y = data.train_x[:batch_size], data.train_y[:batch_size]
        with speed.autocast(x.device):
            loss = task_loss(fast(speed.layout(x)), y, data.loss)
        loss.backward()
        n_eval = min(eval_batch_size, len(data.test_y))
        if data.regression:
            evaluate_regression(fast, data.test_x[:n_eval], data.test_y[:n_eval], data.loss, eval_batch_size, speed)
        else:
            evaluate(fast, data.test_x[:n_eval], data.test_y[:n_eval], eval_batch_size, speed)
    finally:
        model.load_state_dict(saved)
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return fast


def crop_flip(x: torch.Tensor, gen: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Pad-4 random crop and random horizontal flip, for a whole batch at once.

    Padding is zero in normalised space, which is the dataset's mean colour (the paper's
    "pad 4 (mean colour)").
    """
    n, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n, 1, 1), generator=gen, device=x.device)
    dx = torch.randint(0, 2 * pad + 1, (n, 1, 1), generator=gen, device=x.device)
    rows = dy + torch.arange(h, device=x.device).view(1, h, 1)
    cols = dx + torch.arange(w, device=x.device).view(1, 1, w)
    batch = torch.arange(n, device=x.device).view(n, 1, 1)
    cropped = padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)
    flip = torch.rand(n, generator=gen, device=x.device) < 0.5
    return torch.where(flip.view(n, 1, 1, 1), cropped.flip(-1), cropped).contiguous()


def make_optimizer(spec: RunSpec, model: torch.nn.Module) -> torch.optim.Optimizer:
    o = spec.optim
    if o["name"] == "adam":
        return torch.optim.Adam(model.parameters(), lr=o["lr"], weight_decay=o["weight_decay"])
    return torch.optim.SGD(model.parameters(), lr=o["lr"], momentum=o["momentum"], weight_decay=o["weight_decay"])


@dataclass
class EpochResult:
    train_loss: float
    train_acc: float | None  # None for a regression
    finite: bool


def train_epoch(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    data: DeviceData,
    spec: RunSpec,
    epoch: int,
    deficit: Deficit | None,
    speed: Speed = FP32,
) -> EpochResult:
    """One pass over the training set; the only host sync is the reduction at the end.

    ``model`` may be the compiled module (:func:`compile_model`); the optimiser holds the
    parameters it shares with the eager one. When ``optim.batch_size`` covers the training
    set the epoch is one full-batch gradient step, taken with as little Python around it as
    possible: a tiny model (deep linear networks, 100×100 layers) steps in well under a
    millisecond, so every tensor op of bookkeeping shows.
    """
    device = data.train_x.device
    seed = spec.seed
    batch_size = spec.optim["batch_size"]
    active = deficit is not None and spec.deficit_active(epoch)
    lr = lr_at(spec, epoch)
    for group in optimizer.param_groups:
        group["lr"] = lr
    # Dropout and any plugin that uses the global RNG see a per-epoch seed too. On the CPU
    # only the CPU generator is seeded: torch.manual_seed also seeds every accelerator
    # backend, formatting a stack trace for each (~2 ms, more than a small model's step).
    if device.type == "cpu":
        torch.default_generator.manual_seed(derive_seed(seed, epoch, "global"))
    else:
        torch.manual_seed(derive_seed(seed, epoch, "global"))
    # Seeded only when used (seeding is a hash and a generator: a small model's step costs less)
    deficit_gen = generator(device, seed, epoch, "deficit") if active else None
    augment_gen = generator(device, seed, epoch, "augment") if data.augment == "crop-flip" else None
    # Module.train() walks every submodule (tens of microseconds); evaluation and the worker
    # put the model back in training mode, so it is only needed when something left it out.
    if not model.training:
        model.train()

    def step(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if active:
            x, y = deficit.apply(x, y, epoch, deficit_gen)  # type: ignore[union-attr]
        if augment_gen is not None:
            x = crop_flip(x, augment_gen)
        with speed.autocast(device):
            logits = model(speed.layout(x))
            loss = task_loss(logits, y, data.loss)  # autocast computes cross-entropy in float32
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach(), logits.detach(), y

    n = len(data.train_y)
    if batch_size >= n >= 2:  # full-batch gradient descent: one step on the whole set, in order
        loss, logits, y = step(data.train_x, data.train_y)
        if data.regression:
            mean_loss, accuracy = loss.item(), None
        else:
            mean_loss, n_correct = _to_host(loss, (logits.argmax(1) == y).sum())
            accuracy = n_correct / n
        return EpochResult(mean_loss, accuracy, math.isfinite(mean_loss))

    order = torch.randperm(n, generator=generator(device, seed, epoch, "order"), device=device)
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        if len(idx) < 2:  # BatchNorm cannot train on a single sample
            break
        loss, logits, y = step(data.train_x[idx], data.train_y[idx])
        loss_sum += loss * len(idx)
        if not data.regression:
            correct += (logits.argmax(1) == y).sum()
        seen += len(idx)
    mean_loss, n_correct = _to_host(loss_sum / max(seen, 1), correct)
    accuracy = None if data.regression else n_correct / max(seen, 1)
    return EpochResult(mean_loss, accuracy, math.isfinite(mean_loss))


@torch.inference_mode()
def evaluate(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int, speed: Speed = FP32
) -> tuple[float, float]:
    """Mean loss and accuracy on (x, y), in large batches, BatchNorm in eval mode."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=x.device)
    correct = torch.zeros((), device=x.device, dtype=torch.long)
    for start in range(0, len(y), batch_size):
        with speed.autocast(x.device):
            logits = model(speed.layout(x[start : start + batch_size]))
        target = y[start : start + batch_size]
        loss_sum += F.cross_entropy(logits.float(), target, reduction="sum")
        correct += (logits.argmax(1) == target).sum()
    model.train(was_training)
    mean_loss, n_correct = _to_host(loss_sum / len(y), correct)
    return mean_loss, n_correct / len(y)


@torch.inference_mode()
def evaluate_regression(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, loss: str,
                        batch_size: int, speed: Speed = FP32) -> tuple[float, float]:
    """The loss (as training computes it, on the whole set at once) and the mean squared
    error over every target entry, the regression's score."""
    was_training = model.training
    model.eval()
    squared = torch.zeros((), device=x.device)
    for start in range(0, len(y), batch_size):
        with speed.autocast(x.device):
            out = model(speed.layout(x[start : start + batch_size]))
        target = y[start : start + batch_size]
        squared += (out.float().reshape(target.shape) - target).pow(2).sum()
    model.train(was_training)
    total, mse = squared.item(), squared.item() / y.numel()
    return (0.5 * total if loss == "half_sse" else 0.5 * mse), mse


def _to_host(mean: torch.Tensor, count: torch.Tensor) -> tuple[float, int]:
    """A float32 mean and an integer count in one device-to-host copy (one sync, not two).

    float64 holds both exactly, so the values equal ``mean.item()`` and ``count.item()``.
    """
    both = torch.stack([mean.double(), count.double()]).tolist()
    return both[0], int(both[1])
