"""`critui report SWEEP --metric NAME.KEY` reports a recorded metric (a plugin's, such as the
deep-linear plugin's pathway share) in place of the test score: the mean of its last 5 values
per run, its drop from the reference, in the metric's own units."""

from __future__ import annotations

import json

from tests.test_report_spread import EPOCHS, FINAL, SWEEP_ID, write_sweep


def add_share(home, value_of) -> None:
    """Give every run of the sweep a `metrics.pathway-share` event per epoch, its `b` key
    ``value_of(removal, seed)``, before its finished event."""
    for run_dir in sorted((home / "runs").iterdir()):
        meta = json.loads((run_dir / "run.json").read_text())
        removal, seed = meta["axis"]["removal"], meta["axis"]["seed"]
        lines = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
        metrics = [{"event": "metric", "time": lines[-1]["time"], "epoch": e, "metric": "metrics.pathway-share",
                    "values": {"a": 1 - value_of(removal, seed), "b": value_of(removal, seed)}}
                   for e in range(EPOCHS)]
        lines = lines[:-1] + metrics + lines[-1:]
        (run_dir / "events.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))


def test_report_metric_reports_a_recorded_metric_and_its_drop(critui, home):
    write_sweep(home)
    add_share(home, lambda removal, seed: 0.6 - removal / 100 + seed / 1000)
    result = critui("report", SWEEP_ID, "--metric", "pathway-share.b", "--no-chart", check=True)
    rows = {line.split()[0]: line for line in result.stdout.splitlines() if "3/3" in line}
    assert set(rows) == set(map(str, FINAL))
    assert "0.601" in rows["0"] and "0.521" in rows["8"]  # mean over seeds 0.600, 0.601, 0.602
    assert "+0.08" in rows["8"] and "pts" not in result.stdout  # the reference's 0.601 minus 0.521
    text = " ".join(result.stdout.split())
    assert "pathway-share.b" in text and "the reference's pathway-share.b minus this row's" in text

    data = json.loads(critui("report", SWEEP_ID, "--metric", "pathway-share.b", "--json", check=True).stdout)
    assert data["metric"] == "pathway-share.b"
    row8 = next(r for r in data["rows"] if r["value"] == 8)
    assert abs(row8["final_acc_mean"] - 0.521) < 1e-9 and abs(row8["drop"] - 0.08) < 1e-9


def test_report_refuses_a_metric_no_run_recorded_naming_the_recorded_ones(critui, home):
    write_sweep(home)
    add_share(home, lambda removal, seed: 0.5)
    result = critui("report", SWEEP_ID, "--metric", "pathway-share.c", "--no-chart")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    message = " ".join(result.stderr.split())
    assert "recorded the metric pathway-share.c" in message
    assert "pathway-share.a, pathway-share.b" in message
