"""The trace of the Fisher information of the weights, per layer (PAPER.md, "Fisher information").

    F = E_x E_{y ~ p_w(y|x)} [g gᵀ],   g = ∇_w log p_w(y|x)

Labels are *sampled from the model*, not read from the dataset: with dataset labels this
would be the empirical Fisher, a different quantity that vanishes as the training loss does.
A layer's trace is the sum over its weights (and bias) of the expected squared per-sample
gradient; ``total`` is the sum over layers. BatchNorm parameters are not a layer of their own.

Two Monte-Carlo estimators over a fixed probe of clean training images:

``exact`` (the default)
    Per-sample gradients, vectorised with ``torch.func`` (``vmap(grad(...))``) over chunks
    of samples, each squared and summed. Its only noise is the sampling of images and labels.

``batch``
    One gradient per batch of B (image, sampled label) pairs. Given the images, the B score
    vectors are independent with mean zero (E_{y~p_w} ∇ log p_w(y|x) = 0, the score-function
    identity), so every cross term of ‖Σ g_i‖² has expectation zero and ‖Σ g_i‖² / B is an
    unbiased estimate of the batch's mean per-sample trace. About the cost of a training
    step, but noisy: the cross terms add a variance of about 2·tr(F²) per batch that does not
    shrink with B, so a batch estimate has a relative standard deviation between
    √(2/effective rank of F) and √2 — near √2 for a trained network, whose Fisher is
    dominated by a few directions. Only the number of batches averages it down. Use it for
    large models with small batches and many probe images, and expect a jagged curve.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from critui.errors import CritUIError
from critui.train.loop import derive_seed

ESTIMATORS = ("exact", "batch")

# "nn.Conv*" and nn.Linear: the modules that carry the weights the paper reports per layer.
WEIGHT_LAYERS = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
    nn.Linear,
)

Layers = dict[str, list[str]]
"""Layer name -> the parameter paths (``conv1.conv.weight``) that belong to it, in order."""


def fisher_layers(model: nn.Module) -> Layers:
    """The model's conv and linear layers in registration order, by short readable name.

    A layer is named after the outermost module that holds it and no other layer:
    ``conv1.conv`` becomes ``conv1``, ``fc1.linear`` becomes ``fc1``, a top-level ``fc``
    stays ``fc``. Such a module holds exactly one layer, so names are unique, and they
    depend only on the architecture, so they are stable from epoch to epoch.
    """
    paths = [path for path, module in model.named_modules() if isinstance(module, WEIGHT_LAYERS)]
    layers: Layers = {}
    for path in paths:
        module = model.get_submodule(path)
        names = [
            f"{path}.{name}" if path else name
            for name, param in module.named_parameters(recurse=False)
            if param.requires_grad
        ]
        if names:
            layers[_short_name(path, paths) or type(module).__name__.lower()] = names
    return layers


def _short_name(path: str, paths: list[str]) -> str:
    parts = path.split(".")
    while len(parts) > 1:
        parent = ".".join(parts[:-1])
        inside = sum(1 for p in paths if p == parent or p.startswith(parent + "."))
        if inside != 1:
            break
        parts.pop()
    return ".".join(parts)


def probe_indices(train_y: torch.Tensor, size: int, num_classes: int, seed: int) -> torch.Tensor:
    """A class-balanced subset of ``size`` training indices, the same for every call with ``seed``.

    Classes take turns, each contributing its next image in a seeded random order, so
    class counts differ by at most one; a class that runs out simply stops contributing.
    Returns sorted int64 indices on the CPU.
    """
    labels = train_y.detach().cpu().long()
    gen = torch.Generator().manual_seed(derive_seed(seed, 0, "fisher-probe"))
    order = torch.randperm(len(labels), generator=gen)
    shuffled = labels[order]
    # Which class goes first in each round is drawn too, so no class is always favoured.
    class_rank = torch.randperm(num_classes, generator=gen)
    turn = torch.zeros(len(labels), dtype=torch.long)
    for c in range(num_classes):
        where = (shuffled == c).nonzero().squeeze(1)
        turn[where] = torch.arange(len(where)) * num_classes + class_rank[c]
    valid = (shuffled >= 0) & (shuffled < num_classes)
    turn[~valid] = torch.iinfo(torch.long).max
    picked = order[torch.argsort(turn, stable=True)[: min(size, int(valid.sum()))]]
    return picked.sort().values


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every submodule in eval mode, and give each back its own mode afterwards.

    BatchNorm must use its running statistics: in train mode a sample's output would
    depend on the other samples of its chunk, and the forward pass would update the
    running averages. Modes are restored per module, since a model may mix them.
    """
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


