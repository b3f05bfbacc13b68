"""Third-party plugins installed for real with pip are discovered; broken ones are reported."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import FAST, index_docs
from tests.wheels import build_wheel

GOOD = '''
import torch
from critui.hookspecs import hookimpl
from critui.kinds import Deficit
from critui.params import Param


class Invert(Deficit):
    name = "invert"
    description = "Negate every pixel (a test plugin)."
    params = (Param("gain", "float", 1.0, "multiplier after negation", min=0.0),)

    def apply(self, x, y, epoch, generator):
        return -x * self.settings["gain"], y


@hookimpl
def critui_register_deficits(register):
    register(Invert)
'''

BROKEN = '''
raise RuntimeError("this plugin is broken on purpose")
'''


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory):
    """Both distributions pip-installed into one --target folder."""
    wheels = tmp_path_factory.mktemp("wheels")
    target = tmp_path_factory.mktemp("site")
    good = build_wheel(wheels, "critui-plugin-invert", "0.3.1", {"critui_invert": GOOD}, {"invert": "critui_invert"})
    bad = build_wheel(wheels, "critui-plugin-broken", "9.9", {"critui_broken": BROKEN}, {"broken": "critui_broken"})
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--target", str(target), str(good), str(bad)],
        check=True, capture_output=True,
    )
    return str(target)


def with_path(path: str, **extra: str) -> dict[str, str]:
    return {"PYTHONPATH": os.pathsep.join([path, os.environ.get("PYTHONPATH", "")]), **extra}


def test_installed_plugin_is_listed_with_its_distribution(critui, plugin_path):
    result = critui("plugins", "--json", env=with_path(plugin_path), check=True)
    listing = json.loads(result.stdout)
    invert = next(p for p in listing["plugins"] if p["id"] == "deficits.invert")
    assert invert["distribution"] == "critui-plugin-invert"
    assert invert["version"] == "0.3.1"
    assert invert["params"][0]["name"] == "gain"
    failed = listing["failed"]
    assert [f["distribution"] for f in failed] == ["critui-plugin-broken"]
    assert "broken on purpose" in failed[0]["error"]
    # The built-ins are all still there.
    assert {"deficits.blur", "models.allcnn", "datasets.synthetic"} <= {p["id"] for p in listing["plugins"]}


def test_table_lists_failed_plugins_with_their_error(critui, plugin_path):
    result = critui("plugins", env=with_path(plugin_path), check=True)
    assert "deficits.invert" in result.stdout
    assert "failed to load" in result.stdout and "broken on purpose" in result.stdout


def test_installed_plugin_runs_by_id_and_is_recorded(critui, home, plugin_path):
    result = critui("run", "--plugin", "deficits.invert", "--set", "deficit.gain=0.5", "--epochs", "2", *FAST,
                    env=with_path(plugin_path))
    assert result.returncode == 0, result.stderr
    (doc,) = index_docs(home)
    assert doc["status"] == "finished"
    assert doc["plugins"]["deficits.invert"] == {"distribution": "critui-plugin-invert", "version": "0.3.1"}


def test_allow_list_restricts_loading(critui, plugin_path):
    only_builtins = critui("plugins", "--json", env=with_path(plugin_path, CRITUI_LOAD_PLUGINS=""), check=True)
    listing = json.loads(only_builtins.stdout)
    assert "deficits.invert" not in {p["id"] for p in listing["plugins"]}
    assert listing["failed"] == []
    only_invert = critui("plugins", "--json", env=with_path(plugin_path, CRITUI_LOAD_PLUGINS="critui-plugin-invert"), check=True)
    listing = json.loads(only_invert.stdout)
    assert "deficits.invert" in {p["id"] for p in listing["plugins"]}
    assert listing["failed"] == []


def test_strict_mode_turns_a_broken_plugin_into_an_error(critui, plugin_path):
    result = critui("plugins", env=with_path(plugin_path, CRITUI_STRICT_PLUGINS="1"))
    assert result.returncode == 2
    assert "broken on purpose" in result.stderr
    assert "Traceback" not in result.stderr
