"""Shared fixtures: run ``critui`` the way a user does, against a throwaway home."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

MAX_WORKERS = 4  # more would mostly wait on one another's subprocesses


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config):
    """The whole suite (`python -m pytest`, no path given) runs its test files on two workers
    or more, one file to a worker, when pytest-xdist (in the dev extra) is installed: most tests
    wait on one single-threaded critui process at a time, so one worker leaves a core idle. A
    path, ``-n N`` (``-n 0``: one process), ``-s``, ``--pdb`` or ``-p no:xdist`` is left as
    given, so running one file is as it was."""
    option = config.option
    if not config.pluginmanager.has_plugin("xdist") or hasattr(config, "workerinput"):
        return None
    if (option.file_or_dir or option.numprocesses is not None or option.usepdb or option.capture == "no"
            or option.collectonly):
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers = min(cores, MAX_WORKERS)
    if workers < 2:
        return None
    # What xdist makes of `-n WORKERS --dist loadfile`; loadfile keeps a module's fixtures
    # (the Ray head, a trained home) in one worker.
    option.numprocesses = workers
    option.dist = "loadfile"
    option.tx = ["popen"] * workers
    return None


# Small enough to train an epoch in well under a second on one core, big enough to learn.
FAST = ["--set", "dataset.n_train=600", "--set", "dataset.n_test=400", "--set", "train.threads=1"]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def critui(home: Path):
    """Run ``critui ARGS`` in a subprocess with its own home; returns the CompletedProcess."""

    def run(*args: str, env: dict[str, str] | None = None, timeout: float = 240, check: bool = False,
            input: str = ""):
        environment = {**os.environ, "CRITUI_HOME": str(home), "COLUMNS": "160", **(env or {})}
        result = subprocess.run(
            [sys.executable, "-m", "critui", *args],
            capture_output=True, text=True, env=environment, timeout=timeout, input=input,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"critui {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
        return result

    return run


@pytest.fixture(scope="session")
def one_epoch_template(tmp_path_factory) -> Path:
    """A home holding one finished run of ``critui run --epochs 1 FAST``, trained once per
    session. Use :func:`one_epoch_home`, which copies it: never change this one."""
    path = tmp_path_factory.mktemp("one-epoch") / "home"
    env = {**os.environ, "CRITUI_HOME": str(path), "COLUMNS": "160"}
    done = subprocess.run([sys.executable, "-m", "critui", "run", "--epochs", "1", *FAST], capture_output=True,
                          text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return path


@pytest.fixture
def one_epoch_home(home: Path, one_epoch_template: Path) -> Path:
    """``home``, holding a copy of one finished one-epoch run (the index, the run's folder
    and checkpoint): what ``critui run --epochs 1`` leaves, without training it again."""
    shutil.copytree(one_epoch_template, home, dirs_exist_ok=True, symlinks=True)
    return home


def index_docs(home: Path) -> list[dict]:
    """The run index's entries, as a reader in another process sees them (snapshot and journal)."""
    from critui.runs.journal import read_index

    return read_index(home / "history.json")


def events_of(home: Path, run_id: str) -> list[dict]:
    from critui.events import read_events

    return read_events(home / "runs" / run_id)
