"""The built-in datasets: the generated ``synthetic`` one and the CIFAR-10 loader.

CIFAR-10 is exercised on a tiny folder written in the real ``cifar-10-batches-py`` pickle
format, so no test needs the network or torchvision.
"""

from __future__ import annotations

import pickle
import sys
import types
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from critui.builtin.datasets import (
    CIFAR_MEAN,
    CIFAR_STD,
    Cifar10,
    Synthetic,
    flip_partner,
    synthetic_patterns,
)
from critui.builtin.deficits import Blur
from critui.errors import CritUIError
from critui.params import resolve
from critui.plugins import get_registry


def synthetic(**given) -> dict:
    return resolve(Synthetic.params, given, "dataset")


def cifar(**given) -> dict:
    return resolve(Cifar10.params, given, "dataset")


def blur(x: torch.Tensor) -> torch.Tensor:
    deficit = Blur({"size": 8, "start": 0, "end": 99}, 0, 10, tuple(x.shape[1:]))
    return deficit.apply(x, torch.zeros(len(x), dtype=torch.long), 0, None)[0]


# --- synthetic --------------------------------------------------------------------------------


def test_both_datasets_are_registered():
    registry = get_registry()
    assert registry.get("datasets.synthetic").cls is Synthetic
    assert registry.get("datasets.cifar10").cls is Cifar10
    assert not registry.failures


def test_synthetic_default_shapes_labels_and_normalisation():
    data = Synthetic().load(synthetic(), seed=0)
    assert data.train_x.shape == (3000, 1, 16, 16)
    assert data.test_x.shape == (2000, 1, 16, 16)
    assert data.train_x.dtype == torch.float32
    assert 0.0 <= data.train_x.min() and data.train_x.max() <= 1.0
    assert 0.0 <= data.test_x.min() and data.test_x.max() <= 1.0
    assert data.train_y.dtype == torch.int64
    assert torch.bincount(data.train_y).tolist() == [300] * 10
    assert torch.bincount(data.test_y).tolist() == [200] * 10
    assert len(data.classes) == 10 and len(set(data.classes)) == 10
    assert data.augment == "none"
    assert data.mean == pytest.approx(data.train_x.mean(dim=(0, 2, 3)).tolist(), rel=1e-5)
    assert data.std == pytest.approx(data.train_x.std(dim=(0, 2, 3)).tolist(), rel=1e-5)


def test_synthetic_depends_on_its_own_seed_not_the_run_seed():
    params = synthetic(n_train=200, n_test=100)
    first = Synthetic().load(params, seed=0)
    again = Synthetic().load(params, seed=123)
    other = Synthetic().load({**params, "seed": 1}, seed=0)
    assert torch.equal(first.train_x, again.train_x) and torch.equal(first.test_y, again.test_y)
    assert not torch.allclose(first.train_x, other.train_x)


def test_synthetic_sizes_channels_and_classes_follow_the_params():
    data = Synthetic().load(synthetic(size=32, channels=3, classes=7, n_train=70, n_test=35), 0)
    assert data.train_x.shape == (70, 3, 32, 32)
    assert data.test_x.shape == (35, 3, 32, 32)
    assert torch.bincount(data.train_y).tolist() == [10] * 7
    assert len(data.classes) == 7 and len(data.mean) == 3


def test_synthetic_size_must_fit_whole_tile_periods():
    with pytest.raises(CritUIError, match="multiple of 4"):
        Synthetic().load(synthetic(size=18), 0)


def test_synthetic_generates_its_default_size():
    # How long it takes is measured by tests/bench/default_run.py: a test must pass on a loaded machine.
    data = Synthetic().load(synthetic(), 0)
    assert len(data.train_y) == synthetic()["n_train"] and len(data.test_y) == synthetic()["n_test"]


