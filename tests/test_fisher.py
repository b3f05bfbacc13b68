"""The Fisher trace: checked against a naive per-sample loop, on tiny models, in seconds."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from critui.builtin.deficits import VerticalFlip
from critui.builtin.metrics import DeficitAccuracy, Fisher
from critui.builtin.models import FullyConnected, SmallCNN
from critui.errors import CritUIError
from critui.kinds import MetricContext
from critui.train import fisher as fisher_module
from critui.train.fisher import (
    eval_mode,
    fisher_trace,
    probe_indices,
    sample_labels,
    trace_given_labels,
)
from critui.train.loop import derive_seed

CLASSES = 4


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny models: threads only add overhead, and a busy 2-core machine makes them thrash.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_cnn(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return with_trained_bn(SmallCNN().build((1, 8, 8), CLASSES, depth=2, width=4), (1, 8, 8))


def tiny_fc(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return with_trained_bn(FullyConnected().build((1, 8, 8), CLASSES, depth=2, width=8), (1, 8, 8))


def with_trained_bn(model: torch.nn.Module, shape: tuple[int, ...]) -> torch.nn.Module:
    """Give BatchNorm running statistics and affine values far from their defaults.

    Otherwise eval-mode and train-mode BatchNorm would be nearly the same function and a
    test could not tell which one the estimator used.
    """
    with torch.no_grad():
        for _ in range(3):
            model(2.0 * torch.randn(32, *shape) + 0.5)
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.weight.uniform_(0.5, 2.0)
                module.bias.uniform_(-0.5, 0.5)
    return model.train()


def images(n: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def layer_params(model: torch.nn.Module) -> list[list[torch.nn.Parameter]]:
    """The reference's own idea of a layer: each Conv2d/Linear's weight and bias."""
    kinds = (torch.nn.Conv2d, torch.nn.Linear)
    return [list(m.parameters(recurse=False)) for m in model.modules() if isinstance(m, kinds)]


def naive_trace(model, x, labels) -> list[float]:
    """Per-layer mean squared gradient norm, one sample at a time with autograd."""
    layers = layer_params(model)
    sums = [0.0] * len(layers)
    with eval_mode(model):
        for xi, yi in zip(x, labels, strict=True):
            log_p = torch.log_softmax(model(xi[None]), dim=1)[0, yi]
            grads = torch.autograd.grad(log_p, [p for ps in layers for p in ps])
            flat = iter(grads)
            for i, ps in enumerate(layers):
                sums[i] += sum(float(next(flat).double().pow(2).sum()) for _ in ps)
    return [s / len(labels) for s in sums]


def expected_trace(model, x) -> float:
    """The total trace with the expectation over y ~ p_w(y|x) taken exactly, class by class."""
    with eval_mode(model), torch.no_grad():
        probs = torch.softmax(model(x), dim=1)
    total = 0.0
    for y in range(CLASSES):
        per_image = torch.tensor([sum(naive_trace(model, xi[None], [y])) for xi in x])
        total += float((probs[:, y].double() * per_image.double()).mean())
    return total


def relative(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


def seeded(cls):
    def build():
        torch.manual_seed(0)
        return cls()

    return build


@pytest.mark.parametrize(
    "build",
    # Awkward and Shared (defined below) take each route of the factored path, and the fallback.
    [tiny_cnn, tiny_fc, seeded(lambda: Awkward()), seeded(lambda: Shared())],
    ids=["cnn", "fc", "awkward", "shared"],
)
def test_vectorised_exact_estimator_matches_a_per_sample_loop(build):
    model = build()
    x = images(12)
    labels = torch.randint(0, CLASSES, (12,), generator=torch.Generator().manual_seed(2))
    with eval_mode(model):
        fast = trace_given_labels(model, x, torch.arange(12), labels, chunk=5)
    slow = naive_trace(model, x, labels)
    per_layer = [v for k, v in fast.items() if k != "total"]
    assert len(per_layer) == len(slow)
    for got, want in zip(per_layer, slow, strict=True):
        assert relative(got, want) < 1e-5
    assert fast["total"] == pytest.approx(sum(per_layer), rel=1e-12)


def test_grouped_convolutions_taken_in_pieces_give_the_same_norms(monkeypatch):
    # On the CPU the per-sample conv gradients come in pieces of CPU_GROUPS groups; a chunk
    # of 12 split into pieces of 5 (and a grouped conv into pieces of 2 samples) must agree.
    model = seeded(lambda: torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(4, 4, 3, padding=1, groups=2), torch.nn.Flatten(),
        torch.nn.Linear(4 * 64, CLASSES),
    ))()
    x = images(12)
    labels = torch.randint(0, CLASSES, (12,), generator=torch.Generator().manual_seed(5))
    whole = trace_given_labels(model, x, torch.arange(12), labels, chunk=12)
    monkeypatch.setattr(fisher_module, "CPU_GROUPS", 5)
    pieces = trace_given_labels(model, x, torch.arange(12), labels, chunk=12)
    for got, want in zip(pieces.values(), naive_trace(model, x, labels), strict=False):
        assert relative(got, want) < 1e-5
    for key in whole:
        assert relative(pieces[key], whole[key]) < 1e-6


def test_labels_are_sampled_from_the_model():
    # Many label samples per image converge on E_{y~p_w}: dataset or argmax labels would not.
    model, x = tiny_cnn(), images(6)
    want = expected_trace(model, x)
    got = fisher_trace(model, x, seed=0, epoch=0, samples=400, chunk=600)["total"]
    assert relative(got, want) < 0.05


def test_layer_names_follow_the_models_modules():
    cnn = fisher_trace(tiny_cnn(), images(4), 0, 0)
    assert list(cnn) == ["conv1", "conv2", "fc", "total"]
    fc = fisher_trace(tiny_fc(), images(4), 0, 0)
    assert list(fc) == ["fc1", "fc2", "fc", "total"]
    default = SmallCNN().build((1, 16, 16), 10)
    names = list(fisher_trace(default, torch.randn(2, 1, 16, 16), 0, 0))
    assert names == [f"conv{i}" for i in range(1, 7)] + ["fc", "total"]
    assert all(isinstance(v, float) for v in cnn.values())


def test_chunk_size_does_not_change_the_result():
    model, x = tiny_cnn(), images(20)
    one = fisher_trace(model, x, 3, 1, samples=2, chunk=1000)
    many = fisher_trace(model, x, 3, 1, samples=2, chunk=3)
    for key in one:
        assert relative(many[key], one[key]) < 1e-5


@pytest.mark.parametrize("estimator", ["exact", "batch"])
def test_leaves_weights_buffers_and_modes_as_they_were(estimator):
    model = tiny_fc()
    model.fc1.eval()  # a mixed model: each module must get its own mode back
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    fisher_trace(model, images(16), 0, 0, chunk=4, estimator=estimator)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN running stats included
    assert [m.training for m in model.modules()] == modes
    assert all(p.grad is None for p in model.parameters())


def test_batchnorm_uses_running_statistics_not_the_batch():
    # In eval mode an image's term cannot depend on its batch-mates: a batch of 1 equals
    # the per-sample estimator exactly, and batches of one image's copies add up.
    model, x = tiny_cnn(), images(8)
    labels = torch.randint(0, CLASSES, (8,), generator=torch.Generator().manual_seed(4))
    idx = torch.arange(8)
    with eval_mode(model):
        exact = trace_given_labels(model, x, idx, labels, chunk=8, estimator="exact")
        batch_of_one = trace_given_labels(model, x, idx, labels, chunk=1, estimator="batch")
        other_mates = trace_given_labels(model, x, idx.flip(0), labels.flip(0), chunk=3)
    for key in exact:
        assert relative(batch_of_one[key], exact[key]) < 1e-5
        assert relative(other_mates[key], exact[key]) < 1e-5


def test_batch_estimator_agrees_with_the_exact_one_on_average():
    model, x = tiny_cnn(), images(128)
    # 1024 (image, label) pairs: 256 batches of 4 average out the cross terms.
    exact = fisher_trace(model, x, 0, 0, samples=8, chunk=256)
    batch = fisher_trace(model, x, 0, 0, samples=8, chunk=4, estimator="batch")
    assert relative(batch["total"], exact["total"]) < 0.15
    for key in exact:
        assert relative(batch[key], exact[key]) < 0.3


@pytest.mark.parametrize(
    "build", [tiny_cnn, seeded(lambda: Shared())], ids=["cnn", "shared"]
)
def test_batch_estimator_draws_the_labels_the_sampling_pass_draws(build):
    # The batch path draws each batch's labels from the forward pass it differentiates; a
    # separate sampling pass with the same uniforms must give the same labels, so the same
    # estimate, on any model.
    model, x = build(), images(20)
    drawn = fisher_trace(model, x, seed=3, epoch=2, samples=2, chunk=6, estimator="batch")
    uniforms = torch.rand(40, generator=torch.Generator().manual_seed(derive_seed(3, 2, "fisher-labels")))
    with eval_mode(model):
        labels = sample_labels(model, x, uniforms, chunk=6)
        given = trace_given_labels(model, x, torch.arange(20).repeat_interleave(2), labels, 6, "batch")
    for key in drawn:
        assert relative(drawn[key], given[key]) < 1e-6


@pytest.mark.parametrize("estimator", ["exact", "batch"])
def test_a_callers_no_grad_or_inference_mode_does_not_change_the_estimate(estimator):
    model, x = tiny_cnn(), images(10)
    want = fisher_trace(model, x, 0, 3, chunk=4, estimator=estimator)
    with torch.no_grad():
        assert fisher_trace(model, x, 0, 3, chunk=4, estimator=estimator) == want
    with torch.inference_mode():
        assert fisher_trace(model, images(10), 0, 3, chunk=4, estimator=estimator) == want


def test_same_seed_and_epoch_give_the_same_estimate():
    model, x = tiny_cnn(), images(16)
    first = fisher_trace(model, x, seed=5, epoch=2)
    assert fisher_trace(model, x, seed=5, epoch=2) == first
    assert fisher_trace(model, x, seed=5, epoch=3) != first
    assert fisher_trace(model, x, seed=6, epoch=2) != first


def test_unknown_estimator_is_refused_by_name():
    with pytest.raises(CritUIError, match="'kfac'.*exact, batch"):
        fisher_trace(tiny_cnn(), images(2), 0, 0, estimator="kfac")


def test_default_cadence_is_dense_early_then_every_fifth_and_the_last():
    fisher = Fisher({}, seed=0)
    measured = [e for e in range(32) if fisher.when(e, 32)]
    assert measured == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 15, 20, 25, 30, 31]
    every3 = Fisher({"every": 3}, seed=0)
    assert [e for e in range(8) if every3.when(e, 8)] == [0, 3, 6, 7]


def test_probe_is_class_balanced_and_fixed():
    labels = torch.arange(10).repeat_interleave(100)[torch.randperm(1000)]
    probe = probe_indices(labels, 500, 10, seed=0)
    assert torch.bincount(labels[probe], minlength=10).tolist() == [50] * 10
    assert len(set(probe.tolist())) == 500
    assert torch.equal(probe_indices(labels, 500, 10, seed=0), probe)
    assert not torch.equal(probe_indices(labels, 500, 10, seed=1), probe)


def test_probe_takes_all_of_a_rare_class_and_balances_the_rest():
    labels = torch.tensor([0] * 100 + [1] * 50 + [2] * 30 + [3] * 5)
    counts = torch.bincount(labels[probe_indices(labels, 41, 4, seed=0)], minlength=4).tolist()
    assert counts[3] == 5 and sum(counts) == 41
    assert max(counts[:3]) - min(counts[:3]) <= 1


def context(model, deficit=None, active=False, epoch=0) -> MetricContext:
    gen = torch.Generator().manual_seed(0)
    return MetricContext(
        model=model,
        epoch=epoch,
        epochs=10,
        device=torch.device("cpu"),
        train_x=torch.randn(200, 1, 8, 8, generator=gen),
        train_y=torch.arange(CLASSES).repeat(50),
        test_x=torch.randn(50, 1, 8, 8, generator=gen),
        test_y=torch.randint(0, CLASSES, (50,), generator=gen),
        num_classes=CLASSES,
        seed=0,
        deficit=deficit,
        deficit_active=active,
    )


def test_fisher_metric_reports_every_layer_on_a_fixed_probe():
    fisher = Fisher({"probe": 40, "chunk": 16}, seed=0)
    ctx = context(tiny_cnn())
    values = fisher.compute(ctx)
    probe = fisher.probe(ctx)
    assert list(values) == ["conv1", "conv2", "fc", "total"]
    assert all(v > 0 and v == v for v in values.values())
    assert torch.bincount(ctx.train_y[probe]).tolist() == [10] * CLASSES
    ctx.epoch = 1
    fisher.compute(ctx)
    assert fisher.probe(ctx) is probe


def test_deficit_accuracy_scores_the_flipped_test_set_while_the_deficit_is_on():
    model = tiny_cnn()
    flip = VerticalFlip({"start": 0, "end": 5}, 0, CLASSES, (1, 8, 8))
    ctx = context(model, deficit=flip, active=True)
    clean = ctx.test_x.clone()
    got = DeficitAccuracy({}, seed=0).compute(ctx)
    assert model.training and torch.equal(ctx.test_x, clean)
    with eval_mode(model), torch.no_grad():
        logits = model(torch.flip(clean, dims=(-2,)))
    assert got["acc"] == pytest.approx(float((logits.argmax(1) == ctx.test_y).float().mean()))
    assert got["loss"] == pytest.approx(float(F.cross_entropy(logits, ctx.test_y)), rel=1e-5)


def test_deficit_accuracy_is_silent_without_an_active_deficit():
    flip = VerticalFlip({"start": 0, "end": 5}, 0, CLASSES, (1, 8, 8))
    metric = DeficitAccuracy({}, seed=0)
    assert metric.compute(context(tiny_cnn(), deficit=flip, active=False)) == {}
    assert metric.compute(context(tiny_cnn(), deficit=None, active=True)) == {}


class Awkward(torch.nn.Module):
    """Layers that exercise each route of the factored norms: a grouped, dilated, strided
    conv with a bias and an in-place ReLU straight after it, a conv on few positions, and
    a linear layer applied at several positions."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 4, 3, padding=2, dilation=2)
        self.relu = torch.nn.ReLU(inplace=True)
        self.conv2 = torch.nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2)
        self.conv3 = torch.nn.Conv2d(6, 16, 3, stride=2, padding=1)
        self.mix = torch.nn.Linear(16, 5)
        self.fc = torch.nn.Linear(5 * 4, CLASSES)

    def forward(self, x):
        x = self.conv3(self.conv2(self.relu(self.conv1(x))))  # (B, 16, 2, 2)
        x = self.mix(x.flatten(2).transpose(1, 2))  # (B, 4 positions, 5)
        return self.fc(x.flatten(1))


