"""Sweep configs and the fork planner, without training: expansion, prefixes, cost, errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from critui.config import build_spec
from critui.errors import CritUIError
from critui.plugins import get_registry
from critui.runs.planner import cost, plan_tree, shared_prefix
from critui.sweeps import expand, load_sweep

REPO = Path(__file__).resolve().parents[1]


def spec(*sets: str):
    return build_spec(get_registry(), plugins=["deficits.blur"], sets=list(sets))


def test_removal_runs_share_the_blurred_prefix_up_to_the_earlier_removal():
    early = spec("deficit.end=4", "train.epochs=24")
    late = spec("deficit.end=12", "train.epochs=32")
    assert shared_prefix(early, late) == 4
    assert shared_prefix(late, early) == 4


def test_onset_runs_share_the_clean_prefix_up_to_the_earlier_onset():
    early = spec("deficit.start=4", "deficit.end=12", "train.epochs=30")
    late = spec("deficit.start=10", "deficit.end=18", "train.epochs=30")
    clean = build_spec(get_registry(), sets=["train.epochs=30"])
    assert shared_prefix(early, late) == 4
    assert shared_prefix(clean, late) == 10


def test_nothing_is_shared_across_seeds_models_or_lr_schedules():
    base = spec("deficit.end=8", "train.epochs=28")
    assert shared_prefix(base, spec("deficit.end=8", "train.epochs=28", "train.seed=1")) == 0
    assert shared_prefix(base, spec("deficit.end=8", "train.epochs=28", "model.depth=4")) == 0
    # An LR reset at removal changes nothing before the removal, then everything.
    reset = spec("deficit.end=8", "train.epochs=28", "optim.after_removal=reset")
    assert shared_prefix(base, reset) == 8


def test_the_paper_removal_grid_saves_at_least_a_fifth_of_the_epochs():
    sweep = load_sweep(REPO / "configs" / "fig1-removal.toml")
    runs = expand(sweep, get_registry())
    assert [r.axis["removal"] for r in runs] == list(range(0, 241, 20))
    nodes = plan_tree([r.spec for r in runs])
    scratch, forked = cost(nodes)
    assert scratch == sum(t0 + 160 for t0 in range(0, 241, 20))
    assert (scratch - forked) / scratch >= 0.2
    trunk = next(n for n in nodes if n.spec.window() == (0, 240))
    assert trunk.spec.keep_checkpoints == list(range(20, 221, 20))
    assert all(n.parent == trunk.index for n in nodes if n.spec.window()[1] not in (0, 240))


def test_dry_run_prints_the_plan_and_the_epochs_saved(critui):
    result = critui("sweep", str(REPO / "configs" / "fig1-removal.toml"), "--dry-run", check=True)
    assert "fork tree" in result.stdout and "removal=240" in result.stdout
    match = re.search(r"Epochs: (\d+) from scratch, (\d+) with shared-prefix forking .*?([\d.]+)% saved",
                      result.stdout.replace("\n", " "))
    assert match, result.stdout
    scratch, forked, saved = int(match[1]), int(match[2]), float(match[3])
    assert scratch == 3640 and forked == 2320 and saved >= 20.0


def test_dry_run_plan_fits_80_columns_one_line_per_run(critui):
    plan = critui("sweep", str(REPO / "configs" / "demo-removal.toml"), "--dry-run",
                  env={"COLUMNS": "80"}, check=True).stdout.splitlines()
    assert max(len(line.rstrip()) for line in plan) <= 80
    row = next(line.split() for line in plan if line.split()[:2] == ["2", "removal=4"])
    assert row == ["2", "removal=4", "deficit=blur", "seed=0", "blur", "[0,4)", "34", "#6@4", "30"]


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "configs").glob("*.toml")
                                        if p.name.startswith(("fig", "demo-", "controls", "fisher"))
                                        and p.name != "demo-blur.toml"))
def test_every_sweep_config_expands_and_plans(name):
    runs = expand(load_sweep(REPO / "configs" / name), get_registry())
    assert runs
    plan_tree([r.spec for r in runs])


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sweep.toml"
    path.write_text(text)
    return path


BASE = """\
[dataset]
id = "datasets.synthetic"

[deficit]
id = "deficits.blur"

[sweep]
seeds = [0]
"""


def test_an_unknown_sweep_key_names_the_key_and_its_line(tmp_path, critui):
    path = write(tmp_path, BASE + "\n[sweep.removal]\nvalues = [0, 4]\nafer = 20\n")
    result = critui("sweep", str(path), "--dry-run")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    message = " ".join(result.stderr.split())
    assert "line 12" in message and "sweep.removal.afer" in message and "after" in message


def test_a_bad_swept_value_points_at_the_sweep_set_line(tmp_path):
    path = write(tmp_path, BASE + '\n[sweep.set]\n"model.depth" = [4, 0]\n')
    with pytest.raises(CritUIError) as info:
        expand(load_sweep(path), get_registry())
    assert "line 11" in str(info.value) and "model.depth" in str(info.value)


def test_a_removal_axis_needs_values_and_after(tmp_path):
    path = write(tmp_path, BASE + "\n[sweep.removal]\nvalues = [0, -4]\nafter = 20\n")
    with pytest.raises(CritUIError) as info:
        load_sweep(path)
    assert "line 11" in str(info.value) and "sweep.removal.values" in str(info.value)


@pytest.mark.parametrize(
    ("axes", "phrases"),
    [
        ("\n[sweep.removal]\nvalues = []\nafter = 20\n", ["sweep.removal.values"]),
        ('\n[sweep.set]\n"model.depth" = []\n', ["model.depth"]),
        ('\n[sweep.set]\n"deficit.id" = ["deficits.blur", "deficits.blurr"]\n', ["deficits.blurr", "Did you mean deficits.blur?"]),
        ("\n[sweep.onset]\nvalues = [0, 30]\nwidth = 8\n", ["30"]),
    ],
    ids=["empty-removal-axis", "empty-set-axis", "unknown-plugin", "window-past-the-epochs"],
)
def test_bad_sweep_configs_get_one_paragraph_and_exit_2(tmp_path, critui, axes, phrases):
    text = BASE.replace("[deficit]", "[train]\nepochs = 20\n\n[deficit]") + axes
    result = critui("sweep", str(write(tmp_path, text)), "--dry-run")
    message = " ".join(result.stderr.split())
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    for phrase in phrases:
        assert phrase in message, message