def test_blur_erases_the_fine_cue_and_keeps_the_coarse_one():
    # Only the fine cue: after blur, the images are flat (the tile sums to zero per period).
    fine_only = synthetic(coarse=0.0, jitter=0.0, pink=0.0, white=0.0, n_train=200, n_test=10)
    fine = Synthetic().load(fine_only, 0).train_x - 0.5
    assert fine.pow(2).mean().sqrt() > 0.1
    assert blur(fine).pow(2).mean().sqrt() < 0.02 * fine.pow(2).mean().sqrt()
    # Only the coarse cue: most of it survives blur.
    coarse_only = synthetic(fine=0.0, jitter=0.0, pink=0.0, white=0.0, n_train=200, n_test=10)
    coarse = Synthetic().load(coarse_only, 0).train_x - 0.5
    assert blur(coarse).pow(2).mean().sqrt() > 0.5 * coarse.pow(2).mean().sqrt()


def test_blurred_images_of_classes_differing_only_in_tile_are_nearly_equal():
    data = Synthetic().load(
        synthetic(coarse=0.0, jitter=0.0, pink=0.0, white=0.0, n_train=40, n_test=10), 0
    )
    a, b = data.train_x[data.train_y == 0][:1], data.train_x[data.train_y == 2][:1]
    assert (a - b).abs().max() > 0.1
    assert (blur(a) - blur(b)).abs().max() < 0.01


def test_tiles_sum_to_zero_along_every_row_and_column():
    tiles, _ = synthetic_patterns(synthetic())
    assert tiles.shape == (10, 1, 4, 4)
    assert tiles.sum(dim=-1).abs().max() < 1e-5
    assert tiles.sum(dim=-2).abs().max() < 1e-5


@pytest.mark.parametrize("classes", [10, 9])
def test_tile_and_template_sets_are_closed_under_vertical_flip(classes):
    tiles, templates = synthetic_patterns(synthetic(classes=classes))
    for label in range(classes):
        partner = flip_partner(label, classes)
        assert torch.allclose(torch.flip(tiles[label], dims=(-2,)), tiles[partner], atol=1e-6)
        assert torch.allclose(
            torch.flip(templates[label], dims=(-2,)), templates[partner], atol=1e-6
        )
    # Partners are distinct classes, except an odd last class that is its own flip.
    assert [flip_partner(k, classes) for k in range(classes)][:4] == [1, 0, 3, 2]
    assert flip_partner(classes - 1, classes) == (classes - 1 if classes % 2 else classes - 2)


def test_a_flipped_class_looks_like_its_partner_class():
    data = Synthetic().load(synthetic(), 0)
    means = torch.stack([data.train_x[data.train_y == k].mean(0) for k in range(10)])
    flipped = torch.flip(means, dims=(-2,))
    distance = (flipped[:, None] - means[None]).pow(2).sum(dim=(-3, -2, -1))
    assert distance.argmin(dim=1).tolist() == [flip_partner(k, 10) for k in range(10)]


# --- cifar10 ----------------------------------------------------------------------------------

PER_BATCH = 20
NAMES = [f"name{k}" for k in range(10)]


def pixel_value(index: int, channel: int) -> int:
    return (index + 50 * channel) % 256


