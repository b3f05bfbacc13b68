"""``launchers.ray``: each worker as one Ray job, through Ray's Jobs API (``pip install 'critui[ray]'``).

A Ray job is the right shape for a worker, where a ``ray.remote`` task is not: a task dies with
the process that submitted it, without its SIGTERM handler running, while a job outlives it,
and any other process can ask the cluster about it, or stop it, by its submission id. So each
worker is the job ``python -m critui.train.worker RUN_DIR``, whose submission id is derived from
the run id and the attempt (``critui-RUN-a2``): Ray itself refuses a second live job for the
same attempt. The manager follows the run's ``events.jsonl`` on a shared file system, as it
follows a local worker; ``stop_job`` delivers SIGTERM, which the worker takes as a clean stop
(``cancelled``, every epoch kept).

``address=local`` starts a head on this machine for the life of this critui process: a small
keeper process runs ``ray start --head --block`` and stops it once this process has gone,
whichever way it went. Ray is imported only when a Ray launcher is used.
"""

from __future__ import annotations

import atexit
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from critui.errors import CritUIError
from critui.files import atomic_write
from critui.hookspecs import hookimpl
from critui.kinds import Launcher
from critui.launching import JobHandle
from critui.params import Param

RAY_DIR = "ray"  # under the critui home: the check's probe files
LOG_FILE = "log.txt"  # the worker's output, in its run directory (critui.runs.launcher.LOG_FILE)
JOB_PREFIX = "ray:"  # a run's job reads ray:SUBMISSION_ID@DASHBOARD_URL
# What a job's parts may be before they are printed in a command to copy (the index is untrusted).
SUBMISSION_ID = re.compile(r"critui-[0-9]{8}-[0-9]{6}-[0-9a-f]{4,16}-a[0-9]{1,4}")
_URL = re.compile(r"https?://[A-Za-z0-9.:\[\]_-]+(/[A-Za-z0-9._/-]*)?")
# critui.train.worker's exit codes; critui.builtin may not import the worker (the layering rule).
EXIT_BUSY, EXIT_CANCELLED = 4, 130
# Ray's job supervisor sends SIGKILL this long after SIGTERM (its own default is 3 s, less than
# the worker may need to finish writing a checkpoint).
STOP_GRACE_S = 60
STATUS_EVERY_S = 1.0  # ask the head about one job at most this often: a cluster has many
HEAD_LOST_S = 30.0  # a head that does not answer for this long has taken its jobs with it
HEAD_START_S = 300.0  # a cold `ray start` takes 20 s on 2 busy cores; a loaded machine more
PROBE_S = 300.0
# Failures where the job's node or supervisor was lost, not the worker's own: worth a retry.
LOST = ("JOB_SUPERVISOR_ACTOR_DIED", "JOB_SUPERVISOR_ACTOR_UNKNOWN_FAILURE")
# Runs in the probe job: exit 3 when the manager's file cannot be read there, 4 when critui
# cannot be imported there.
PROBE = ("import sys\ntry:\n    seen = open(sys.argv[1]).read()\nexcept OSError:\n    sys.exit(3)\n"
         "if seen != sys.argv[2]:\n    sys.exit(3)\ntry:\n    import critui\nexcept Exception:\n    sys.exit(4)\n")


