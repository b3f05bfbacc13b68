"""``critui new-plugin NAME --kind KIND``: write a working plugin distribution to start from.

The folder it writes is a complete distribution: ``pyproject.toml`` with the ``critui``
entry point, a ``README.md``, a module holding one documented example plugin of the chosen
kind, and a test that runs critui's contract checks on it. ``pip install -e .`` makes
``critui plugins`` list it, and its tests pass as generated::

    critui-plugin-NAME/
        pyproject.toml
        README.md
        critui_NAME/__init__.py
        tests/test_NAME.py

Templates are ``string.Template`` text: ``$name`` and friends are filled in, and Python's own
braces need no escaping.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from string import Template

from critui import __version__
from critui.errors import CritUIError

SCAFFOLD_KINDS = ("deficit", "model", "dataset", "metric", "launcher")
DIST_PREFIX = "critui-plugin-"
_NAME = re.compile(r"^[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*$")


@dataclass(frozen=True)
class Names:
    """Every spelling of a plugin's name a distribution needs."""

    name: str  # the plugin's name in its id: deficits.NAME
    kind: str  # deficit | model | dataset | metric | launcher
    dist: str  # the distribution: critui-plugin-NAME
    module: str  # the import package: critui_NAME
    cls: str  # the example class: CamelCase of NAME
    ident: str  # NAME as a Python identifier, for the test file

    @property
    def group(self) -> str:
        """The plugin kind as it appears in ids and hooks: ``deficits``."""
        return self.kind + "s"

    @property
    def plugin_id(self) -> str:
        return f"{self.group}.{self.name}"


def names_for(raw: str, kind: str) -> Names:
    """Check ``raw`` (``blur2``, ``my-blur`` or ``critui-plugin-my-blur``) and derive the names."""
    if kind not in SCAFFOLD_KINDS:
        raise CritUIError(f"--kind {kind!r} is not a plugin kind. Use one of {', '.join(SCAFFOLD_KINDS)}.")
    name = raw.strip().lower()
    if name.startswith(DIST_PREFIX):
        name = name[len(DIST_PREFIX):]
    if not _NAME.match(name):
        raise CritUIError(
            f"{raw!r} cannot name a plugin: use lowercase letters and digits, words joined by "
            "'-' or '_', starting with a letter (e.g. pixel-dropout). It becomes the plugin id "
            f"{kind}s.NAME, the distribution {DIST_PREFIX}NAME and the module critui_NAME."
        )
    name = name.replace("_", "-")
    ident = name.replace("-", "_")
    cls = "".join(part.capitalize() for part in name.split("-"))
    return Names(name=name, kind=kind, dist=DIST_PREFIX + name, module=f"critui_{ident}", cls=cls, ident=ident)


def new_plugin(raw_name: str, kind: str, parent: Path | str = ".") -> Path:
    """Write the distribution for plugin ``raw_name`` of ``kind`` under ``parent``; return its folder."""
    names = names_for(raw_name, kind)
    _refuse_taken_id(names)
    root = Path(parent) / names.dist
    if root.exists() and any(root.iterdir()):
        raise CritUIError(
            f"{root} already exists and is not empty; critui new-plugin never overwrites files. "
            "Choose another NAME, another --dir, or remove that folder."
        )
    files = render(names)
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def _refuse_taken_id(names: Names) -> None:
    """A scaffolded plugin whose id a loaded plugin already has would be refused when installed."""
    from critui.plugins import get_registry

    registry = get_registry()
    owner = registry.plugins.get(registry.aliases.get(names.plugin_id, names.plugin_id))
    if owner is not None:
        raise CritUIError(
            f"{names.plugin_id} is already the id of a plugin from {owner.distribution} {owner.version} "
            f"({owner.description}); an installed plugin cannot take an id that is loaded already. "
            f"Choose another NAME, e.g. `critui new-plugin my-{names.name} --kind {names.kind}`."
        )


def render(names: Names) -> dict[str, str]:
    """The files of the distribution, by path relative to its folder."""
    values = {
        "name": names.name,
        "kind": names.kind,
        "group": names.group,
        "plugin_id": names.plugin_id,
        "dist": names.dist,
        "module": names.module,
        "cls": names.cls,
        "ident": names.ident,
        "critui_min": _minimum_version(),
        "summary": SUMMARIES[names.kind],
        "run_args": RUN_ARGS[names.kind].format(plugin_id=names.plugin_id),
        # How --set addresses its parameters: deficit.p=0.3, but metrics.NAME.every=2.
        "section": f"metrics.{names.name}" if names.kind == "metric" else names.kind,
    }
    fill = lambda template: Template(template).substitute(values)  # noqa: E731
    return {
        "pyproject.toml": fill(PYPROJECT),
        "README.md": fill(README),
        f"{names.module}/__init__.py": fill(MODULES[names.kind]),
        f"tests/test_{names.ident}.py": fill(TESTS[names.kind]),
    }


