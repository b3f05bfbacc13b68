"""launchers.ray against a real Ray head on this machine (skipped where Ray is not installed).

One head serves the module (a cold ``ray start`` takes 20 s or more on a busy machine); one test
starts its own through ``address=local``. The fake-client tests at the end cover what a real
head here cannot show: a lost node, a home the cluster does not share, a missing token.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from types import SimpleNamespace

import pytest

from critui.events import epoch_table
from tests.conftest import events_of, index_docs

pytest.importorskip("ray.job_submission")

from critui.builtin import ray_launcher  # noqa: E402
from critui.builtin.ray_launcher import LocalHead, RayWorker, parse_job  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

TINY = ["--set", "dataset.n_train=64", "--set", "dataset.n_test=32", "--set", "model.width=4",
        "--set", "train.threads=1"]
WAIT_S = 300  # Ray is slow to start jobs on a loaded machine: wait on events, never on time


@pytest.fixture(scope="module")
def head():
    """The dashboard URL of a Ray head on this machine, stopped after the module's tests."""
    started = LocalHead(cpus=4)  # more slots than cores: the tiny runs of a sweep go at once
    try:
        started.wait_until_ready()
        yield started.url
    finally:
        started.stop(wait=True)


def on(head: str) -> list[str]:
    return ["--launcher", "ray", "--set", f"launcher.address={head}"]


def wait_for(condition, what: str, timeout: float = WAIT_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout} s")


def start_training(home, head: str, epochs: int, *args: str) -> tuple[subprocess.Popen, str]:
    """`critui ARGS` (a run, by default) through the head, in the background and its own
    session; returns it and the run id once it has trained an epoch."""
    command = [sys.executable, "-m", "critui", *(args or ("run", "--plugin", "deficits.flip", "--epochs",
                                                           str(epochs), *TINY, *on(head)))]
    env = {**os.environ, "CRITUI_HOME": str(home), "COLUMNS": "160"}
    before = epoch_counts(home)
    manager = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)

    def an_epoch():
        if manager.poll() is not None:
            raise AssertionError(f"critui ended early: {manager.communicate()}")
        return next((run_id for run_id, n in epoch_counts(home).items() if n > before.get(run_id, 0)), None)

    try:
        return manager, wait_for(an_epoch, "no epoch")
    except BaseException:
        manager.kill()
        raise


def epoch_counts(home) -> dict[str, int]:
    """How many epochs each run of the home has trained so far."""
    try:
        docs = index_docs(home)
    except (OSError, ValueError):  # no index yet, or caught half-written
        return {}
    return {d["id"]: sum(e["event"] == "epoch" for e in events_of(home, d["id"])) for d in docs}


def test_a_two_epoch_run_on_a_head_of_its_own(critui, home):
    result = critui("run", "--plugin", "deficits.flip", "--epochs", "2", *TINY, "--launcher", "ray",
                    "--set", "launcher.address=local", timeout=900)
    assert result.returncode == 0, result.stderr
    (doc,) = index_docs(home)
    assert doc["status"] == "finished" and doc["launcher"] == "launchers.ray"
    submission_id, url = parse_job(doc["job"])
    assert submission_id == f"critui-{doc['id']}-a1" and url.startswith("http://127.0.0.1:")
    assert "worker submitted by launchers.ray as job ray:critui-" in " ".join(result.stdout.split())
    assert [r["epoch"] for r in epoch_table(events_of(home, doc["id"]))] == [0, 1]
    show = critui("show", doc["id"], check=True).stdout
    assert "launchers.ray" in show and submission_id in show.replace("\n", "").replace(" ", "")
    assert not any((home / "ray").iterdir())  # the check's probe file is gone
    # The head went with the critui process that started it: the job is not alive any more.
    launcher = ray_launcher.Ray({"address": "local", "gpus": 0.0, "cpus": 1.0, "memory": 0.0, "retries": 0}, home)
    wait_for(lambda: launcher.alive(doc["job"]) is False, "the head still answers")


def test_cancel_mid_run_stops_the_job_cleanly(home, head):
    manager, run_id = start_training(home, head, 5000)
    try:
        manager.send_signal(signal.SIGINT)
        out, err = manager.communicate(timeout=WAIT_S)
    finally:
        manager.kill()
    assert manager.returncode == 130, err
    (doc,) = index_docs(home)
    assert doc["status"] == "cancelled" and 0 < doc["epochs_done"] < 5000
    assert events_of(home, run_id)[-1]["event"] == "cancelled"
    client, _ = ray_launcher.connect(head)
    assert client.get_job_status(parse_job(doc["job"])[0]).value == "STOPPED"


