"""Commands that only read the home, or only check and start runs, do not import torch.

torch takes seconds to import; `critui runs`, `show`, `export` and `report` need none of it,
and neither does `--help`. Neither do `critui plugins`, a mistake in `critui run`'s settings,
a sweep's plan, or the manager of a CPU run: the built-in plugins import torch only where
they compute, and only the worker process computes. Each command runs in a fresh
interpreter that says afterwards whether torch was imported, so a module-level ``import
torch`` reached from one of them fails here, naming the command.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from critui.devices import no_gpu_driver
from tests.conftest import REPO
from tests.test_tui_sweep import SWEEP_ID, write_sweep

# `python -m critui ARGS`, then one line on stderr: was torch imported?
PROBE = """\
import runpy, sys
try:
    runpy.run_module("critui", run_name="__main__", alter_sys=True)
finally:
    print("torch imported" if "torch" in sys.modules else "torch not imported", file=sys.stderr)
"""

RUN_ID = "20260101-000000-fa02"  # one of write_sweep's runs

COMMANDS = [
    ["--help"],
    ["runs"],
    ["runs", "--json"],
    ["show", RUN_ID],
    ["export", RUN_ID, "--format", "json"],
    ["report", SWEEP_ID],
    ["report", SWEEP_ID, "--csv"],
]


@pytest.fixture(scope="module")
def sweep_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("startup") / "home"
    write_sweep(home)
    return home


@pytest.mark.parametrize("args", COMMANDS, ids=[" ".join(a) for a in COMMANDS])
def test_reading_commands_do_not_import_torch(sweep_home, args):
    env = {**os.environ, "CRITUI_HOME": str(sweep_home), "COLUMNS": "160"}
    done = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, env=env,
                          timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    assert RUN_ID in done.stdout or args[0] in ("--help", "report"), done.stdout  # it did the work
    assert done.stderr.strip().endswith("torch not imported"), (args, done.stderr)


# Commands that load the plugins (the built-ins only: CRITUI_LOAD_PLUGINS is empty, so an
# installed third-party plugin that imports torch at its top does not count) and check
# settings, and one that trains: its manager waits on a worker, which imports torch itself.
PLUGIN_COMMANDS = [
    (["plugins"], 0),
    (["plugins", "--json"], 0),
    (["run", "--plugin", "deficits.moon"], 2),
    (["run", "--set", "optim.lr=fast"], 2),
    (["run", "--plugin", "deficits.flip", "--epochs", "1", "--set", "dataset.n_train=64",
      "--set", "dataset.n_test=32", "--set", "train.threads=1", "--set", "metrics.fisher.probe=20"], 0),
]


@pytest.mark.parametrize("args, code", PLUGIN_COMMANDS, ids=[" ".join(a[:2]) for a, _ in PLUGIN_COMMANDS])
def test_plugin_commands_and_a_runs_manager_do_not_import_torch(tmp_path, args, code):
    env = {**os.environ, "CRITUI_HOME": str(tmp_path / "home"), "COLUMNS": "160", "CRITUI_LOAD_PLUGINS": ""}
    done = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, env=env,
                          timeout=240)
    assert done.returncode == code, done.stdout + done.stderr
    if args[0] == "run" and code == 0:
        assert "finished" in done.stdout, done.stdout  # the worker trained, with torch
    assert done.stderr.strip().endswith("torch not imported"), (args, done.stderr)


@pytest.mark.skipif(not no_gpu_driver(), reason="with a GPU driver, a sweep asks torch how many GPUs it sees")
def test_a_sweeps_plan_on_a_machine_without_a_gpu_does_not_import_torch(tmp_path):
    env = {**os.environ, "CRITUI_HOME": str(tmp_path / "home"), "COLUMNS": "160", "CRITUI_LOAD_PLUGINS": ""}
    args = ["sweep", str(REPO / "configs" / "demo-depth.toml"), "--dry-run"]
    done = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, env=env,
                          timeout=240)
    assert done.returncode == 0 and "36 runs" in done.stdout, done.stdout + done.stderr
    assert done.stderr.strip().endswith("torch not imported"), done.stderr


# The TUI, started and then showing its new-experiment form (which lists every plugin and
# its parameters), in a fresh interpreter.
TUI_PROBE = """\
import asyncio, sys
from pathlib import Path
from critui.tui.app import CritUIApp

async def main():
    app = CritUIApp(Path(sys.argv[1]))
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.press("n")
        for _ in range(100):
            if type(app.screen).__name__ == "NewExperimentScreen":
                break
            await pilot.pause(0.1)
        await pilot.pause(0.5)
        print(type(app.screen).__name__)
asyncio.run(main())
print("torch imported" if "torch" in sys.modules else "torch not imported", file=sys.stderr)
"""


def test_the_tui_and_its_new_experiment_form_do_not_import_torch(tmp_path):
    env = {**os.environ, "CRITUI_LOAD_PLUGINS": ""}
    done = subprocess.run([sys.executable, "-c", TUI_PROBE, str(tmp_path / "home")], capture_output=True,
                          text=True, env=env, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "NewExperimentScreen" in done.stdout, done.stdout
    assert done.stderr.strip().endswith("torch not imported"), done.stderr