class Ray(Launcher):
    name = "ray"
    description = ("Each worker as a Ray job, through Ray's Jobs API (pip install 'critui[ray]'); the "
                   "critui home must be on a file system the cluster's nodes share.")
    params = (
        Param("address", "str", "auto", "the Ray head: auto (RAY_ADDRESS, else the head on this machine), "
              "its dashboard http://HEAD:8265, or local (a head started for this critui process)"),
        Param("gpus", "float", 0.0, "GPUs per run; a fraction shares one (0.25: four runs on a GPU)", min=0, max=64),
        Param("cpus", "float", 1.0, "CPU cores reserved per run", min=0, max=1024),
        Param("memory", "float", 0.0, "memory reserved per run, GiB (0: none reserved)", min=0),
        Param("retries", "int", 0, "times a run whose node is lost is resubmitted, resuming from its "
              "checkpoint", min=0, max=100),
    )

    def check(self) -> None:
        client, url = self.client()
        _authenticated(client, url)
        self._probe(client, url)

    def client(self):
        """The Jobs API client of the settings' head, and its dashboard URL (starting the head
        first for ``address=local``)."""
        address = self.settings["address"].strip()
        if address == "local":
            return connect(local_head().url, local=True)
        return connect(None if address in ("", "auto") else address)

    def start(self, run_dir: Path, env: dict[str, str]):
        client, url = self.client()
        return RayWorker(client, url, Path(run_dir), dict(env), self.settings)

    def alive(self, job: str) -> bool | None:
        submission_id, url = parse_job(job)
        try:
            client, _ = connect(url)
            return not latest_attempt(client, submission_id)[1]
        except Exception:  # noqa: BLE001 - no head answers, or it answers something unexpected
            # A head this machine started went with the critui process that started it, and
            # its jobs with it; a cluster's head that does not answer may come back.
            return False if self.settings["address"] == "local" else None

    def cancel(self, job: str) -> bool:
        submission_id, url = parse_job(job)
        try:
            client, _ = connect(url)
            latest, ended = latest_attempt(client, submission_id)
        except Exception:  # noqa: BLE001 - no head to ask: nothing can be stopped through it
            return False
        return not ended and bool(client.stop_job(latest))

    def stop_command(self, jobs: list[str]) -> str | None:
        """The shell commands that stop ``jobs`` by hand, for a message: ``ray job stop`` with
        each job's head (a retried run's later attempt has its own id: `ray job list` shows it)."""
        commands = []
        for job in jobs:
            submission_id, url = parse_job(job)
            if SUBMISSION_ID.fullmatch(submission_id) and _URL.fullmatch(url):
                commands.append(f"ray job stop --address {shlex.quote(url)} {submission_id}")
        return "; ".join(commands) or None

    def _probe(self, client, url: str) -> None:
        """Run a tiny job that reads a file written here: it proves that the cluster sees the
        critui home and runs this Python with critui."""
        folder = self.home / RAY_DIR
        folder.mkdir(parents=True, exist_ok=True)
        token = secrets.token_hex(8)
        probe = folder / f"probe-{token}.txt"
        atomic_write(probe, token)
        command = " ".join(shlex.quote(part) for part in (sys.executable, "-c", PROBE, str(probe), token))
        try:
            submission_id = submit(client, entrypoint=command, submission_id=f"critui-probe-{token}",
                                   metadata={"critui": "probe"}, **self.resources())
            info = _wait_for_end(client, submission_id, PROBE_S)
        except Exception as exc:  # noqa: BLE001 - the head failed us half-way
            raise CritUIError(f"--launcher ray: the Ray head at {url} could not run a probe job: "
                              f"{_first_line(exc)} Check the cluster with `ray status` on the head.") from None
        finally:
            probe.unlink(missing_ok=True)
        if info is None:
            raise CritUIError(
                f"--launcher ray: a probe job on the Ray head at {url} did not end within {PROBE_S:.0f} s "
                f"(it asked for {self.describe_resources()}). The cluster may lack those resources: lower "
                "launcher.cpus, launcher.gpus or launcher.memory, or add nodes, then try again."
            )
        if info.status.value == "SUCCEEDED":
            return
        code = info.driver_exit_code
        if code == 3:
            raise CritUIError(
                f"--launcher ray: a job on the Ray cluster at {url} cannot read {probe}, which this machine "
                f"wrote: the critui home ({self.home}) is not on a file system the cluster's nodes share. Put "
                "it on one (an NFS or Lustre mount seen at the same path everywhere, with --home or "
                "CRITUI_HOME), or use --set launcher.address=local to train on this machine."
            )
        if code in (4, 126, 127):
            raise CritUIError(
                f"--launcher ray: the Ray cluster at {url} has no {sys.executable} with critui installed "
                f"(the probe job ended with code {code}). Workers run this Python on the nodes: install "
                "critui in the same environment there (a virtual environment on the shared file system "
                "does), then try again."
            )
        raise CritUIError(
            f"--launcher ray: a probe job on the Ray cluster at {url} ended {info.status.value}: "
            f"{(info.message or '').strip()[:400]} Fix the cluster (`ray status` on the head), or use "
            "--set launcher.address=local to train on this machine."
        )

    def resources(self) -> dict[str, Any]:
        return job_resources(self.settings)

    def describe_resources(self) -> str:
        s = self.settings
        return f"cpus={s['cpus']:g}, gpus={s['gpus']:g}, memory={s['memory']:g} GiB"