def test_a_job_outlives_its_manager_and_a_second_process_resumes_it(critui, home, head):
    from critui.runs.launcher import job_alive
    from critui.runs.store import RunStore
    from critui.tui.feed import RunsFeed

    manager, run_id = start_training(home, head, 5000)
    manager.kill()  # SIGKILL: no clean-up at all
    manager.wait()
    store = RunStore(home)
    store.reconcile()
    doc = store.get(run_id)
    assert doc["status"] == "running" and job_alive(doc, home) is True  # Ray still trains it
    epochs = len(epoch_table(events_of(home, run_id)))
    wait_for(lambda: len(epoch_table(events_of(home, run_id))) > epochs, "no epoch after the manager died")

    feed = RunsFeed(store)  # the TUI's x, in a process that did not start the run
    feed.poll()
    assert feed.cancel(run_id) == "signalled"
    wait_for(lambda: events_of(home, run_id)[-1]["event"] == "cancelled", "no cancelled event")
    wait_for(lambda: job_alive(store.get(run_id), home) is False, "the job still runs")
    store.reconcile()
    assert store.get(run_id)["status"] == "cancelled"

    resumed, _ = start_training(home, head, 0, "resume", run_id)  # its launcher and head, from the index
    try:
        doc = wait_for(lambda: (d := store.get(run_id))["job"].endswith(f"-a2@{head}") and d, "no second attempt")
        done = len(epoch_table(events_of(home, run_id)))
        wait_for(lambda: len(epoch_table(events_of(home, run_id))) > done, "no epoch after the resume")
        resumed.send_signal(signal.SIGINT)
        out, err = resumed.communicate(timeout=WAIT_S)
    finally:
        resumed.kill()
    assert resumed.returncode == 130, err
    starts = [e for e in events_of(home, run_id) if e["event"] == "started"]
    assert len(starts) == 2 and starts[1]["resumed"] is True
    epochs = [r["epoch"] for r in epoch_table(events_of(home, run_id))]
    assert epochs == list(range(len(epochs)))  # every epoch once, across the two jobs


def test_a_sweep_forks_its_children_once_the_parent_checkpoint_exists(critui, home, head, tmp_path):
    config = tmp_path / "tiny.toml"
    config.write_text(
        'name = "tiny"\n[train]\nthreads = 1\nepochs = 6\n[dataset]\nid = "datasets.synthetic"\nn_train = 64\n'
        'n_test = 32\n[model]\nid = "models.cnn"\nwidth = 4\n[deficit]\nid = "deficits.blur"\nstart = 0\n'
        "[sweep]\nremoval = { values = [0, 2, 4], after = 2 }\n"
    )
    # A RAY_ADDRESS elsewhere does not win over the head the launcher is given (Ray's client lets it).
    result = critui("sweep", str(config), "--jobs", "2", *on(head), env={"RAY_ADDRESS": "http://127.0.0.1:9"},
                    timeout=900)
    assert result.returncode == 0, result.stderr
    (record_path,) = (home / "sweeps").glob("*/sweep.json")
    record = json.loads(record_path.read_text())
    assert record["launcher"] == {"id": "launchers.ray", "settings": {"address": head, "gpus": 0.0, "cpus": 1.0,
                                                                       "memory": 0.0, "retries": 0}}
    docs = {d["id"]: d for d in index_docs(home)}
    assert all(d["status"] == "finished" and d["job"].startswith("ray:critui-") for d in docs.values())
    children = [e for e in record["runs"] if e["parent"] is not None]
    assert children
    for child in children:
        epochs = [e["epoch"] for e in events_of(home, child["run_id"]) if e["event"] == "epoch"]
        assert epochs == list(range(child["fork_epoch"], child["epochs"]))  # from its parent's checkpoint
    again = critui("sweep", "--resume", "last", timeout=900)  # the launcher from the record: nothing left
    assert again.returncode == 0, again.stderr


