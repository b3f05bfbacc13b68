"""The sweep scheduler's ordering and device assignment, with stand-in workers (no training)."""

from __future__ import annotations

from pathlib import Path

import pytest

from critui.plugins import get_registry
from critui.runs import scheduler as sched
from critui.runs.planner import plan_tree
from critui.runs.store import RunStore
from critui.sweeps import expand, parse_sweep


class FakeMonitor:
    """Stands in for RunMonitor: records the env it was given; ends when the test says so."""

    started: list[FakeMonitor] = []

    def __init__(self, store, run_id, env=None, launcher=None):
        self.run_id, self.env, self.end = run_id, env or {}, None
        FakeMonitor.started.append(self)

    @property
    def done(self):
        return self.end is not None

    def poll(self):
        return []


@pytest.fixture
def sweep(tmp_path: Path, monkeypatch):
    monkeypatch.setattr("critui.runs.monitor.RunMonitor", FakeMonitor)
    FakeMonitor.started = []
    store = RunStore(tmp_path / "home")
    config = {"deficit": {"id": "deficits.blur"},
              "sweep": {"seeds": [0, 1, 2], "removal": {"values": [2, 4], "after": 1}}}
    spec = parse_sweep(config)
    planned = expand(spec, get_registry())
    nodes = plan_tree([r.spec for r in planned])
    record = sched.create_sweep(store, spec, planned, nodes, lambda s: {}, None)
    return store, record


def test_children_wait_for_the_fork_checkpoint_and_gpus_go_round_robin(sweep):
    store, record = sweep
    scheduler = sched.SweepScheduler(store, record, jobs=10, gpus=["0", "1"])
    scheduler.step()
    trunks = [e for e in record["runs"] if e["parent"] is None]
    assert {m.run_id for m in FakeMonitor.started} == {e["run_id"] for e in trunks}
    assert [m.env["CUDA_VISIBLE_DEVICES"] for m in FakeMonitor.started] == ["0", "1", "0"]

    child = next(e for e in record["runs"] if e["parent"] is not None)
    parent_dir = store.run_dir(record["runs"][child["parent"]]["run_id"])
    (parent_dir / "ckpt").mkdir()
    (parent_dir / "ckpt" / "epoch-0002.pt").write_bytes(b"the parent's state at epoch 2")
    scheduler.step()
    assert FakeMonitor.started[-1].run_id == child["run_id"] and len(FakeMonitor.started) == 4
    assert FakeMonitor.started[-1].env["CUDA_VISIBLE_DEVICES"] == "1"
    assert (store.run_dir(child["run_id"]) / "ckpt" / "latest.pt").read_bytes() == b"the parent's state at epoch 2"


def test_jobs_limit_the_workers_and_a_child_of_a_failed_parent_trains_from_scratch(sweep):
    store, record = sweep
    scheduler = sched.SweepScheduler(store, record, jobs=1)
    by_run = {e["run_id"]: e for e in record["runs"]}
    failed_trunk = None
    while scheduler.step():
        assert sum(not m.done for m in FakeMonitor.started) <= 1
        for monitor in FakeMonitor.started:
            if monitor.done:
                continue
            entry = by_run[monitor.run_id]
            if entry["parent"] is None and failed_trunk is None:
                failed_trunk = entry  # it dies before keeping the fork checkpoint
                monitor.end = {"event": "failed"}
            else:
                ckpt = store.run_dir(monitor.run_id) / "ckpt"
                ckpt.mkdir(exist_ok=True)
                (ckpt / "epoch-0002.pt").write_bytes(b"state")
                monitor.end = {"event": "finished"}
    assert len(FakeMonitor.started) == len(record["runs"])
    orphan = next(e for e in record["runs"] if e["epochs"] == 3 and e["axis"]["seed"]
                  == failed_trunk["axis"]["seed"])
    assert orphan["parent"] is None and store.get(orphan["run_id"])["parent"] is None
    assert not (store.run_dir(orphan["run_id"]) / "ckpt" / "latest.pt").exists()
    others = [e for e in record["runs"] if e["epochs"] == 3 and e is not orphan]
    assert all(e["parent"] is not None and (store.run_dir(e["run_id"]) / "ckpt" / "latest.pt").exists()
               for e in others)
