"""What a person types, or a file holds, is checked at the door: names are text (never markup,
never control characters), empty paths and foreign digits are refused, configs of the wrong
shape, nested thousands deep or huge get exit 2 and a short message, and values that would
only fail inside a worker are out of bounds before any run exists."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import FAST, index_docs
from tests.test_cli_errors import assert_clean_error

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.fixture
def critui(critui_refused):
    """Checks at the door, in this process (the console entry point, as typed): each of these
    commands is refused or stops at ``--dry-run``; one that starts a worker fails its test."""
    return critui_refused
MARKUP_NAME = "[bold red]loud[/] [link=https://example.org]here[/link]"


@pytest.fixture(scope="module")
def trained_home(tmp_path_factory) -> Path:
    """A home with one finished one-epoch run whose name is Rich markup."""
    home = tmp_path_factory.mktemp("home")
    result = critui_in(home, home, "run", "--epochs", "1", "--name", MARKUP_NAME, *FAST)
    assert result.returncode == 0, result.stderr
    return home


def critui_in(cwd: Path, home: Path | None, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    """``critui ARGS`` from the folder ``cwd``, with CRITUI_HOME set to ``home`` (or unset)."""
    env = {k: v for k, v in os.environ.items() if k != "CRITUI_HOME"}
    env.update({"COLUMNS": "200", **({"CRITUI_HOME": str(home)} if home else {})})
    return subprocess.run([sys.executable, "-m", "critui", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=timeout)


def config(tmp_path: Path, text: str, name: str = "exp.toml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


# -- names ------------------------------------------------------------------------------------


def test_markup_in_a_run_name_is_printed_as_written(trained_home, tmp_path):
    shown = critui_in(tmp_path, trained_home, "show", "last")
    assert shown.returncode == 0, shown.stderr
    assert "[bold red]loud[/]" in shown.stdout and "[link=https://example.org]here[/link]" in shown.stdout


def test_markup_in_a_sweep_name_is_printed_as_written(critui, tmp_path):
    path = config(tmp_path, '[sweep]\nname = "[red]fig[/red] one"\nseeds = [0, 1]\n')
    result = critui("sweep", path, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "sweep [red]fig[/red] one: 2 runs" in result.stdout


@pytest.mark.parametrize("bad", ["tab\there", "esc\x1b[31mred", "bell\x07", "rtl\u202eoverride", "line\u2028break"])
def test_control_characters_in_a_name_are_refused(critui, bad):
    assert_clean_error(critui("run", "--name", bad, "--dry-run"), "holds the control character", "Remove it")


def test_control_characters_and_wrong_types_in_toml_names_are_refused(critui, tmp_path):
    assert_clean_error(critui("run", "--config", config(tmp_path, 'name = "a\\u001bb"\n'), "--dry-run"),
                       "exp.toml, line 1", "control character U+001B")
    assert_clean_error(critui("run", "--config", config(tmp_path, "name = 5\n"), "--dry-run"),
                       "exp.toml, line 1", "name = 5 must be a string")
    sweep = config(tmp_path, '[sweep]\nseeds = 2\nname = "x\\ny"\n', "sw.toml")
    assert_clean_error(critui("sweep", sweep, "--dry-run"), "sw.toml, line 3", "sweep.name", "U+000A")


def test_a_name_in_any_script_is_fine(critui):
    result = critui("run", "--name", "Blur → Entfernung, 模糊 ✓", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert '"name": "Blur → Entfernung, 模糊 ✓"' in result.stdout


# -- empty paths and foreign digits -----------------------------------------------------------


def test_an_empty_home_is_refused_not_taken_for_the_current_folder(tmp_path):
    for args in (["runs", "--home", ""], ["run", "--dry-run", "--home", " "], ["--home", ""]):
        result = critui_in(tmp_path, None, *args)
        assert_clean_error(result, "--home '' names no folder")
    assert not any(tmp_path.iterdir()), "something was written in the current folder"


def test_an_empty_run_reference_deletes_nothing(trained_home, tmp_path):
    before = index_docs(trained_home)
    assert_clean_error(critui_in(tmp_path, trained_home, "delete", "-y", ""), "An empty run reference names no run")
    assert_clean_error(critui_in(tmp_path, trained_home, "delete", "-y", "last", " "), "names no run")
    assert index_docs(trained_home) == before
    assert (trained_home / "runs" / before[0]["id"]).is_dir()


def test_export_to_an_empty_path_is_refused(trained_home, tmp_path):
    assert_clean_error(critui_in(tmp_path, trained_home, "export", "last", "-o", ""), "-o '' names no file")
    assert not any(tmp_path.iterdir())


def test_unicode_digits_in_seeds_are_refused(critui):
    for seeds in ("١,٢", "0,߁", "１"):
        assert_clean_error(critui("sweep", str(CONFIGS / "demo-removal.toml"), "--dry-run", "--seeds", seeds),
                           f"--seeds {seeds!r} is not a list of seeds")


# -- configs of the wrong shape or size -------------------------------------------------------


@pytest.mark.parametrize(("text", "phrase"), [
    ("train = [1]\n", "train = [1] must be a table"),
    ("metrics = 5\n", "metrics = 5 must be a table"),
    ('deficit = "x"\n', "deficit = 'x' must be a table"),
    ("optim = 0.1\n", "optim = 0.1 must be a table"),
    ("[metrics]\nfisher = 1\n", "metrics.fisher must be a table"),
])
def test_wrong_typed_sections_get_a_short_message(critui, tmp_path, text, phrase):
    assert_clean_error(critui("run", "--config", config(tmp_path, text), "--dry-run"), "exp.toml, line", phrase)
    sweep = config(tmp_path, text + "[sweep]\nseeds = 2\n", "sw.toml")
    assert_clean_error(critui("sweep", sweep, "--dry-run"), "sw.toml, line", phrase)


@pytest.mark.parametrize("nested", [
    "[train]\nepochs = " + "[" * 5000 + "]" * 5000 + "\n",
    "x = " + "{a = " * 5000 + "1" + "}" * 5000 + "\n",
    "[" + ".".join(["a"] * 5000) + "]\nb = 1\n",
    "[" + ".".join(["a"] * 20) + "]\nb = 1\n",
])
def test_deep_nesting_is_refused_with_a_short_message(critui, tmp_path, nested):
    for command in (("run", "--config"), ("sweep",)):
        result = critui(*command, config(tmp_path, nested), "--dry-run", timeout=120)
        assert_clean_error(result, "exp.toml", "nest")
        assert len(result.stderr) < 600


def test_huge_files_arrays_and_numbers_are_refused_with_a_short_message(critui, tmp_path):
    huge = config(tmp_path, "[train]\nepochs = [" + ",".join(["1"] * 2_000_000) + "]\n")
    result = critui("run", "--config", huge, "--dry-run", timeout=120)
    assert_clean_error(result, "larger than 256 KiB")
    assert len(result.stderr) < 600
    array = config(tmp_path, "[train]\nepochs = [" + ",".join(["1"] * 50_000) + "]\n", "array.toml")
    result = critui("run", "--config", array, "--dry-run", timeout=120)
    assert_clean_error(result, "train.epochs must be an int", "...")
    assert len(result.stderr) < 600
    digits = config(tmp_path, "[train]\nepochs = " + "9" * 5000 + "\n", "digits.toml")
    assert_clean_error(critui("run", "--config", digits, "--dry-run"), "digits.toml cannot be read as a config")


# -- values that would only fail in the worker ------------------------------------------------


@pytest.mark.parametrize(("args", "phrase"), [
    (["--set", f"dataset.seed={10**25}"], "dataset.seed=10000000000000000000000000 is above its maximum of 4294967295"),
    (["--set", f"train.seed={10**25}"], "train.seed=10000000000000000000000000 is above its maximum of 4294967295"),
    (["--plugin", "deficits.noise", "--set", "deficit.std=1e308"], "deficit.std=1e+308 is above its maximum of 1000"),
    (["--set", "dataset.white=1e300"], "dataset.white=1e+300 is above its maximum of 1000"),
    (["--plugin", "metrics.fisher", "--set", f"metrics.fisher.probe={10**25}"], "does not fit in 64 bits"),
    (["--plugin", "deficits.blur", "--set", f"deficit.end={2**64}"], "does not fit in 64 bits"),
])
def test_values_that_only_a_worker_would_choke_on_are_out_of_bounds(critui, home, args, phrase):
    assert_clean_error(critui("run", "--epochs", "1", *args), phrase)
    runs = home / "runs"
    assert not runs.exists() or not any(runs.iterdir()), "a run was created"


# -- sweep sizes --------------------------------------------------------------------------------


def test_a_grid_above_the_limit_is_refused_before_it_is_expanded(critui, tmp_path):
    # 10**18 seeds ended in MemoryError; a 10**6-run grid planned until killed.
    seeds = config(tmp_path, "[sweep]\nseeds = 1000000000000000000\n", "seeds.toml")
    assert_clean_error(critui("sweep", seeds, "--dry-run"), "seeds.toml, line 1",
                       "this sweep has 1,000,000,000,000,000,000 runs", "limit of 5,000", "--max-runs N")
    values = ",".join(str(v) for v in range(1000))
    grid = config(tmp_path, f'[deficit]\nid = "deficits.blur"\n[sweep]\nseeds = 1000\n'
                            f"[sweep.removal]\nvalues = [{values}]\nafter = 2\n", "grid.toml")
    assert_clean_error(critui("sweep", grid, "--dry-run"), "1,000,000 runs (1,000 removal values x 1,000 seeds)")


def test_the_limit_is_settable_in_the_file_and_on_the_command_line(critui, tmp_path):
    demo = (CONFIGS / "demo-removal.toml").read_text()
    assert "max_runs" not in demo
    lowered = config(tmp_path, demo.replace("[sweep]\n", "[sweep]\nmax_runs = 5\n", 1), "demo.toml")
    assert_clean_error(critui("sweep", lowered, "--dry-run"), "this sweep has 14 runs", "limit of 5 runs")
    assert critui("sweep", lowered, "--dry-run", "--max-runs", "14").returncode == 0
    # --seeds grows the grid after the file is read: the limit still holds.
    assert_clean_error(critui("sweep", lowered, "--dry-run", "--max-runs", "14", "--seeds", "0,1"),
                       "this sweep has 28 runs", "limit of 14 runs")
    bad = config(tmp_path, demo.replace("[sweep]\n", "[sweep]\nmax_runs = -1\n", 1), "bad.toml")
    assert_clean_error(critui("sweep", bad, "--dry-run"), "sweep.max_runs = -1 must be a whole number")
    help_text = " ".join(critui("sweep", "--help").stdout.split())
    assert "--max-runs N" in help_text and "5000" in help_text


def test_the_size_is_counted_without_building_the_grid():
    from critui.sweeps import grid_size, parse_sweep

    assert grid_size({"values": [0, 1, 2]}, {"model.depth": [4, 6]}, 10**18, True) == 2 * 10**18 * 4
    sweep = parse_sweep({"sweep": {"seeds": 3, "set": {"model.depth": [4, 6]}}})
    assert sweep.size() == 6 and sweep.seeds == [0, 1, 2]


def test_error_messages_quote_values_briefly(critui, tmp_path):
    path = config(tmp_path, "[sweep]\nseeds = [" + ",".join(["-1"] * 30000) + "]\n", "sw.toml")
    result = critui("sweep", path, "--dry-run")
    assert_clean_error(result, "sweep.seeds = [-1, -1", "must be a non-empty list")
    assert len(result.stderr) < 600