def test_ray_refuses_a_second_job_for_the_same_attempt(home, head):
    from critui.config import build_spec
    from critui.plugins import get_registry
    from critui.runs.launcher import make_launcher
    from critui.runs.store import RunStore
    from critui.train import worker

    assert ray_launcher.EXIT_BUSY == worker.EXIT_BUSY and ray_launcher.EXIT_CANCELLED == worker.EXIT_CANCELLED
    store = RunStore(home)
    doc = store.create(build_spec(get_registry(), sets=[*TINY[1::2], "train.epochs=5000"]), {})
    launcher = make_launcher(get_registry(), "ray", {"address": head}, home, check=False)
    first = launcher.start(store.run_dir(doc["id"]), {})
    try:
        assert first.poll() is None and first.submission_id == f"critui-{doc['id']}-a1"
        second = launcher.start(store.run_dir(doc["id"]), {})  # another manager, the same run
        assert second.poll() == worker.EXIT_BUSY and second.job == first.job
        client, _ = ray_launcher.connect(head)
        with pytest.raises(RuntimeError, match="already exists"):
            client.submit_job(entrypoint="true", submission_id=first.submission_id)
        assert launcher.alive(first.job) is True
        assert launcher.cancel(first.job) is True
        assert first.wait(timeout=WAIT_S) == worker.EXIT_CANCELLED
        assert launcher.alive(first.job) is False
    finally:
        first.kill()


def test_address_auto_is_ray_address(home, head, monkeypatch):
    from critui.plugins import get_registry
    from critui.runs.launcher import make_launcher

    monkeypatch.setenv("RAY_ADDRESS", head)
    monkeypatch.delitem(ray_launcher._clients, None, raising=False)
    launcher = make_launcher(get_registry(), "ray", {}, home, check=False)
    assert launcher.settings["address"] == "auto" and launcher.client()[1] == head
    ray_launcher._clients.pop(None, None)


def test_a_head_that_does_not_answer_is_one_paragraph_and_creates_no_run(critui, home):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    result = critui("run", *TINY, "--launcher", "ray", "--set", f"launcher.address=http://127.0.0.1:{port}")
    message = " ".join(result.stderr.split())
    assert result.returncode == 2 and f"no Ray head answers at http://127.0.0.1:{port}" in message
    assert "launcher.address=local" in message and "Traceback" not in result.stderr
    assert not (home / "runs").exists() or not any((home / "runs").iterdir())
    launcher = ray_launcher.Ray({"address": f"http://127.0.0.1:{port}", "gpus": 0.0, "cpus": 1.0,
                                 "memory": 0.0, "retries": 0}, home)
    assert launcher.alive(f"ray:critui-x-a1@http://127.0.0.1:{port}") is None  # a cluster's head may come back
    assert launcher.cancel(f"ray:critui-x-a1@http://127.0.0.1:{port}") is False


# -- what a real head here cannot show: a fake client ------------------------------------------


class FakeJobs:
    """The part of JobSubmissionClient the launcher uses, over a dict of job states."""

    def __init__(self):
        self.jobs: dict[str, SimpleNamespace] = {}
        self.submitted: list[dict] = []

    def set(self, submission_id, status, exit_code=None, error_type=None, message=""):
        self.jobs[submission_id] = SimpleNamespace(status=SimpleNamespace(value=status), driver_exit_code=exit_code,
                                                   error_type=error_type, message=message)

    def submit_job(self, **job):
        if job["submission_id"] in self.jobs:
            raise RuntimeError("Request failed with status code 500: ... already exists")
        self.submitted.append(job)
        self.set(job["submission_id"], "PENDING")
        return job["submission_id"]

    def get_job_status(self, submission_id):
        return self.get_job_info(submission_id).status

    def get_job_info(self, submission_id):
        if submission_id not in self.jobs:
            raise RuntimeError(f"Request failed with status code 404: Job {submission_id} does not exist.")
        return self.jobs[submission_id]

    def stop_job(self, submission_id):
        self.set(submission_id, "STOPPED")
        return True


SETTINGS = {"address": "http://head:8265", "gpus": 0.25, "cpus": 2.0, "memory": 1.5, "retries": 1}