def _minimum_version() -> str:
    """The running critui's major.minor: the contract the scaffold was written against."""
    parts = __version__.split(".")
    return ".".join(parts[:2]) if len(parts) >= 2 and parts[0].isdigit() else "0.1"


SUMMARIES = {
    "deficit": "a sensory deficit applied to training batches during a window of epochs",
    "model": "a network architecture",
    "dataset": "a dataset of labelled images",
    "metric": "a measurement taken at the end of training epochs",
    "launcher": "a place to run training workers",
}

RUN_ARGS = {
    "deficit": "--plugin {plugin_id} --set deficit.end=2 --epochs 4",
    "model": "--plugin {plugin_id} --epochs 2",
    "dataset": "--plugin {plugin_id} --epochs 2",
    "metric": "--plugin {plugin_id} --epochs 2",
    "launcher": "--launcher {plugin_id} --epochs 2",
}


PYPROJECT = '''\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "$dist"
version = "0.1.0"
description = "critui plugin: $summary"
readme = "README.md"
requires-python = ">=3.10"
dependencies = ["critui>=$critui_min"]

[project.optional-dependencies]
test = ["pytest>=8"]

# critui imports every module listed in this group and calls its hooks. The key is the entry
# point's name; the allow-list CRITUI_LOAD_PLUGINS accepts it or the distribution's name.
[project.entry-points.critui]
$name = "$module"

[tool.setuptools]
packages = ["$module"]

[tool.pytest.ini_options]
testpaths = ["tests"]
'''

README = '''\
# $dist

A critui plugin: $summary, with the id `$plugin_id`.

```bash
pip install -e '.[test]'   # installs it and registers its entry point
critui plugins             # lists $plugin_id with this distribution and its version
pytest                     # critui's contract checks, then your own tests
critui run $run_args
```

The plugin is in `$module/__init__.py`. Its parameters are declared once, as `Param`s in
`params`: `critui run --set $section.PARAM=VALUE`, TOML configs and the TUI all use them.
The tests in `tests/` run critui's contract checks through the `critui_contract` fixture
(it comes with critui) and show where to add your own.
'''


MODULES: dict[str, str] = {}
TESTS: dict[str, str] = {}

MODULES["deficit"] = '''\
"""A critui deficit plugin: $plugin_id.

critui imports this module through the entry point in pyproject.toml (group ``critui``)
and calls ``critui_register_deficits`` once, which registers the class below. Its id is
``deficits.NAME``; ``critui plugins`` lists it with its distribution's name and version.

torch is imported inside the methods that compute, not at the top: critui imports this
module every time it lists its plugins (``critui plugins``, the TUI's start, checking a
run's settings), and torch's import takes about a second.
"""

from __future__ import annotations

from critui.hookspecs import hookimpl
from critui.kinds import Deficit
from critui.params import Param


class $cls(Deficit):
    """Zero each pixel of a training image independently with probability ``p``.

    ``apply`` gets a normalised training batch on the device (``x``: float N×C×H×W,
    ``y``: int64 labels) while the window ``start <= epoch < end`` is open; critui adds
    those two parameters to every deficit. The contract (checked by ``critui_contract``):

    - return new tensors: never change ``x`` or ``y`` in place (they are slices of the
      dataset, and of the clean test set when metrics.deficit-accuracy scores the deficit);
    - keep shapes, dtypes and device;
    - draw randomness only from ``generator`` (seeded from the run seed and the epoch),
      and derive any fixed state in ``__init__`` from ``self.seed``, so that the same
      seed always gives the same deficit.
    """

    name = "$name"
    description = "Zero each pixel with probability p (zero is the mean in normalised units)."
    # "low": changes the input statistics (like blur); "high": keeps them, changes the task.
    level = "low"
    params = (Param("p", "float", 0.5, "probability that a pixel is zeroed", min=0.0, max=1.0),)

    def apply(self, x, y, epoch, generator):
        import torch

        keep = torch.rand(x.shape, generator=generator, device=x.device) >= self.settings["p"]
        return x * keep, y


@hookimpl
def critui_register_deficits(register):
    register($cls)
'''

