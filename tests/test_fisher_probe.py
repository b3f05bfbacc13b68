"""Which images the Fisher probe uses: the training distribution as the network sees it
(the deficit applied while its window is open) or always clean ones."""

from __future__ import annotations

import json

import pytest
import torch

from critui.builtin.deficits import Blur, Noise
from critui.builtin.metrics import Fisher
from critui.config import build_spec
from critui.errors import CritUIError
from critui.plugins import get_registry
from critui.train.fisher import fisher_trace
from tests.conftest import events_of, index_docs
from tests.test_fisher import CLASSES, context, one_thread, tiny_cnn  # noqa: F401 - one_thread is autouse

SETTINGS = {"probe": 40, "chunk": 16}
TINY = ("--set", "dataset.n_train=300", "--set", "dataset.n_test=200", "--set", "model.width=4",
        "--set", "train.threads=1")


def blur() -> Blur:
    return Blur({"start": 0, "end": 3, "size": 8}, 0, CLASSES, (1, 8, 8))


def test_the_default_probe_is_the_training_distribution():
    assert Fisher({}, seed=0).settings["probe_data"] == "train"


def test_a_train_probe_is_blurred_inside_the_window_and_clean_outside_it():
    model, deficit = tiny_cnn(), blur()
    train, clean = Fisher({**SETTINGS, "probe_data": "train"}, 0), Fisher({**SETTINGS, "probe_data": "clean"}, 0)
    inside = context(model, deficit=deficit, active=True, epoch=2)
    seen, plain = train.compute(inside), clean.compute(inside)
    assert seen["total"] != plain["total"]
    # What it measured is the trace on the blurred probe images, exactly.
    x = inside.train_x[train.probe(inside)]
    blurred, _ = deficit.apply(x, inside.train_y[train.probe(inside)], 2, None)
    assert seen == fisher_trace(model, blurred, 0, 2, chunk=16)
    assert plain == fisher_trace(model, x, 0, 2, chunk=16)
    # Outside the window, and with no deficit at all, the two probes are the same images.
    for ctx in (context(model, deficit=deficit, active=False, epoch=3), context(model, epoch=3)):
        assert train.compute(ctx) == clean.compute(ctx)


def test_a_noisy_probe_is_drawn_from_the_run_seed_and_epoch_only():
    """A resumed or forked run builds a fresh metric at the epoch it restarts from: its probe
    must equal the one a run trained straight through would have measured."""
    model = tiny_cnn()
    noise = Noise({"start": 0, "end": 5, "std": 1.0}, 0, CLASSES, (1, 8, 8))
    through = Fisher(SETTINGS, 0)
    for epoch in range(3):
        last = through.compute(context(model, deficit=noise, active=True, epoch=epoch))
    torch.manual_seed(123)  # the global RNG, which training reseeds per epoch, plays no part
    restarted = Fisher(SETTINGS, 0).compute(context(model, deficit=noise, active=True, epoch=2))
    assert restarted == last
    other_epoch = Fisher(SETTINGS, 0).compute(context(model, deficit=noise, active=True, epoch=1))
    assert other_epoch != last


def test_a_spec_written_before_the_setting_keeps_its_clean_probe():
    old = {"every": 0, "probe": 500, "samples": 1, "chunk": 128, "estimator": "exact"}
    assert Fisher(old, 0).settings["probe_data"] == "clean"
    assert Fisher({**old, "probe_data": "train"}, 0).settings["probe_data"] == "train"


def test_a_blur_run_measures_the_blurred_probe_only_during_the_window(critui, home):
    common = ("run", "--plugin", "deficits.blur", "--set", "deficit.end=1", "--epochs", "2",
              "--set", "metrics.fisher.every=1", "--set", "metrics.fisher.probe=40", *TINY)
    critui(*common, check=True)
    critui(*common, "--set", "metrics.fisher.probe_data=clean", check=True)
    seen, clean = sorted(index_docs(home), key=lambda d: d["id"])

    def traces(doc) -> list[float]:
        return [e["values"]["total"] for e in events_of(home, doc["id"])
                if e["event"] == "metric" and e["metric"] == "metrics.fisher"]

    def accuracies(doc) -> list[float]:
        return [e["test_acc"] for e in events_of(home, doc["id"]) if e["event"] == "epoch"]

    assert accuracies(seen) == accuracies(clean)  # the probe observes; it does not train
    (inside, outside), (inside_clean, outside_clean) = traces(seen), traces(clean)
    assert inside != inside_clean and outside == outside_clean
    spec = json.loads((home / "runs" / seen["id"] / "spec.json").read_text())
    assert spec["metrics"] == [{"id": "metrics.fisher", "params": {**spec["metrics"][0]["params"], "probe_data": "train"}}]


def test_a_bad_probe_data_value_is_refused_with_the_choices():
    with pytest.raises(CritUIError, match=r"metrics\.fisher\.probe_data.*train, clean"):
        build_spec(get_registry(), sets=["metrics.fisher.probe_data=blurred"])


@pytest.mark.parametrize(("sets", "value"), [([], "train"), (["metrics.fisher.probe_data=clean"], "clean")])
def test_the_resolved_spec_says_which_probe_a_run_measures(sets, value):
    spec = build_spec(get_registry(), plugins=["metrics.fisher"], sets=sets)
    assert spec.metrics[0].params["probe_data"] == value