def test_a_lost_node_resubmits_the_run_as_its_next_attempt(tmp_path, monkeypatch):
    monkeypatch.setattr(ray_launcher, "STATUS_EVERY_S", 0.0)
    run_dir = tmp_path / "20261130-120000-abcd"
    run_dir.mkdir()
    jobs = FakeJobs()
    jobs.set("critui-20261130-120000-abcd-a1", "STOPPED")  # an earlier, cancelled attempt
    worker = RayWorker(jobs, "http://head:8265", run_dir, {"CUDA_VISIBLE_DEVICES": "1"}, SETTINGS)
    assert worker.job == "ray:critui-20261130-120000-abcd-a2@http://head:8265"
    (job,) = jobs.submitted
    assert job["entrypoint_num_gpus"] == 0.25 and job["entrypoint_num_cpus"] == 2.0
    assert job["entrypoint_memory"] == int(1.5 * 2**30)
    assert job["runtime_env"]["env_vars"]["CUDA_VISIBLE_DEVICES"] == "1"
    assert f"-m critui.train.worker {run_dir}" in job["entrypoint"] and "log.txt" in job["entrypoint"]
    assert worker.poll() is None
    jobs.set(worker.submission_id, "FAILED", error_type="JOB_SUPERVISOR_ACTOR_DIED", message="node died")
    assert worker.poll() is None and worker.submission_id.endswith("-a3")  # retried, resumes from its checkpoint
    assert "resubmitted as attempt 3" in (run_dir / "log.txt").read_text()
    launcher = ray_launcher.Ray(SETTINGS, tmp_path)
    monkeypatch.setattr(ray_launcher, "connect", lambda url, local=False: (jobs, url))
    assert launcher.alive("ray:critui-20261130-120000-abcd-a2@http://head:8265") is True  # follows the retry
    jobs.set(worker.submission_id, "FAILED", error_type="JOB_SUPERVISOR_ACTOR_DIED")
    assert worker.poll() == 1  # no retry left
    assert launcher.alive("ray:critui-20261130-120000-abcd-a2@http://head:8265") is False
    jobs.set("critui-20261130-120000-abcd-a3", "FAILED", exit_code=3, error_type="JOB_ENTRYPOINT_COMMAND_ERROR")
    assert RayWorker._exit_code(worker, jobs.jobs["critui-20261130-120000-abcd-a3"]) == 3  # the worker's own code


def test_the_probe_says_when_the_home_is_not_shared(tmp_path, monkeypatch):
    from critui.errors import CritUIError

    class Unshared(FakeJobs):
        def submit_job(self, **job):
            super().submit_job(**job)
            self.set(job["submission_id"], "FAILED", exit_code=3, error_type="JOB_ENTRYPOINT_COMMAND_ERROR")
            return job["submission_id"]

    monkeypatch.setattr(ray_launcher, "connect", lambda url, local=False: (Unshared(), "http://head:8265"))
    with pytest.raises(CritUIError, match="not on a file system the cluster's nodes share"):
        ray_launcher.Ray(SETTINGS, tmp_path).check()
    assert not any((tmp_path / "ray").iterdir())


def test_a_missing_token_is_one_paragraph_with_the_fix(tmp_path, monkeypatch):
    """A head with token authentication (Ray's default for new clusters) and no token here."""
    from critui.errors import CritUIError

    class TokenHead(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/api/version":
                body, code = json.dumps({"version": "4", "ray_version": "2.60.0", "ray_commit": "x"}), 200
            else:
                body, code = "Unauthorized: Missing authentication token", 401
            self.send_response(code)
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), TokenHead)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ray/auth_token
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        with pytest.raises(CritUIError, match="asks for an authentication token") as caught:
            ray_launcher.Ray({**SETTINGS, "address": url}, tmp_path).check()
        assert "ray get-auth-token" in str(caught.value) and "~/.ray/auth_token" in str(caught.value)
    finally:
        server.shutdown()
        ray_launcher._clients.pop(f"http://127.0.0.1:{server.server_port}", None)
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("sesame\n")
    assert ray_launcher.auth_headers() == {"Authorization": "Bearer sesame"}
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    assert ray_launcher.auth_headers() == {}


def test_the_hint_for_a_live_job_names_ray_job_stop_and_prints_nothing_planted(tmp_path):
    """`critui sweep --resume` says how to stop a sweep's jobs still on the cluster by hand:
    for Ray that is `ray job stop` on the job's head, never Slurm's scancel; a job id from a
    damaged index is left out rather than printed into a command to copy."""
    from critui.builtin.ray_launcher import Ray
    from critui.params import resolve

    launcher = Ray(resolve(Ray.params, {}, "launcher"), tmp_path)
    job = "ray:critui-20261130-142452-89f4-a2@http://10.0.0.5:8265"
    assert launcher.stop_command([job]) == "ray job stop --address http://10.0.0.5:8265 critui-20261130-142452-89f4-a2"
    assert launcher.stop_command(["ray:x; rm -rf ~@http://h:8265", "ray:critui-1@$(reboot)"]) is None
