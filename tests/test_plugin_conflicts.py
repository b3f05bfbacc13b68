"""Which distribution owns an id never depends on load order, and a conflict costs only that id."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from critui.errors import CritUIError
from tests.conftest import FAST, index_docs
from tests.plugin_catalogue import deficit_source, plugin_site_fixture

plugin_site = pytest.fixture(plugin_site_fixture)
REPO = Path(__file__).resolve().parents[1]


def two_contrasts(site, folders=("a", "b")):
    """Two distributions that both register deficits.contrast, each with a class of its own."""
    site.install("tp-alpha", "1.0", {"tp_alpha": deficit_source(("Contrast", "contrast"), ("Alpha", "alpha"))},
                 {"alpha": "tp_alpha"}, folder=folders[0])
    site.install("tp-beta", "2.0", {"tp_beta": deficit_source(("Contrast", "contrast"), ("Beta", "beta"))},
                 {"beta": "tp_beta"}, folder=folders[1])


def test_a_third_party_cannot_take_a_builtin_id(plugin_site):
    # Defect 2: pluggy calls later-registered hooks first, so a plugin registering
    # deficits.blur used to replace the built-in, and the built-in failed to load.
    plugin_site.install("tp-impostor", "0.1", {"tp_impostor": deficit_source(("Blur", "blur"), ("Own", "own"))},
                        {"impostor": "tp_impostor"})
    registry = plugin_site.registry()
    assert registry.plugins["deficits.blur"].distribution == "critui"
    assert registry.plugins["deficits.own"].distribution == "tp-impostor"
    (conflict,) = registry.conflicts
    assert conflict.id == "deficits.blur" and conflict.owner == "critui"
    assert "tp-impostor" in conflict.describe() and "built-in" in conflict.describe()
    assert registry.failures == []


def test_an_id_two_distributions_register_is_refused_in_both_and_the_rest_loads(plugin_site):
    two_contrasts(plugin_site)
    registry = plugin_site.registry()
    assert "deficits.contrast" not in registry.plugins
    assert registry.plugins["deficits.alpha"].distribution == "tp-alpha"
    assert registry.plugins["deficits.beta"].distribution == "tp-beta"
    (conflict,) = registry.conflicts
    assert conflict.distributions() == ["tp-alpha", "tp-beta"] and conflict.owner is None
    # only the two fixtures: other plugin distributions may be installed beside critui
    status = {row["distribution"]: row["status"] for row in registry.distribution_status()
              if row["distribution"].startswith("tp-")}
    assert status == {"tp-alpha": "loaded with 1 conflict(s)", "tp-beta": "loaded with 1 conflict(s)"}
    assert registry.failures == []
    with pytest.raises(CritUIError) as caught:
        registry.get("deficits.contrast")
    message = str(caught.value)
    assert "tp-alpha 1.0" in message and "tp-beta 2.0" in message and "CRITUI_LOAD_PLUGINS" in message


@pytest.mark.parametrize("folders", [("a", "b"), ("b", "a")])
def test_the_outcome_does_not_depend_on_the_order_distributions_are_found(plugin_site, folders):
    two_contrasts(plugin_site, folders)
    registry = plugin_site.registry()
    assert "deficits.contrast" not in registry.plugins
    assert [c.distributions() for c in registry.conflicts] == [["tp-alpha", "tp-beta"]]


def test_critui_load_plugins_gives_a_conflicting_id_to_one_distribution(plugin_site, monkeypatch):
    two_contrasts(plugin_site)
    monkeypatch.setenv("CRITUI_LOAD_PLUGINS", "deficits.contrast=tp_beta")
    registry = plugin_site.registry()
    assert registry.plugins["deficits.contrast"].distribution == "tp-beta"
    assert {"deficits.alpha", "deficits.beta"} <= set(registry.plugins)
    assert registry.conflict("deficits.contrast") is None
    assert registry.conflicts[0].owner == "tp-beta"


def test_leaving_one_distribution_out_resolves_the_conflict_too(plugin_site, monkeypatch):
    two_contrasts(plugin_site)
    monkeypatch.setenv("CRITUI_LOAD_PLUGINS", "tp-alpha")
    registry = plugin_site.registry()
    assert registry.plugins["deficits.contrast"].distribution == "tp-alpha"
    assert "deficits.beta" not in registry.plugins and registry.conflicts == []


def test_critui_plugins_and_run_name_the_conflict(critui, plugin_site):
    two_contrasts(plugin_site)
    plugin_site.install("tp-impostor", "0.1", {"tp_impostor": deficit_source(("Blur", "blur"))},
                        {"impostor": "tp_impostor"})
    env = {"PYTHONPATH": plugin_site.pythonpath()}
    listing = json.loads(critui("plugins", "--json", env=env, check=True).stdout)
    conflicts = {c["id"]: c for c in listing["conflicts"]}
    assert [d["distribution"] for d in conflicts["deficits.contrast"]["distributions"]] == ["tp-alpha", "tp-beta"]
    assert conflicts["deficits.contrast"]["owner"] is None
    assert conflicts["deficits.blur"]["owner"] == "critui"
    assert listing["failed"] == []
    status = {d["distribution"]: d["status"] for d in listing["distributions"]}
    assert status["tp-alpha"] == "loaded with 1 conflict(s)"
    ids = {p["id"]: p["distribution"] for p in listing["plugins"]}
    assert ids["deficits.alpha"] == "tp-alpha" and ids["deficits.blur"] == "critui"

    table = critui("plugins", env=env, check=True).stdout
    assert "conflict" in table and "tp-beta" in table and "failed to load" not in table

    run = critui("run", "--plugin", "deficits.contrast", "--dry-run", env=env)
    assert run.returncode == 2
    assert "tp-alpha 1.0" in run.stderr and "tp-beta 2.0" in run.stderr and "Traceback" not in run.stderr


# --- what the loader refuses (defect 4) ---------------------------------------------------------


def test_a_misspelled_hook_is_a_load_failure_that_names_the_right_hook(plugin_site):
    plugin_site.install("tp-typo", "1.0", {"tp_typo": deficit_source(("Typo", "typo"), hook="critui_register_deficit")},
                        {"typo": "tp_typo"})
    registry = plugin_site.registry()
    (failure,) = registry.failures
    assert failure.distribution == "tp-typo"
    assert "critui_register_deficit" in failure.error and "Did you mean critui_register_deficits?" in failure.error
    assert "\n" not in failure.error


def test_a_hook_without_hookimpl_is_a_load_failure(plugin_site):
    source = deficit_source(("Bare", "bare")).replace("@hookimpl\n", "")
    plugin_site.install("tp-bare", "1.0", {"tp_bare": source}, {"bare": "tp_bare"})
    (failure,) = plugin_site.registry().failures
    assert "without the @hookimpl decorator" in failure.error


DECLARATIONS = {
    "duplicate": ("params = (Param('k', 'int', 1, 'a'), Param('k', 'int', 2, 'b'))", "declares a parameter twice"),
    "window": ("params = (Param('end', 'int', 3, 'my own end'),)", "declares a window parameter itself"),
    "start": ("params = (Param('start', 'int', 3, 'my own start'),)", "declares a window parameter itself"),
    "reserved": ("params = (Param('id', 'str', 'x', 'an id'),)", "reserved name"),
    "empty-description": ("description = '   '", "has no `description`"),
    "bad-default": ("params = (Param('k', 'int', 0, 'k', min=1),)", "default is invalid"),
}


@pytest.mark.parametrize("case", sorted(DECLARATIONS))
def test_declarations_the_kit_rejects_are_load_failures_and_the_rest_loads(plugin_site, case):
    line, words = DECLARATIONS[case]
    source = f'''
from critui.hookspecs import hookimpl
from critui.kinds import Deficit
from critui.params import Param


class Bad(Deficit):
    name = "bad"
    description = "a bad declaration"
    {line}

    def apply(self, x, y, epoch, generator):
        return x, y


class Good(Deficit):
    name = "good"
    description = "a good one"

    def apply(self, x, y, epoch, generator):
        return x, y


@hookimpl
def critui_register_deficits(register):
    register(Bad)
    register(Good)
'''
    plugin_site.install("tp-decl", "1.0", {"tp_decl": source}, {"decl": "tp_decl"})
    registry = plugin_site.registry()
    assert "deficits.bad" not in registry.plugins
    assert registry.plugins["deficits.good"].distribution == "tp-decl"
    (failure,) = registry.failures
    assert words in failure.error and "Fix:" in failure.error and "\n" not in failure.error
    status = {row["distribution"]: row["status"] for row in registry.distribution_status()}
    assert status["tp-decl"] == "loaded with 1 failure(s)"


def test_an_unknown_plugin_error_mentions_plugins_that_failed_to_load(plugin_site):
    plugin_site.install("tp-crash", "1.0", {"tp_crash": "raise ImportError('no module named cv2')\n"},
                        {"crash": "tp_crash"})
    with pytest.raises(CritUIError) as caught:
        plugin_site.registry().get("deficits.sharpen")
    message = str(caught.value)
    assert "failed to load" in message and "tp-crash 1.0" in message and "cv2" in message


def test_critui_run_and_sweep_warn_in_one_line_of_plugins_that_failed_to_load(critui, plugin_site, tmp_path):
    # Defect 4: `critui run` never mentioned failed plugins.
    plugin_site.install("tp-crash", "1.0", {"tp_crash": "raise ImportError('no module named cv2')\n"},
                        {"crash": "tp_crash"})
    env = {"PYTHONPATH": plugin_site.pythonpath()}
    run = critui("run", "--dry-run", env=env, check=True)
    (warning,) = [line for line in run.stderr.splitlines() if "failed to load" in line]
    assert "tp-crash 1.0" in warning and "`critui plugins`" in warning and "Warning" in warning
    sweep = critui("sweep", str(REPO / "configs" / "demo-removal.toml"), "--dry-run", env=env, check=True)
    assert "tp-crash 1.0" in sweep.stderr and "`critui plugins`" in sweep.stderr
    unknown = critui("run", "--plugin", "deficits.sharpen", "--dry-run", env=env)
    assert unknown.returncode == 2 and "Traceback" not in unknown.stderr
    assert "failed to load" in " ".join(unknown.stderr.split()) and "cv2" in unknown.stderr
    # Nothing failed: no warning.
    assert "failed to load" not in critui("run", "--dry-run", env={"CRITUI_LOAD_PLUGINS": ""}, check=True).stderr


def test_new_plugin_refuses_an_id_that_is_loaded_already(critui, tmp_path):
    result = critui("new-plugin", "blur", "--kind", "deficit", "--dir", str(tmp_path))
    assert result.returncode == 2
    assert "deficits.blur is already the id" in result.stderr and "critui" in result.stderr
    assert not (tmp_path / "critui-plugin-blur").exists()
    alias = critui("new-plugin", "vflip", "--kind", "deficit", "--dir", str(tmp_path))
    assert alias.returncode == 2 and "already the id" in alias.stderr
    # The same name is free for another kind.
    critui("new-plugin", "blur", "--kind", "metric", "--dir", str(tmp_path), check=True)


# --- critui_scratch_env (defect 6) --------------------------------------------------------------


def test_scratch_env_commands_run_in_its_own_folder(tmp_path, monkeypatch):
    from critui.testing import ScratchEnv

    # What `pip install -e .` leaves in a project folder: the module and its egg-info. With the
    # project as working directory, `python -m critui` would import it though nothing is installed.
    project = tmp_path / "project"
    project.mkdir()
    (project / "tp_ghost.py").write_text(deficit_source(("Ghost", "ghost")))
    info = project / "tp_ghost.egg-info"
    info.mkdir()
    (info / "PKG-INFO").write_text("Metadata-Version: 2.1\nName: tp-ghost\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[critui]\nghost = tp_ghost\n")
    monkeypatch.chdir(project)
    env = ScratchEnv(tmp_path / "venv")
    listing = json.loads(env.critui("plugins", "--json", env={"CRITUI_HOME": str(tmp_path / "home")}).stdout)
    assert "deficits.ghost" not in {p["id"] for p in listing["plugins"]}
    assert env.cwd.is_dir() and not any(env.cwd.iterdir())
    here = env.run("-c", "import os; print(os.getcwd())").stdout.strip()
    assert here == str(env.cwd)


# --- open bounds in a declaration ---------------------------------------------------------------


def test_a_param_can_exclude_its_bounds():
    from critui.params import Param, ParamError

    fraction = Param("fraction", "float", 0.5, "share of the image", min=0, max=1, min_open=True)
    assert fraction.describe() == "float, (0, 1]" and fraction.accepted() == "a float above 0 and at most 1"
    assert fraction.parse("1", "deficit.fraction") == 1.0 and fraction.parse(1e-9) == 1e-9
    with pytest.raises(ParamError, match="deficit.fraction=0.0 equals its excluded minimum of 0"):
        fraction.parse(0, "deficit.fraction")
    assert fraction.to_json()["min_open"] is True and "max_open" not in fraction.to_json()
    below = Param("p", "float", 0.5, "p", max=1, max_open=True)
    assert below.accepted() == "a float below 1"
    with pytest.raises(ParamError, match="excluded maximum"):
        below.parse(1.0)
    closed = Param("q", "float", 0.5, "q", min=0, max=1)
    assert closed.describe() == "float, 0..1" and closed.parse(0) == 0.0


# --- what a worker imports (defect 8) -----------------------------------------------------------

SPY = '''
import os
import sys

with open(os.environ["TP_SPY_LOG"], "a") as log:
    log.write(" ".join(sys.argv) + "\\n")
'''


def test_a_worker_imports_only_the_distributions_its_run_uses(critui, home, plugin_site, tmp_path):
    two_contrasts(plugin_site)
    plugin_site.install("tp-spy", "1.0", {"tp_spy": SPY + deficit_source(("Spy", "spy"))}, {"spy": "tp_spy"})
    spy_log = tmp_path / "imports.txt"
    env = {"PYTHONPATH": plugin_site.pythonpath(), "TP_SPY_LOG": str(spy_log)}
    # deficits.alpha comes from a distribution with a conflict: every non-conflicting id still runs.
    result = critui("run", "--plugin", "deficits.alpha", "--epochs", "1", *FAST, env=env)
    assert result.returncode == 0, result.stderr
    (doc,) = index_docs(home)
    assert doc["status"] == "finished"
    assert doc["plugins"]["deficits.alpha"] == {"distribution": "tp-alpha", "version": "1.0"}
    importers = spy_log.read_text().splitlines()
    assert importers, "the manager lists every plugin, so it imports the spy"
    assert not [line for line in importers if "critui/train/worker" in line], importers


# --- the target: real wheels in a scratch environment ---------------------------------------------

COUNTER = """
from critui.hookspecs import hookimpl
from critui.kinds import Metric


