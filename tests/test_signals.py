"""Signals: critui signals only its own live workers, and Ctrl-C always cancels a run or sweep.

A pid or job id comes from files anyone may edit; ``os.kill(-1, ...)`` is every process of the
user. Every test that could reach ``os.kill`` on the old code runs with it replaced by a
recorder, so a regression fails the test instead of signalling this machine.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from critui.config import build_spec
from critui.events import read_events, worker_pid
from critui.plugins import get_registry
from critui.processes import pid_alive, signal_process
from critui.runs.store import RunStore
from tests.conftest import FAST, events_of, index_docs

PLANTED = [-1, 0, 1, "abc", "1234", True, None, 1.5, [], 2**40]
WAIT_S = 600  # generous: these wait on events, they time nothing


@pytest.fixture
def kills(monkeypatch) -> list[tuple[int, int]]:
    """Every os.kill call, recorded; only a signal-free probe of a pid above 1 goes through."""
    calls: list[tuple[int, int]] = []
    real_kill = os.kill

    def record(pid, sig):
        calls.append((pid, sig))
        if sig == 0 and isinstance(pid, int) and pid > 1:
            return real_kill(pid, 0)
        return None

    monkeypatch.setattr(os, "kill", record)
    return calls


@pytest.fixture
def other_program():
    """A live process that is not a critui worker."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    yield process
    process.kill()
    process.wait()


def make_run(tmp_path: Path, status: str, started_pid) -> tuple[RunStore, str]:
    """A run in the index whose events say a worker with ``started_pid`` started it."""
    store = RunStore(tmp_path / "home")
    doc = store.create(build_spec(get_registry(), sets=["dataset.n_train=300", "dataset.n_test=200"]), {})
    line = {"event": "started", "time": time.time(), "epoch": 0, "pid": started_pid}
    (store.run_dir(doc["id"]) / "events.jsonl").write_text(json.dumps(line) + "\n")
    store.update(doc["id"], status=status, pid=started_pid, manager_pid=started_pid)
    return store, doc["id"]


# -- which pids count as alive ------------------------------------------------------------------


@pytest.mark.parametrize("value", PLANTED)
def test_a_planted_pid_is_never_alive_and_never_signalled(value, kills):
    assert not pid_alive(value) and not pid_alive(value, "20260101-000000-abcd")
    assert not signal_process(value, signal.SIGTERM, "20260101-000000-abcd")
    assert worker_pid([{"event": "started", "pid": value}]) in (None, 2**40)
    assert not [c for c in kills if c[1] != 0 or c[0] <= 1]


def test_another_programs_pid_is_not_a_worker(other_program, kills):
    assert pid_alive(other_program.pid)  # it exists ...
    assert not pid_alive(other_program.pid, "20260101-000000-abcd")  # ... but is no worker of that run
    assert not signal_process(other_program.pid, signal.SIGTERM, "20260101-000000-abcd")
    assert other_program.poll() is None and not [c for c in kills if c[1] != 0]


def test_a_finished_unreaped_process_is_dead(tmp_path):
    marker = str(tmp_path / "20260101-000000-abcd")
    child = subprocess.Popen([sys.executable, "-c", "pass", marker])

    def zombie() -> bool:  # it has exited, and stays a zombie until it is waited for
        return Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"

    deadline = time.monotonic() + WAIT_S
    while not zombie() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert zombie() and not pid_alive(child.pid, marker)
    child.wait()


def test_a_workers_own_pid_is_alive(tmp_path):
    marker = str(tmp_path / "20260101-000000-abcd")
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", marker])
    try:
        # Until the child has exec'd, its command line is still pytest's, without the run id.
        deadline = time.monotonic() + WAIT_S
        while not pid_alive(child.pid, "20260101-000000-abcd") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pid_alive(child.pid, "20260101-000000-abcd")
        assert signal_process(child.pid, signal.SIGTERM, "20260101-000000-abcd")
        assert child.wait(timeout=WAIT_S) == -signal.SIGTERM
    finally:
        child.kill()


# -- the index, the TUI, the launchers ----------------------------------------------------------


@pytest.mark.parametrize("value", [-1, "abc", 0])
def test_a_run_whose_events_name_a_planted_pid_is_not_running_for_ever(tmp_path, value, kills):
    store, run_id = make_run(tmp_path, "running", value)
    store.reconcile()
    assert store.get(run_id)["status"] == "interrupted"  # was "running" for ever with -1
    assert not [c for c in kills if c[0] == -1 or c[1] != 0]