def write_batch(path: Path, first_index: int, count: int) -> None:
    # Rows are R(1024) G(1024) B(1024), as in the real files; labels come sorted by class
    # (0, 0, 1, 1, ...) so that a plain prefix would not be class-balanced.
    rows = np.zeros((count, 3072), dtype=np.uint8)
    for i in range(count):
        for channel in range(3):
            rows[i, channel * 1024 : (channel + 1) * 1024] = pixel_value(first_index + i, channel)
    labels = [i * 10 // count for i in range(count)]
    with path.open("wb") as handle:
        pickle.dump({b"data": rows, b"labels": labels, b"batch_label": b"fake"}, handle)


def write_fake_cifar(root: Path) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for b in range(5):
        write_batch(folder / f"data_batch_{b + 1}", b * PER_BATCH, PER_BATCH)
    write_batch(folder / "test_batch", 1000, 10)
    with (folder / "batches.meta").open("wb") as handle:
        pickle.dump({b"label_names": [n.encode() for n in NAMES]}, handle)
    return folder


def test_cifar10_reads_the_python_batches_from_root(tmp_path):
    write_fake_cifar(tmp_path)
    data = Cifar10().load(cifar(root=str(tmp_path)), 0)
    assert data.train_x.shape == (5 * PER_BATCH, 3, 32, 32) and data.train_x.dtype == torch.uint8
    assert data.test_x.shape == (10, 3, 32, 32)
    assert data.train_y.tolist()[:4] == [0, 0, 1, 1] and data.train_y.dtype == torch.int64
    assert data.test_y.tolist() == list(range(10))
    for index in (0, 37, 99):
        for channel in range(3):
            assert torch.all(data.train_x[index, channel] == pixel_value(index, channel))
    assert data.classes == NAMES
    assert data.mean == CIFAR_MEAN and data.std == CIFAR_STD
    assert data.augment == "crop-flip"


def test_cifar10_subsets_are_class_balanced_prefixes(tmp_path):
    write_fake_cifar(tmp_path)
    data = Cifar10().load(cifar(root=str(tmp_path), n_train=10, n_test=5), 0)
    assert torch.bincount(data.train_y, minlength=10).tolist() == [1] * 10
    # The first image of each class, in file order: every other image of data_batch_1.
    assert data.train_x[:, 0, 0, 0].tolist() == [pixel_value(i, 0) for i in range(0, 20, 2)]
    assert data.test_x.shape[0] == 5 and len(set(data.test_y.tolist())) == 5


def test_cifar10_root_defaults_to_critui_data(tmp_path, monkeypatch):
    write_fake_cifar(tmp_path / "elsewhere")
    monkeypatch.setenv("CRITUI_DATA", str(tmp_path / "elsewhere"))
    data = Cifar10().load(cifar(), 0)
    assert data.train_x.shape[0] == 5 * PER_BATCH
    assert data.info["folder"] == str(tmp_path / "elsewhere" / "cifar-10-batches-py")


def test_missing_cifar10_without_torchvision_says_where_and_how_to_fix(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)  # makes `import torchvision` fail
    root = tmp_path / "nowhere"
    with pytest.raises(CritUIError) as caught:
        Cifar10().load(cifar(root=str(root)), 0)
    message = str(caught.value)
    assert str(root / "cifar-10-batches-py") in message
    assert "torchvision" in message and "not installed" in message
    assert "cifar-10-python.tar.gz" in message
    assert "--set dataset.root=DIR" in message and "CRITUI_DATA=DIR" in message
    assert "critui[vision]" in message
    assert "\n" not in message


def test_cifar10_with_download_off_does_not_try(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)
    with pytest.raises(CritUIError, match="download=false"):
        Cifar10().load(cifar(root=str(tmp_path), download=False), 0)


def fake_torchvision(cifar10_constructor) -> types.ModuleType:
    module = types.ModuleType("torchvision")
    module.datasets = types.SimpleNamespace(CIFAR10=cifar10_constructor)
    return module


def test_a_failed_download_is_reported_as_offline(tmp_path, monkeypatch):
    def offline(root, train, download):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setitem(sys.modules, "torchvision", fake_torchvision(offline))
    with pytest.raises(CritUIError, match="offline") as caught:
        Cifar10().load(cifar(root=str(tmp_path)), 0)
    assert str(tmp_path / "cifar-10-batches-py") in str(caught.value)


def test_a_download_is_then_read_from_the_folder(tmp_path, monkeypatch):
    calls = []

    def download(root, train, download):
        calls.append(root)
        write_fake_cifar(Path(root))

    monkeypatch.setitem(sys.modules, "torchvision", fake_torchvision(download))
    data = Cifar10().load(cifar(root=str(tmp_path)), 0)
    assert calls == [str(tmp_path)]
    assert data.train_x.shape[0] == 5 * PER_BATCH


def test_an_incomplete_cifar10_folder_names_the_missing_file(tmp_path):
    folder = write_fake_cifar(tmp_path)
    (folder / "data_batch_3").unlink()
    with pytest.raises(CritUIError, match="data_batch_3"):
        Cifar10().load(cifar(root=str(tmp_path)), 0)
