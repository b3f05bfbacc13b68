"""Starting and stopping training workers.

A worker is ``python -m critui.train.worker RUN_DIR`` in its own process session, so a
Ctrl-C in the terminal reaches only the manager, which then stops the worker cleanly with
SIGTERM. Its output goes to the run's ``log.txt``; the manager follows ``events.jsonl``,
never a pipe it could deadlock on.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

LOG_FILE = "log.txt"


def start_worker(run_dir: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Launch the worker for ``run_dir`` and return at once."""
    environment = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
    with open(Path(run_dir) / LOG_FILE, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "critui.train.worker", str(run_dir)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=environment,
            start_new_session=True,
        )


def stop_worker(process: subprocess.Popen, grace_s: float = 15.0) -> int:
    """Ask the worker to stop (SIGTERM), and kill it if it has not within ``grace_s``."""
    if process.poll() is None:
        try:
            process.send_signal(signal.SIGTERM)
            return process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
        except ProcessLookupError:
            pass
    return process.wait()