class Shared(torch.nn.Module):
    """One layer called twice in a forward: its per-sample gradient sums both calls, which
    the factored path cannot split, so the vmap path must take over."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 1, 3, padding=1)
        self.fc = torch.nn.Linear(64, CLASSES)

    def forward(self, x):
        return self.fc(self.conv(torch.tanh(self.conv(x))).flatten(1))


def test_factored_and_vmap_paths_give_the_same_estimate(monkeypatch):
    model, x = tiny_cnn(), images(16)
    factored = fisher_trace(model, x, seed=1, epoch=4, samples=2, chunk=5)
    monkeypatch.setattr(fisher_module, "factorable", lambda model, layers: False)
    by_vmap = fisher_trace(model, x, seed=1, epoch=4, samples=2, chunk=7)
    for key in factored:
        assert relative(factored[key], by_vmap[key]) < 1e-5


def test_the_plugin_offers_exactly_the_estimators_fisher_trace_takes():
    # metrics.fisher lists them without importing critui.train.fisher (which imports torch).
    from critui.builtin import metrics
    from critui.train import FISHER_ESTIMATORS, fisher

    assert metrics.FISHER_ESTIMATORS == fisher.ESTIMATORS == FISHER_ESTIMATORS
    (param,) = [p for p in Fisher.params if p.name == "estimator"]
    assert tuple(param.choices) == fisher.ESTIMATORS
