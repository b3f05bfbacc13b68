"""`critui run` end to end, as a user types it: progress, summary, history, show, export."""

from __future__ import annotations

import csv
import io
import json

import pytest

from tests.conftest import FAST, events_of, index_docs


def test_default_flip_run_is_well_above_chance_and_in_history(critui, home):
    """The README's main job, with every default. (How long it takes is measured by
    tests/bench/default_run.py, not here: a test must pass on a loaded machine.)"""
    result = critui("run", "--plugin", "deficits.flip", timeout=1800)
    assert result.returncode == 0, result.stderr
    assert "final test accuracy" in result.stdout and "24/24 epochs" in result.stdout
    (doc,) = index_docs(home)
    assert doc["status"] == "finished"
    assert doc["deficit"] == "deficits.flip" and doc["window"] == [0, 8]
    assert doc["final_acc"] > 0.6  # 10 classes: chance is 0.1
    assert doc["plugins"]["deficits.flip"]["distribution"] == "critui"
    assert doc["torch"] and doc["device"] == "cpu"
    assert doc["device_name"] not in ("", "cpu")  # the CPU's model, for reproducing the run
    listing = critui("runs", check=True).stdout
    assert doc["id"] in listing and "finished" in listing and "flip [0,8)" in listing


def test_blur_window_is_applied_only_inside_it(critui, home):
    result = critui("run", "--plugin", "deficits.blur", "--set", "deficit.end=3", "--epochs", "6", *FAST,
                    env={"COLUMNS": "80"})
    assert result.returncode == 0, result.stderr
    # In 80 columns the progress line keeps its numbers whole: no "…", nothing past the edge.
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("training")]
    assert "6/6" in line and " acc " in line and "…" not in line and len(line.rstrip()) <= 80
    (doc,) = index_docs(home)
    epochs = [e for e in events_of(home, doc["id"]) if e["event"] == "epoch"]
    assert [e["deficit_active"] for e in epochs] == [True, True, True, False, False, False]
    assert doc["lr_at_removal"] == pytest.approx(0.05 * 0.85**3)  # the LR of epoch 3, the first clean one


def test_fisher_traces_are_recorded_and_shown(critui, home):
    result = critui("run", "--epochs", "2", "--set", "metrics.fisher.every=1", "--set", "metrics.fisher.probe=100", *FAST)
    assert result.returncode == 0, result.stderr
    (doc,) = index_docs(home)
    fisher = [e for e in events_of(home, doc["id"]) if e["event"] == "metric" and e["metric"] == "metrics.fisher"]
    assert [e["epoch"] for e in fisher] == [0, 1]
    layers = [k for k in fisher[0]["values"] if k != "total"]
    assert layers[:2] == ["conv1", "conv2"] and layers[-1] == "fc"
    assert all(v > 0 for v in fisher[0]["values"].values())
    shown = critui("show", doc["id"], check=True).stdout
    assert "Fisher trace per layer" in shown and "conv1" in shown
    normalised = critui("show", "last", "--normalised", check=True).stdout
    assert "sum over layers" in normalised
    charted = critui("show", "last", "--chart", "--no-fisher", check=True).stdout
    assert "test accuracy" in charted and "Fisher trace, total" in charted
    assert "Fisher trace per layer" not in charted


def test_show_and_export(critui, home, tmp_path):
    critui("run", "--epochs", "2", *FAST, check=True)
    # The default window [0,8) outlasts one epoch: the run goes ahead, with a note, and
    # records no LR at removal, since there is none.
    noted = critui("run", "--epochs", "1", "--plugin", "deficits.noise", *FAST, check=True)
    assert "never removed" in noted.stderr and "Raise the epochs above 8" in noted.stderr
    first, second = index_docs(home)
    assert second["lr_at_removal"] is None
    shown = " ".join(critui("show", second["id"], check=True).stdout.split())
    assert "lr at removal" not in shown and "the deficit is never removed" in shown
    shown = critui("show", first["id"], check=True).stdout
    assert "per-epoch metrics" in shown and "datasets.synthetic" in shown and "critui" in shown
    text = critui("export", first["id"], second["id"], "--format", "csv", check=True).stdout
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [(r["run"], r["epoch"]) for r in rows] == [(first["id"], "0"), (first["id"], "1"), (second["id"], "0")]
    assert float(rows[0]["test_acc"]) > 0
    out = tmp_path / "runs.json"
    critui("export", first["id"], "--format", "json", "--output", str(out), check=True)
    data = json.loads(out.read_text())
    assert data["runs"][0]["spec"]["model"]["id"] == "models.cnn"
    assert len(data["runs"][0]["epochs"]) == 2


def test_runs_filters(critui, home):
    critui("run", "--epochs", "1", *FAST, check=True)
    critui("run", "--epochs", "1", "--plugin", "deficits.blur", *FAST, check=True)
    out = critui("runs", "--deficit", "blur", "--json", check=True).stdout
    assert [d["deficit"] for d in json.loads(out)] == ["deficits.blur"]
    out = critui("runs", "--deficit", "none", "--json", check=True).stdout
    assert [d["deficit"] for d in json.loads(out)] == [None]
    assert json.loads(critui("runs", "--status", "failed", "--json", check=True).stdout) == []
