"""The trace of the Fisher information of the weights, per layer (PAPER.md, "Fisher information").

    F = E_x E_{y ~ p_w(y|x)} [g gᵀ],   g = ∇_w log p_w(y|x)

Labels are *sampled from the model*, not read from the dataset: with dataset labels this
would be the empirical Fisher, a different quantity that vanishes as the training loss does.
A layer's trace is the sum over its weights (and bias) of the expected squared per-sample
gradient; ``total`` is the sum over layers. BatchNorm parameters are not a layer of their own.

Two Monte-Carlo estimators over a fixed probe of training images (the images are chosen by
the caller: the ``metrics.fisher`` plugin passes them clean, or through the run's deficit
while it is on, as its ``probe_data`` setting says):

``exact`` (the default)
    The squared norm of every per-sample gradient, summed. Its only noise is the sampling of
    images and labels. With BatchNorm in eval mode a sample's loss depends on no other
    sample, so one backward pass of the chunk's summed loss gives each sample's gradient with
    respect to each layer's *output*; the gradient with respect to the layer's weight is that
    times the layer's input, and its squared norm follows without materialising per-sample
    gradients of the whole model (see :func:`_layer_sq_norms`). Models with a layer this
    cannot factor (1-D, 3-D or transposed convolutions, a layer called twice in one forward)
    use ``torch.func``'s ``vmap(grad(...))`` instead, which gives the same numbers slower.

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
from critui.train import FISHER_ESTIMATORS as ESTIMATORS
from critui.train.seeds import derive_seed

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
    if torch.is_inference_mode_enabled():
        # A caller's inference mode turns autograd off; leave it for this call. Its tensors
        # cannot be saved for the backward pass, so the images are copied out of it.
        with torch.inference_mode(False):
            return fisher_trace(
                model, x.clone(), seed, epoch, samples=samples, chunk=chunk, estimator=estimator
            )
    device = _device_of(model)
    x = x.to(device=device, dtype=torch.float32)
    gen = torch.Generator(device=device).manual_seed(derive_seed(seed, epoch, "fisher-labels"))
    # One uniform per (image, label) pair, drawn up front and turned into a label by inverse
    # CDF: the labels then depend neither on the chunk size nor on which path computes them.
    uniforms = torch.rand(len(x) * samples, generator=gen, device=device)
    images = torch.arange(len(x), device=device).repeat_interleave(samples)
    layers = fisher_layers(model)
    with eval_mode(model):
        if estimator == "batch":
            sums = _batch_sums(model, layers, _log_probs(model, x, images, chunk, uniforms=uniforms))
            return _as_traces(layers, sums, len(images))
        if factorable(model, layers):
            sums = _factored_sums(model, layers, _log_probs(model, x, images, chunk, uniforms=uniforms))
            if sums is not None:
                return _as_traces(layers, sums, len(images))
        labels = sample_labels(model, x, uniforms, chunk)
        return trace_given_labels(model, x, images, labels, chunk, estimator)


def sample_labels(
    model: nn.Module, x: torch.Tensor, uniforms: torch.Tensor, chunk: int
) -> torch.Tensor:
    """Labels drawn from p_w(y|x), ``len(uniforms) // len(x)`` per image, image-major."""
    samples = len(uniforms) // max(len(x), 1)
    with torch.no_grad():
        logits = torch.cat([model(x[s : s + chunk]) for s in range(0, len(x), chunk)])
    return _draw(logits.repeat_interleave(samples, dim=0), uniforms)


