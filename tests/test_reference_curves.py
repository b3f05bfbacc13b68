"""A metric plugin's reference curve (``Metric.reference``): recorded as a ``reference`` event,
printed by ``critui show`` beside the measured values, overlaid on the TUI's metric chart.
Homes are written by hand, as in tests/test_tui_charts.py."""

from __future__ import annotations

import asyncio

from critui.events import reference_at, reference_series
from critui.train.plugin_guard import MetricRunner
from tests.test_tui import make_app, wait_for
from tests.test_tui_charts import RUN, charts_home, edit_events, open_detail

# weight-norm.conv1 measures 1 + 0.1·epoch (tests/test_tui_charts.py); the "theory" says 1 + 0.2·epoch
REFERENCE = {"event": "reference", "time": 0.0, "epoch": 0, "metric": "metrics.weight-norm",
             "series": {"conv1": [[0, 1.0], [10, 3.0], [19, 4.8]], "no-such-key": [[0, 1.0], [19, 2.0]]}}


def with_reference(events: list[dict]) -> list[dict]:
    return [events[0], REFERENCE, *events[1:]]


def test_reference_series_are_keyed_like_metric_values_and_interpolated():
    damaged = {**REFERENCE, "series": {"conv1": [[0, 1.0], ["x", 2.0], [19, None], [10, 3.0]], "bad": "oops"}}
    curves = reference_series([REFERENCE, {"event": "epoch", "epoch": 0}, damaged])
    assert curves == {"weight-norm.conv1": ([0.0, 10.0], [1.0, 3.0]),  # the last event wins, bad points skipped
                      "weight-norm.no-such-key": ([0.0, 19.0], [1.0, 2.0])}
    conv1 = curves["weight-norm.conv1"]
    assert reference_at(conv1, 5) == 2.0 and reference_at(conv1, 10) == 3.0 and reference_at(conv1, 11) is None


class _Log:
    def __init__(self):
        self.events = []

    def write(self, event, **fields):
        self.events.append({"event": event, **fields})


class _Info:
    id, distribution, version = "metrics.theory", "critui-plugin-theory", "0.1"


class _Metric:
    def __init__(self, curve):
        self.curve = curve

    def reference(self, ctx):
        if isinstance(self.curve, Exception):
            raise self.curve
        return self.curve


def test_the_worker_records_a_valid_reference_and_warns_about_a_broken_one():
    log = _Log()
    ctx = type("Ctx", (), {"epoch": 0})()
    MetricRunner([(_Info(), _Metric({"a": [(5, 2.0), (0, 1)]}))], log).record_references(ctx)
    assert log.events == [{"event": "reference", "epoch": 0, "metric": "metrics.theory",
                           "series": {"a": [[0.0, 1.0], [5.0, 2.0]]}}]  # in epoch order, floats
    for broken in ({"a": [(0, float("nan"))]}, {"a": "nope"}, ["a"], ZeroDivisionError("boom")):
        log = _Log()
        MetricRunner([(_Info(), _Metric(broken))], log).record_references(ctx)
        assert [e["event"] for e in log.events] == ["warning"], broken
        assert "metrics.theory" in log.events[0]["message"] and "without its reference" in log.events[0]["message"]
    log = _Log()
    MetricRunner([(_Info(), _Metric(None)), (_Info(), object())], log).record_references(ctx)
    assert log.events == []  # no reference, or no method at all: nothing written


def test_show_prints_the_reference_beside_the_measured_values(tmp_path, critui):
    home = charts_home(tmp_path)
    edit_events(home / "runs" / RUN, with_reference)
    result = critui("show", RUN, env={"CRITUI_HOME": str(home), "COLUMNS": "120"})
    assert result.returncode == 0, result.stderr
    table = result.stdout[result.stdout.index("metrics.weight-norm"):]
    header = next(line for line in table.splitlines() if "conv1" in line)
    assert "conv1 ref" in header and "no-such-key" not in table  # only keys the metric records
    row5 = next(line.split() for line in table.splitlines() if line.split()[:1] == ["5"])
    assert row5[1:3] == ["1.5", "2"]  # measured 1 + 0.1·5 beside the reference 1 + 0.2·5


def test_export_carries_the_reference_beside_the_measured_values(tmp_path, critui):
    import csv
    import io
    import json

    home = charts_home(tmp_path)
    edit_events(home / "runs" / RUN, with_reference)
    env = {"CRITUI_HOME": str(home)}
    result = critui("export", RUN, env=env)
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    columns = list(rows[0])
    assert columns.index("weight-norm.conv1 ref") == columns.index("weight-norm.conv1") + 1
    assert not any("no-such-key" in c for c in columns)  # only keys the metric records
    row5 = next(r for r in rows if r["epoch"] == "5")
    assert float(row5["weight-norm.conv1"]) == 1.5 and float(row5["weight-norm.conv1 ref"]) == 2.0
    assert next(r for r in rows if r["epoch"] == "19")["weight-norm.conv1 ref"] == "4.8"
    result = critui("export", RUN, "--format", "json", env=env)
    assert result.returncode == 0, result.stderr
    (run,) = json.loads(result.stdout)["runs"]
    assert run["references"]["weight-norm.conv1"] == {"epochs": [0.0, 10.0, 19.0], "values": [1.0, 3.0, 4.8]}
    assert run["epochs"][5]["weight-norm.conv1 ref"] == 2.0


def test_the_metrics_tab_overlays_the_reference_curve(tmp_path):
    home = charts_home(tmp_path)
    edit_events(home / "runs" / RUN, with_reference)

    async def scenario():
        from textual.widgets import SelectionList

        from critui.tui.widgets.charts import Chart

        app = make_app(home, poll_interval=0.2)
        async with app.run_test(size=(120, 30)) as pilot:
            detail = await open_detail(pilot, app, RUN)
            await pilot.press("5")
            chart = detail.query_one("#metric-chart", Chart)
            # 4 layers × 20 epochs, less one null, and conv1's 3-point reference
            assert await wait_for(pilot, lambda: chart.points == 79 + 3)
            keys = detail.query_one("#metric-keys", SelectionList)
            keys.deselect("weight-norm.conv1")  # its reference goes with it
            assert await wait_for(pilot, lambda: chart.points == 59)

    asyncio.run(scenario())
    from critui.tui.widgets.charts import REFERENCE_COLOUR, SERIES_COLOURS

    assert REFERENCE_COLOUR not in SERIES_COLOURS  # never mistaken for a measured key


def test_the_contract_kit_checks_a_metric_reference():
    import pytest

    from critui.kinds import Metric
    from critui.testing import check_metric

    class Theory(Metric):
        name = "theory"
        description = "A constant and what theory says it is."
        curve: object = None

        def compute(self, ctx):
            return {"a": 1.0}

        def reference(self, ctx):
            return self.curve

    Theory.curve = {"a": [(0, 1.0), (1, 1.0)]}
    check_metric(Theory)
    for bad, words in (({"b": [(0, 1.0)]}, "keys it does not measure"), ({"a": [(0, float("inf"))]}, "unusable")):
        Theory.curve = bad
        with pytest.raises(AssertionError, match=words):
            check_metric(Theory)