def fisher_trace(
    model: nn.Module,
    x: torch.Tensor,
    seed: int,
    epoch: int,
    *,
    samples: int = 1,
    chunk: int = 128,
    estimator: str = "exact",
) -> dict[str, float]:
    """Estimate the Fisher trace of each layer of ``model`` on the images ``x``.

    Each image gets ``samples`` labels drawn from the model's own prediction, by a
    generator seeded from (``seed``, ``epoch``), so the estimate is reproducible. ``chunk``
    bounds memory: the number of per-sample gradients held at once for ``exact``, and the
    batch size B for ``batch``. Returns ``{layer: trace, ..., "total": sum}`` as floats.
    The model's parameters, buffers and train/eval modes are left as they were.
    """
    if estimator not in ESTIMATORS:
        raise CritUIError(
            f"Fisher estimator {estimator!r} is unknown; use one of {', '.join(ESTIMATORS)}."
        )
    device = _device_of(model)
    x = x.to(device=device, dtype=torch.float32)
    gen = torch.Generator(device=device).manual_seed(derive_seed(seed, epoch, "fisher-labels"))
    with eval_mode(model):
        labels = sample_labels(model, x, samples, gen, chunk)
        images = torch.arange(len(x), device=device).repeat_interleave(samples)
        traces = trace_given_labels(model, x, images, labels, chunk, estimator)
    return traces


def sample_labels(
    model: nn.Module, x: torch.Tensor, samples: int, gen: torch.Generator, chunk: int
) -> torch.Tensor:
    """``samples`` labels per image drawn from p_w(y|x), image-major: shape (len(x) * samples,)."""
    with torch.no_grad():
        logits = torch.cat([model(x[s : s + chunk]) for s in range(0, len(x), chunk)])
    if not bool(torch.isfinite(logits).all()):
        raise CritUIError(
            "The model's outputs are not finite (the run has diverged), so its Fisher "
            "information is undefined. Lower the learning rate or check the data."
        )
    probs = torch.softmax(logits.float(), dim=1)
    return torch.multinomial(probs, samples, replacement=True, generator=gen).reshape(-1)


def trace_given_labels(
    model: nn.Module,
    x: torch.Tensor,
    images: torch.Tensor,
    labels: torch.Tensor,
    chunk: int,
    estimator: str = "exact",
) -> dict[str, float]:
    """The per-layer trace estimate from the pairs (``x[images[i]]``, ``labels[i]``).

    Nothing is sampled here, so tests can compare it with a reference on fixed labels.
    """
    layers = fisher_layers(model)
    trainable = {name for names in layers.values() for name in names}
    weights = {k: v.detach() for k, v in model.named_parameters() if k in trainable}
    frozen = {k: v.detach() for k, v in model.named_parameters() if k not in trainable}
    frozen |= dict(model.named_buffers())
    sums = torch.zeros(len(layers), dtype=torch.float64, device=x.device)
    step = _exact_step if estimator == "exact" else _batch_step
    gradient = step(model, frozen)
    with eval_mode(model):
        for start in range(0, len(labels), chunk):
            idx = slice(start, start + chunk)
            grads = gradient(weights, x[images[idx]], labels[idx])
            for i, names in enumerate(layers.values()):
                # Both estimators: the sum of all squared entries, divided by the pair count.
                sums[i] += sum(grads[name].pow(2).sum() for name in names).double()
    per_layer = (sums / max(len(labels), 1)).tolist()
    traces = dict(zip(layers, per_layer, strict=True))
    traces["total"] = float(sum(per_layer))
    return traces


def _exact_step(model: nn.Module, frozen: dict[str, torch.Tensor]):
    """Per-sample gradients of log p_w(y|x) for a chunk: each output has a leading chunk axis."""

    def log_prob(weights, xi, yi):
        logits = functional_call(model, {**frozen, **weights}, (xi.unsqueeze(0),))
        return -F.cross_entropy(logits, yi.unsqueeze(0))

    return vmap(grad(log_prob), in_dims=(None, 0, 0))


def _batch_step(model: nn.Module, frozen: dict[str, torch.Tensor]):
    """The gradient of Σ log p_w(y_i|x_i) over a batch: one summed score vector per batch."""

    def summed_log_prob(weights, xb, yb):
        logits = functional_call(model, {**frozen, **weights}, (xb,))
        return -F.cross_entropy(logits, yb, reduction="sum")

    return grad(summed_log_prob)


def _device_of(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    return torch.device("cpu")
