"""The plugin through critui as a user drives it: step-based runs with a logging cadence, a
sweep over the switch time with forking, and the report's lower-is-better drops."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

TINY = ["--plugin", "datasets.matrix-completion", "--plugin", "models.deep-linear", "--plugin", "deficits.task-switch",
        "--set", "dataset.n=10", "--set", "dataset.observed=30", "--set", "dataset.rank=2", "--set", "model.n=10",
        "--set", "model.depth=2", "--set", "model.init_scale=0.1", "--set", "deficit.n=10", "--set", "deficit.rank=3",
        "--set", "optim.batch_size=30", "--set", "optim.lr=0.5", "--set", "optim.momentum=0", "--set", "optim.decay=1",
        "--set", "optim.weight_decay=0", "--set", "train.threads=1"]

BASE = """
name = "tiny-switch"
[train]
threads = 1
log_every = 10
checkpoint_every = 25
[dataset]
id = "datasets.matrix-completion"
n = 10
observed = 30
rank = 2
[model]
id = "models.deep-linear"
n = 10
depth = 2
init_scale = 0.1
[deficit]
id = "deficits.task-switch"
n = 10
rank = 3
[optim]
lr = 0.5
momentum = 0.0
decay = 1.0
weight_decay = 0.0
batch_size = 30
"""

SWEEP = BASE + """
[sweep]
seeds = [0]
[sweep.removal]
values = [0, 15, 40]
after = 30
"""


def critui(home, *args, check=True):
    env = {**os.environ, "CRITUI_HOME": str(home), "COLUMNS": "120"}
    result = subprocess.run([sys.executable, "-m", "critui", *args], capture_output=True, text=True, env=env,
                            timeout=900)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def events(home, run_id):
    path = home / "runs" / run_id / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def run_ids(home):
    return sorted(p.name for p in (home / "runs").iterdir() if (p / "events.jsonl").exists())


def test_step_based_run_logs_and_checkpoints_on_its_cadence(tmp_path):
    out = critui(tmp_path, "run", *TINY, "--set", "deficit.end=25", "--set", "train.log_every=20",
                 "--set", "train.checkpoint_every=30", "--epochs", "60").stdout
    assert "final test_mse (lower is better)" in out
    (run_id,) = run_ids(tmp_path)
    log = events(tmp_path, run_id)
    epochs = [e for e in log if e["event"] == "epoch"]
    # every 20th, both sides of the switch at 25, and the last
    assert [e["epoch"] for e in epochs] == [0, 20, 24, 25, 40, 59]
    assert [e["deficit_active"] for e in epochs] == [True, True, True, False, False, False]
    assert all(e["score_name"] == "test_mse" and e["higher_is_better"] is False and "test_acc" not in e
               for e in epochs)
    assert epochs[-1]["score"] < epochs[3]["score"]  # it learns the second target after the switch
    assert [e["epoch"] for e in log if e["event"] == "checkpoint"] == [30, 60]
    shown = critui(tmp_path, "show", run_id).stdout
    assert "60/60 epochs" in shown and "test_mse (lower is better)" in shown


def test_sweep_forks_equal_scratch_and_report_drops_are_lower_is_better(tmp_path):
    config = tmp_path / "sweep.toml"
    config.write_text(SWEEP)
    base = tmp_path / "base.toml"
    base.write_text(BASE)
    dry = critui(tmp_path, "sweep", str(config), "--dry-run").stdout
    assert "fork at 15" in dry and "fewer" in dry
    critui(tmp_path, "sweep", str(config), "--jobs", "1")
    report = json.loads(critui(tmp_path, "report", "last", "--json").stdout)
    assert report["score"] == "test_mse" and report["higher_is_better"] is False
    rows = {r["value"]: r for r in report["rows"]}
    assert set(rows) == {0, 15, 40} and all(r["finished"] == 1 and r["lower_is_better"] for r in rows.values())
    for row in rows.values():  # drop = this row's error minus the reference's (T = 0)
        assert row["drop"] == pytest.approx(row["final_acc_mean"] - rows[0]["final_acc_mean"])
    table = critui(tmp_path, "report", "last", "--no-chart").stdout
    assert "test_mse" in table and "lower is better" in table and "pts" not in table
    assert "a small drop can be run-to-run noise" in " ".join(table.split()) and "points" not in table
    per_seed = " ".join(critui(tmp_path, "report", "last", "--per-seed").stdout.split())
    assert "In brackets: the drop from each seed's" in per_seed and "points" not in per_seed

    # A forked run (T = 15, from the T = 40 trunk) is the run trained from scratch, bit for bit.
    forked = json.loads(critui(tmp_path, "runs", "--json").stdout)
    child = next(d for d in forked if d.get("parent") and d["window"] == [0, 15])
    critui(tmp_path, "run", "--config", str(base), "--set", "deficit.end=15", "--epochs", "45")
    scratch = next(d for d in json.loads(critui(tmp_path, "runs", "--json").stdout)
                   if not d.get("parent") and d["window"] == [0, 15])
    assert child["final_acc"] == scratch["final_acc"]


def test_singular_values_come_with_their_reference_curve_in_events_and_show(tmp_path):
    """metrics.singular-values supplies the gradient-flow prediction (Metric.reference): the
    worker records it once, `critui show` prints it beside the measured values, and it rises
    towards the targets' singular values as the measured ones do."""
    critui(tmp_path, "run", *TINY, "--plugin", "metrics.singular-values", "--set", "metrics.singular-values.k=3",
           "--set", "deficit.end=20", "--set", "train.log_every=20", "--epochs", "120")
    (run_id,) = run_ids(tmp_path)
    log = events(tmp_path, run_id)
    (reference,) = [e for e in log if e["event"] == "reference"]
    assert reference["metric"] == "metrics.singular-values" and sorted(reference["series"]) == ["s1", "s2", "s3"]
    s1 = reference["series"]["s1"]
    assert s1[0][0] == 0 and s1[-1][0] == 119 and all(a[0] < b[0] for a, b in zip(s1, s1[1:], strict=False))
    measured = [e["values"]["s1"] for e in log if e["event"] == "metric"]
    assert s1[-1][1] > 10 * s1[0][1] and measured[-1] > 10 * measured[0]  # both learnt from a small init
    out = critui(tmp_path, "show", run_id).stdout
    assert "s1 ref" in out and "metrics.singular-values" in out


def test_no_reference_where_the_flow_does_not_apply(tmp_path):
    """With momentum the per-mode gradient flow is not the dynamics: no curve, no warning."""
    critui(tmp_path, "run", *[a if a != "optim.momentum=0" else "optim.momentum=0.5" for a in TINY],
           "--plugin", "metrics.singular-values", "--set", "deficit.end=5", "--epochs", "10")
    (run_id,) = run_ids(tmp_path)
    kinds = {e["event"] for e in events(tmp_path, run_id)}
    assert "reference" not in kinds and "warning" not in kinds