class Count(Metric):
    name = "wheel-count"
    description = "The epoch, as a float (a test metric)."

    def compute(self, ctx):
        return {"epoch": float(ctx.epoch)}


@hookimpl
def critui_register_metrics(register):
    register(Count)
"""


@pytest.mark.slow
def test_real_wheels_conflicting_with_a_builtin_and_each_other_report_it_and_every_other_id_runs(
        critui_scratch_env, tmp_path):
    from tests.wheels import build_wheel

    wheels = tmp_path / "wheels"
    wheels.mkdir()
    alpha = build_wheel(wheels, "tp-wheel-alpha", "1.0",
                        {"tp_wheel_alpha": deficit_source(("Blur", "blur"), ("Contrast", "contrast"), ("Sharpen", "sharpen")),
                         "tp_wheel_alpha_metrics": COUNTER},
                        {"alpha": "tp_wheel_alpha", "alpha-metrics": "tp_wheel_alpha_metrics"})
    beta = build_wheel(wheels, "tp-wheel-beta", "2.0",
                       {"tp_wheel_beta": deficit_source(("Contrast", "contrast"), ("Dim", "dim"))}, {"beta": "tp_wheel_beta"})
    env = critui_scratch_env
    env.pip_install(str(alpha), str(beta))
    home = {"CRITUI_HOME": str(tmp_path / "home")}

    listing = json.loads(env.critui("plugins", "--json").stdout)
    conflicts = {c["id"]: c for c in listing["conflicts"]}
    assert conflicts["deficits.blur"]["owner"] == "critui"
    assert "tp-wheel-alpha" in [d["distribution"] for d in conflicts["deficits.blur"]["distributions"]]
    assert conflicts["deficits.contrast"]["owner"] is None
    assert {d["distribution"] for d in conflicts["deficits.contrast"]["distributions"]} == {"tp-wheel-alpha", "tp-wheel-beta"}
    assert [f for f in listing["failed"] if f["distribution"].startswith("tp-wheel")] == []
    status = {d["distribution"]: d["status"] for d in listing["distributions"]}
    assert status["tp-wheel-alpha"] == "loaded with 2 conflict(s)"
    assert status["tp-wheel-beta"] == "loaded with 1 conflict(s)"
    ids = {p["id"]: p["distribution"] for p in listing["plugins"]}
    assert ids["deficits.blur"] == "critui" and "deficits.contrast" not in ids
    assert {ids["deficits.sharpen"], ids["metrics.wheel-count"], ids["deficits.dim"]} == {"tp-wheel-alpha", "tp-wheel-beta"}

    # Every id that is not in a conflict runs, from either distribution (the built-in blur is
    # the built-in's); the id both claim is refused.
    tiny = ["--epochs", "1", "--set", "dataset.n_train=64", "--set", "dataset.n_test=64", "--set", "train.threads=1",
            "--set", "model.width=4"]
    env.critui("run", "--plugin", "deficits.sharpen", "--plugin", "metrics.wheel-count", *tiny, env=home)
    env.critui("run", "--plugin", "deficits.dim", *tiny, env=home)
    runs = json.loads(env.critui("runs", "--json", env=home).stdout)
    assert [r["status"] for r in runs] == ["finished"] * 2
    recorded = {pid: source["distribution"] for r in runs for pid, source in r["plugins"].items()}
    assert recorded["deficits.sharpen"] == recorded["metrics.wheel-count"] == "tp-wheel-alpha"
    assert recorded["deficits.dim"] == "tp-wheel-beta"
    assert json.loads(env.critui("run", "--plugin", "deficits.blur", "--dry-run").stdout)["deficit"]["id"] == "deficits.blur"
    refused = env.critui("run", "--plugin", "deficits.contrast", "--dry-run", env=home, check=False)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "tp-wheel-alpha 1.0" in refused.stderr and "tp-wheel-beta 2.0" in refused.stderr
