"""The GPU code paths, exercised on the CPU: worker placement, the speed settings, bf16 autocast.

No GPU is needed: placement is a pure function fed a fake device list, ``auto`` must resolve
to the CPU's plain float32 here, and torch runs bf16 autocast on the CPU too, so the step's
autocast and channels_last branches run on every machine.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from critui.config import build_spec
from critui.devices import place_on_gpu, worker_slots
from critui.errors import CritUIError
from critui.kinds import DatasetTensors
from critui.plugins import get_registry
from critui.runs import scheduler as sched
from critui.runs.planner import plan_tree
from critui.runs.store import RunStore
from critui.sweeps import expand, parse_sweep
from critui.train.loop import FP32, Speed, evaluate, prepare_data, resolve_speed, train_epoch

from .conftest import index_docs
from .test_sweep_scheduler import FakeMonitor

# -- placement -----------------------------------------------------------------------------------


def place_all(gpus: list[str], per_gpu: int | None, n: int) -> list[str | None]:
    busy: list[str] = []
    placed = []
    for _ in range(n):
        gpu = place_on_gpu(gpus, busy, per_gpu)
        placed.append(gpu)
        if gpu is not None:
            busy.append(gpu)
    return placed


def test_k_workers_per_gpu_fill_every_gpu_once_before_any_takes_two():
    assert place_all(["0", "1"], 2, 5) == ["0", "1", "0", "1", None]
    assert place_all(["3"], 4, 5) == ["3", "3", "3", "3", None]
    assert place_all(["0", "1", "2"], 1, 4) == ["0", "1", "2", None]


def test_without_per_gpu_there_is_no_cap_and_without_gpus_no_placement():
    assert place_all(["0", "1"], None, 5) == ["0", "1", "0", "1", "0"]
    assert place_on_gpu([], [], 2) is None
    # A finished worker frees its slot on its own GPU.
    assert place_on_gpu(["0", "1"], ["0", "0", "1"], 2) == "1"
    assert place_on_gpu(["0", "1"], ["0", "1", "1"], 2) == "0"


def test_worker_slots_are_gpus_times_k_on_gpus_and_jobs_on_the_cpu():
    assert worker_slots(["0", "1"], jobs=1, per_gpu=4) == 8
    assert worker_slots(["0", "1"], jobs=3, per_gpu=None) == 3
    assert worker_slots([], jobs=2, per_gpu=4) == 2


@pytest.fixture
def seeds_sweep(tmp_path: Path, monkeypatch):
    monkeypatch.setattr("critui.runs.monitor.RunMonitor", FakeMonitor)
    FakeMonitor.started = []
    store = RunStore(tmp_path / "home")
    spec = parse_sweep({"sweep": {"seeds": [0, 1, 2, 3, 4, 5]}})
    planned = expand(spec, get_registry())
    record = sched.create_sweep(store, spec, planned, plan_tree([r.spec for r in planned]), lambda s: {}, None)
    return store, record


def test_the_scheduler_runs_k_workers_pinned_to_each_gpu(seeds_sweep):
    store, record = seeds_sweep
    scheduler = sched.SweepScheduler(store, record, jobs=1, gpus=["0", "1"], per_gpu=2)
    scheduler.step()
    assert [m.env["CUDA_VISIBLE_DEVICES"] for m in FakeMonitor.started] == ["0", "1", "0", "1"]
    FakeMonitor.started[1].end = {"event": "finished"}  # a worker on GPU 1 ends
    scheduler.step()
    assert len(FakeMonitor.started) == 5 and FakeMonitor.started[-1].env["CUDA_VISIBLE_DEVICES"] == "1"


def test_per_gpu_means_nothing_on_the_cpu(seeds_sweep):
    store, record = seeds_sweep
    scheduler = sched.SweepScheduler(store, record, jobs=2, gpus=[], per_gpu=4)
    scheduler.step()
    assert len(FakeMonitor.started) == 2
    assert all("CUDA_VISIBLE_DEVICES" not in m.env for m in FakeMonitor.started)


# -- the speed settings --------------------------------------------------------------------------


def test_speed_settings_default_to_auto_and_validate():
    registry = get_registry()
    train = build_spec(registry).train
    assert (train["precision"], train["channels_last"], train["compile"]) == ("auto", "auto", "auto")
    spec = build_spec(registry, sets=["train.precision=bf16", "train.channels_last=on", "train.compile=off"])
    assert (spec.train["precision"], spec.train["channels_last"], spec.train["compile"]) == ("bf16", "on", "off")
    for bad, named in (("train.precision=fp16", "fp32, bf16"), ("train.channels_last=yes", "auto, on, off"),
                       ("train.compile=max", "auto, on, off")):
        with pytest.raises(CritUIError, match=named):
            build_spec(registry, sets=[bad])


def test_auto_resolves_to_float32_eager_on_the_cpu_and_explicit_values_are_kept():
    cpu = torch.device("cpu")
    assert resolve_speed({"precision": "auto", "channels_last": "auto", "compile": "auto"}, cpu) == FP32
    assert resolve_speed({}, cpu) == FP32  # a spec from before these settings trained like this
    explicit = resolve_speed({"precision": "bf16", "channels_last": "on", "compile": "off"}, cpu)
    assert explicit == Speed("bf16", channels_last=True, compile=False)
    assert explicit.as_train() == {"precision": "bf16", "channels_last": "on", "compile": "off"}


def test_a_cpu_sweep_ignores_per_gpu_and_records_the_resolved_settings(tmp_path, home, critui):
    config = tmp_path / "one.toml"
    config.write_text('[train]\nepochs = 1\nthreads = 1\ndevice = "cpu"\n'
                      "[dataset]\nn_train = 600\nn_test = 400\n[sweep]\nseeds = [0]\n")
    result = critui("sweep", str(config), "--per-gpu", "2", check=True)
    assert "--per-gpu 2 is ignored" in " ".join(result.stderr.split())
    (doc,) = index_docs(home)
    run_dir = home / "runs" / doc["id"]
    train = json.loads((run_dir / "spec.json").read_text())["train"]
    assert (train["precision"], train["channels_last"], train["compile"]) == ("fp32", "off", "off")
    started = next(json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()
                   if json.loads(line)["event"] == "started")
    assert started["precision"] == "fp32" and started["requested"]["precision"] == "auto"
    shown = critui("show", doc["id"], check=True).stdout
    assert "precision=fp32" in shown and "compile=off" in shown


def test_a_compiler_failure_falls_back_to_eager_with_a_warning(monkeypatch):
    from critui.train import loop, worker

    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler found\nmore detail")

    monkeypatch.setattr(loop, "compile_model", broken)
    written = []

    class Log:
        def write(self, event, **fields):
            written.append((event, fields))

    model = nn.Linear(2, 2)
    module, speed = worker._compiled(model, None, Speed("bf16", True, True), 8, 8, Log())
    assert module is model and speed == Speed("bf16", True, False)
    assert written[0][0] == "warning" and "no C++ compiler found" in written[0][1]["message"]


# -- bf16 autocast and channels_last on the CPU ---------------------------------------------------


def tiny_data(n: int = 96) -> DatasetTensors:
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 3, 8, 8), generator=gen, dtype=torch.uint8)
    y = torch.arange(n) % 4
    return DatasetTensors(x, y, x[:32], y[:32], ["a", "b", "c", "d"], (0.5,) * 3, (0.25,) * 3, "crop-flip")


def test_a_bf16_channels_last_epoch_trains_float32_weights_on_the_cpu():
    spec = build_spec(get_registry(), plugins=["deficits.blur"],
                      sets=["optim.batch_size=32", "train.precision=bf16", "train.channels_last=on"])
    data = prepare_data(tiny_data(), torch.device("cpu"), "auto")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    speed = resolve_speed(spec.train, torch.device("cpu"))
    assert speed == Speed("bf16", channels_last=True, compile=False)
    model = model.to(memory_format=torch.channels_last)
    before = model[0].weight.detach().clone()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    deficit = get_registry().get("deficits.blur").cls(spec.deficit.params, 0, 4, (3, 8, 8))
    result = train_epoch(model, optimizer, data, spec, 0, deficit, speed)
    assert result.finite and 0.0 <= result.train_acc <= 1.0 and result.train_loss > 0
    assert model[0].weight.dtype == torch.float32 and not torch.equal(model[0].weight, before)
    loss, acc = evaluate(model, data.test_x, data.test_y, 1000, speed)
    assert loss > 0 and 0.0 <= acc <= 1.0
