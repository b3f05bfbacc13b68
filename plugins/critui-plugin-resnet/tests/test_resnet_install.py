"""From its folder to `critui plugins`, `critui run` and back out with `pip uninstall`.

The package is pip-installed (not editable, as `pip install ./plugins/critui-plugin-resnet`
would) into a scratch environment that borrows critui and torch from the one running the
tests, offline; critui then runs there as a user would.
"""

from __future__ import annotations

import json
import shutil
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from critui.testing import ScratchEnv

PACKAGE_ROOT = Path(__file__).resolve().parents[1]

FAST = ["--set", "dataset.n_train=300", "--set", "dataset.n_test=200", "--set", "train.threads=1"]


def listing(env: ScratchEnv, home) -> dict:
    out = env.critui("plugins", "--json", env={"CRITUI_HOME": str(home)}).stdout
    return json.loads(out)


def installed_outside() -> bool:
    """Whether the environment running the tests has the package installed itself (as CI does)."""
    try:
        distribution("critui-plugin-resnet")
    except PackageNotFoundError:
        return False
    return True


def test_install_list_run_uninstall(tmp_path):
    # Build from a copy: setuptools writes build/ and *.egg-info next to the sources.
    source = tmp_path / "critui-plugin-resnet"
    shutil.copytree(PACKAGE_ROOT, source, ignore=shutil.ignore_patterns(
        "build", "*.egg-info", "__pycache__", ".pytest_cache"))
    env = ScratchEnv(tmp_path / "venv")
    home = tmp_path / "home"
    env.pip_install(str(source))

    plugins = {p["id"]: p for p in listing(env, home)["plugins"]}
    for plugin_id in ("models.resnet18", "models.resnet34"):
        assert plugins[plugin_id]["distribution"] == "critui-plugin-resnet"
        assert plugins[plugin_id]["version"] == "0.1.0"
    assert plugins["models.resnet18"]["params"] == [
        {"name": "width", "type": "int", "default": 64, "min": 1, "max": 4096,
         "help": plugins["models.resnet18"]["params"][0]["help"]}
    ]
    table = env.critui("plugins", env={"CRITUI_HOME": str(home), "COLUMNS": "200"}).stdout
    assert "models.resnet18" in table and "critui-plugin-resnet 0.1.0" in table

    run = env.critui("run", "--plugin", "models.resnet18", "--set", "model.width=4", "--epochs", "1",
                     "--plugin", "metrics.fisher", "--set", "metrics.fisher.probe=20", *FAST,
                     env={"CRITUI_HOME": str(home), "COLUMNS": "160"})
    assert "final test accuracy" in run.stdout
    (doc,) = json.loads(env.critui("runs", "--json", env={"CRITUI_HOME": str(home)}).stdout)
    assert doc["status"] == "finished" and doc["model"] == "models.resnet18"
    assert doc["plugins"]["models.resnet18"] == {"distribution": "critui-plugin-resnet", "version": "0.1.0"}
    events = [json.loads(line) for line in (home / "runs" / doc["id"] / "events.jsonl").read_text().splitlines()]
    fisher = next(e for e in events if e["event"] == "metric" and e["metric"] == "metrics.fisher")
    assert list(fisher["values"])[:2] == ["stem", "layer1.0.conv1"] and "layer4.1.conv2" in fisher["values"]

    env.pip_uninstall("critui-plugin-resnet")
    left = sorted(p.name for p in env.site_packages.iterdir() if "resnet" in p.name)
    assert left == [], f"pip uninstall left {left} behind"
    after = listing(env, home)
    assert after["failed"] == []
    still_listed = "models.resnet18" in {p["id"] for p in after["plugins"]}
    # Gone, unless the environment running these tests has its own install (CI does).
    assert still_listed == installed_outside()