TESTS["deficit"] = '''\
"""Tests of the plugin: critui's contract checks first, then its own behaviour."""

import torch

from $module import $cls

PLUGIN_ID = "$plugin_id"
DISTRIBUTION = "$dist"


def test_meets_the_deficit_contract(critui_contract):
    critui_contract.check_deficit($cls)
    critui_contract.check_deficit(
        $cls, {"p": 1.0}, input_shape=(1, 16, 16), num_classes=2
    )


def test_is_installed_and_discovered(critui_contract):
    critui_contract.check_registered(PLUGIN_ID, distribution=DISTRIBUTION)


def test_zeroes_about_p_of_the_pixels():
    params = {"p": 0.25, "start": 0, "end": 8}
    deficit = $cls(params, seed=0, num_classes=10, input_shape=(3, 16, 16))
    x, y = torch.ones(64, 3, 16, 16), torch.zeros(64, dtype=torch.long)
    out, _ = deficit.apply(x, y, 0, torch.Generator().manual_seed(0))
    assert abs((out == 0).float().mean().item() - 0.25) < 0.02
'''

MODULES["model"] = '''\
"""A critui model plugin: $plugin_id.

critui imports this module through the entry point in pyproject.toml (group ``critui``)
and calls ``critui_register_models`` once, which registers the class below. Its id is
``models.NAME``; ``critui plugins`` lists it with its distribution's name and version.

torch is imported inside the methods that compute, not at the top: critui imports this
module every time it lists its plugins (``critui plugins``, the TUI's start, checking a
run's settings), and torch's import takes about a second.
"""

from __future__ import annotations

from collections import OrderedDict

from critui.hookspecs import hookimpl
from critui.kinds import Model
from critui.params import Param


class $cls(Model):
    """One convolution with BatchNorm, global average pooling and a linear classifier.

    ``build`` gets the dataset's C×H×W, its number of classes and every declared parameter
    as a keyword argument, and returns a new ``nn.Module`` producing logits (no softmax).
    critui seeds torch's RNG from the run seed just before calling it. The Fisher metric
    reports one trace per convolution or linear layer under its module name, so name the
    modules: here ``conv`` and ``fc``.
    """

    name = "$name"
    description = "conv3x3-BN-ReLU, global average pool, linear: a minimal CNN."
    params = (Param("width", "int", 16, "channels of the convolution", min=1, max=4096),)

    def build(self, input_shape, num_classes, width=16):
        from torch import nn

        channels = input_shape[0]
        return nn.Sequential(
            OrderedDict(
                conv=nn.Conv2d(channels, width, 3, padding=1, bias=False),
                bn=nn.BatchNorm2d(width),
                relu=nn.ReLU(),
                pool=nn.AdaptiveAvgPool2d(1),
                flatten=nn.Flatten(),
                fc=nn.Linear(width, num_classes),
            )
        )


@hookimpl
def critui_register_models(register):
    register($cls)
'''

TESTS["model"] = '''\
"""Tests of the plugin: critui's contract checks first, then its own behaviour."""

from $module import $cls

PLUGIN_ID = "$plugin_id"
DISTRIBUTION = "$dist"


def test_meets_the_model_contract(critui_contract):
    critui_contract.check_model($cls)
    critui_contract.check_model(
        $cls, {"width": 4}, input_shape=(1, 28, 28), num_classes=2
    )


def test_is_installed_and_discovered(critui_contract):
    critui_contract.check_registered(PLUGIN_ID, distribution=DISTRIBUTION)


def test_width_sets_the_channels():
    model = $cls().build((3, 16, 16), 10, width=8)
    assert model.conv.out_channels == 8 and model.fc.out_features == 10
'''

