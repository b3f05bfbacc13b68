"""The Fisher metric's cost: the factored per-sample estimator against torch.func's
vmap and a naive loop, and against a training epoch, on the default CPU setup.

Run: ``python tests/bench/fisher_speed.py [--probe 500] [--threads 1] [--repeats 3]
[--plugin models.fc] [--set model.width=32]``

Side by side in one process, on ``models.cnn`` (depth 6) and ``datasets.synthetic`` unless
``--plugin`` and ``--set`` (as in ``critui run``) choose another model or data, each
timing the whole Fisher evaluation of a 500-image probe, label sampling included:

- ``exact``: :func:`critui.train.fisher.fisher_trace` as the metric runs it (the factored
  per-sample norms, labels drawn from the differentiated forward pass);
- ``vmap``: the same estimate through ``torch.func``'s ``vmap(grad)``, the path models
  with unfactorable layers take;
- ``batch``: the cheaper, noisier B·‖mean gradient‖² estimator;
- a naive reference: a sampling forward pass, then one ``torch.autograd.grad`` call per
  (image, label) pair, the way one would write it without vectorisation;
- one batched forward and backward pass over the probe (eval mode, gradients of the summed
  log-likelihood with respect to every weight): the floor of any estimator that needs a
  backward pass, so naive / floor is the most speed-up over the loop that such an
  estimator could show on this model;
- ``exact`` with its per-sample norms skipped: the forward pass, the label draw and the
  backward pass to each layer's output, the part of ``exact`` that no faster norm could
  remove;
- one training epoch of critui's loop on the same data (3000 images, batch 128);
- a square float32 matrix product, for this machine's arithmetic rate.

It also counts the multiply-adds of each per-sample gradient (forward pass, gradients with
respect to each layer's input and weight, for the conv and linear layers) and prints the
rate at which the loop and ``exact`` run them. Both do that same arithmetic, so their ratio
is the speed-up, and the rate ``exact`` would need for a given speed-up can be set against
the matrix product's.

It prints the seconds of each (best of ``--repeats`` rounds, in which they take turns),
the speed-ups over the loop, the agreement of exact and vmap with the loop on the same
labels, and the cost of one Fisher evaluation as a fraction of an epoch.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from critui.config import build_spec
from critui.plugins import get_registry
from critui.train import fisher
from critui.train.fisher import (
    eval_mode,
    fisher_layers,
    fisher_trace,
    probe_indices,
    sample_labels,
    trace_given_labels,
)
from critui.train.loop import generator, make_optimizer, prepare_data, train_epoch


def naive_traces(model, x, labels) -> dict[str, float]:
    layers = fisher_layers(model)
    params = dict(model.named_parameters())
    sums = dict.fromkeys(layers, 0.0)
    with eval_mode(model):
        for xi, yi in zip(x, labels, strict=True):
            loss = -F.cross_entropy(model(xi.unsqueeze(0)), yi.unsqueeze(0))
            names = [n for group in layers.values() for n in group]
            grads = dict(zip(names, torch.autograd.grad(loss, [params[n] for n in names]), strict=True))
            for layer, group in layers.items():
                sums[layer] += sum(grads[n].pow(2).sum().item() for n in group)
    traces = {k: v / len(labels) for k, v in sums.items()}
    traces["total"] = sum(traces.values())
    return traces


def gradient_macs(model, image) -> int:
    """Multiply-adds of one image's gradient: forward, plus the weight and input gradients
    of every conv and linear layer (the first layer's input needs no gradient)."""
    macs = []

    def count(module, inputs, output):
        inner = (module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
                 if isinstance(module, torch.nn.Conv2d) else module.in_features)
        macs.append(output[0].numel() * inner)

    hooks = [m.register_forward_hook(count) for m in model.modules()
             if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    try:
        with torch.no_grad(), eval_mode(model):
            model(image[None])
    finally:
        for hook in hooks:
            hook.remove()
    return 3 * sum(macs) - macs[0] if macs else 0


def best_of(repeats: int, fns: dict):
    """Each function's best time and last result, the functions taking turns in every round,
    so that a noisy spell on a shared machine slows all of them rather than one."""
    times = {name: [] for name in fns}
    results = {}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            results[name] = fn()
            times[name].append(time.perf_counter() - start)
    return {name: min(t) for name, t in times.items()}, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probe", type=int, default=500)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--plugin", action="append", default=[], help="as in critui run")
    parser.add_argument("--set", action="append", default=[], dest="sets", help="as in critui run")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    registry = get_registry()
    spec = build_spec(registry, plugins=args.plugin, sets=args.sets)
    data = prepare_data(registry.get(spec.dataset.id).cls().load(spec.dataset.params, 0), torch.device("cpu"), "auto")
    torch.manual_seed(0)
    model = registry.get(spec.model.id).cls().build(tuple(data.train_x.shape[1:]), data.num_classes, **spec.model.params)
    optimizer = make_optimizer(spec, model)
    train_epoch(model, optimizer, data, spec, 0, None)  # a trained-for-an-epoch network, warm caches
    # The epochs timed below train a copy, so every round measures the Fisher of one network.
    trainee = copy.deepcopy(model)
    trainee_optimizer = make_optimizer(spec, trainee)

    probe = probe_indices(data.train_y, args.probe, data.num_classes, 0)
    x, y = data.train_x[probe], data.train_y[probe]
    seed, epoch = 0, 1
    uniforms = torch.rand(len(x), generator=generator(torch.device("cpu"), seed, epoch, "fisher-labels"))
    images = torch.arange(len(x))

    def naive():
        with eval_mode(model):
            labels = sample_labels(model, x, uniforms, 128)
        return naive_traces(model, x, labels)

    def vmapped():
        with eval_mode(model):
            labels = sample_labels(model, x, uniforms, 128)
        with force_vmap():
            return trace_given_labels(model, x, images, labels, 128, "exact")

    def one_pass():
        with eval_mode(model):
            loss = F.cross_entropy(model(x), y, reduction="sum")
            return torch.autograd.grad(loss, list(model.parameters()))

    square = torch.randn(2048, 2048)

    def without_norms():
        with skip_norms():
            return fisher_trace(model, x, seed, epoch)

    seconds, results = best_of(args.repeats, {
        "exact": lambda: fisher_trace(model, x, seed, epoch),
        "exact without norms": without_norms,
        "vmap": vmapped,
        "batch": lambda: fisher_trace(model, x, seed, epoch, estimator="batch"),
        "naive": naive,
        "pass": one_pass,
        "epoch": lambda: train_epoch(trainee, trainee_optimizer, data, spec, 1, None),
        "matmul": lambda: square @ square,
    })
    macs = gradient_macs(model, x[0]) * len(x)
    exact_s, vmap_s, batch_s, naive_s, floor_s, epoch_s = (
        seconds[k] for k in ("exact", "vmap", "batch", "naive", "pass", "epoch")
    )
    exact, by_vmap, by_loop = results["exact"], results["vmap"], results["naive"]

    def worst(got):
        return float(f"{max(abs(got[k] - by_loop[k]) / max(abs(by_loop[k]), 1e-30) for k in by_loop):.3g}")

    print(json.dumps({
        "torch": torch.__version__,
        "threads": args.threads,
        "model": f"{spec.model.id} {spec.model.params}",
        "parameters": sum(p.numel() for p in model.parameters()),
        "probe_images": len(x),
        "exact_factored_s": round(exact_s, 4),
        "exact_vmap_s": round(vmap_s, 4),
        "batch_estimator_s": round(batch_s, 4),
        "naive_loop_s": round(naive_s, 4),
        "speedup_exact_over_naive": round(naive_s / exact_s, 2),
        "speedup_vmap_over_naive": round(naive_s / vmap_s, 2),
        "one_batched_pass_s": round(floor_s, 4),
        "exact_without_norms_s": round(seconds["exact without norms"], 4),
        "speedup_ceiling_naive_over_one_pass": round(naive_s / floor_s, 2),
        "max_relative_difference_exact_vs_naive": worst(exact),
        "max_relative_difference_vmap_vs_naive": worst(by_vmap),
        "gradient_mmac_per_image": round(macs / len(x) / 1e6, 2),
        "naive_loop_gmac_per_s": round(macs / naive_s / 1e9, 1),
        "exact_gmac_per_s": round(macs / exact_s / 1e9, 1),
        "matmul_gmac_per_s": round(2048**3 / seconds["matmul"] / 1e9, 1),
        "exact_gmac_per_s_needed_for_10x": round(10 * macs / naive_s / 1e9, 1),
        "training_epoch_s": round(epoch_s, 4),
        "fisher_exact_fraction_of_epoch": round(exact_s / epoch_s, 3),
        "fisher_batch_fraction_of_epoch": round(batch_s / epoch_s, 3),
    }, indent=2))


@contextmanager
def skip_norms():
    """Make the factored path take every layer's norms as zero, at no cost."""
    original = fisher._layer_sq_norms
    fisher._layer_sq_norms = lambda module, a, g, params: torch.zeros(len(a), dtype=torch.float64)
    try:
        yield
    finally:
        fisher._layer_sq_norms = original


@contextmanager
def force_vmap():
    """Make the factored path decline every model, as it does for unfactorable layers."""
    original = fisher.factorable
    fisher.factorable = lambda model, layers: False
    try:
        yield
    finally:
        fisher.factorable = original


if __name__ == "__main__":
    main()
