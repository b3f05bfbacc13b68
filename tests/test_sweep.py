"""Sweeps end to end on tiny data: forks equal scratch runs bit for bit, --jobs, reports, --resume."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from critui.events import epoch_table, final_accuracy, read_events
from critui.runs.lineage import full_rows
from critui.runs.store import RunStore
from tests.conftest import index_docs

TINY = """\
[train]
threads = 1
augment = "crop-flip"

[dataset]
id = "datasets.synthetic"
n_train = 300
n_test = 200

[model]
id = "models.cnn"
width = 4

[deficit]
id = "deficits.blur"

[metrics.fisher]
every = 1
probe = 40
"""

TIMING = {"seconds", "time", "inherited"}


def sweep_file(tmp_path: Path, name: str, axes: str) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(TINY + "\n[sweep]\nseeds = [0]\n" + axes)
    return path


def record_of(home: Path) -> dict:
    (path,) = (home / "sweeps").glob("*/sweep.json")
    return json.loads(path.read_text())


def scratch_run(tmp_path: Path, store: RunStore, run_id: str) -> Path:
    """The same spec as ``run_id``, trained from scratch by the worker alone."""
    spec = json.loads((store.run_dir(run_id) / "spec.json").read_text())
    spec["keep_checkpoints"] = []
    run_dir = tmp_path / f"scratch-{run_id}"
    run_dir.mkdir()
    (run_dir / "spec.json").write_text(json.dumps(spec))
    done = subprocess.run([sys.executable, "-m", "critui.train.worker", str(run_dir)], capture_output=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    return run_dir


def assert_fork_equals_scratch(tmp_path: Path, home: Path, entry: dict) -> None:
    store = RunStore(home)
    docs = {d["id"]: d for d in store.all()}
    doc = docs[entry["run_id"]]
    assert doc["parent"] and doc["fork_epoch"] == entry["fork_epoch"] > 0
    # The fork trained only its own epochs...
    own = epoch_table(read_events(store.run_dir(doc["id"])))
    assert own[0]["epoch"] == entry["fork_epoch"]
    scratch = scratch_run(tmp_path, store, doc["id"])
    a = torch.load(store.run_dir(doc["id"]) / "ckpt" / "latest.pt", weights_only=False)["model"]
    b = torch.load(scratch / "ckpt" / "latest.pt", weights_only=False)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # ...and its whole history (inherited epochs + its own) equals the scratch run's, metrics included.
    forked_rows = [{k: v for k, v in r.items() if k not in TIMING} for r in full_rows(store, doc)]
    scratch_rows = [{k: v for k, v in r.items() if k not in TIMING} for r in epoch_table(read_events(scratch))]
    assert [r["epoch"] for r in forked_rows] == list(range(doc["epochs"]))
    assert any("fisher.total" in r for r in forked_rows[: entry["fork_epoch"]])
    assert forked_rows == scratch_rows


def test_blur_removal_sweep_with_two_jobs_forks_exactly_and_reports(tmp_path, home, critui):
    path = sweep_file(tmp_path, "removal", "\n[sweep.removal]\nvalues = [1, 3]\nafter = 2\n")
    result = critui("sweep", str(path), "--jobs", "2", check=True)
    assert "finished" in result.stdout
    record = record_of(home)
    child = next(e for e in record["runs"] if e["axis"]["removal"] == 1)
    trunk = next(e for e in record["runs"] if e["axis"]["removal"] == 3)
    assert child["parent"] == trunk["index"] and child["fork_epoch"] == 1
    assert (home / "runs" / trunk["run_id"] / "ckpt" / "epoch-0001.pt").exists()
    assert_fork_equals_scratch(tmp_path, home, child)

    # The run tree is in the index and on screen.
    listing = critui("runs", check=True).stdout
    assert f"…{trunk['run_id'][-4:]}@1" in listing  # the parent's id suffix and the fork epoch
    assert "created" in listing and "synthetic" in listing
    # In 80 columns: no creation time, the shared dataset in the title, one line per run.
    narrow = critui("runs", env={"COLUMNS": "80"}, check=True).stdout.splitlines()
    assert "all on synthetic" in " ".join(narrow[:3]) and max(len(line.rstrip()) for line in narrow) <= 80
    child_line = next(line for line in narrow if line.startswith(child["run_id"]))
    assert child_line.split()[-1] == f"…{trunk['run_id'][-4:]}@1" and "[0,1)" in child_line
    docs = {d["id"]: d for d in json.loads(critui("runs", "--json", check=True).stdout)}
    assert (docs[child["run_id"]]["parent"], docs[child["run_id"]]["fork_epoch"]) == (trunk["run_id"], 1)
    shown = critui("show", child["run_id"], "--no-fisher", check=True).stdout
    assert f"forked from {trunk['run_id']}" in " ".join(shown.split()) and "inherited" in shown

    # In an 80-column terminal, one line per row: one seed shows no "± 0.0000" column.
    report = critui("report", "last", "--no-chart", env={"COLUMNS": "80"}, check=True).stdout
    lines = report.splitlines()
    assert "one seed" in report and "± 0." not in report and "…" not in report  # no std column
    assert "can be run-to-run noise; add seeds (--seeds 0,1,2)" in " ".join(report.split())
    assert max(len(line.rstrip()) for line in lines) <= 80
    assert any(line.split()[:2] == ["lr", "at"] for line in lines)
    table_rows = [line.split() for line in lines if "1/1" in line]
    assert [(row[0], row[-1]) for row in table_rows] == [("1", "0.0425"), ("3", "0.03071")]
    rows = list(csv.DictReader(io.StringIO(critui("report", record["id"], "--csv", check=True).stdout)))
    assert [r["value"] for r in rows] == ["1", "3"]
    store = RunStore(home)
    docs = {d["id"]: d for d in store.all()}
    expected = final_accuracy(full_rows(store, docs[child["run_id"]]))
    assert float(rows[0]["final_acc_mean"]) == pytest.approx(expected)
    assert float(rows[0]["drop"]) == 0.0
    data = json.loads(critui("report", "last", "--json", check=True).stdout)
    assert data["primary"] == "removal" and data["rows"][1]["lr_at_removal"] == pytest.approx(0.05 * 0.85**3)

    out = tmp_path / "fig.png"
    no_mpl = tmp_path / "no-matplotlib"
    (no_mpl / "matplotlib").mkdir(parents=True)
    (no_mpl / "matplotlib" / "__init__.py").write_text("raise ImportError('matplotlib is not installed')\n")
    png = critui("report", "last", "--png", str(out), env={"PYTHONPATH": str(no_mpl)})
    assert png.returncode == 2 and "Traceback" not in png.stderr
    assert "matplotlib" in png.stderr and "critui[plot]" in png.stderr and not out.exists()
    try:
        import matplotlib  # noqa: F401  (the dev extra installs it; a bare install may not)
    except ImportError:
        pass
    else:
        critui("report", "last", "--png", str(out), check=True)
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # The trunk cannot be deleted while a fork inherits its first epochs; with the fork, it can.
    refused = critui("delete", trunk["run_id"], "--yes")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "cannot be deleted" in refused.stderr and child["run_id"] in " ".join(refused.stderr.split())
    declined = critui("delete", child["run_id"], trunk["run_id"], input="n\n")
    assert declined.returncode == 130 and (home / "runs" / trunk["run_id"]).exists()
    critui("delete", child["run_id"], trunk["run_id"], input="y\n", check=True)
    left = {d["id"] for d in index_docs(home)}
    assert not {child["run_id"], trunk["run_id"]} & left and not (home / "runs" / trunk["run_id"]).exists()
    # The sweep still resumes: deleted runs are skipped, not restarted, and said so.
    resumed = critui("sweep", "--resume", "last", check=True)
    assert "2 run(s) of sweep" in resumed.stderr and "were deleted" in resumed.stderr
    assert not {child["run_id"], trunk["run_id"]} & {d["id"] for d in index_docs(home)}


def test_window_onset_fork_equals_the_run_trained_from_scratch(tmp_path, home, critui):
    path = sweep_file(tmp_path, "window", "baseline = true\n\n[sweep.onset]\nvalues = [2]\nwidth = 1\nafter = 1\n")
    critui("sweep", str(path), "--jobs", "2", check=True)
    record = record_of(home)
    child = next(e for e in record["runs"] if not e["baseline"])
    assert child["window"] == [2, 3] and child["fork_epoch"] == 2
    assert record["runs"][child["parent"]]["baseline"]
    assert_fork_equals_scratch(tmp_path, home, child)


def test_an_interrupted_sweep_resumes_without_redoing_finished_runs(tmp_path, home, critui):
    path = sweep_file(tmp_path, "resume", "\n[sweep.removal]\nvalues = [1, 2]\nafter = 10\n")
    env = {**os.environ, "CRITUI_HOME": str(home), "COLUMNS": "160"}
    manager = subprocess.Popen([sys.executable, "-m", "critui", "sweep", str(path), "--jobs", "1"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 900  # a wait for events, generous: it times nothing
        child = None
        while time.monotonic() < deadline and manager.poll() is None:  # interrupt once the trunk is done and the fork has checkpointed an epoch
            records = list((home / "sweeps").glob("*/sweep.json"))
            if records:
                record = json.loads(records[0].read_text())
                child = next(e for e in record["runs"] if e["parent"] is not None)
                if any(e["event"] == "checkpoint" and e["epoch"] > child["fork_epoch"]
                       for e in read_events(home / "runs" / child["run_id"])):
                    break
            time.sleep(0.1)
        assert child is not None
        manager.send_signal(signal.SIGINT)
        _, stderr = manager.communicate(timeout=900)
    finally:
        if manager.poll() is None:
            manager.kill()
    assert manager.returncode == 130, stderr
    assert "--resume" in stderr
    trunk = record["runs"][child["parent"]]
    statuses = {d["id"]: d["status"] for d in RunStore(home).all()}
    assert statuses[trunk["run_id"]] == "finished" and statuses[child["run_id"]] == "cancelled"

    critui("sweep", "--resume", "last", check=True)
    trunk_starts = [e for e in read_events(home / "runs" / trunk["run_id"]) if e["event"] == "started"]
    child_starts = [e for e in read_events(home / "runs" / child["run_id"]) if e["event"] == "started"]
    assert len(trunk_starts) == 1
    assert len(child_starts) == 2 and child_starts[1]["resumed"] and child_starts[1]["epoch"] > child["fork_epoch"]
    assert {d["status"] for d in RunStore(home).all()} == {"finished"}


def test_seeds_option_replaces_the_configs_seeds(critui):
    config = str(Path(__file__).parents[1] / "configs" / "demo-removal.toml")
    plan = critui("sweep", config, "--seeds", "0,1", "--dry-run", check=True).stdout
    assert "28 runs" in plan and "seed=1" in plan and "seed=2" not in plan
    for bad in ("0,x", "1,1", "-1"):
        result = critui("sweep", config, "--seeds", bad, "--dry-run")
        assert result.returncode == 2 and "--seeds" in result.stderr
        assert "Traceback" not in result.stderr


def test_the_report_chart_tells_its_series_apart_without_colour():
    # Every series used to be drawn in dots, its plotext legend over the top-left corner,
    # so a results page showed four identical lines with the earliest points hidden.
    from critui.runs.report import MARKERS, terminal_chart

    def row(series, value, acc, reference=0, baseline=False):
        return {"series": series, "value": value, "baseline": baseline, "final_acc_mean": acc, "reference": reference}

    report = {"primary": "removal", "rows": [
        *(row("deficit=blur", t0, 0.95 - t0 / 40) for t0 in (0, 4, 8, 16)),
        *(row("deficit=flip", t0, 0.95 - t0 / 200) for t0 in (0, 4, 8, 16)),
    ]}
    lines = re.sub(r"\x1b\[[0-9;]*m", "", terminal_chart(report, width=60, height=14)).splitlines()
    assert all(len(line) <= 60 for line in lines)
    axis = next(i for i, line in enumerate(lines) if line.strip() == "removal")
    assert axis == 13  # the plot keeps its 14 rows; the legend goes under it
    legend = " ".join(lines[axis + 1 :])
    assert legend.split()[:4] == [MARKERS[0], "deficit=blur", MARKERS[1], "deficit=flip"]
    assert "── each series' reference, its first removal value" in legend
    assert not any("deficit=" in line for line in lines[:axis])
    # The top-left corner shows the curves, not a legend: both series start at 0.95, on the
    # reference line of the first removal value.
    assert MARKERS[1] in lines[2][:12] and "─" in lines[2][12:]


def test_the_report_table_keeps_its_numbers_whole_at_80_columns():
    # Series named by long settings used to squeeze the number columns to "+10.79 …" and
    # "0.0071…" in an 80-column terminal; the series are now headed by their settings.
    from rich.console import Console

    from critui.runs.report import rich_table, series_column

    assert series_column(["deficit=flip", "deficit=label-permutation"]) == (
        "deficit", {"deficit=flip": "flip", "deficit=label-permutation": "label-permutation"})
    header, labels = series_column(["deficit=blur, optim.after_removal=continue",
                                    "deficit=noise, optim.after_removal=reset"])
    assert header == "deficit, optim.after_removal"
    assert labels["deficit=noise, optim.after_removal=reset"] == "noise, reset"
    assert series_column(["deficit=blur", "all"])[0] == "series"  # no common settings

    def row(series, value, acc):
        return {"series": series, "value": value, "baseline": False, "runs": 3, "finished": 3,
                "final_acc_mean": acc, "final_acc_std": 0.0456, "drop": 0.9278 - acc,
                "lr_at_removal": 0.05 * 0.85 ** value, "reference": 0}

    names = ["deficit=blur, optim.after_removal=continue", "deficit=label-permutation, optim.after_removal=reset"]
    report = {"sweep": "demo-x", "primary": "removal", "final_window": 5,
              "rows": [row(name, t0, 0.9278 - t0 / 200) for name in names for t0 in (0, 12, 24)]}
    console = Console(width=80, record=True, file=io.StringIO())
    console.print(rich_table(report))
    text = console.export_text()
    assert all(len(line) <= 80 for line in text.splitlines())
    for cell in ("0.8678 ± 0.0456", "+12.00 pts", "0.007112", "0.001012", "blur, continue"):
        assert cell in text, text
    assert "label-perm" in text and "reset" in text and "…" not in text  # a label too long is folded, not cut


def test_the_report_chart_draws_a_categorical_axis_as_the_tui_does():
    from critui.runs.report import terminal_chart

    report = {"primary": "optim.name", "rows": [
        {"series": "all", "value": "baseline", "baseline": True, "final_acc_mean": 0.9, "reference": "baseline"},
        {"series": "all", "value": "sgd", "baseline": False, "final_acc_mean": 0.6, "reference": "baseline"},
        {"series": "all", "value": "adam", "baseline": False, "final_acc_mean": 0.7, "reference": "baseline"},
    ]}
    plain = re.sub(r"\x1b\[[0-9;]*m", "", terminal_chart(report, width=60, height=12))
    ticks = next(line for line in plain.splitlines() if "sgd" in line)
    assert ticks.index("sgd") < ticks.index("adam")  # the axis values, in the sweep's order
    assert plain.splitlines()[-1].strip() == "── the reference, its no-deficit baseline"


@pytest.mark.parametrize(("cores", "jobs", "threads", "hint"), [
    (2, 1, 1, "--jobs 1 keeps 1 of the 2 cores busy; --jobs 2 would use them all"),
    (8, 2, 2, "--jobs 2 keeps 4 of the 8 cores busy; --jobs 3 would use them all"),  # 3 runs
    (2, 2, 1, None),
    (2, 1, 0, None),  # unpinned: the sweep splits the cores itself
])
def test_a_sweep_that_would_leave_cores_idle_says_how_many_jobs_fill_them(
    tmp_path, monkeypatch, capsys, cores, jobs, threads, hint
):
    from critui import cli
    from critui.runs import scheduler

    monkeypatch.setattr(scheduler, "cpu_threads_per_worker", lambda j: max(1, cores // j))
    monkeypatch.setattr(scheduler, "detect_gpus", lambda: [])
    path = sweep_file(tmp_path, "pinned", "\n[sweep.removal]\nvalues = [0, 1, 2]\nafter = 1\n")
    path.write_text(path.read_text().replace("threads = 1", f"threads = {threads}", 1))
    cli.main(["sweep", str(path), "--dry-run", "--jobs", str(jobs)])
    err = " ".join(capsys.readouterr().err.split())
    if hint is None:
        assert "would use them all" not in err
    else:
        assert hint in err


def test_a_sweep_run_whose_deficit_is_never_removed_is_noted_in_the_plan(tmp_path, critui):
    from critui.config import build_spec
    from critui.plugins import get_registry

    epochs = build_spec(get_registry()).epochs  # TINY keeps the default
    path = sweep_file(tmp_path, "to-the-end", f'\n[sweep.set]\n"deficit.end" = [1, {epochs}]\n')
    planned = critui("sweep", str(path), "--dry-run", check=True)
    assert "1 of the 2 runs" in planned.stderr and "never removed" in " ".join(planned.stderr.split())