def test_a_run_whose_events_name_another_program_is_not_running(tmp_path, other_program, kills):
    store, run_id = make_run(tmp_path, "running", other_program.pid)
    store.reconcile()
    assert store.get(run_id)["status"] == "interrupted"


@pytest.mark.parametrize("planted", ["-1", "other"])
def test_the_tuis_cancel_signals_no_planted_pid(tmp_path, planted, other_program, kills):
    from critui.tui.feed import RunsFeed

    pid = -1 if planted == "-1" else other_program.pid
    store, run_id = make_run(tmp_path, "running", pid)
    feed = RunsFeed(store)
    feed.poll()
    assert feed.cancel(run_id) == "not running"
    assert not [c for c in kills if c[1] != 0]  # SIGTERM went nowhere, least of all to -1
    assert other_program.poll() is None


@pytest.mark.parametrize("job", ["local:-1", "local:0", "local:1", "local:abc", "local:", "slurm:--user=me",
                                 "slurm:1 2", "nocluster:5"])
def test_a_planted_job_id_reaches_neither_kill_nor_scancel(tmp_path, job, kills, monkeypatch):
    import subprocess as sp

    from critui.builtin.launchers import Slurm, cancel_job
    from critui.params import resolve

    calls = []
    monkeypatch.setattr(sp, "call", lambda *a, **k: calls.append(a) or 0)
    monkeypatch.setattr(sp, "check_call", lambda *a, **k: calls.append(a) or 0)
    launcher = Slurm(resolve(Slurm.params, {"cluster": "local"}, "launcher"), tmp_path)
    assert launcher.cancel(job) is False
    assert cancel_job(job, None) is False
    assert launcher.alive(job) is False  # a run with such a job is not "running" for ever
    assert not kills and not calls


def test_a_local_job_id_of_another_program_is_not_cancelled(tmp_path, other_program, kills):
    from critui.builtin.launchers import Slurm
    from critui.params import resolve

    launcher = Slurm(resolve(Slurm.params, {"cluster": "local"}, "launcher"), tmp_path)
    assert launcher.cancel(f"local:{other_program.pid}") is False
    assert launcher.alive(f"local:{other_program.pid}") is False
    assert other_program.poll() is None and not [c for c in kills if c[1] != 0]


# -- the worker stops cleanly whenever it is asked ----------------------------------------------


def test_a_worker_stopped_while_it_starts_up_records_cancelled(tmp_path):
    from critui.runs.launcher import start_worker
    from critui.train.worker import EXIT_CANCELLED

    store = RunStore(tmp_path / "home")
    doc = store.create(build_spec(get_registry(), sets=["dataset.n_train=300", "dataset.n_test=200"]), {})
    run_dir = store.run_dir(doc["id"])
    worker = start_worker(run_dir)
    worker.send_signal(signal.SIGTERM)  # at once: before Python has even started in it
    assert worker.wait(timeout=WAIT_S) == EXIT_CANCELLED, (run_dir / "log.txt").read_text()  # was -15
    assert [e["event"] for e in read_events(run_dir)] == ["cancelled"]


# -- Ctrl-C to `critui run` and `critui sweep` --------------------------------------------------


