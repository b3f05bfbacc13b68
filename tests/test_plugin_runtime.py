"""A plugin that misbehaves at run time is named, and a metric never ends the run (defect 3)."""

from __future__ import annotations

import json

import pytest
import torch

from critui.errors import CritUIError
from critui.kinds import DatasetTensors, MetricContext
from critui.plugins import PluginInfo
from critui.train.plugin_guard import MetricRunner, check_dataset_tensors
from tests.conftest import FAST, events_of, index_docs
from tests.plugin_catalogue import plugin_site_fixture

plugin_site = pytest.fixture(plugin_site_fixture)

METRICS = '''
import math
from critui.hookspecs import hookimpl
from critui.kinds import Metric


class Nanny(Metric):
    name = "nanny"
    description = "NaN from epoch 1 on."

    def compute(self, ctx):
        return {"ok": 1.0, "ratio": math.nan if ctx.epoch >= 1 else 0.5}


class Bomb(Metric):
    name = "bomb"
    description = "Raises in epoch 1."

    def compute(self, ctx):
        if ctx.epoch == 1:
            raise ZeroDivisionError("division by zero in the probe")
        return {"value": float(ctx.epoch)}


@hookimpl
def critui_register_metrics(register):
    register(Nanny)
    register(Bomb)
'''

BAD_LABELS = '''
import torch
from critui.hookspecs import hookimpl
from critui.kinds import Dataset, DatasetTensors


class Offbyone(Dataset):
    name = "offbyone"
    description = "Labels 1..10 for ten classes."

    def load(self, params, seed):
        g = torch.Generator().manual_seed(seed)
        x = torch.rand((40, 1, 8, 8), generator=g)
        y = torch.arange(40) % 10 + 1
        return DatasetTensors(x, y, x[:20], y[:20], [str(i) for i in range(10)], (0.5,), (0.25,))


@hookimpl
def critui_register_datasets(register):
    register(Offbyone)
'''


class Log:
    def __init__(self):
        self.events = []

    def write(self, event, **fields):
        json.dumps(fields, allow_nan=False)  # what EventLog does: NaN here would kill the run
        self.events.append({"event": event, **fields})


def info(cls) -> PluginInfo:
    return PluginInfo(f"metrics.{cls.name}", "metrics", cls.name, cls, "tp-metrics", "0.1")


def context(epoch: int) -> MetricContext:
    x = torch.zeros((2, 1, 4, 4))
    y = torch.zeros(2, dtype=torch.long)
    return MetricContext(model=torch.nn.Linear(1, 1), epoch=epoch, epochs=4, device=torch.device("cpu"),
                         train_x=x, train_y=y, test_x=x, test_y=y, num_classes=2, seed=0)


def runner_for(source_cls_names: dict[str, object]):
    namespace: dict = {}
    exec(METRICS, namespace)
    classes = [namespace[n] for n in source_cls_names]
    log = Log()
    return MetricRunner([(info(c), c({}, 0)) for c in classes], log), log


def test_a_non_finite_value_is_null_with_a_warning_naming_plugin_key_and_epoch():
    runner, log = runner_for({"Nanny": None})
    for epoch in range(3):
        runner.measure(context(epoch))
    metrics = [e for e in log.events if e["event"] == "metric"]
    assert [m["values"]["ratio"] for m in metrics] == [0.5, None, None]
    assert [m["values"]["ok"] for m in metrics] == [1.0, 1.0, 1.0]
    warnings = [e for e in log.events if e["event"] == "warning"]
    assert [(w["plugin"], w["key"], w["epoch"]) for w in warnings] == [("metrics.nanny", "ratio", 1), ("metrics.nanny", "ratio", 2)]
    assert "tp-metrics 0.1" in warnings[0]["message"] and "ratio=nan" in warnings[0]["message"]


def test_a_raising_metric_is_switched_off_with_one_warning():
    runner, log = runner_for({"Bomb": None})
    for epoch in range(4):
        runner.measure(context(epoch))
    assert [e["epoch"] for e in log.events if e["event"] == "metric"] == [0]
    (warning,) = [e for e in log.events if e["event"] == "warning"]
    assert warning["plugin"] == "metrics.bomb" and warning["epoch"] == 1
    assert "ZeroDivisionError" in warning["message"] and "switched off" in warning["message"]


