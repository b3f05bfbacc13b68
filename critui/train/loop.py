"""The epoch loop: device-resident data, deficits and augmentation as batched tensor ops.

Read top to bottom: ``prepare_data`` puts the whole dataset on the device once, normalised;
``train_epoch`` walks a seeded permutation in index slices, applies the deficit while its
window is open, then augmentation, and keeps loss and accuracy sums on the device, so there
is no host-device sync inside an epoch; ``evaluate`` scores clean test data.

Randomness is derived, not carried: every epoch's batch order, augmentation and deficit
noise come from generators seeded by (seed, epoch, purpose). A run resumed or forked at an
epoch boundary therefore continues exactly as if it had never stopped.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from critui.config import RunSpec
from critui.kinds import DatasetTensors, Deficit


def derive_seed(seed: int, epoch: int, purpose: str) -> int:
    """A 63-bit seed that depends on (run seed, epoch, purpose) and nothing else."""
    digest = hashlib.sha256(f"{seed}/{epoch}/{purpose}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def generator(device: torch.device, seed: int, epoch: int, purpose: str) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(derive_seed(seed, epoch, purpose))


@dataclass
class DeviceData:
    """The dataset on the device: float32, normalised, test set always clean."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    augment: str


def prepare_data(data: DatasetTensors, device: torch.device, augment: str) -> DeviceData:
    """Move the dataset to the device once and normalise it there."""
    mean = torch.tensor(data.mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    std = torch.tensor(data.std, dtype=torch.float32, device=device).view(1, -1, 1, 1)

    def normalise(x: torch.Tensor) -> torch.Tensor:
        x = x.to(device)
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        return ((x - mean) / std).contiguous()

    return DeviceData(
        train_x=normalise(data.train_x),
        train_y=data.train_y.to(device=device, dtype=torch.long),
        test_x=normalise(data.test_x),
        test_y=data.test_y.to(device=device, dtype=torch.long),
        num_classes=len(data.classes),
        augment=data.augment if augment == "auto" else augment,
    )


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


def lr_at(spec: RunSpec, epoch: int) -> float:
    """The learning rate of ``epoch``: lr * decay^epoch, counted from epoch 0.

    The paper never resets the schedule at removal (a known confound, hence
    ``optim.after_removal``): ``reset`` restarts the decay at the removal epoch, and
    ``constant`` holds the LR the run had at removal.
    """
    lr, decay = spec.optim["lr"], spec.optim["decay"]
    policy = spec.optim["after_removal"]
    window = spec.window()
    if window is None or policy == "continue" or epoch < window[1]:
        return lr * decay**epoch
    removal = window[1]
    return lr * decay ** (epoch - removal) if policy == "reset" else lr * decay**removal


def make_optimizer(spec: RunSpec, model: torch.nn.Module) -> torch.optim.Optimizer:
    o = spec.optim
    if o["name"] == "adam":
        return torch.optim.Adam(model.parameters(), lr=o["lr"], weight_decay=o["weight_decay"])
    return torch.optim.SGD(model.parameters(), lr=o["lr"], momentum=o["momentum"], weight_decay=o["weight_decay"])


@dataclass
class EpochResult:
    train_loss: float
    train_acc: float
    finite: bool


def train_epoch(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    data: DeviceData,
    spec: RunSpec,
    epoch: int,
    deficit: Deficit | None,
) -> EpochResult:
    """One pass over the training set; the only host sync is the reduction at the end."""
    device = data.train_x.device
    seed = spec.seed
    batch_size = spec.optim["batch_size"]
    active = deficit is not None and spec.deficit_active(epoch)
    for group in optimizer.param_groups:
        group["lr"] = lr_at(spec, epoch)
    # Dropout and any plugin that uses the global RNG see a per-epoch seed too.
    torch.manual_seed(derive_seed(seed, epoch, "global"))
    order = torch.randperm(len(data.train_y), generator=generator(device, seed, epoch, "order"), device=device)
    deficit_gen = generator(device, seed, epoch, "deficit")
    augment_gen = generator(device, seed, epoch, "augment")

    model.train()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        if len(idx) < 2:  # BatchNorm cannot train on a single sample
            break
        x, y = data.train_x[idx], data.train_y[idx]
        if active:
            x, y = deficit.apply(x, y, epoch, deficit_gen)  # type: ignore[union-attr]
        if data.augment == "crop-flip":
            x = crop_flip(x, augment_gen)
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.detach() * len(idx)
        correct += (logits.detach().argmax(1) == y).sum()
        seen += len(idx)
    mean_loss = (loss_sum / max(seen, 1)).item()
    return EpochResult(mean_loss, correct.item() / max(seen, 1), bool(torch.isfinite(torch.tensor(mean_loss))))


@torch.inference_mode()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> tuple[float, float]:
    """Mean loss and accuracy on (x, y), in large batches, BatchNorm in eval mode."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=x.device)
    correct = torch.zeros((), device=x.device, dtype=torch.long)
    for start in range(0, len(y), batch_size):
        logits = model(x[start : start + batch_size])
        target = y[start : start + batch_size]
        loss_sum += F.cross_entropy(logits.float(), target, reduction="sum")
        correct += (logits.argmax(1) == target).sum()
    model.train(was_training)
    return (loss_sum / len(y)).item(), correct.item() / len(y)
