"""`critui sweep --resume` adopts the workers a TUI left training when it quit.

The TUI is played by hand: a sweep of two tiny runs is created, run 0's worker is started
and frozen (SIGSTOP) right after it starts, and the index names a manager that has exited, as
after quitting the TUI; run 1 never started. While a live critui process still follows the
worker, --resume refuses and names that process; once it is gone, --resume follows the live
worker to its end (it is not started a second time) and trains run 1.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from critui.events import read_events
from critui.plugins import get_registry
from critui.runs import scheduler as sched
from critui.runs.launcher import start_worker
from critui.runs.store import RunStore
from critui.sweeps import expand, parse_sweep
from tests.test_cli_errors import assert_clean_error

TINY = {"threads": 1, "epochs": 2}


def wait(condition, timeout: float = 120.0, step: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return False


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_resume_follows_a_worker_left_behind_and_refuses_while_its_manager_lives(home, critui):
    registry = get_registry()
    # 4,000 images: an epoch takes a few tenths of a second even on a fast machine, so the
    # worker is frozen mid-run (with 200, two epochs took 70 ms, and the worker sometimes
    # finished before the stop: --resume then had nothing to refuse).
    sweep = parse_sweep({"train": TINY, "dataset": {"id": "datasets.synthetic", "n_train": 4000, "n_test": 100},
                         "model": {"id": "models.cnn", "width": 4}, "sweep": {"seeds": [0, 1]}})
    planned = expand(sweep, registry)
    store = RunStore(home)
    nodes, _, _ = sched.plan_sweep(planned, 1, True)
    record = sched.create_sweep(store, sweep, planned, nodes, lambda spec: {}, None)
    left, queued = (e["run_id"] for e in record["runs"])
    worker = start_worker(store.run_dir(left))
    try:
        assert wait(lambda: any(e["event"] == "started" for e in read_events(store.run_dir(left))), step=0.01)
        os.kill(worker.pid, signal.SIGSTOP)  # still training, for as long as the test needs
        ended = [e["event"] for e in read_events(store.run_dir(left)) if e["event"] in ("finished", "failed")]
        assert worker.poll() is None and not ended, f"the worker ended before it could be frozen: {ended}"
        store.update(left, status="running", pid=worker.pid, manager_pid=os.getpid())

        # a live manager (this test process plays it) still follows the worker: refused, named
        result = critui("sweep", "--resume", "last")
        assert_clean_error(result, "Stop that process first", str(os.getpid()))

        # the TUI has quit: its manager is gone, its queued run is not started
        store.update(left, manager_pid=dead_pid())
        store.update(queued, manager_pid=dead_pid())
        resume = subprocess.Popen([sys.executable, "-m", "critui", "sweep", "--resume", "last"],
                                  env={**os.environ, "CRITUI_HOME": str(home), "COLUMNS": "160"},
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # adopted: the index now names the resuming process as the worker's manager
        assert wait(lambda: RunStore(home).get(left).get("manager_pid") == resume.pid)
        os.kill(worker.pid, signal.SIGCONT)
        out, err = resume.communicate(timeout=240)
    finally:
        if worker.poll() is None:
            os.kill(worker.pid, signal.SIGCONT)
            worker.wait(timeout=120)
    log = store.run_dir(left) / "log.txt"
    assert resume.returncode == 0, "\n".join([
        out + err, str(RunStore(home).get(left)), log.read_text() if log.exists() else "(no log)",
        str(read_events(store.run_dir(left))[-3:]),
    ])
    assert "Following 1 run(s) still training from an earlier session" in " ".join(err.split())
    docs = {d["id"]: d for d in RunStore(home).all()}
    assert docs[left]["status"] == docs[queued]["status"] == "finished"
    # the left-behind run was followed, never started again: one worker, one start
    assert [e["event"] for e in read_events(store.run_dir(left))].count("started") == 1
    assert docs[left]["epochs_done"] == docs[queued]["epochs_done"] == 2


def test_a_worker_adopted_after_its_final_event_is_recorded_finished(home):
    """A worker that has written its last event but not yet exited when --resume adopts it
    (caught in CI under load): its end is read from the events already written, not lost."""
    sweep = parse_sweep({"train": TINY, "dataset": {"id": "datasets.synthetic", "n_train": 200, "n_test": 100},
                         "model": {"id": "models.cnn", "width": 4}, "sweep": {"seeds": [0]}})
    planned = expand(sweep, get_registry())
    store = RunStore(home)
    nodes, _, _ = sched.plan_sweep(planned, 1, True)
    record = sched.create_sweep(store, sweep, planned, nodes, lambda spec: {}, None)
    (run_id,) = (e["run_id"] for e in record["runs"])
    worker = start_worker(store.run_dir(run_id))
    assert worker.wait(timeout=240) == 0, (store.run_dir(run_id) / "log.txt").read_text()
    assert read_events(store.run_dir(run_id))[-1]["event"] == "finished"
    # Its process still exiting: a stand-in that names the run on its command line.
    exiting = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", run_id])
    try:
        store.update(run_id, status="running", pid=exiting.pid, manager_pid=dead_pid())
        live = sched.left_behind(store, record)
        assert [doc["id"] for doc, _ in live["orphans"]] == [run_id]
        scheduler = sched.SweepScheduler(store, record, jobs=1)
        assert scheduler.adopt(live["orphans"]) == [0]
        exiting.terminate()
        exiting.wait(timeout=60)
        assert wait(lambda: not scheduler.step())
    finally:
        if exiting.poll() is None:
            exiting.kill()
    assert scheduler.status[0] == "finished"
    assert RunStore(home).get(run_id)["status"] == "finished"
