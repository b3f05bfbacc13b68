"""Launchers: workers on this machine, or Slurm jobs through submitit.

No Slurm here: submitit's own local backend (``--set launcher.cluster=local``) runs the same
path, from the pickled job to its result, as processes of this machine.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from critui.builtin.launchers import Local
from critui.events import epoch_table
from critui.testing import check_launcher
from tests.conftest import events_of, index_docs

pytest.importorskip("submitit")

SUBMITIT = ["--launcher", "slurm", "--set", "launcher.cluster=local"]
WAIT_S = 900  # waits for events are generous: they time nothing, and the machine may be loaded
TINY = ["--set", "dataset.n_train=64", "--set", "dataset.n_test=32", "--set", "model.width=4",
        "--set", "train.threads=1"]


def test_a_launcher_that_does_not_stop_its_worker_cleanly_fails_the_contract():
    class Blunt(Local):
        """Starts the worker, but turns its SIGTERM into SIGKILL: it never records `cancelled`.
        (One that drops the SIGTERM fails the same check once ``timeout`` has passed; that is
        not tested here, since a test must not hang on a wall-clock limit.)"""

        name = "blunt"
        description = "kills instead of stopping"

        def start(self, run_dir, env):
            worker = super().start(run_dir, env)
            send = worker.send_signal
            worker.send_signal = lambda sig: send(signal.SIGKILL if sig == signal.SIGTERM else sig)
            return worker

    with pytest.raises(AssertionError, match="does not stop a worker cleanly"):
        check_launcher(Blunt, timeout=1800)  # a wait for events, not a limit: generous


def start_training(home, epochs: int) -> tuple[subprocess.Popen, str]:
    """`critui run` of a tiny flip run through submitit, in the background; returns it and its
    run id once the run has trained an epoch. In its own session, as a terminal would have it:
    a signal reaches critui alone, which then stops the job through the launcher."""
    command = [sys.executable, "-m", "critui", "run", "--plugin", "deficits.flip", "--epochs", str(epochs),
               *TINY, *SUBMITIT]
    env = {**os.environ, "CRITUI_HOME": str(home), "COLUMNS": "160"}
    manager = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline and manager.poll() is None:
        docs = index_docs(home) if (home / "history.json").exists() else []
        if docs and any(e["event"] == "epoch" for e in events_of(home, docs[0]["id"])):
            return manager, docs[0]["id"]
        time.sleep(0.05)
    manager.kill()
    raise AssertionError(f"no epoch trained: {manager.communicate()}")


def test_a_run_through_submitit_is_recorded_with_its_job_and_resumes_there(critui, home):
    manager, _ = start_training(home, 150)
    try:
        manager.send_signal(signal.SIGINT)
        out, err = manager.communicate(timeout=WAIT_S)
    finally:
        manager.kill()
    assert manager.returncode == 130, err
    assert "worker submitted by launchers.slurm as job local:" in out
    (doc,) = index_docs(home)
    assert doc["status"] == "cancelled" and doc["launcher"] == "launchers.slurm" and doc["job"].startswith("local:")
    first_job = doc["job"]
    assert f"launchers.slurm, job {first_job}" in critui("show", doc["id"], check=True).stdout
    events = events_of(home, doc["id"])
    assert events[-1]["event"] == "cancelled" and 0 < doc["epochs_done"] < 150
    assert "Job completed successfully" in (home / "runs" / doc["id"] / "log.txt").read_text()  # its output, in log.txt

    resumed = critui("resume", doc["id"], "--set", "launcher.time=30")  # where it ran before, one setting changed
    assert resumed.returncode == 0, resumed.stderr
    (doc,) = index_docs(home)
    assert doc["status"] == "finished" and doc["launcher"] == "launchers.slurm" and doc["job"] != first_job
    assert doc["launcher_settings"]["cluster"] == "local" and doc["launcher_settings"]["time"] == 30
    epochs = [r["epoch"] for r in epoch_table(events_of(home, doc["id"]))]
    assert epochs == list(range(150))  # every epoch, across the two jobs


def test_a_sweep_through_submitit_runs_its_forks_and_resumes_with_the_same_launcher(critui, home, tmp_path):
    config = tmp_path / "tiny.toml"
    config.write_text(
        'name = "tiny"\n[train]\nthreads = 1\nepochs = 6\n[dataset]\nid = "datasets.synthetic"\nn_train = 64\n'
        'n_test = 32\n[model]\nid = "models.cnn"\nwidth = 4\n[deficit]\nid = "deficits.blur"\nstart = 0\n'
        "[sweep]\nremoval = { values = [0, 2, 4], after = 2 }\n"
    )
    result = critui("sweep", str(config), "--jobs", "2", "--per-gpu", "2", *SUBMITIT)
    assert result.returncode == 0, result.stderr
    assert "--per-gpu are ignored with launchers.slurm" in result.stderr
    (record_path,) = (home / "sweeps").glob("*/sweep.json")
    record = json.loads(record_path.read_text())
    assert record["launcher"]["id"] == "launchers.slurm" and record["launcher"]["settings"]["cluster"] == "local"
    docs = {d["id"]: d for d in index_docs(home)}
    assert all(d["status"] == "finished" and d["job"].startswith("local:") for d in docs.values())
    child = next(e for e in record["runs"] if e["parent"] is not None)
    epochs = [e["epoch"] for e in events_of(home, child["run_id"]) if e["event"] == "epoch"]
    assert epochs == list(range(child["fork_epoch"], child["epochs"]))  # it forked from its parent's checkpoint
    assert (home / "submitit").is_dir()  # submitit's job files stay in the critui home
    plan = critui("sweep", str(config), "--dry-run", "--launcher", "slurm", env={"PATH": str(tmp_path)})
    assert plan.returncode == 0 and "fork" in plan.stdout  # planned here, for a cluster
    # --resume takes the launcher and its settings from the record (nothing is left to train);
    # naming the launcher again starts from its defaults, which need sbatch.
    no_sbatch = {"PATH": str(tmp_path)}
    assert critui("sweep", "--resume", "last", env=no_sbatch).returncode == 0
    again = critui("sweep", "--resume", "last", "--launcher", "slurm", env=no_sbatch)
    assert again.returncode == 2 and "needs Slurm's sbatch" in again.stderr
    # Without submitit, the launcher it ran with cannot start: the message names the way out.
    shadow = tmp_path / "shadow"
    (shadow / "submitit").mkdir(parents=True)
    (shadow / "submitit" / "__init__.py").write_text("raise ImportError('no submitit here')\n")
    gone = critui("sweep", "--resume", "last", env={"PYTHONPATH": str(shadow)})
    assert gone.returncode == 2 and "--launcher local to continue on this machine" in " ".join(gone.stderr.split())
    assert critui("sweep", "--resume", "last", "--launcher", "local", env={"PYTHONPATH": str(shadow)}).returncode == 0
    # A job still on the cluster (here: a live process standing in for it) and no manager:
    # --resume says how to wait for it or cancel it.
    from critui.runs.store import RunStore

    # (critui signals a local job's pid only if it is a submitit controller: the stand-in names one.)
    stand_in = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", "submitit.local._local"])
    try:
        RunStore(home).update(child["run_id"], status="running", job=f"local:{stand_in.pid}",
                              launcher="launchers.slurm", launcher_settings={"cluster": "local"})
        busy = critui("sweep", "--resume", "last")
        assert busy.returncode == 2 and f"`kill {stand_in.pid}`" in " ".join(busy.stderr.split())  # its controller, not scancel
    finally:
        stand_in.kill()
        stand_in.wait()


def test_launcher_mistakes_are_one_paragraph_and_create_no_run(critui, home, tmp_path):
    no_submitit = tmp_path / "shadow"
    (no_submitit / "submitit").mkdir(parents=True)
    (no_submitit / "submitit" / "__init__.py").write_text("raise ImportError('no submitit here')\n")
    cases = [
        (["--launcher", "slurm"], {"PATH": str(tmp_path)}, "needs Slurm's sbatch"),
        (["--launcher", "slurm"], {"PYTHONPATH": str(no_submitit)}, "pip install 'critui[slurm]'"),
        (["--launcher", "moon"], {}, "Unknown launchers plugin 'launchers.moon'"),
        (["--set", "launcher.partition=gpu"], {}, "launchers.local takes no settings"),
        (["--launcher", "slurm", "--set", "launcher.cluster=moon"], {}, "launcher.cluster must be one of slurm, local"),
        (["--launcher", "slurm", "--set", "launcher.time"], {}, "is not launcher.NAME=VALUE"),
        (["--launcher", "slurm", "--plugin", "launchers.local"], {}, "Name one launcher"),
    ]
    for args, env, message in cases:
        result = critui("run", *args, env=env)
        assert result.returncode == 2 and message in " ".join(result.stderr.split()), (args, result.stderr)
        assert "Traceback" not in result.stderr
    assert not (home / "runs").exists() or not any((home / "runs").iterdir())


def test_the_index_asks_the_launcher_whether_a_job_still_runs(home):
    from critui.config import build_spec
    from critui.plugins import get_registry
    from critui.runs.store import RunStore

    store = RunStore(home)
    spec = build_spec(get_registry(), sets=["dataset.n_train=64"])
    ended = store.create(spec, {})
    unknown = store.create(spec, {})
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    settings = {"cluster": "local"}
    store.update(ended["id"], status="running", job=f"local:{dead.pid}", launcher="launchers.slurm", launcher_settings=settings)
    # A launcher that is no longer installed cannot tell: the run is left as it was.
    store.update(unknown["id"], status="running", job="x:1", launcher="launchers.gone", launcher_settings={})
    store.reconcile()
    assert store.get(ended["id"])["status"] == "interrupted"
    assert store.get(unknown["id"])["status"] == "running"


def test_a_resumed_run_keeps_its_settings_and_takes_launcher_settings_only(critui, home):
    result = critui("resume", "last", "--set", "optim.lr=0.1")
    assert result.returncode == 2 and "only launcher.NAME=VALUE" in " ".join(result.stderr.split())


def test_launcher_settings_are_split_from_the_run_settings():
    from critui.runs.launcher import split_launcher_sets

    assert split_launcher_sets(["optim.lr=0.1", "launcher.time=5", " launcher.partition = gpu"]) == (
        ["optim.lr=0.1"], {"time": "5", "partition": "gpu"})



def test_a_slurm_warning_signal_pauses_the_worker_and_the_requeued_job_resumes_the_run(home):
    """SIGUSR2 is Slurm's warning before the time limit or on preemption (submitit asks for it)."""
    from critui.config import build_spec
    from critui.plugins import get_registry
    from critui.runs.launcher import make_launcher
    from critui.runs.monitor import RunMonitor
    from critui.runs.store import RunStore

    store = RunStore(home)
    spec = build_spec(get_registry(), sets=["train.epochs=300", "dataset.n_train=64", "dataset.n_test=32",
                                            "model.width=4", "train.threads=1"])
    doc = store.create(spec, {})
    launcher = make_launcher(get_registry(), "slurm", {"cluster": "local"}, home)
    monitor = RunMonitor(store, doc["id"], launcher=launcher)
    warned = False
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        monitor.poll()
        if not warned and any(e["event"] == "epoch" for e in events_of(home, doc["id"])):
            started = next(e for e in events_of(home, doc["id"]) if e["event"] == "started")
            os.kill(started["pid"], signal.SIGUSR2)  # the job's task process: the worker runs in it
            warned = True
        if monitor.done:
            break
        time.sleep(0.05)
    assert monitor.done and monitor.end["event"] == "finished", monitor.end
    kinds = [e["event"] for e in events_of(home, doc["id"])]
    assert kinds.count("paused") == 1 and kinds.count("started") == 2 and kinds[-1] == "finished"
    resumed = [e for e in events_of(home, doc["id"]) if e["event"] == "started"][1]
    assert resumed["resumed"] is True and resumed["pid"] != started["pid"]
    epochs = [r["epoch"] for r in epoch_table(events_of(home, doc["id"]))]
    assert epochs == list(range(300))  # the requeued job went on from the checkpoint
    assert store.get(doc["id"])["status"] == "finished"
    assert "Requeued job" in (home / "runs" / doc["id"] / "log.txt").read_text()


