"""`critui report` marks the drops that are within the seeds' spread (|drop| < 2 std of the
per-seed drops), in the table, the CSV and the JSON, so a reader sees which points are noise."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from critui.runs.report import SPREAD_MARK, within_spread
from critui.runs.store import RunStore
from tests.synthetic_home import T0, spec_json

SWEEP_ID = "spread-20260101-000000"
EPOCHS = 5  # the final accuracy is the mean of the last 5 epochs: here, the one value each run holds

# Final accuracy per (removal, seed). Removal 0 is the reference of the series.
FINAL = {
    0: (0.90, 0.95, 0.85),
    # per-seed drops -1, +5, -1 points: mean +1, std 3.5, so within 2 std: noise
    4: (0.91, 0.90, 0.86),
    # drops +30, +29, +31: far outside a 1-point spread
    8: (0.60, 0.66, 0.54),
    # drops +10, +10, +10 points: every seed loses the same. The accuracies themselves spread by
    # 5 points, as much as the reference's, so comparing the two means' spreads would call this
    # noise; the per-seed drops say it is not.
    12: (0.80, 0.85, 0.75),
}


def write_sweep(home: Path, seeds: int | tuple[int, ...] = 3, sweep_id: str = SWEEP_ID, primary: str = "removal") -> None:
    """A finished removal sweep of ``seeds`` seeds (the first N, or those named), written as
    the scheduler and workers leave it."""
    seeds = tuple(range(seeds)) if isinstance(seeds, int) else seeds
    entries = []
    for removal, accs in FINAL.items():
        for seed in seeds:
            acc = accs[seed]
            day = sweep_id.split("-")[1]  # each sweep's runs their own ids
            run_id = f"{day}-00{removal:02d}{seed:02d}-{removal:02x}{seed:02x}"
            run_dir = home / "runs" / run_id
            run_dir.mkdir(parents=True)
            spec = spec_json(EPOCHS, seed, deficit=removal > 0)
            if removal:
                spec["deficit"]["params"]["end"] = removal
            (run_dir / "spec.json").write_text(json.dumps(spec))
            axis = {"removal": removal, "seed": seed}
            (run_dir / "run.json").write_text(json.dumps({
                "id": run_id, "name": "", "created": T0, "host": "lab", "git_commit": None,
                "plugins": {}, "parent": None, "fork_epoch": None, "sweep": sweep_id, "axis": axis}))
            lines = [{"event": "started", "time": T0, "epoch": 0, "device": "cpu", "resumed": False}]
            lines += [{"event": "epoch", "time": T0 + e, "epoch": e, "lr": 0.05, "deficit_active": e < removal,
                       "train_loss": 1.0, "train_acc": acc, "test_loss": 1.0, "test_acc": acc, "seconds": 1.0}
                      for e in range(EPOCHS)]
            lines.append({"event": "finished", "time": T0 + EPOCHS, "epochs": EPOCHS, "final_acc": acc,
                          "seconds": 5.0})
            (run_dir / "events.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
            entries.append({"index": len(entries), "run_id": run_id, "axis": axis, "baseline": False,
                            "label": run_id, "parent": None, "fork_epoch": 0, "epochs": EPOCHS,
                            "window": [0, removal]})
    record = {"id": sweep_id, "name": "spread", "config": None, "created": T0, "primary": primary,
              "axes": ["removal", "seed"], "runs": entries}
    (home / "sweeps" / sweep_id).mkdir(parents=True)
    (home / "sweeps" / sweep_id / "sweep.json").write_text(json.dumps(record))
    RunStore(home).reconcile()


def test_the_report_marks_the_drops_within_the_seeds_spread(critui, home):
    write_sweep(home)
    table = critui("report", SWEEP_ID, "--no-chart", check=True).stdout
    rows = {line.split()[0]: line for line in table.splitlines() if "3/3" in line}
    assert set(rows) == {"0", "4", "8", "12"}
    assert rows["4"].split()[-2:] == ["~", "0.0261"] and "+1.00 pts" in rows["4"]
    for value in ("0", "8", "12"):
        assert SPREAD_MARK not in rows[value], rows[value]
    assert "+30.00 pts" in rows["8"] and "+10.00 pts" in rows["12"]
    # The numbers stay aligned: a drop without the mark takes the same width.
    assert len({line.index("pts") for line in rows.values()}) == 1
    legend = " ".join(table.split())
    assert "~: within the seeds' spread, |drop| < 2 × the std over seeds of each seed's drop" in legend

    exported = list(csv.DictReader(io.StringIO(critui("report", SWEEP_ID, "--csv", check=True).stdout)))
    assert [(r["value"], r["within_spread"]) for r in exported] == [
        ("0", ""), ("4", "True"), ("8", "False"), ("12", "False")]
    assert float(exported[1]["drop_std"]) == pytest.approx(0.0346, abs=1e-4)
    data = json.loads(critui("report", SWEEP_ID, "--json", check=True).stdout)
    assert [r["within_spread"] for r in data["rows"]] == [None, True, False, False]
    assert data["rows"][3]["drop_std"] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(("drops", "drop", "within"), [
    ([0.02, -0.02], 0.0, True),       # std 0.028: a zero drop is noise
    ([0.02, -0.02], 0.05, True),      # 0.05 < 2 × 0.028
    ([0.02, -0.02], 0.06, False),     # 0.06 > 0.057
    ([0.02, -0.02], -0.06, False),    # a gain is judged by its size too
    ([0.05], 0.05, None),             # one seed: no spread to compare with
    ([0.05, None], 0.05, None),       # a seed whose reference did not finish has no drop
    ([0.1, 0.1, 0.1], 0.1, False),    # every seed loses the same: no spread at all
])
def test_within_spread_compares_the_drop_with_twice_the_std_of_the_per_seed_drops(drops, drop, within):
    row = {"drop": drop, "per_seed": [{"seed": i, "final_acc": 0.5, "drop": d} for i, d in enumerate(drops)]}
    assert within_spread(row) is within


def test_a_one_seed_table_has_no_mark_and_keeps_its_caveat(critui, home):
    write_sweep(home, seeds=1)
    table = " ".join(critui("report", SWEEP_ID, "--no-chart", check=True).stdout.split())
    assert SPREAD_MARK not in table and "One seed" in table


MORE_SEEDS = "spread-20260102-000000"


def test_sweeps_run_again_with_other_seeds_report_as_one(critui, home):
    """The same config run twice, seed 0 then seeds 1 and 2: reported together, the figure is
    the 3-seed sweep's, to the digit."""
    write_sweep(home, seeds=(0,), sweep_id=MORE_SEEDS)
    write_sweep(home, seeds=(1, 2), sweep_id=SWEEP_ID.replace("0101", "0103"))
    split = json.loads(critui("report", MORE_SEEDS, "spread-20260103", "--json", check=True).stdout)
    assert split["sweep"] == f"{MORE_SEEDS} + spread-20260103-000000"
    write_sweep(home, sweep_id=SWEEP_ID)
    whole = json.loads(critui("report", SWEEP_ID, "--json", check=True).stdout)
    assert [r["finished"] for r in split["rows"]] == [3, 3, 3, 3]
    for a, b in zip(split["rows"], whole["rows"], strict=True):
        assert a["drop"] == pytest.approx(b["drop"]) and a["within_spread"] == b["within_spread"]
        assert [s["seed"] for s in a["per_seed"]] == [0, 1, 2]
    table = critui("report", MORE_SEEDS, "spread-20260103", "--per-seed", check=True).stdout
    assert "seed 0" in table and "seed 2" in table


