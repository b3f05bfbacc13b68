"""Commands that only read the home start without importing torch (seconds on every call).

torch takes seconds to import; `critui runs`, `show`, `export` and `report` need none of it,
and neither does `--help`. Each command runs in a fresh interpreter that says afterwards
whether torch was imported, so a module-level ``import torch`` reached from one of them fails
here, naming the command.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

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