def test_a_job_started_elsewhere_is_cancelled_through_its_launcher(home):
    """The TUI's cancel of a run another critui started as a cluster job: there is no local
    worker pid to signal, so the run's launcher stops the job."""
    from critui.runs.store import RunStore
    from critui.tui.feed import RunsFeed

    manager, run_id = start_training(home, 5000)
    try:
        feed = RunsFeed(RunStore(home))
        feed.poll()
        assert feed.cancel(run_id) == "signalled"
        out, err = manager.communicate(timeout=WAIT_S)
    finally:
        manager.kill()
    assert manager.returncode == 130, err  # the manager saw its job end as cancelled
    (doc,) = index_docs(home)
    assert doc["status"] == "cancelled" and events_of(home, doc["id"])[-1]["event"] == "cancelled"


def test_launcher_help_lists_the_registered_launchers(critui):
    for command in ("run", "sweep", "resume"):
        shown = " ".join(critui(command, "--help", check=True).stdout.split())
        assert "local (Workers as subprocesses of this machine)" in shown
        assert "slurm (Each worker as a Slurm job, through submitit)" in shown and "ray (" in shown


def test_a_local_submitit_job_starts_however_slowly_submitit_itself_goes_on(monkeypatch, tmp_path):
    """submitit's local controller opens its log as soon as it starts, while submitit creates a
    job's own ``%j`` folder only after starting it: on a loaded machine the controller won that
    race and died (CI: ``FileNotFoundError: .../submitit/12841/12841_0_log.out``). Here submitit
    is held back until its controller has opened its log or died, so the race is always lost."""
    import submitit.local.local as submitit_local

    from critui.builtin.launchers import Slurm

    start = submitit_local.start_controller

    def start_then_wait(folder, *args, **kwargs):
        process = start(folder, *args, **kwargs)
        deadline = time.monotonic() + WAIT_S
        while process.poll() is None and not list((tmp_path / "submitit").rglob("*_log.out")):
            assert time.monotonic() < deadline, "submitit's controller neither opened its log nor ended"
            time.sleep(0.05)
        return process

    monkeypatch.setattr(submitit_local, "start_controller", start_then_wait)
    check_launcher(Slurm, {"cluster": "local"}, home=tmp_path, timeout=1800)
