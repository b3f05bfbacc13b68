"""The kinds of plugin: what a deficit, a model, a dataset, a metric and a launcher must provide.

A plugin subclasses one of these and hands the class to the ``register`` callable of its
hook (see :mod:`critui.hookspecs`). Class attributes describe it; the training worker
instantiates the first four with resolved parameters, the manager the launcher. Built-ins in
:mod:`critui.builtin` are written exactly the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from critui.params import Param

if TYPE_CHECKING:
    import torch

KINDS = ("deficits", "models", "datasets", "metrics", "launchers")


class Plugin:
    """Common description of every plugin: its kind, name, one-line description and parameters."""

    kind: ClassVar[str] = ""
    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    params: ClassVar[tuple[Param, ...]] = ()
    aliases: ClassVar[tuple[str, ...]] = ()


class Deficit(Plugin):
    """A sensory deficit applied to training batches while its window is open.

    ``level`` is ``"low"`` when the deficit changes input statistics (blur, noise) and
    ``"high"`` when it keeps them but changes the task (vertical flip, label permutation).
    Any fixed state (a permutation, a noise seed) is derived in ``__init__`` from ``seed``,
    so the same run seed always gives the same deficit.
    """

    kind = "deficits"
    level: ClassVar[str] = "low"

    def __init__(self, params: dict[str, Any], seed: int, num_classes: int, input_shape: tuple[int, ...]):
        self.settings = params
        self.seed = seed
        self.num_classes = num_classes
        self.input_shape = input_shape

    def apply(
        self, x: torch.Tensor, y: torch.Tensor, epoch: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the deficit version of a batch on the device.

        ``x`` is a normalised float batch N×C×H×W, ``y`` int64 labels. Must not modify its
        inputs in place, must keep shapes and dtypes, and may draw randomness only from
        ``generator`` (already seeded from the run seed and epoch, on ``x``'s device).
        """
        raise NotImplementedError

    def before_epoch(self, model: torch.nn.Module, epoch: int, active: bool) -> None:
        """Act on the model itself, at the start of every training epoch (in or out of the window).

        For deficits that change the learner rather than its input: freezing a pathway,
        masking gradients, gating a layer. ``active`` says whether the window covers
        ``epoch``; set the model's state from it every time (never toggle), so a run resumed
        or forked at any epoch sees exactly what it would have seen. ``model`` is the
        eager module (a compiled one shares its parameters and submodules). A deficit that
        only acts on the model returns ``(x, y)`` unchanged from ``apply``. Default: nothing.
        """


class Model(Plugin):
    """An architecture: ``build`` returns a fresh ``torch.nn.Module`` producing logits."""

    kind = "models"

    def build(self, input_shape: tuple[int, int, int], num_classes: int, **params: Any) -> torch.nn.Module:
        """Build the network for C×H×W inputs and ``num_classes`` outputs.

        The Fisher metric reports one trace per convolution or linear layer, in the order
        the modules are registered, under their module names: name them well.
        """
        raise NotImplementedError


@dataclass
class DatasetTensors:
    """A whole dataset as tensors, loaded once and moved to the device once.

    Images are N×C×H×W, uint8 (0..255, divided by 255 before normalising) or float32
    (already in 0..1). ``mean``/``std`` are per channel, in 0..1 units. ``augment`` is the
    training augmentation the dataset is usually trained with: ``"crop-flip"`` (pad 4,
    random crop, horizontal flip) or ``"none"``.

    ``loss`` says what kind of task it is. ``"cross_entropy"`` (the default): a
    classification, ``y`` int64 labels, the score is test accuracy (higher is better).
    ``"half_mse"`` (½ · mean of the squared errors over every output entry) or
    ``"half_sse"`` (½ · their sum): a regression, ``y`` float targets shaped like the
    model's output, ``classes`` may be empty, and the score is the test mean squared error
    (lower is better). ``x`` need not be an image: any N×... float tensor, with ``mean`` and
    ``std`` of one value (``(0.0,)``, ``(1.0,)`` leave it as it is).
    """

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: str = "none"
    info: dict[str, Any] = field(default_factory=dict)
    loss: str = "cross_entropy"

    @property
    def regression(self) -> bool:
        """Whether the task is a regression (a squared-error loss, scored by test MSE)."""
        return self.loss != "cross_entropy"

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train_x.shape[1:])  # type: ignore[return-value]


class Dataset(Plugin):
    """A source of labelled images. ``load`` runs once per run, in the worker."""

    kind = "datasets"

    def load(self, params: dict[str, Any], seed: int) -> DatasetTensors:
        """Return the train and test tensors. Raise ``CritUIError`` for missing files."""
        raise NotImplementedError

    def check(self, params: dict[str, Any]) -> None:
        """Cheaply say whether ``load`` can work, before a run is created; raise ``CritUIError``
        if not (missing files that cannot be downloaded). Default: nothing to check."""