def test_sweeps_that_repeat_a_run_or_vary_other_axes_are_not_merged(critui, home):
    write_sweep(home, seeds=(0, 1), sweep_id=MORE_SEEDS)
    write_sweep(home, seeds=(1, 2), sweep_id=SWEEP_ID)
    result = critui("report", MORE_SEEDS, SWEEP_ID)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    message = " ".join(result.stderr.split())
    assert "both ran removal=0, seed=1" in message and "count twice" in message
    write_sweep(home, seeds=(2,), sweep_id="spread-20260104-000000", primary="onset")
    result = critui("report", MORE_SEEDS, "spread-20260104-000000")
    assert result.returncode != 0 and "vary different axes" in " ".join(result.stderr.split())
    result = critui("report", MORE_SEEDS, MORE_SEEDS)
    assert result.returncode != 0 and "named twice" in " ".join(result.stderr.split())


def test_a_per_seed_table_wider_than_the_terminal_is_split_with_no_cell_cut(critui, home):
    write_sweep(home)
    table = critui("report", SWEEP_ID, "--per-seed", env={"COLUMNS": "40"}, check=True).stdout
    assert "…" not in table.replace("… seed", "")  # only the continued tables' titles
    headers = [line for line in table.splitlines() if line.split()[:2] == ["removal", "seed"]]
    assert len(headers) == 3  # one table per seed, each with the value column again
    assert "per seed, seed 0 (" in " ".join(table.split()) and "… seed 2" in table
    assert "0.6600 (+29.0)" in table and "0.5400 (+31.0)" in table  # removal 8, seeds 1 and 2 whole
    wide = critui("report", SWEEP_ID, "--per-seed", env={"COLUMNS": "200"}, check=True).stdout
    assert sum(line.split()[:2] == ["removal", "seed"] for line in wide.splitlines()) == 1 and "… seed" not in wide