MODULES["dataset"] = '''\
"""A critui dataset plugin: $plugin_id.

critui imports this module through the entry point in pyproject.toml (group ``critui``)
and calls ``critui_register_datasets`` once, which registers the class below. Its id is
``datasets.NAME``; ``critui plugins`` lists it with its distribution's name and version.

torch is imported inside the methods that compute, not at the top: critui imports this
module every time it lists its plugins (``critui plugins``, the TUI's start, checking a
run's settings), and torch's import takes about a second.
"""

from __future__ import annotations

import math

from critui.hookspecs import hookimpl
from critui.kinds import Dataset, DatasetTensors
from critui.params import Param


class $cls(Dataset):
    """Grey images of sinusoidal stripes; the class is the stripes' orientation.

    ``load`` runs once per run, in the training worker, and returns the whole train and test
    sets as tensors: images N×C×H×W (uint8 0..255, or float32 in 0..1 as here), integer
    labels, one name per class, and the per-channel mean and std critui normalises with.
    Generated data is drawn from a generator seeded by the ``seed`` parameter, so every run
    of a sweep sees the same images. A dataset read from files raises
    ``critui.errors.CritUIError`` saying where to put them when they are missing.
    """

    name = "$name"
    description = "Generated stripes, one orientation per class, random phase, noise. No download."
    params = (
        Param("seed", "int", 0, "seed of the dataset itself (not the run seed)", min=0),
        Param("classes", "int", 4, "orientations, evenly spaced over 180 degrees", min=2, max=36),
        Param("size", "int", 16, "image side in pixels", min=4, max=256),
        Param("n_train", "int", 2000, "training images", min=1, max=1_000_000),
        Param("n_test", "int", 1000, "test images", min=1, max=1_000_000),
        Param("noise", "float", 0.3, "std of the white noise added to each image", min=0.0),
    )

    def load(self, params, seed):
        import torch

        generator = torch.Generator().manual_seed(params["seed"])
        train_x, train_y = stripes(params["n_train"], params, generator)
        test_x, test_y = stripes(params["n_test"], params, generator)
        return DatasetTensors(
            train_x=train_x,
            train_y=train_y,
            test_x=test_x,
            test_y=test_y,
            classes=[f"{180 * k / params['classes']:g}deg" for k in range(params["classes"])],
            mean=tuple(train_x.mean(dim=(0, 2, 3)).tolist()),
            std=tuple(train_x.std(dim=(0, 2, 3)).tolist()),
            augment="none",
        )


def stripes(n, params, generator):
    """``n`` images (float32 N×1×size×size in 0..1) and their labels (the orientation index)."""
    import torch

    size, classes = params["size"], params["classes"]
    labels = torch.randint(0, classes, (n,), generator=generator)
    angle = labels.float() * math.pi / classes
    phase = torch.rand(n, generator=generator) * 2 * math.pi
    coords = torch.arange(size, dtype=torch.float32)
    rows, cols = coords.view(1, size, 1), coords.view(1, 1, size)
    along = cols * torch.cos(angle).view(n, 1, 1) + rows * torch.sin(angle).view(n, 1, 1)
    waves = torch.sin(2 * math.pi * along / 4 + phase.view(n, 1, 1))
    noise = params["noise"] * torch.randn((n, size, size), generator=generator)
    images = (0.5 + 0.25 * (waves + noise)).clamp(0, 1)
    return images.unsqueeze(1), labels


@hookimpl
def critui_register_datasets(register):
    register($cls)
'''

TESTS["dataset"] = '''\
"""Tests of the plugin: critui's contract checks first, then its own behaviour."""

from $module import $cls

PLUGIN_ID = "$plugin_id"
DISTRIBUTION = "$dist"
SMALL = {"n_train": 64, "n_test": 32}


def test_meets_the_dataset_contract(critui_contract):
    critui_contract.check_dataset(
        $cls, SMALL, input_shape=(1, 16, 16), num_classes=4
    )
    other = {**SMALL, "classes": 6, "size": 8}
    critui_contract.check_dataset(
        $cls, other, input_shape=(1, 8, 8), num_classes=6
    )


def test_is_installed_and_discovered(critui_contract):
    critui_contract.check_registered(PLUGIN_ID, distribution=DISTRIBUTION)


def test_seed_parameter_changes_the_images():
    params = {"seed": 0, "classes": 4, "size": 16, "n_train": 8, "n_test": 8, "noise": 0.3}
    first = $cls().load(params, seed=0)
    second = $cls().load({**params, "seed": 1}, seed=0)
    assert not (first.train_x == second.train_x).all()
'''

MODULES["metric"] = '''\
"""A critui metric plugin: $plugin_id.

critui imports this module through the entry point in pyproject.toml (group ``critui``)
and calls ``critui_register_metrics`` once, which registers the class below. Its id is
``metrics.NAME``; ``critui plugins`` lists it with its distribution's name and version.

torch is imported inside the methods that compute, not at the top: critui imports this
module every time it lists its plugins (``critui plugins``, the TUI's start, checking a
run's settings), and torch's import takes about a second.
"""

from __future__ import annotations

from critui.hookspecs import hookimpl
from critui.kinds import Metric
from critui.params import Param


class $cls(Metric):
    """The L2 norm of the model's weights, in total and for its last layer.

    At the end of every epoch for which ``when(epoch, epochs)`` is true, ``compute`` gets a
    ``MetricContext`` (the model, clean normalised data on ``ctx.device``, the epoch, the
    run seed, the deficit) and returns ``{key: float}``: the same keys every epoch, finite
    Python floats. It must not train or change the model; the worker records the values as
    a ``metric`` event. Its parameters are set with ``--set metrics.NAME.PARAM=VALUE``.
    """

    name = "$name"
    description = "L2 norm of all weights, and of the last layer's."
    params = (Param("every", "int", 1, "compute every k epochs (and always at the last)", min=1),)

    def when(self, epoch, epochs):
        return epoch % self.settings["every"] == 0 or epoch == epochs - 1

    def compute(self, ctx):
        import torch

        with torch.no_grad():
            weights = [p for p in ctx.model.parameters() if p.ndim > 1]
            total = sum(float(p.pow(2).sum()) for p in weights) ** 0.5
            last = float(weights[-1].norm()) if weights else 0.0
        return {"total": total, "last": last}


@hookimpl
def critui_register_metrics(register):
    register($cls)
'''