class RayWorker(JobHandle):
    """A run's Ray job behind the ``subprocess.Popen`` methods the manager uses.

    It submits attempt 1, 2, ... until Ray takes one: an attempt whose job has ended is
    skipped, and one whose job still runs means another critui process trains the run, which
    ends this worker at once with the worker's own "busy" exit code.
    """

    def __init__(self, client, url: str, run_dir: Path, env: dict[str, str], settings: dict[str, Any]):
        self._client = client
        self._url = url
        self._run_dir = run_dir
        self._env = env
        self._settings = settings
        self._retries_left = settings["retries"]
        self._asked = 0.0
        self._unanswered_since: float | None = None
        self.submission_id = ""
        self._submit(1)

    @property
    def job(self) -> str:
        return f"{JOB_PREFIX}{self.submission_id}@{self._url}"

    def _submit(self, attempt: int) -> None:
        run_id = self._run_dir.name
        while True:
            self.submission_id = f"critui-{run_id}-a{attempt}"
            try:
                ended = _ended(self._client, self.submission_id)
            except Exception as exc:  # noqa: BLE001 - the head stopped answering since the check
                raise CritUIError(f"--launcher ray: the Ray head at {self._url} does not answer: "
                                  f"{_first_line(exc)} Start it again, or resume the run later with "
                                  f"`critui resume {run_id}`.") from None
            if ended is None:  # no such job yet: this attempt is ours, unless another takes it first
                break
            if not ended:
                self.returncode = EXIT_BUSY
                return
            attempt += 1
        try:
            submit(self._client, entrypoint=worker_command(self._run_dir), submission_id=self.submission_id,
                   runtime_env={"env_vars": job_environment(self._env)},
                   metadata={"critui_run": run_id, "attempt": str(attempt)}, **job_resources(self._settings))
        except Exception as exc:  # noqa: BLE001 - Ray reports a refused duplicate as a server error
            if "already exists" in str(exc):
                self.returncode = EXIT_BUSY  # another critui process submitted it a moment ago
                return
            raise CritUIError(f"--launcher ray: the Ray head at {self._url} refused run {run_id}'s job: "
                              f"{_first_line(exc)}") from None

    def poll(self) -> int | None:
        if self.returncode is not None or time.monotonic() - self._asked < STATUS_EVERY_S:
            return self.returncode
        self._asked = time.monotonic()
        try:
            info = self._client.get_job_info(self.submission_id)
        except Exception as exc:  # noqa: BLE001 - the head stopped answering
            if "does not exist" in str(exc):  # someone ran `ray job delete` on it
                self._note(f"the Ray head at {self._url} no longer knows job {self.submission_id}")
                self.returncode = 1
                return self.returncode
            self._unanswered_since = self._unanswered_since or time.monotonic()
            if time.monotonic() - self._unanswered_since > HEAD_LOST_S:
                self._note(f"the Ray head at {self._url} has not answered for {HEAD_LOST_S:.0f} s "
                           f"({_first_line(exc)}); its job {self.submission_id} is taken as lost")
                self.returncode = 1
            return self.returncode
        self._unanswered_since = None
        self.returncode = self._exit_code(info)
        return self.returncode

    def _exit_code(self, info) -> int | None:
        """What ``info``'s status means as the worker's exit code (None: still queued or running)."""
        status = info.status.value
        if status in ("PENDING", "RUNNING"):
            return None
        if status == "SUCCEEDED":
            return 0
        if status == "STOPPED":  # stop_job: SIGTERM, which the worker takes as a cancel
            return EXIT_CANCELLED if info.driver_exit_code is None else info.driver_exit_code
        if info.driver_exit_code is not None:
            return info.driver_exit_code
        if info.error_type in LOST and self._retries_left > 0:
            self._retries_left -= 1
            attempt = int(self.submission_id.rsplit("-a", 1)[1]) + 1
            self._note(f"Ray job {self.submission_id} was lost ({info.error_type}); the run is interrupted "
                       f"and resubmitted as attempt {attempt}, which resumes from its last checkpoint")
            self._submit(attempt)
            return self.returncode
        self._note(f"Ray job {self.submission_id} ended {status} before the worker ran to its end: "
                   f"{(info.message or '').strip()[:400]}")
        return 1

    def _note(self, text: str) -> None:
        """A line for the run's log.txt, where the worker's own output goes."""
        with open(self._run_dir / LOG_FILE, "a") as log:
            log.write(f"critui: {text}\n")

    def stop(self) -> None:
        """Stop the job: Ray sends SIGTERM, then SIGKILL ``STOP_GRACE_S`` later."""
        try:
            self._client.stop_job(self.submission_id)
        except Exception:  # noqa: BLE001 - the head is gone, and the job with it
            pass