@dataclass
class MetricContext:
    """What a metric can see at the end of an epoch. All tensors are on ``device``.

    ``train_x``/``test_x`` are clean and normalised. ``deficit`` is the run's deficit
    object, or None; ``deficit_active`` says whether its window covered this epoch.
    """

    model: torch.nn.Module
    epoch: int
    epochs: int
    device: torch.device
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    seed: int
    deficit: Deficit | None = None
    deficit_active: bool = False
    spec: Any = None  # the run's RunSpec (its optimiser, model and dataset settings), or None


class Metric(Plugin):
    """A measurement taken at the end of some epochs.

    ``when(epoch, epochs)`` says whether to run this epoch; ``compute`` returns finite floats
    under keys that stay the same from epoch to epoch.
    """

    kind = "metrics"

    def __init__(self, params: dict[str, Any], seed: int):
        self.settings = params
        self.seed = seed

    def when(self, epoch: int, epochs: int) -> bool:
        """Whether to compute at the end of ``epoch`` (0-based) of ``epochs``. Default: always."""
        return True

    def compute(self, ctx: MetricContext) -> dict[str, float]:
        raise NotImplementedError

    def reference(self, ctx: MetricContext) -> dict[str, list[tuple[float, float]]] | None:
        """Optional: what theory (or a reference implementation) predicts for some of this
        metric's keys over the whole run, as ``{key: [(epoch, value), ...]}``; None (the
        default) for none. Called once when a worker starts, with the context of its first
        epoch (``ctx.deficit`` and its settings give the window). The worker records it as a
        ``reference`` event; ``critui show`` prints it beside the measured values and the TUI
        overlays it on the metric's chart. Keys are this metric's own (``s1``, not
        ``singular-values.s1``); at most 64 series of 5,000 finite points each."""
        return None


class Worker(Protocol):
    """A started worker, as the manager sees it: the part of ``subprocess.Popen`` it uses.

    ``poll`` returns None while the worker runs, then its exit code (negative: killed by that
    signal); ``wait`` raises ``subprocess.TimeoutExpired`` after ``timeout`` seconds.
    ``send_signal(SIGTERM)`` asks for a clean stop (the worker records ``cancelled``);
    ``kill`` stops it at once. ``pid`` is a process id on this machine, or None; ``job`` is
    what the launcher's ``alive`` recognises later, from another critui process.
    """

    pid: int | None
    job: str | None
    returncode: int | None

    def poll(self) -> int | None: ...
    def wait(self, timeout: float | None = None) -> int: ...
    def send_signal(self, sig: int) -> None: ...
    def terminate(self) -> None: ...
    def kill(self) -> None: ...


class Launcher(Plugin):
    """Where workers run: ``launchers.local`` starts them on this machine; a launcher plugin
    hands them to an existing engine (Slurm through submitit, Ray), never a home-made cluster.

    The worker is always ``critui.train.worker`` on a run directory, which must be on a file
    system the worker's machine shares with this one: the manager follows ``events.jsonl``
    there, whoever runs the worker. :mod:`critui.launching` has what every launcher needs to
    start it: its command line, log file, environment and exit codes, ``start_worker`` (on
    this machine) and ``run_worker`` (in the calling process, a cluster job's), so that a
    launcher never imports the worker, which loads the plugins. A launcher never changes what
    a run computes, so its settings are not part of the run spec.
    """

    kind = "launchers"
    #: Whether workers run on this machine: then --gpus/--per-gpu place them, and the CPU
    #: cores are split between them.
    local: ClassVar[bool] = False

    def __init__(self, params: dict[str, Any], home: Path):
        self.settings = params
        self.home = home

    def check(self) -> None:
        """Raise ``CritUIError`` now if workers cannot be started (a missing package, no
        scheduler on this machine), before any run is created. Default: nothing to check."""

    def start(self, run_dir: Path, env: dict[str, str]) -> Worker:
        """Start ``python -m critui.train.worker RUN_DIR`` (``critui.launching.worker_command``),
        or call ``critui.launching.run_worker`` in a job's own process, with ``env`` added to
        its environment, and return at once."""
        raise NotImplementedError

    def alive(self, job: str) -> bool | None:
        """Whether the worker of ``job`` (a ``Worker.job`` of an earlier start, perhaps by
        another critui process) is still queued or running; None when it cannot tell."""
        return None

    def cancel(self, job: str) -> bool:
        """Ask for ``job``'s worker to stop cleanly (it records ``cancelled``), from another
        critui process than the one that started it; False when this launcher cannot."""
        return False


BASES: dict[str, type[Plugin]] = {
    "deficits": Deficit,
    "models": Model,
    "datasets": Dataset,
    "metrics": Metric,
    "launchers": Launcher,
}