TESTS["metric"] = '''\
"""Tests of the plugin: critui's contract checks first, then its own behaviour."""

from types import SimpleNamespace

import pytest
from torch import nn

from $module import $cls

PLUGIN_ID = "$plugin_id"
DISTRIBUTION = "$dist"


def test_meets_the_metric_contract(critui_contract):
    critui_contract.check_metric($cls)
    critui_contract.check_metric($cls, {"every": 2}, epochs=5)


def test_is_installed_and_discovered(critui_contract):
    critui_contract.check_registered(PLUGIN_ID, distribution=DISTRIBUTION)


def test_measures_the_weights():
    linear = nn.Linear(3, 4, bias=False)
    nn.init.constant_(linear.weight, 0.5)
    metric = $cls({"every": 1}, seed=0)
    values = metric.compute(SimpleNamespace(model=linear))
    assert values == pytest.approx({"total": 0.5 * 12**0.5, "last": 0.5 * 12**0.5})
'''

MODULES["launcher"] = '''\
"""A critui launcher plugin: $plugin_id.

critui imports this module through the entry point in pyproject.toml (group ``critui``)
and calls ``critui_register_launchers`` once, which registers the class below. Its id is
``launchers.NAME``; ``critui run --launcher NAME`` and ``critui sweep --launcher NAME`` use it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from critui.hookspecs import hookimpl
from critui.kinds import Launcher
from critui.params import Param


class $cls(Launcher):
    """Workers on this machine at a lower CPU priority, so a sweep yields to interactive work.

    ``start(run_dir, env)`` starts ``python -m critui.train.worker RUN_DIR`` with ``env``
    added to its environment and returns at once, with a ``subprocess.Popen`` (or an object
    with its ``poll``, ``wait``, ``send_signal``, ``terminate``, ``kill`` and ``pid``).
    critui follows the run through its ``events.jsonl``, never through a pipe, and stops it
    with SIGTERM, which the worker takes as "record cancelled and exit". A launcher never
    changes what a run computes. Its settings are ``--set launcher.PARAM=VALUE``.
    """

    name = "$name"
    description = "Workers on this machine, at a lower CPU priority (nice)."
    local = True  # workers run here: --gpus and --per-gpu place them, the cores are split
    params = (Param("niceness", "int", 10, "how much lower the workers' priority", min=0, max=19),)

    def start(self, run_dir, env):
        niceness = self.settings["niceness"]
        with open(Path(run_dir) / "log.txt", "ab") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "critui.train.worker", str(run_dir)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
                start_new_session=True,  # a Ctrl-C reaches critui, which stops the worker cleanly
                preexec_fn=lambda: os.nice(niceness),
            )


@hookimpl
def critui_register_launchers(register):
    register($cls)
'''

TESTS["launcher"] = '''\
"""Tests of the plugin: critui's contract checks first, then its own behaviour."""

import json
import os
import signal
import time

from critui.config import build_spec
from critui.events import read_events
from critui.plugins import get_registry

from $module import $cls

PLUGIN_ID = "$plugin_id"
DISTRIBUTION = "$dist"


def test_meets_the_launcher_contract(critui_contract):
    critui_contract.check_launcher($cls)


def test_is_installed_and_discovered(critui_contract):
    critui_contract.check_registered(PLUGIN_ID, distribution=DISTRIBUTION)


def test_the_worker_runs_at_the_lower_priority(tmp_path):
    sets = ["train.epochs=100000", "dataset.n_train=64", "model.width=4"]
    spec = build_spec(get_registry(), sets=sets)
    (tmp_path / "spec.json").write_text(json.dumps(spec.to_json()))
    worker = $cls({"niceness": 7}, tmp_path).start(tmp_path, {})
    try:
        while not read_events(tmp_path) and worker.poll() is None:
            time.sleep(0.1)
        expected = min(19, os.getpriority(os.PRIO_PROCESS, 0) + 7)
        assert os.getpriority(os.PRIO_PROCESS, worker.pid) == expected
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)
'''
