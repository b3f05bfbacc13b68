"""The paper's conventions, pinned: deficit windows, deficits' definitions, LR schedule, clean test data."""

from __future__ import annotations

import pytest
import torch

from critui.builtin.deficits import Blur, LabelPermutation, Noise, VerticalFlip, derangement
from critui.config import build_spec
from critui.plugins import get_registry
from critui.train.loop import DeviceData, lr_at, train_epoch


@pytest.fixture(scope="module")
def registry():
    return get_registry()


def window(start: int, end: int) -> dict:
    return {"start": start, "end": end}


def test_window_is_start_inclusive_end_exclusive(registry):
    spec = build_spec(registry, plugins=["deficits.blur"], sets=["deficit.start=2", "deficit.end=5"])
    assert [e for e in range(8) if spec.deficit_active(e)] == [2, 3, 4]
    empty = build_spec(registry, plugins=["deficits.blur"], sets=["deficit.start=3", "deficit.end=3"])
    assert not any(empty.deficit_active(e) for e in range(8))
    assert not any(build_spec(registry).deficit_active(e) for e in range(8))


@pytest.mark.parametrize("num_classes", [2, 3, 10, 100])
def test_label_permutation_is_a_fixed_derangement_from_the_seed(num_classes):
    perm = derangement(num_classes, seed=5)
    assert sorted(perm.tolist()) == list(range(num_classes))
    assert not (perm == torch.arange(num_classes)).any()
    assert torch.equal(perm, derangement(num_classes, seed=5))
    deficit = LabelPermutation(window(0, 9), 5, num_classes, (1, 4, 4))
    y = torch.arange(num_classes).repeat(3)
    x = torch.randn(len(y), 1, 4, 4)
    x_out, y_out = deficit.apply(x, y, epoch=0, generator=torch.Generator())
    assert torch.equal(x_out, x)
    assert torch.equal(y_out, deficit.permutation[y])
    # The same class always maps to the same label, in every epoch: not per-sample shuffling.
    _, y_later = deficit.apply(x, y, epoch=7, generator=torch.Generator().manual_seed(99))
    assert torch.equal(y_out, y_later)


def test_permutations_differ_between_seeds():
    assert not all(torch.equal(derangement(10, 0), derangement(10, s)) for s in range(1, 5))


def test_noise_replaces_images_and_keeps_labels():
    deficit = Noise({"std": 1.0, **window(0, 9)}, 0, 10, (1, 16, 16))
    x = torch.full((256, 1, 16, 16), 5.0)
    y = torch.randint(0, 10, (256,))
    x_out, y_out = deficit.apply(x, y, 0, torch.Generator().manual_seed(0))
    assert torch.equal(y_out, y)
    assert abs(x_out.mean().item()) < 0.02 and abs(x_out.std().item() - 1.0) < 0.02
    assert torch.equal(x_out, deficit.apply(x, y, 0, torch.Generator().manual_seed(0))[0])


@pytest.mark.parametrize("side", [32, 64])
def test_blur_erases_a_zero_mean_periodic_tile_of_its_own_period(side):
    """Blur to size 8 at 32 px (16 at 64 px) averages over a 4-pixel period, as at 16 px."""
    deficit = Blur({"size": 8, **window(0, 9)}, 0, 10, (1, side, side))
    period = side // deficit.target_side(side)
    tile = torch.randn(period, period)
    tile -= tile.mean(dim=0, keepdim=True)
    tile -= tile.mean(dim=1, keepdim=True)
    image = tile.repeat(side // period, side // period).view(1, 1, side, side)
    blurred, _ = deficit.apply(image, torch.zeros(1, dtype=torch.long), 0, None)
    margin = 2 * period  # the image border is clamped, not periodic: its effect reaches ~2 periods in
    interior = blurred[..., margin:-margin, margin:-margin]
    assert interior.abs().max().item() < 1e-5 * image.abs().max().item()
    # A smooth image survives blur almost unchanged.
    ramp = torch.linspace(-1, 1, side).view(1, 1, 1, side).expand(1, 1, side, side)
    smooth, _ = deficit.apply(ramp, torch.zeros(1, dtype=torch.long), 0, None)
    assert (smooth - ramp)[..., period:-period, period:-period].abs().max().item() < 0.05


def test_vertical_flip_is_an_involution_on_rows():
    deficit = VerticalFlip(window(0, 9), 0, 10, (1, 4, 4))
    x = torch.arange(16.0).view(1, 1, 4, 4)
    flipped, _ = deficit.apply(x, torch.zeros(1, dtype=torch.long), 0, None)
    assert torch.equal(flipped[0, 0, 0], x[0, 0, 3])
    assert torch.equal(deficit.apply(flipped, torch.zeros(1, dtype=torch.long), 0, None)[0], x)


def test_lr_continues_decaying_through_removal_unless_told_otherwise(registry):
    sets = ["deficit.end=4", "optim.lr=0.05", "optim.decay=0.97"]
    cont = build_spec(registry, plugins=["deficits.blur"], sets=sets)
    assert [lr_at(cont, e) for e in range(8)] == pytest.approx([0.05 * 0.97**e for e in range(8)])
    reset = build_spec(registry, plugins=["deficits.blur"], sets=sets + ["optim.after_removal=reset"])
    assert [lr_at(reset, e) for e in (3, 4, 5)] == pytest.approx([0.05 * 0.97**3, 0.05, 0.05 * 0.97])
    constant = build_spec(registry, plugins=["deficits.blur"], sets=sets + ["optim.after_removal=constant"])
    assert [lr_at(constant, e) for e in (4, 9, 30)] == pytest.approx([0.05 * 0.97**4] * 3)


class Recorder(VerticalFlip):
    """A deficit that remembers every batch it was given."""

    seen: list = []

    def apply(self, x, y, epoch, generator):
        Recorder.seen.append(x.clone())
        return super().apply(x, y, epoch, generator)


def test_only_training_batches_pass_through_the_deficit(registry):
    spec = build_spec(registry, plugins=["deficits.flip"], sets=["deficit.end=1", "optim.batch_size=8"])
    train_x = torch.randn(16, 1, 4, 4)
    test_x = torch.randn(8, 1, 4, 4) + 100.0  # unmistakable if it ever reached the deficit
    data = DeviceData(train_x, torch.randint(0, 3, (16,)), test_x.clone(), torch.randint(0, 3, (8,)), 3, "none")
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    Recorder.seen = []
    deficit = Recorder(spec.deficit.params, 0, 3, (1, 4, 4))
    train_epoch(model, optimizer, data, spec, 0, deficit)
    assert len(Recorder.seen) == 2 and all(batch.abs().max() < 50 for batch in Recorder.seen)
    train_epoch(model, optimizer, data, spec, 1, deficit)  # epoch 1 is past the window
    assert len(Recorder.seen) == 2
    assert torch.equal(data.test_x, test_x) and torch.equal(data.train_x, train_x)
