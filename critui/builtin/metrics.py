"""Built-in metrics: the Fisher trace per layer, and accuracy on the deficit-transformed test set.

Both run in the training worker at the end of an epoch, on data already on the device.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from critui.hookspecs import hookimpl
from critui.kinds import Metric, MetricContext
from critui.params import Param, defaults
from critui.train import FISHER_ESTIMATORS
from critui.train.seeds import derive_seed

if TYPE_CHECKING:
    import torch

# torch, and critui.train.fisher which needs it, are imported inside the functions that
# compute, not here: listing the plugins and checking a run's settings then never pay
# torch's import (see critui/builtin/datasets.py).

# The default cadence: the trace moves fastest early (PAPER.md: a sharp rise in the first
# epochs, then a decline), so every epoch at first and every 5th after.
DENSE_EPOCHS = 10
SPARSE_EVERY = 5

# What the probe images are. "train": the training distribution as the network sees it, so
# while a deficit is on, the probe passes through it too (docs/results.md, "Which images
# the Fisher probe uses"); "clean": always the clean images.
PROBE_DATA = ("train", "clean")
# A spec written before `probe_data` existed measured clean images: it keeps doing so when
# such a run is resumed, so one run's trace never switches meaning half-way.
LEGACY_PROBE_DATA = "clean"


def fisher_due(epoch: int, epochs: int, every: int) -> bool:
    """Whether the Fisher cadence ``every`` measures at the end of ``epoch`` (0-based).

    ``every=0``: epochs 0-9, then 10, 15, 20, ...; ``every=k``: epochs 0, k, 2k, ...
    Either way the last epoch is always measured, so a run ends on a data point.
    """
    if epoch == epochs - 1:
        return True
    if every > 0:
        return epoch % every == 0
    return epoch < DENSE_EPOCHS or epoch % SPARSE_EVERY == 0


class Fisher(Metric):
    """Trace of the Fisher information of the weights, per conv/linear layer and in total."""

    name = "fisher"
    description = (
        "Trace of the Fisher information of the weights per layer and in total, "
        "labels sampled from the model, on a fixed class-balanced probe of training images, "
        "seen as training sees them (the deficit applied while it is on) or always clean."
    )
    params = (
        Param(
            "every",
            "int",
            0,
            "measure every k epochs (plus the last); 0 = every epoch for the first 10, then every 5th",
            min=0,
        ),
        Param(
            "probe",
            "int",
            500,
            "number of training images in the class-balanced probe",
            min=1,
        ),
        Param(
            "probe_data",
            "choice",
            "train",
            "train: the probe as training sees it, the deficit applied while its window is open "
            "(the paper's Fisher, over the data the network trains on); clean: always the clean images",
            choices=PROBE_DATA,
        ),
        Param(
            "samples", "int", 1, "labels sampled from the model per probe image", min=1, max=1000
        ),
        Param(
            "chunk",
            "int",
            128,
            "per-sample gradients held in memory at once (the batch size for estimator=batch)",
            min=1,
        ),
        Param(
            "estimator",
            "choice",
            "exact",
            "exact: per-sample gradients; batch: B·‖mean gradient‖², cheaper but much noisier",
            choices=FISHER_ESTIMATORS,
        ),
    )

    def __init__(self, params: dict[str, Any], seed: int):
        if _resolved_before_probe_data(params):
            params = {**params, "probe_data": LEGACY_PROBE_DATA}
        super().__init__({**defaults(self.params), **params}, seed)
        self._probe: torch.Tensor | None = None

    def when(self, epoch: int, epochs: int) -> bool:
        return fisher_due(epoch, epochs, self.settings["every"])

    def compute(self, ctx: MetricContext) -> dict[str, float]:
        from critui.train.fisher import fisher_trace

        return fisher_trace(
            ctx.model,
            self.probe_images(ctx),
            ctx.seed,
            ctx.epoch,
            samples=self.settings["samples"],
            chunk=self.settings["chunk"],
            estimator=self.settings["estimator"],
        )

    def probe(self, ctx: MetricContext) -> torch.Tensor:
        """The probe's indices, drawn once per run so every epoch measures the same images."""
        if self._probe is None:
            from critui.train.fisher import probe_indices

            self._probe = probe_indices(
                ctx.train_y, self.settings["probe"], ctx.num_classes, ctx.seed
            )
        return self._probe

    def probe_images(self, ctx: MetricContext) -> torch.Tensor:
        """The probe's images for this epoch: clean, or, with ``probe_data = "train"`` and the
        deficit on, passed through the deficit as a training batch of this epoch would be.

        Augmentation is left out either way: it is the same for every run, while the
        deficit is what the runs differ by. A deficit that draws randomness (noise) gets its
        own generator seeded by (run seed, epoch), so the probe is the same whether the run
        was trained straight through, resumed or forked, and training draws nothing less.
        """
        import torch
        idx = self.probe(ctx).to(ctx.train_x.device)
        x = ctx.train_x[idx]
        if self.settings["probe_data"] != "train" or ctx.deficit is None or not ctx.deficit_active:
            return x
        gen = torch.Generator(device=x.device).manual_seed(
            derive_seed(ctx.seed, ctx.epoch, "fisher-probe-deficit")
        )
        with torch.no_grad():
            seen, _ = ctx.deficit.apply(x, ctx.train_y[idx], ctx.epoch, gen)
        return seen


def _resolved_before_probe_data(params: dict[str, Any]) -> bool:
    """Whether ``params`` is a run spec's resolved table written before ``probe_data`` existed.

    A spec holds every parameter of the metric, resolved; one that holds all the older ones
    but not ``probe_data`` was written by a critui that always measured clean images.
    """
    older = {"every", "probe", "samples", "chunk", "estimator"}
    return "probe_data" not in params and older <= set(params)


class DeficitAccuracy(Metric):
    """Accuracy and loss on the test set passed through the deficit, while its window is open."""

    name = "deficit-accuracy"
    description = "Test accuracy and loss with the deficit applied, while the deficit is active."
    batch_size = 1000

    def compute(self, ctx: MetricContext) -> dict[str, float]:
        import torch
        import torch.nn.functional as F

        from critui.train.fisher import eval_mode

        if ctx.deficit is None or not ctx.deficit_active:
            return {}
        device = ctx.test_x.device
        gen = torch.Generator(device=device).manual_seed(
            derive_seed(ctx.seed, ctx.epoch, "deficit-test")
        )
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        correct = torch.zeros((), dtype=torch.long, device=device)
        with eval_mode(ctx.model), torch.inference_mode():
            for start in range(0, len(ctx.test_y), self.batch_size):
                x = ctx.test_x[start : start + self.batch_size]
                y = ctx.test_y[start : start + self.batch_size]
                x, y = ctx.deficit.apply(x, y, ctx.epoch, gen)
                logits = ctx.model(x).float()
                loss_sum += F.cross_entropy(logits, y, reduction="sum").double()
                correct += (logits.argmax(1) == y).sum()
        n = max(len(ctx.test_y), 1)
        return {"acc": correct.item() / n, "loss": loss_sum.item() / n}


@hookimpl
def critui_register_metrics(register):
    register(Fisher)
    register(DeficitAccuracy)
