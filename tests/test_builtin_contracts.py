"""The built-in plugins pass the same contract checks critui gives plugin authors.

Every plugin the ``critui`` distribution registers is checked, so a new built-in is covered
the day it is added; ``SMALL`` only shrinks the ones whose defaults are slow to check.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from critui.plugins import build_registry
from critui.testing import check_plugin

REGISTRY = build_registry()
BUILTINS = sorted(p.id for p in REGISTRY.plugins.values() if p.distribution == "critui")

SMALL = {
    "models.allcnn": {"width": 0.05},
    "models.cnn": {"width": 4},
    "models.fc": {"width": 16},
    "datasets.synthetic": {"n_train": 60, "n_test": 40},
    "metrics.fisher": {"probe": 16, "chunk": 8},
    "launchers.slurm": {"cluster": "local"},  # submitit's local backend: no Slurm here
    "launchers.ray": {"address": "local"},  # a Ray head on this machine, for this process
}
# (input shape, classes): the embedded dataset's, and CIFAR-10's.
SHAPES = [((1, 16, 16), 10), ((3, 32, 32), 10)]


def fake_cifar(root, images_per_batch: int = 20) -> str:
    """A cifar-10-batches-py folder in the official python format, with a few random images."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (images_per_batch, 3072), dtype=np.uint8),
                 b"labels": [i % 10 for i in range(images_per_batch)]}
        (folder / name).write_bytes(pickle.dumps(batch))
    return str(root)


def test_every_kind_has_builtins():
    assert {pid.split(".")[0] for pid in BUILTINS} == {"deficits", "models", "datasets", "metrics", "launchers"}


@pytest.mark.parametrize("plugin_id", BUILTINS)
def test_builtin_meets_the_contract(plugin_id, tmp_path):
    info = REGISTRY.get(plugin_id)
    params = dict(SMALL.get(plugin_id, {}))
    if info.kind == "launchers":  # real workers, started and cancelled through it
        if plugin_id == "launchers.ray":
            pytest.importorskip("ray.job_submission")
        check_plugin(info.cls, params)
        return
    if info.kind == "datasets":
        if plugin_id == "datasets.cifar10":
            params.update(root=fake_cifar(tmp_path), download=False)
            data = check_plugin(info.cls, params, input_shape=(3, 32, 32), num_classes=10)
            assert len(data.train_y) == 100 and data.augment == "crop-flip"
        else:
            check_plugin(info.cls, params)
        return
    for input_shape, num_classes in SHAPES:
        check_plugin(info.cls, params, input_shape=input_shape, num_classes=num_classes)