@pytest.mark.parametrize("value, expected", [(3, 3.0), (torch.tensor(2.5), 2.5), (True, None), ("1.0", None),
                                              (float("inf"), None), (torch.ones(2), None)])
def test_values_become_finite_floats_or_null(value, expected):
    class One:
        def when(self, epoch, epochs):
            return True

        def compute(self, ctx):
            return {"v": value}

    log = Log()
    MetricRunner([(info(type("X", (), {"name": "one"})), One())], log).measure(context(0))
    metric = next(e for e in log.events if e["event"] == "metric")
    assert metric["values"]["v"] == expected


def tensors(**changes) -> DatasetTensors:
    x = torch.rand((6, 1, 4, 4))
    y = torch.tensor([0, 1, 0, 1, 0, 1])
    fields = dict(train_x=x, train_y=y, test_x=x, test_y=y, classes=["a", "b"], mean=(0.5,), std=(0.2,))
    return DatasetTensors(**{**fields, **changes})


@pytest.mark.parametrize("changes, words", [
    ({"train_y": torch.tensor([0, 1, 2, 1, 0, 1])}, "train label 2 with 2 classes"),
    ({"test_y": torch.tensor([0, -1, 0, 1, 0, 1])}, "test label -1"),
    ({"train_x": torch.rand((6, 4, 4))}, "train_x of shape (6, 4, 4)"),
    ({"test_x": torch.rand((6, 3, 4, 4))}, "test images of"),
    ({"train_y": torch.zeros(5, dtype=torch.long)}, "train_y of shape (5,) for 6 images"),
    ({"train_y": torch.zeros(6)}, "dtype torch.float32"),
    ({"mean": (0.5, 0.5, 0.5)}, "mean=(0.5, 0.5, 0.5) for 1 channel"),
    ({"std": (0.0,)}, "std"),
])
def test_dataset_tensors_are_checked_naming_the_plugin(changes, words):
    plugin = PluginInfo("datasets.bad", "datasets", "bad", object, "tp-data", "3.2")
    check_dataset_tensors(plugin, tensors())
    with pytest.raises(CritUIError) as caught:
        check_dataset_tensors(plugin, tensors(**changes))
    assert words in str(caught.value) and "datasets.bad (tp-data 3.2)" in str(caught.value)


def test_a_run_with_a_nan_and_a_raising_metric_finishes_and_show_prints_the_warnings(critui, home, plugin_site):
    plugin_site.install("tp-metrics", "0.1", {"tp_metrics": METRICS}, {"m": "tp_metrics"})
    env = {"PYTHONPATH": plugin_site.pythonpath()}
    result = critui("run", "--plugin", "metrics.nanny", "--plugin", "metrics.bomb", "--epochs", "3", *FAST, env=env)
    assert result.returncode == 0, result.stderr
    (doc,) = index_docs(home)
    assert doc["status"] == "finished"
    warnings = [e for e in events_of(home, doc["id"]) if e["event"] == "warning"]
    assert {(w["plugin"], w.get("key"), w["epoch"]) for w in warnings} == {
        ("metrics.nanny", "ratio", 1), ("metrics.nanny", "ratio", 2), ("metrics.bomb", None, 1)}
    shown = critui("show", doc["id"], env=env, check=True).stdout
    assert "warnings (3)" in shown and "metrics.bomb (tp-metrics 0.1) raised ZeroDivisionError" in shown


def test_a_dataset_with_out_of_range_labels_fails_naming_the_plugin(critui, home, plugin_site):
    plugin_site.install("tp-data", "0.2", {"tp_data": BAD_LABELS}, {"d": "tp_data"})
    env = {"PYTHONPATH": plugin_site.pythonpath()}
    result = critui("run", "--plugin", "datasets.offbyone", "--epochs", "1", "--set", "train.threads=1", env=env)
    assert result.returncode == 2, result.stderr
    assert "datasets.offbyone (tp-data 0.2)" in result.stderr and "label 10 with 10 classes" in result.stderr
    assert "IndexError" not in result.stderr
