"""Starting and stopping training workers, here or through a launcher plugin.

A local worker is ``python -m critui.train.worker RUN_DIR`` in its own process session, so a
Ctrl-C in the terminal reaches only the manager, which then stops the worker cleanly with
SIGTERM. Its output goes to the run's ``log.txt``; the manager follows ``events.jsonl``,
never a pipe it could deadlock on. Other launchers (``--launcher slurm``) start the same
worker elsewhere and hand back an object with the same few methods (``critui.kinds.Worker``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

LOG_FILE = "log.txt"
DEFAULT_LAUNCHER = "launchers.local"
SETTING_PREFIX = "launcher."


def split_launcher_sets(sets) -> tuple[list[str], dict[str, str]]:
    """``--set`` values into the run's, and the launcher's settings (``launcher.NAME=VALUE``)."""
    from critui.errors import CritUIError

    run_sets, settings = [], {}
    for item in sets:
        if not item.strip().startswith(SETTING_PREFIX):
            run_sets.append(item)
            continue
        key, sep, value = item.strip()[len(SETTING_PREFIX):].partition("=")
        if not sep or not key.strip():
            raise CritUIError(f"--set {item!r} is not launcher.NAME=VALUE: write e.g. --set launcher.partition=gpu.")
        settings[key.strip()] = value.strip()
    return run_sets, settings


def make_launcher(registry, launcher_id: str | None, settings: dict[str, Any], home: Path, check: bool = True):
    """The launcher plugin ``launcher_id`` (default: local) with its settings checked and (with
    ``check``) its ``check()`` passed: every mistake is a ``CritUIError`` before any run exists."""
    from critui.errors import CritUIError
    from critui.params import resolve

    name = (launcher_id or DEFAULT_LAUNCHER).strip()
    info = registry.get(name if name.startswith("launchers.") else f"launchers.{name}", kind="launchers")
    if settings and not info.cls.params:
        raise CritUIError(
            f"--set launcher.{next(iter(settings))} does not apply: {info.id} takes no settings. Name the "
            "launcher it is for with --launcher NAME; `critui plugins` lists the launchers and their settings."
        )
    launcher = info.cls(resolve(info.cls.params, settings, "launcher"), Path(home))
    launcher.id = info.id
    if check:
        launcher.check()
    return launcher


def local_launcher(home: Path):
    from critui.builtin.launchers import Local

    launcher = Local({}, Path(home))
    launcher.id = DEFAULT_LAUNCHER
    return launcher


def job_alive(doc: dict[str, Any], home: Path) -> bool | None:
    """Whether the launcher that started a run's worker says its job still runs (None: cannot
    tell, or the run has no launcher job)."""
    try:
        launcher = _launcher_of(doc, home)
        return launcher.alive(doc["job"]) if launcher else None
    except Exception:  # noqa: BLE001 - the plugin is gone or broken: cannot tell
        return None


def job_cancel(doc: dict[str, Any], home: Path) -> bool:
    """Ask the launcher that started a run's worker to stop its job; False if it cannot."""
    launcher = _launcher_of(doc, home)
    return bool(launcher and launcher.cancel(doc["job"]))


def _launcher_of(doc: dict[str, Any], home: Path):
    """The launcher plugin that started a run's job, with its settings; None without a job."""
    if not doc.get("job") or not doc.get("launcher"):
        return None
    from critui.params import resolve
    from critui.plugins import get_registry

    info = get_registry().get(doc["launcher"], kind="launchers")
    return info.cls(resolve(info.cls.params, doc.get("launcher_settings") or {}, "launcher"), Path(home))


# The signals that stop a worker cleanly. It is started with them blocked and unblocks them
# once its handlers are in place, so a cancel that comes while it is still starting up waits
# for them instead of killing it before it could record `cancelled`.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def start_worker(run_dir: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Launch the worker for ``run_dir`` and return at once."""
    environment = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
    with open(Path(run_dir) / LOG_FILE, "ab") as log:
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)  # the child inherits the mask
        try:
            return subprocess.Popen(
                [sys.executable, "-m", "critui.train.worker", str(run_dir)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=environment,
                start_new_session=True,
            )
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)  # one that came meanwhile arrives now


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