def start_critui(home: Path, *args: str, ignore_sigint: bool = False, env: dict[str, str] | None = None):
    environment = {**os.environ, "CRITUI_HOME": str(home), "COLUMNS": "160", **(env or {})}
    # A shell starts its background jobs with SIGINT ignored; a Ctrl-C (or kill -INT) must still cancel.
    ignore = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if ignore_sigint else None
    return subprocess.Popen([sys.executable, "-m", "critui", *args], env=environment, preexec_fn=ignore,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_until(condition, what: str, process: subprocess.Popen):
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if (found := condition()):
            return found
        if process.poll() is not None:
            raise AssertionError(f"critui ended before {what}: {process.communicate()}")
        time.sleep(0.05)
    process.kill()
    raise AssertionError(f"never {what}: {process.communicate()}")


def the_run(home: Path) -> dict | None:
    docs = index_docs(home) if (home / "history.json").exists() else []
    return docs[0] if docs else None


def trained(home: Path, epochs: int) -> dict | None:
    """The first run (of any in the home: a sweep's are not indexed in training order) with
    ``epochs`` epochs trained, else None."""
    docs = index_docs(home) if (home / "history.json").exists() else []
    for doc in docs:
        if sum(e["event"] == "epoch" for e in events_of(home, doc["id"])) >= epochs:
            return doc
    return None


def assert_cancelled(manager: subprocess.Popen, home: Path) -> None:
    try:
        _, err = manager.communicate(timeout=WAIT_S)
    finally:
        manager.kill()
    assert manager.returncode == 130, err
    assert "Traceback" not in err
    (doc,) = index_docs(home)
    assert doc["status"] == "cancelled", doc
    assert events_of(home, doc["id"])[-1]["event"] == "cancelled"


def test_ctrl_c_before_the_first_epoch_cancels(home):
    manager = start_critui(home, "run", "--epochs", "30", *FAST)
    wait_until(lambda: the_run(home), "the run was created", manager)  # its worker is starting, or not yet
    manager.send_signal(signal.SIGINT)
    assert_cancelled(manager, home)


@pytest.mark.parametrize("ignore_sigint", [False, True], ids=["foreground", "sigint-ignored"])
def test_ctrl_c_mid_run_cancels(home, ignore_sigint):
    manager = start_critui(home, "run", "--epochs", "30", *FAST, ignore_sigint=ignore_sigint)
    wait_until(lambda: trained(home, 1), "an epoch was trained", manager)
    manager.send_signal(signal.SIGINT)
    assert_cancelled(manager, home)  # was exit 0 with SIGINT ignored: the run trained on to the end


# Loaded into every Python process of the test through PYTHONPATH: in the worker, it holds the
# checkpoint of epoch 0 open until the stop signal has reached the worker, so the signal
# arrives in the middle of writing it, every time.
MID_CHECKPOINT = """
import os, sys, time

if "critui.train.worker" in sys.orig_argv:
    from critui.train import checkpoint

    real_save = checkpoint.save_atomic

    def save_once_stopped(state, path):
        if state["next_epoch"] == 1:
            open(os.environ["CRITUI_TEST_SAVING"], "w").close()
            signals = sys.modules["__main__"]._signals
            deadline = time.monotonic() + 600
            while signals["pending"] is None and time.monotonic() < deadline:
                time.sleep(0.01)
        real_save(state, path)

    checkpoint.save_atomic = save_once_stopped
"""


def test_ctrl_c_during_a_checkpoint_cancels_after_it(home, tmp_path):
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(MID_CHECKPOINT)
    saving = tmp_path / "saving"
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(hooks), os.environ.get("PYTHONPATH")])),
           "CRITUI_TEST_SAVING": str(saving)}
    manager = start_critui(home, "run", "--epochs", "30", *FAST, env=env)
    wait_until(saving.exists, "the first checkpoint was being written", manager)
    manager.send_signal(signal.SIGINT)
    assert_cancelled(manager, home)
    (doc,) = index_docs(home)
    kinds = [e["event"] for e in events_of(home, doc["id"])]
    assert kinds[-2:] == ["checkpoint", "cancelled"]  # the checkpoint was finished first
    from critui.train.checkpoint import read

    assert read(home / "runs" / doc["id"] / "ckpt" / "latest.pt")["next_epoch"] == 1


# Long enough that no run can finish between its first epoch and the Ctrl-C (30 of these
# epochs took 2.3 s on an idle machine); a cancelled run stops after its epoch in flight.
SWEEP = """\
[train]
threads = 1
epochs = 2000

[dataset]
id = "datasets.synthetic"
n_train = 300
n_test = 200

[model]
id = "models.cnn"
width = 4

[sweep]
seeds = [0, 1]
"""


@pytest.mark.parametrize("ignore_sigint", [False, True], ids=["foreground", "sigint-ignored"])
def test_ctrl_c_cancels_a_sweep(home, tmp_path, ignore_sigint):
    path = tmp_path / "two.toml"
    path.write_text(SWEEP)
    manager = start_critui(home, "sweep", str(path), "--jobs", "1", ignore_sigint=ignore_sigint)
    wait_until(lambda: trained(home, 1), "an epoch was trained", manager)
    manager.send_signal(signal.SIGINT)
    try:
        _, err = manager.communicate(timeout=WAIT_S)
    finally:
        manager.kill()
    assert manager.returncode == 130, err
    assert "Traceback" not in err and "--resume" in err
    assert sorted(d["status"] for d in index_docs(home)) == ["cancelled", "cancelled"]
