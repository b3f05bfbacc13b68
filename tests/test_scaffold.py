"""`critui new-plugin`: what it writes is a working distribution, end to end.

The end-to-end test does what docs/plugins.md tells an author to do: scaffold one plugin of
every kind, ``pip install -e`` them (into a scratch environment, offline), run their
generated tests, find them in ``critui plugins``, and train with all five in one
``critui run``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from critui.errors import CritUIError
from critui.scaffold import SCAFFOLD_KINDS, names_for, new_plugin
from critui.testing import ScratchEnv
from tests.conftest import index_docs

KIND_NAMES = {kind: f"my-{kind}" for kind in SCAFFOLD_KINDS}


def test_names_are_derived_from_one_name():
    names = names_for("Pixel_Dropout", "deficit")
    assert (names.name, names.dist, names.module, names.cls) == (
        "pixel-dropout", "critui-plugin-pixel-dropout", "critui_pixel_dropout", "PixelDropout")
    assert names.plugin_id == "deficits.pixel-dropout"
    assert names_for("critui-plugin-resnet50", "model").plugin_id == "models.resnet50"


@pytest.mark.parametrize("bad", ["", "2fast", "blur.big", "my plugin", "-x", "ümlaut"])
def test_names_that_cannot_be_ids_or_modules_are_refused(bad):
    with pytest.raises(CritUIError, match="cannot name a plugin"):
        names_for(bad, "deficit")


def test_cli_writes_the_distribution_and_prints_the_next_steps(critui, tmp_path):
    result = critui("new-plugin", "pixel-dropout", "--kind", "deficit", "--dir", str(tmp_path), check=True)
    root = tmp_path / "critui-plugin-pixel-dropout"
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert files == ["README.md", "critui_pixel_dropout/__init__.py", "pyproject.toml", "tests/test_pixel_dropout.py"]
    pyproject = (root / "pyproject.toml").read_text()
    assert '[project.entry-points.critui]\npixel-dropout = "critui_pixel_dropout"' in pyproject
    assert "pip install -e '.[test]'" in result.stdout and "critui run --plugin deficits.pixel-dropout" in result.stdout


def test_cli_never_overwrites_and_explains_bad_input(critui, tmp_path):
    critui("new-plugin", "blur2", "--kind", "deficit", "--dir", str(tmp_path), check=True)
    module = tmp_path / "critui-plugin-blur2" / "critui_blur2" / "__init__.py"
    module.write_text("# my work\n")
    again = critui("new-plugin", "blur2", "--kind", "model", "--dir", str(tmp_path))
    assert again.returncode == 2 and "already exists and is not empty" in again.stderr
    assert module.read_text() == "# my work\n"
    bad = critui("new-plugin", "Blur.Big", "--kind", "deficit", "--dir", str(tmp_path))
    assert bad.returncode == 2 and "cannot name a plugin" in bad.stderr and "Traceback" not in bad.stderr
    no_kind = critui("new-plugin", "blur3", "--dir", str(tmp_path))
    assert no_kind.returncode == 2 and "--kind" in no_kind.stderr


def test_generated_code_is_lint_clean(tmp_path):
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (pip install -e '.[dev]')")
    for kind in SCAFFOLD_KINDS:
        root = new_plugin(f"a-rather-long-plugin-name-{kind}", kind, tmp_path)
        result = subprocess.run(
            [ruff, "check", "--isolated", "--select", "E,F,W,I,B,UP", "--line-length", "100", "."],
            cwd=root, capture_output=True, text=True,
        )
        assert result.returncode == 0, result.stdout + result.stderr


def test_scaffolds_install_editable_pass_their_tests_and_run(critui, tmp_path):
    sources = tmp_path / "src"
    for kind, name in KIND_NAMES.items():
        critui("new-plugin", name, "--kind", kind, "--dir", str(sources), check=True)
    roots = {kind: sources / names_for(name, kind).dist for kind, name in KIND_NAMES.items()}
    env = ScratchEnv(tmp_path / "venv")
    editable = [arg for root in roots.values() for arg in ("-e", str(root))]
    env.pip_install(*editable)

    # Their own tests, as generated: contract checks, discovery through the entry point, behaviour.
    tests = env.run("-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(sources),
                    *(str(root / "tests") for root in roots.values()), check=False, cwd=sources)
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "15 passed" in tests.stdout

    # Editable: a change to the source shows without reinstalling.
    deficit_module = roots["deficit"] / "critui_my_deficit" / "__init__.py"
    deficit_module.write_text(deficit_module.read_text().replace(
        'description = "Zero each pixel', 'description = "EDITED: zero each pixel'))
    home = {"CRITUI_HOME": str(tmp_path / "home"), "COLUMNS": "160"}
    listing = json.loads(env.critui("plugins", "--json", env=home).stdout)
    assert listing["failed"] == []
    plugins = {p["id"]: p for p in listing["plugins"]}
    for kind, name in KIND_NAMES.items():
        names = names_for(name, kind)
        assert (plugins[names.plugin_id]["distribution"], plugins[names.plugin_id]["version"]) == (names.dist, "0.1.0")
    assert plugins["deficits.my-deficit"]["description"].startswith("EDITED")
    # Listing them did not import torch: each module imports it where it computes.
    modules = ", ".join(names_for(name, kind).module for kind, name in KIND_NAMES.items())
    imported = env.run("-c", f"import sys, {modules}; print('torch' in sys.modules)")
    assert imported.stdout.split() == ["False"], imported.stdout + imported.stderr

    run = env.critui(
        "run", "--plugin", "datasets.my-dataset", "--plugin", "models.my-model", "--plugin", "deficits.my-deficit",
        "--plugin", "metrics.my-metric", "--set", "dataset.n_train=200", "--set", "dataset.n_test=100",
        "--set", "deficit.end=1", "--set", "train.threads=1", "--epochs", "2",
        "--launcher", "my-launcher", "--set", "launcher.niceness=3", env=home, check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    (doc,) = index_docs(tmp_path / "home")
    assert doc["status"] == "finished"
    assert {pid: v["distribution"] for pid, v in doc["plugins"].items()} == {
        names_for(name, kind).plugin_id: names_for(name, kind).dist
        for kind, name in KIND_NAMES.items() if kind != "launcher"  # where it ran, not what it ran
    }
    assert doc["launcher"] == "launchers.my-launcher" and doc["launcher_settings"] == {"niceness": 3}
    events = [json.loads(line) for line in (tmp_path / "home" / "runs" / doc["id"] / "events.jsonl").read_text().splitlines()]
    metric = [e for e in events if e["event"] == "metric" and e["metric"] == "metrics.my-metric"]
    assert [e["epoch"] for e in metric] == [0, 1] and set(metric[0]["values"]) == {"total", "last"}
    assert [e["deficit_active"] for e in events if e["event"] == "epoch"] == [True, False]