def submit(client, **job: Any) -> str:
    """``client.submit_job(**job)``, again while the head's agent is still starting."""
    deadline = time.monotonic() + HEAD_START_S
    while True:
        try:
            return client.submit_job(**job)
        except RuntimeError as exc:
            if "No available agent" not in str(exc) or time.monotonic() > deadline:
                raise
        time.sleep(1.0)


def job_resources(settings: dict[str, Any]) -> dict[str, Any]:
    """The Jobs API's ``entrypoint_*`` arguments for one run."""
    out: dict[str, Any] = {"entrypoint_num_cpus": settings["cpus"]}
    if settings["gpus"]:
        out["entrypoint_num_gpus"] = settings["gpus"]
    if settings["memory"]:
        out["entrypoint_memory"] = int(settings["memory"] * 2**30)
    return out


def worker_command(run_dir: Path) -> str:
    """The job's shell entrypoint: the worker, its output appended to the run's log.txt."""
    run = shlex.quote(str(run_dir))
    return (f"exec {shlex.quote(sys.executable)} -m critui.train.worker {run} "
            f">> {shlex.quote(str(run_dir / LOG_FILE))} 2>&1")


def job_environment(env: dict[str, str]) -> dict[str, str]:
    """critui's environment variables for the job, as a local worker inherits them."""
    ours = {k: v for k, v in os.environ.items() if k.startswith("CRITUI_")}
    return {**ours, **env, "PYTHONUNBUFFERED": "1", "RAY_JOB_STOP_WAIT_TIME_S": str(STOP_GRACE_S)}


def parse_job(job: str) -> tuple[str, str]:
    """``ray:SUBMISSION_ID@URL`` into its submission id and its head's dashboard URL."""
    submission_id, _, url = job.removeprefix(JOB_PREFIX).partition("@")
    return submission_id, url


def latest_attempt(client, submission_id: str) -> tuple[str, bool]:
    """The last attempt of a run from ``submission_id`` on (later ones are retries or resumes)
    and whether its job has ended; a job the head does not know counts as ended."""
    stem, _, number = submission_id.rpartition("-a")
    attempt, latest, ended = int(number), submission_id, _ended(client, submission_id)
    while True:
        following = f"{stem}-a{attempt + 1}"
        state = _ended(client, following)
        if state is None:
            return latest, ended is not False
        attempt, latest, ended = attempt + 1, following, state


