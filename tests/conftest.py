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
    return critui_subprocess_runner(home)


@pytest.fixture
def critui_subprocess(home: Path):
    """``critui`` as a subprocess, for a module whose ``critui`` fixture runs in process."""
    return critui_subprocess_runner(home)


def critui_subprocess_runner(home: Path):
    """``run(*args)``: ``critui ARGS`` in a subprocess with ``home`` as its critui home."""

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


def critui_here(home: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``critui ARGS`` through its console entry point in this process, for commands that are
    refused or stop before any worker (``--dry-run``, a bad value): the same code path as the
    installed script, without a second interpreter importing torch for every case. Anything
    but a clean exit (a traceback) is raised, so it fails the test as the script would, and so
    is starting a worker."""
    import contextlib
    import io

    from critui import cli, launching
    from critui.builtin import launchers

    def no_worker(*_args, **_kwargs):
        raise AssertionError(f"critui {' '.join(args)} started a worker; it was expected to stop before one")

    environment = {"CRITUI_HOME": str(home), "COLUMNS": "160", **(env or {})}
    saved = {key: os.environ.get(key) for key in environment}
    out, err = io.StringIO(), io.StringIO()
    code = 0
    original = launching.start_worker
    # Rich fixes a console's width when it is made, from COLUMNS then: set it as a new
    # process would see it.
    widths = [(console, console._width) for console in (cli.console, cli.err_console)]
    try:
        os.environ.update(environment)
        launching.start_worker = launchers.start_worker = no_worker
        for console, _ in widths:
            console.width = int(environment["COLUMNS"])
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                cli.main(list(args))
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        # Every module holding the guard gets the real one back, also one first imported
        # during this call (`from critui.launching import start_worker` binds what it finds).
        for module in list(sys.modules.values()):
            if getattr(module, "start_worker", None) is no_worker:
                module.start_worker = original
        for console, width in widths:
            console._width = width
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return subprocess.CompletedProcess(["critui", *args], code, out.getvalue(), err.getvalue())


@pytest.fixture
def critui_refused(home: Path):
    """Like ``critui``, in this process (:func:`critui_here`), for commands that are expected to
    be refused or to stop at a ``--dry-run``: a worker it would start fails the test."""

    def run(*args: str, env: dict[str, str] | None = None, timeout: float = 240, check: bool = False):
        return critui_here(home, *args, env=env)

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
