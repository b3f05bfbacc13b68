"""Starting a training worker: its command line, its log, its environment and its exit codes.

The part of the launcher contract (:class:`critui.kinds.Launcher`) that every launcher shares:
the built-in ones in :mod:`critui.builtin.launchers`, a third-party plugin's, and the manager
in :mod:`critui.runs.launcher`. The worker is ``python -m critui.train.worker RUN_DIR``; this
module names it but never imports it at load time, because the worker loads the plugins: a
plugin importing the worker would import itself round a cycle.
"""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

WORKER_MODULE = "critui.train.worker"
LOG_FILE = "log.txt"  # in the run directory: the worker's stdout and stderr, appended

# How a worker ended, as whoever started it reads its exit code. ``EXIT_BUSY``: another worker
# holds the run directory and this one wrote nothing. ``EXIT_REQUEUE`` (EX_TEMPFAIL): paused
# for its cluster job to be requeued, not an end.
EXIT_FINISHED, EXIT_CRASHED, EXIT_USER, EXIT_NAN, EXIT_BUSY, EXIT_CANCELLED = 0, 1, 2, 3, 4, 130
EXIT_REQUEUE = 75


def worker_command(run_dir: Path | str) -> list[str]:
    """The worker's command line for ``run_dir``, with the Python that runs critui."""
    return [sys.executable, "-m", WORKER_MODULE, str(run_dir)]


def worker_environment(env: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment with ``env`` added, and the worker's output unbuffered so
    that its log is current when a run is looked at."""
    return {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}


# The signals that stop a worker cleanly. It is started with them blocked and unblocks them
# once its handlers are in place, so a cancel that comes while it is still starting up waits
# for them instead of killing it before it could record `cancelled`.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def start_worker(run_dir: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Launch the worker for ``run_dir`` on this machine and return at once.

    It runs in its own process session, so a Ctrl-C in the terminal reaches only the manager,
    which then stops the worker cleanly with SIGTERM. Its output goes to the run's
    ``LOG_FILE``: the manager follows ``events.jsonl``, never a pipe it could deadlock on.
    """
    environment = worker_environment(env)
    with open(Path(run_dir) / LOG_FILE, "ab") as log:
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)  # the child inherits the mask
        try:
            return subprocess.Popen(
                worker_command(run_dir),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=environment,
                start_new_session=True,
            )
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)  # one that came meanwhile arrives now


def run_worker(run_dir: Path | str, requeue_signal: int | None = None) -> int:
    """Train ``run_dir`` in this process (a cluster job's own Python) and return the worker's
    exit code; ``requeue_signal`` is as in ``critui.train.worker.main``.

    The worker is imported by its name only now, as ``python -m`` would: see the module's
    docstring for why not earlier.
    """
    worker = importlib.import_module(WORKER_MODULE)
    return worker.main([str(run_dir)], requeue_signal=requeue_signal)


class JobHandle:
    """A worker that runs as a cluster job, behind the ``subprocess.Popen`` methods the manager
    uses (``critui.kinds.Worker``): a launcher's ``start`` returns a subclass, which says how
    the job ended (:meth:`poll`) and how to stop it (:meth:`stop`).

    ``job`` is the job's id as the index records it (``CLUSTER:ID``): any critui process hands
    it back to the launcher's ``alive`` and ``cancel``. There is no local pid.
    """

    job: str = ""
    pid = None
    returncode: int | None = None
    WAIT_STEP_S = 0.2  # how often wait() asks; a launcher's poll may ask its cluster less often

    def poll(self) -> int | None:
        """The worker's exit code once the job has ended (None while it is queued or runs)."""
        raise NotImplementedError

    def stop(self) -> None:
        """Ask the cluster to stop the job cleanly: the worker gets SIGTERM and records
        ``cancelled``."""
        raise NotImplementedError

    def wait(self, timeout: float | None = None) -> int:
        """Block until the job has ended and return the worker's exit code, as ``Popen.wait``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(self.job, timeout)
            time.sleep(self.WAIT_STEP_S)
        return self.returncode  # type: ignore[return-value]

    def send_signal(self, sig: int) -> None:
        """Any signal stops the job: a cluster forwards no chosen signal to a worker, but it
        sends SIGTERM first and SIGKILL after its grace time."""
        if self.poll() is None:
            self.stop()

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)