def _draw(logits: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """One label per row: the first class whose cumulative probability reaches the uniform."""
    if not bool(torch.isfinite(logits).all()):
        raise CritUIError(
            "The model's outputs are not finite (the run has diverged), so its Fisher "
            "information is undefined. Lower the learning rate or check the data."
        )
    cdf = torch.softmax(logits.detach().float(), dim=1).cumsum(1)
    labels = torch.searchsorted(cdf, uniforms[:, None].to(cdf.dtype)).squeeze(1)
    return labels.clamp_(max=logits.shape[1] - 1)  # rounding can leave cdf[-1] just under 1


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
    with eval_mode(model):
        if estimator == "batch":
            sums = _batch_sums(model, layers, _log_probs(model, x, images, chunk, labels=labels))
            return _as_traces(layers, sums, len(labels))
        if factorable(model, layers):
            sums = _factored_sums(model, layers, _log_probs(model, x, images, chunk, labels=labels))
            if sums is not None:
                return _as_traces(layers, sums, len(labels))
        trainable = {name for names in layers.values() for name in names}
        weights = {k: v.detach() for k, v in model.named_parameters() if k in trainable}
        frozen = {k: v.detach() for k, v in model.named_parameters() if k not in trainable}
        frozen |= dict(model.named_buffers())
        gradient = _per_sample_gradients(model, frozen)
        sums = torch.zeros(len(layers), dtype=torch.float64, device=x.device)
        for start in range(0, len(labels), chunk):
            idx = slice(start, start + chunk)
            grads = gradient(weights, x[images[idx]], labels[idx])
            for i, names in enumerate(layers.values()):
                sums[i] += sum(grads[name].pow(2).sum() for name in names).double()
    return _as_traces(layers, sums, len(labels))


def _log_probs(
    model: nn.Module,
    x: torch.Tensor,
    images: torch.Tensor,
    chunk: int,
    *,
    labels: torch.Tensor | None = None,
    uniforms: torch.Tensor | None = None,
) -> Iterator[torch.Tensor]:
    """Σ log p_w(y|x) over each chunk of ``chunk`` pairs (``x[images[i]]``, ``labels[i]``),
    ready to differentiate; the forward pass runs as the next chunk is asked for.

    Given ``uniforms`` instead of labels, each chunk's labels are drawn from the logits of
    the very forward pass that is differentiated, which saves a separate sampling pass.
    """
    for start in range(0, len(images), chunk):
        idx = slice(start, start + chunk)
        with torch.enable_grad():
            logits = model(x[images[idx]])
            y = labels[idx] if labels is not None else _draw(logits, uniforms[idx])
            log_prob = -F.cross_entropy(logits.float(), y, reduction="sum")
        yield log_prob


def _batch_sums(model: nn.Module, layers: Layers, log_probs: Iterator[torch.Tensor]) -> torch.Tensor:
    """Σ over chunks of each layer's squared norm of the chunk's summed score (float64):
    one ordinary backward pass per chunk, any model."""
    named = dict(model.named_parameters())
    weights = [named[name] for names in layers.values() for name in names]
    sums = torch.zeros(len(layers), dtype=torch.float64, device=_device_of(model))
    for log_prob in log_probs:
        grads = iter(torch.autograd.grad(log_prob, weights, allow_unused=True))
        for i, names in enumerate(layers.values()):
            for g in (next(grads) for _ in names):
                if g is not None:  # None: the weight does not reach the loss
                    sums[i] += g.pow(2).sum().double()
    return sums


def _as_traces(layers: Layers, sums: torch.Tensor, pairs: int) -> dict[str, float]:
    per_layer = (sums / max(pairs, 1)).tolist()
    traces = dict(zip(layers, per_layer, strict=True))
    traces["total"] = float(sum(per_layer))
    return traces


def _layer_module(names: list[str]) -> str:
    """The module that owns a layer's parameters: ``conv1.conv.weight`` -> ``conv1.conv``."""
    return names[0].rpartition(".")[0]


def factorable(model: nn.Module, layers: Layers) -> bool:
    """Whether the factored path handles every layer: nn.Linear, and nn.Conv2d with zero
    padding given as numbers, each holding only ``weight`` and ``bias``."""
    for names in layers.values():
        module = model.get_submodule(_layer_module(names))
        if {n.rpartition(".")[2] for n in names} - {"weight", "bias"}:
            return False
        if isinstance(module, nn.Linear):
            continue
        if not isinstance(module, nn.Conv2d):
            return False
        if module.padding_mode != "zeros" or isinstance(module.padding, str):
            return False
    return True


def _factored_sums(
    model: nn.Module, layers: Layers, log_probs: Iterator[torch.Tensor]
) -> torch.Tensor | None:
    """Σ over pairs of each layer's squared per-sample gradient norm (float64), or None
    when the forward pass breaks an assumption of this path (then the vmap path runs)."""
    modules = [model.get_submodule(_layer_module(names)) for names in layers.values()]
    kept: dict[nn.Module, list[tuple[torch.Tensor, torch.Tensor, int]]] = {}

    def keep(module, inputs, output):
        kept.setdefault(module, []).append((inputs[0], output, inputs[0]._version))
        # Later layers get a copy: an in-place op downstream (a ReLU(inplace=True) straight
        # after a conv) would otherwise rewrite the saved output's autograd history, and the
        # gradient taken with respect to it would be the post-ReLU one.
        return output.clone()

    def add_norms(i: int, module: nn.Module, a: torch.Tensor, params: set[str]):
        def hook(g: torch.Tensor) -> None:
            sums[i] += _layer_sq_norms(module, a, g, params).sum()

        return hook

    sums = torch.zeros(len(layers), dtype=torch.float64, device=_device_of(model))
    hooks = [m.register_forward_hook(keep) for m in modules]
    try:
        for log_prob in log_probs:  # each chunk's forward pass fills `kept`
            calls = [kept.get(m, []) for m in modules]
            kept.clear()
            if any(len(c) != 1 for c in calls):  # a layer unused, or called twice
                return None
            if any(a._version != version for (a, _, version), in calls):
                return None  # an in-place op rewrote a layer's input
            outputs = []
            for i, (names, module, ((a, output, _),)) in enumerate(
                zip(layers.values(), modules, calls, strict=True)
            ):
                # Each layer's norms are taken as soon as the backward pass reaches its
                # output, while that gradient is still in cache: on the CPU up to 15%
                # faster than taking them all after the pass (0-15% in repeated A/B runs).
                params = {n.rpartition(".")[2] for n in names}
                output.register_hook(add_norms(i, module, a.detach(), params))
                outputs.append(output)
            # A layer whose output does not reach the loss has zero gradient: its hook
            # never fires and its sum stays zero.
            torch.autograd.grad(log_prob, outputs, allow_unused=True)
    finally:
        for hook in hooks:
            hook.remove()
    return sums


def _layer_sq_norms(
    module: nn.Module, a: torch.Tensor, g: torch.Tensor, params: set[str]
) -> torch.Tensor:
    """Each sample's squared gradient norm for one layer, from its input ``a`` and the
    gradient ``g`` of the sample's log-probability with respect to its output.

    The weight's per-sample gradient sums, over output positions p, the outer product of
    g_p and the input (patch) a_p. A linear layer applied once has one position, so its
    squared norm is ‖g‖²·‖a‖². Otherwise it is Σ_pq (g_p·g_q)(a_p·a_q), from the two Gram
    matrices over positions, when positions are few (Goodfellow's trick); else the
    per-sample gradient itself, formed by one convolution grouped by sample (conv) or a
    batched matmul (linear).
    """
    a, g = a.float(), g.float()
    batch = a.shape[0]
    total = torch.zeros(batch, dtype=torch.float64, device=a.device)
    if "bias" in params:  # the bias's per-sample gradient is g summed over positions
        summed = (
            g.flatten(2).sum(2)
            if isinstance(module, nn.Conv2d)
            else g.reshape(batch, -1, g.shape[-1]).sum(1)
        )
        total += summed.pow(2).sum(1).double()
    if "weight" not in params:
        return total
    if isinstance(module, nn.Conv2d):
        positions = g.shape[2] * g.shape[3]
        d_in, d_out = module.weight[0].numel(), g.shape[1]
        if positions * (d_in + d_out) < d_in * d_out and module.groups == 1:
            patches = F.unfold(
                a, module.kernel_size, module.dilation, module.padding, module.stride
            )
            total += _gram_norms(patches.transpose(1, 2), g.flatten(2).transpose(1, 2))
        else:
            total += _conv_grad_norms(module, a, g)
        return total
    a = a.reshape(batch, -1, a.shape[-1])
    g = g.reshape(batch, -1, g.shape[-1])
    if a.shape[1] == 1:
        total += (g.pow(2).sum((1, 2)) * a.pow(2).sum((1, 2))).double()
    elif a.shape[1] * (a.shape[2] + g.shape[2]) < a.shape[2] * g.shape[2]:
        total += _gram_norms(a, g)
    else:
        total += (g.transpose(1, 2) @ a).pow(2).sum((1, 2)).double()
    return total


def _gram_norms(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """‖gᵀa‖² per sample for (B, positions, features) inputs, via positions × positions Grams."""
    return (g @ g.transpose(1, 2) * (a @ a.transpose(1, 2))).sum((1, 2)).double()


# On the CPU the grouped weight-gradient convolution slows down sharply past about 100
# groups: 128 samples at once took 2-6x as long as two pieces of 64 (oneDNN, torch 2.13).
CPU_GROUPS = 64


def _conv_grad_norms(module: nn.Conv2d, a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """The squared norm of each sample's conv weight gradient. All of them come from one
    weight-gradient convolution whose groups are the (sample, group) pairs: on the CPU this
    is several times faster than unfolding the input into patches. The CPU takes the
    samples in pieces of at most ``CPU_GROUPS`` groups."""
    batch, groups = a.shape[0], module.groups
    piece = max(1, CPU_GROUPS // groups) if a.device.type == "cpu" else batch
    norms = []
    for start in range(0, batch, piece):
        ai, gi = a[start : start + piece], g[start : start + piece]
        n = ai.shape[0]
        per_sample = torch.nn.grad.conv2d_weight(
            ai.reshape(1, -1, *ai.shape[2:]),
            (n * module.out_channels, module.in_channels // groups, *module.kernel_size),
            gi.reshape(1, -1, *gi.shape[2:]),
            module.stride,
            module.padding,
            module.dilation,
            n * groups,
        )
        norms.append(per_sample.reshape(n, -1).pow(2).sum(1).double())
    return torch.cat(norms)


def _per_sample_gradients(model: nn.Module, frozen: dict[str, torch.Tensor]):
    """Per-sample gradients of log p_w(y|x) for a chunk: each output has a leading chunk axis."""

    def log_prob(weights, xi, yi):
        logits = functional_call(model, {**frozen, **weights}, (xi.unsqueeze(0),))
        return -F.cross_entropy(logits, yi.unsqueeze(0))

    return vmap(grad(log_prob), in_dims=(None, 0, 0))


def _device_of(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    return torch.device("cpu")
