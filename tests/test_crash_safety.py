"""No run data is lost to a SIGKILL of the worker or of `critui run`, or to a second critui."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from critui.processes import pid_alive
from tests.conftest import FAST, events_of, index_docs

WAIT_S = 900  # waits for events are generous: they time nothing, and the machine may be loaded


def start_critui(home: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "CRITUI_HOME": str(home)}
    return subprocess.Popen([sys.executable, "-m", "critui", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_epochs(home: Path, count: int, timeout: float = WAIT_S) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (home / "history.json").exists():
            docs = index_docs(home)
            if docs:
                done = [e for e in events_of(home, docs[0]["id"]) if e["event"] == "epoch"]
                if len(done) >= count:
                    return docs[0]
        time.sleep(0.1)
    raise AssertionError(f"no run reached {count} epochs in {timeout} s")


def worker_pid(home: Path, run_id: str) -> int:
    return [e for e in events_of(home, run_id) if e["event"] == "started"][-1]["pid"]


def test_sigkill_of_the_worker_leaves_an_interrupted_run_with_its_epochs(critui, home):
    # 10 epochs: far more than the worker can train between its 2nd epoch and the kill, and
    # few enough that the resume below (which trains the rest) stays short.
    manager = start_critui(home, "run", "--epochs", "10", *FAST)
    doc = wait_for_epochs(home, 2)
    os.kill(worker_pid(home, doc["id"]), signal.SIGKILL)
    manager.communicate(timeout=WAIT_S)
    assert manager.returncode != 0
    (doc,) = index_docs(home)  # the index is readable
    assert doc["status"] in ("failed", "interrupted")
    epochs = [e["epoch"] for e in events_of(home, doc["id"]) if e["event"] == "epoch"]
    assert epochs[:2] == [0, 1] and doc["epochs_done"] == len(epochs)
    # It resumes from its last checkpoint and finishes.
    resumed = critui("resume", doc["id"], "--home", str(home))
    assert resumed.returncode == 0, resumed.stderr
    (doc,) = index_docs(home)
    assert doc["status"] == "finished" and doc["epochs_done"] == 10


def test_sigkill_of_critui_run_loses_nothing(critui, home):
    manager = start_critui(home, "run", "--epochs", "6", *FAST)
    doc = wait_for_epochs(home, 1)
    manager.kill()  # SIGKILL: no chance to clean up
    manager.communicate(timeout=WAIT_S)
    pid = worker_pid(home, doc["id"])
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline and pid_alive(pid, doc["id"]):  # the orphaned worker trains on to the end
        time.sleep(0.2)
    listing = critui("runs", check=True)  # the next command brings the index up to date
    (doc,) = index_docs(home)
    assert doc["status"] == "finished", listing.stdout
    assert doc["epochs_done"] == 6


def test_killed_run_whose_worker_also_died_becomes_interrupted(critui, home):
    manager = start_critui(home, "run", "--epochs", "30", *FAST)
    doc = wait_for_epochs(home, 1)
    pid = worker_pid(home, doc["id"])
    manager.kill()
    os.kill(pid, signal.SIGKILL)
    manager.communicate(timeout=WAIT_S)
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline and pid_alive(pid, doc["id"]):  # until the kernel has taken it
        time.sleep(0.05)
    critui("runs", check=True)
    (doc,) = index_docs(home)
    assert doc["status"] == "interrupted"
    assert doc["epochs_done"] >= 1


# Ctrl-C mid-run (exit 130, no traceback, the run `cancelled` with a last `cancelled` event)
# is tests/test_signals.py's test_ctrl_c_mid_run_cancels, with SIGINT delivered and ignored.


def test_two_critui_runs_sharing_a_home_both_land_in_the_index(home):
    runs = [start_critui(home, "run", "--epochs", "2", "--seed", str(seed), *FAST) for seed in (1, 2)]
    for process in runs:
        _, err = process.communicate(timeout=WAIT_S)
        assert process.returncode == 0, err
    docs = index_docs(home)
    assert sorted(d["seed"] for d in docs) == [1, 2]
    assert all(d["status"] == "finished" for d in docs)


def test_lost_index_is_rebuilt_from_run_directories(critui, one_epoch_home):
    home = one_epoch_home  # what `critui run --epochs 1` left
    (home / "history.json").unlink()
    critui("runs", check=True)
    (doc,) = index_docs(home)
    assert doc["status"] == "finished" and doc["epochs_done"] == 1


def test_corrupt_index_is_set_aside_rebuilt_and_reported(critui, one_epoch_home):
    home = one_epoch_home  # what `critui run --epochs 1` left
    (home / "history.json").write_text("{ not json")
    (home / "history.journal").unlink(missing_ok=True)
    result = critui("runs")
    assert result.returncode == 0 and "Traceback" not in result.stderr
    assert "corrupt" in result.stderr and "rebuilt" in result.stderr
    (doc,) = index_docs(home)
    assert doc["status"] == "finished" and doc["epochs_done"] == 1


def test_a_starting_worker_is_not_mistaken_for_a_dead_one(tmp_path):
    """Between launch and its first event, another critui process must see the run as running."""
    from critui.config import build_spec
    from critui.plugins import get_registry
    from critui.runs.store import RunStore

    store = RunStore(tmp_path / "home")
    doc = store.create(build_spec(get_registry(), sets=["dataset.n_train=300", "dataset.n_test=200"]), {})
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", str(store.run_dir(doc["id"]))])
    cmdline = Path(f"/proc/{sleeper.pid}/cmdline")
    deadline = time.time() + 600
    while doc["id"] not in cmdline.read_bytes().decode(errors="replace") and time.time() < deadline:
        time.sleep(0.01)  # until the child has exec'd: before that it is a copy of this process
    try:
        store.update(doc["id"], status="running", pid=sleeper.pid, manager_pid=sleeper.pid)
        store.reconcile()
        assert store.get(doc["id"])["status"] == "running"
    finally:
        sleeper.kill()
        sleeper.wait()
    store.reconcile()
    assert store.get(doc["id"])["status"] == "interrupted"


def test_a_resume_decides_on_the_index_as_it_is_under_the_lock(tmp_path, monkeypatch):
    # Two `critui resume` of one run started together: each read the run as "cancelled",
    # then each marked it queued and started a worker on the same directory. The check and
    # the mark now happen under one lock, on a fresh read.
    import pytest

    from critui.config import build_spec
    from critui.errors import CritUIError
    from critui.plugins import get_registry
    from critui.runs.lineage import reopen_for_resume
    from critui.runs.store import RunStore

    store = RunStore(tmp_path / "home")
    doc = store.create(build_spec(get_registry()), {})
    store.update(doc["id"], status="cancelled")
    stale = store.get(doc["id"])
    reopen_for_resume(store, doc["id"])  # the first resume: now queued
    monkeypatch.setattr(store, "get", lambda ref: stale)  # the second read the run before that
    with pytest.raises(CritUIError, match="still queued; it cannot be resumed twice"):
        reopen_for_resume(store, doc["id"])


def test_a_manager_that_finds_its_run_busy_leaves_the_index_as_it_was(tmp_path):
    # Two managers starting one run at the same moment: the second worker finds the run
    # directory locked, and its manager must neither fail the run nor take it over.
    from filelock import FileLock

    from critui.config import build_spec
    from critui.events import read_events
    from critui.plugins import get_registry
    from critui.runs.monitor import RunMonitor
    from critui.runs.store import RunStore
    from critui.train.worker import LOCK_FILE

    store = RunStore(tmp_path / "home")
    doc = store.create(build_spec(get_registry(), sets=["train.epochs=1"]), {})
    store.update(doc["id"], status="running", pid=os.getpid(), manager_pid=os.getpid())
    with FileLock(store.run_dir(doc["id"]) / LOCK_FILE):  # held, as the first worker holds it
        monitor = RunMonitor(store, doc["id"])
        deadline = time.monotonic() + WAIT_S
        while not monitor.done and time.monotonic() < deadline:
            monitor.poll()
            time.sleep(0.1)
    assert monitor.end["event"] == "busy" and "another critui process" in monitor.end["error"]
    after = store.get(doc["id"])
    assert (after["status"], after["pid"], after["manager_pid"]) == ("running", os.getpid(), os.getpid())
    assert read_events(store.run_dir(doc["id"])) == []  # the busy worker wrote nothing