def _ended(client, submission_id: str) -> bool | None:
    """Whether a job has ended (None: the head has no such job)."""
    try:
        status = client.get_job_status(submission_id)
    except RuntimeError as exc:
        if "does not exist" in str(exc) or "404" in str(exc):
            return None
        raise
    return status.value not in ("PENDING", "RUNNING")


def _wait_for_end(client, submission_id: str, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = client.get_job_info(submission_id)
        if info.status.value not in ("PENDING", "RUNNING"):
            return info
        time.sleep(0.5)
    client.stop_job(submission_id)
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# -- reaching a head ------------------------------------------------------------------------

_clients: dict[str | None, tuple[Any, str]] = {}


def connect(address: str | None, local: bool = False):
    """A Jobs API client for ``address`` (a dashboard URL, None for Ray's own lookup) and the
    dashboard URL it reaches; ``CritUIError`` when Ray is missing or no head answers."""
    if address in _clients:
        return _clients[address]
    job_submission = _ray_jobs()
    try:
        with _address_as_given(address):
            client = job_submission.JobSubmissionClient(address, headers=auth_headers())
    except Exception as exc:  # noqa: BLE001 - ConnectionError, or Ray's own lookup failing
        if type(exc).__name__ == "AuthenticationError":
            raise CritUIError(_auth_fix(address or "auto")) from None
        where = f"at {address}" if address else "(address=auto: RAY_ADDRESS is unset and no head runs on this machine)"
        raise CritUIError(
            f"--launcher ray: no Ray head answers {where}: {_first_line(exc)} Start one (`ray start --head` on the "
            "head node), give its dashboard with --set launcher.address=http://HEAD:8265 (the dashboard's port, "
            "not 6379), or use --set launcher.address=local for a head on this machine."
            + (" This run's head was started by a critui process that has ended." if local else "")
        ) from None
    url = getattr(client, "_address", None) or str(address)
    _clients[address] = (client, url)
    return client, url


_ADDRESS_VARIABLES = ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS")


@contextmanager
def _address_as_given(address: str | None):
    """Ray's client takes RAY_ADDRESS over the address it is given; a run's job names its head,
    which must win (``address=auto`` is where RAY_ADDRESS counts)."""
    if address is None:
        yield
        return
    saved = {name: os.environ.pop(name) for name in _ADDRESS_VARIABLES if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def _authenticated(client, url: str) -> None:
    """Ask the head something that needs the token: a missing or wrong one is one paragraph."""
    try:
        client.get_job_status("critui-auth-check")
    except Exception as exc:  # noqa: BLE001 - a 404 is the expected answer
        if type(exc).__name__ == "AuthenticationError":
            raise CritUIError(_auth_fix(url)) from None
        if "does not exist" not in str(exc):
            raise CritUIError(f"--launcher ray: the Ray head at {url} answered with an error: {_first_line(exc)}") from None


def auth_headers() -> dict[str, str]:
    """The bearer token for a head with token authentication, where Ray keeps one for this user:
    RAY_AUTH_TOKEN, the file RAY_AUTH_TOKEN_PATH names, or ~/.ray/auth_token. Sent whether or not
    RAY_AUTH_MODE=token is set here: a head without authentication ignores it."""
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled":
        return {}
    token = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token"
    if not token:
        try:
            token = Path(path).read_text().strip()
        except OSError:
            return {}
    return {"Authorization": f"Bearer {token}"} if token else {}


def _auth_fix(url: str) -> str:
    return (
        f"--launcher ray: the Ray head at {url} asks for an authentication token (Ray turns token "
        "authentication on by default) and this machine's is missing or different. On the head node, "
        "`ray get-auth-token` prints the cluster's token; put it in ~/.ray/auth_token here (or export "
        "RAY_AUTH_TOKEN=... or RAY_AUTH_TOKEN_PATH=FILE), then try again. For a head on this machine, "
        "`ray get-auth-token --generate` writes one before `ray start --head`."
    )


def _ray_jobs():
    try:
        from ray import job_submission
    except ImportError:
        raise CritUIError(
            "--launcher ray needs Ray with its Jobs API, which is not installed. Install it with "
            "`pip install 'critui[ray]'` (or `pip install 'ray[default]'`), or leave out --launcher to "
            "train on this machine."
        ) from None
    return job_submission


# -- a head for this critui process (address=local) ----------------------------------------

# The keeper: starts the head, then waits for its stdin to close, which happens when the critui
# process that started it ends, however it ends; then it stops the head and removes its files.
KEEPER = """
import os, select, shutil, signal, subprocess, sys
folder = sys.argv[1]
with open(os.path.join(folder, "head.log"), "ab") as log:
    head = subprocess.Popen(sys.argv[2:], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
signal.signal(signal.SIGINT, signal.SIG_IGN)
while head.poll() is None and not select.select([sys.stdin], [], [], 1.0)[0]:
    pass
if head.poll() is not None:  # it failed by itself: its log stays for the one who started it
    sys.exit(1)
head.send_signal(signal.SIGTERM)
try:
    head.wait(60)
except subprocess.TimeoutExpired:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.killpg(0, signal.SIGKILL)
shutil.rmtree(folder, ignore_errors=True)
"""


class LocalHead:
    """A Ray head on this machine, with its own temporary folder and free ports, stopped when
    :meth:`stop` is called or the process that started it ends."""

    def __init__(self, cpus: int | None = None):
        ray = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")
        if ray is None:
            _ray_jobs()  # names the install
            raise CritUIError("--launcher ray with address=local needs Ray's `ray` command, which is not on "
                              "PATH; install it with `pip install 'ray[default]'`.")
        # Short: Ray's socket paths under it must stay within 107 characters.
        self.folder = tempfile.mkdtemp(prefix="critui-ray-", dir="/tmp" if os.path.isdir("/tmp") else None)
        gcs, dashboard, client, agent = _free_ports(4)
        self.url = f"http://127.0.0.1:{dashboard}"
        command = [ray, "start", "--head", "--block", f"--temp-dir={self.folder}", f"--port={gcs}",
                   "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
                   f"--ray-client-server-port={client}", f"--dashboard-agent-listen-port={agent}",
                   "--include-dashboard=true", "--disable-usage-stats"]
        if cpus is not None:
            command.append(f"--num-cpus={cpus}")
        self.keeper = subprocess.Popen([sys.executable, "-c", KEEPER, self.folder, *command], stdin=subprocess.PIPE,
                                       start_new_session=True)
        atexit.register(self.stop)

    def wait_until_ready(self, timeout: float = HEAD_START_S) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                connect(self.url)
                return
            except CritUIError:
                pass
            if self.keeper.poll() is not None or time.monotonic() > deadline:
                log = Path(self.folder) / "head.log"
                tail = log.read_text(errors="replace")[-1500:] if log.exists() else "(no output)"
                self.stop(wait=True)
                shutil.rmtree(self.folder, ignore_errors=True)
                raise CritUIError(f"--launcher ray: the Ray head started on this machine (address=local) did not "
                                  f"answer within {timeout:.0f} s. `ray start` said:\n{tail}")
            time.sleep(1.0)

    def stop(self, wait: bool = False) -> None:
        """Ask the keeper to stop the head (with ``wait``, until it has)."""
        _clients.pop(self.url, None)
        if self.keeper.stdin and not self.keeper.stdin.closed:
            try:
                self.keeper.stdin.close()
            except OSError:
                pass
        if wait:
            try:
                self.keeper.wait(timeout=120)
            except subprocess.TimeoutExpired:
                os.killpg(self.keeper.pid, signal.SIGKILL)
                self.keeper.wait()


_local: dict[str, LocalHead] = {}


def local_head() -> LocalHead:
    """This process's head for ``address=local``, started on first use."""
    if "head" not in _local or _local["head"].keeper.poll() is not None:
        head = LocalHead()
        head.wait_until_ready()
        _local["head"] = head
    return _local["head"]


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@hookimpl
def critui_register_launchers(register):
    register(Ray)
