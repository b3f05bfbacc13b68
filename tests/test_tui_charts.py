"""Charts, plugin metrics and saving what is on screen (issue 16, items 6, 9 and 10).

Homes are written by hand (tests/test_tui.py's ``write_run``), then edited: Fisher measured
every epoch to 10 then every 5th, a plugin metric (``metrics.weight-norm``, per layer) with
one null value and its warning event, a run with Fisher off.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from critui.runs.store import RunStore
from tests.test_tui import LAYERS, T0, ask, make_app, plain_text, wait_for, write_run

RUN = "20260101-000000-aaaa"
OFF = "20260101-000100-bbbb"
FISHER_EPOCHS = [*range(0, 11), 15, 19]  # every epoch to 10, then every 5th (and the last)


def edit_events(run_dir: Path, edit) -> None:
    path = run_dir / "events.jsonl"
    events = [json.loads(line) for line in path.read_text().splitlines()]
    path.write_text("".join(json.dumps(e) + "\n" for e in edit(events)))


def with_plugin_metric(events: list[dict]) -> list[dict]:
    """Fisher only at FISHER_EPOCHS; a per-layer weight norm each epoch, null in epoch 3."""
    out = []
    for e in events:
        if e["event"] == "metric" and e["epoch"] not in FISHER_EPOCHS:
            continue
        out.append(e)
        if e["event"] == "epoch":
            n = e["epoch"]
            values = {layer: round(1.0 + 0.1 * n + i, 4) for i, layer in enumerate(LAYERS)}
            if n == 3:
                values["conv2"] = None
                out.append({"event": "warning", "time": e["time"], "epoch": n, "plugin": "metrics.weight-norm",
                            "distribution": "critui-plugin-norms", "version": "0.1", "key": "conv2",
                            "message": "metrics.weight-norm (critui-plugin-norms 0.1) returned conv2=nan in "
                                       "epoch 3, which is not a finite number; it is recorded as null and the "
                                       "run goes on."})
            out.append({"event": "metric", "time": e["time"], "epoch": n, "metric": "metrics.weight-norm",
                        "values": values})
    return out


def charts_home(root: Path) -> Path:
    """RUN: 20 epochs, flip in [0, 8), sparse Fisher, a plugin metric. OFF: Fisher off, finished."""
    home = root / "home"
    run_dir = write_run(home, RUN, window=(0, 8), epochs=20, created=T0)
    edit_events(run_dir, with_plugin_metric)
    off = write_run(home, OFF, window=(0, 4), epochs=6, created=T0 + 60, seed=3)
    edit_events(off, lambda events: [e for e in events if e["event"] != "metric"])
    spec = json.loads((off / "spec.json").read_text())
    spec["metrics"] = []
    (off / "spec.json").write_text(json.dumps(spec))
    RunStore(home).reconcile()
    return home


def no_matplotlib(monkeypatch) -> None:
    """As on a machine without the plot extra: importing matplotlib fails."""
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)


async def open_detail(pilot, app, run_id: str):
    from critui.tui.screens.run_detail import RunDetailScreen
    from critui.tui.widgets.runs_table import RunsTable

    table = app.screen.query_one(RunsTable)
    assert await wait_for(pilot, lambda: run_id in table.shown)
    app.push_screen(RunDetailScreen(run_id))
    # pushed first, composed a moment later: wait for its last tab
    assert await wait_for(pilot, lambda: isinstance(app.screen, RunDetailScreen)
                          and bool(app.screen.query("#metric-warnings")))
    return app.screen


# -- item 6: charts ------------------------------------------------------------------------------


@pytest.mark.parametrize(("lo", "hi", "most"), [(0, 19, 5), (0, 3, 10), (2, 301, 8), (0, 0, 4), (5, 12, 2)])
def test_epoch_ticks_are_whole_numbers_on_a_1_2_5_step(lo, hi, most):
    from critui.tui.widgets.charts import integer_ticks

    ticks = integer_ticks(lo, hi, most)
    assert ticks and all(isinstance(t, int) for t in ticks)
    assert len(ticks) <= max(most, 2) and lo <= ticks[0] and ticks[-1] <= hi
    steps = {b - a for a, b in zip(ticks, ticks[1:], strict=False)}
    assert len(steps) <= 1 and all(str(s).strip("0") in ("1", "2", "5") for s in steps)


def test_the_heatmap_columns_are_epochs_with_gaps_and_the_window_at_its_epochs(tmp_path):
    home = charts_home(tmp_path)

    async def scenario():
        from critui.tui.widgets.charts import FisherHeatmap

        app = make_app(home, poll_interval=0.2)
        async with app.run_test(size=(120, 30)) as pilot:
            detail = await open_detail(pilot, app, RUN)
            await pilot.press("4")
            heatmap = detail.query_one(FisherHeatmap)
            assert await wait_for(pilot, lambda: heatmap.layer_names == list(LAYERS) and heatmap.size.width > 0)
            columns, cw = heatmap.columns(heatmap.size.width - 8)
            assert columns == [(e, e + 1) for e in range(20)]  # one column per epoch, measured or not
            lines = heatmap.grid().plain.splitlines()
            label_w = max(len(name) for name in LAYERS) + 1  # the layer names, then the cells
            bar = lines[0][label_w:]
            assert bar.count("▄") == 8 * cw and bar.startswith("▄" * (8 * cw))  # [0, 8): 8 of 20 epochs
            conv1 = lines[1][label_w:]
            gaps = [e for e in range(20) if conv1[e * cw] == " "]
            assert gaps == [e for e in range(20) if e not in FISHER_EPOCHS]
            axis = lines[1 + len(LAYERS)]
            assert "epoch" in axis and "19" in axis and "." not in axis.replace("epoch", "")
            # saved as a figure: every epoch, None where nothing was measured
            canvas = heatmap.figure()
            call = next(c for c in canvas.plt.calls if c["name"] == "heatmap")
            assert call["epochs"] == list(range(20)) and call["window"] == (0, 8)
            assert [v is None for v in call["cells"][0]] == [e not in FISHER_EPOCHS for e in range(20)]

    asyncio.run(scenario())


def test_curves_have_whole_epoch_ticks_log_scale_said_and_the_window_inside_the_data(tmp_path):
    home = charts_home(tmp_path)

    async def scenario():
        from critui.tui.widgets.charts import WINDOW_COLOUR, Chart

        app = make_app(home, poll_interval=0.2)
        async with app.run_test(size=(120, 30)) as pilot:
            detail = await open_detail(pilot, app, RUN)
            acc = detail.query_one("#acc", Chart)
            assert await wait_for(pilot, lambda: acc.points == 20)
            calls = acc.figure().plt.calls
            ticks = next(c for c in calls if c["name"] == "xticks")["args"]
            assert all(isinstance(t, int) for t in ticks[0]) and ticks[1] == [str(t) for t in ticks[0]]
            assert ("xlim", (0, 19)) in [(c["name"], c["args"]) for c in calls]
            assert [(c["args"]) for c in calls if c["name"] == "vline"] == [(0, WINDOW_COLOUR), (8, WINDOW_COLOUR)]
            await pilot.press("3")
            raw = detail.query_one("#fisher-raw", Chart)
            assert await wait_for(pilot, lambda: raw.points > 0)
            raw_calls = raw.figure().plt.calls
            assert ("yscale", ("log",)) in [(c["name"], c["args"]) for c in raw_calls]
            assert any(c["name"] == "ylabel" and "log scale" in c["args"][0] for c in raw_calls)
            assert "log scale" in raw.render().plain

    asyncio.run(scenario())


def test_several_runs_windows_take_their_runs_colours_and_do_not_stretch_the_x_range():
    from critui.tui.widgets.charts import SERIES_COLOURS, Canvas, fisher_totals_draw

    def rows(n, total=True):
        return [{"epoch": e, "test_acc": 0.5, **({"fisher.total": 1.0 + e} if total else {})} for e in range(n)]

    draw = fisher_totals_draw([("aaaa", rows(12), [0, 4]), ("bbbb", rows(12), [2, 30])])
    canvas = Canvas(None, 10**9, "t")
    draw(canvas)
    canvas.finish()
    vlines = [c["args"] for c in canvas.plt.calls if c["name"] == "vline"]
    assert vlines == [(0, SERIES_COLOURS[0]), (4, SERIES_COLOURS[0]), (2, SERIES_COLOURS[1])]  # 30 is past the data
    assert [c["args"] for c in canvas.plt.calls if c["name"] == "xlim"] == [(0, 11)]


def test_a_finished_run_with_fisher_off_says_so_not_no_data_yet(tmp_path):
    home = charts_home(tmp_path)

    async def scenario():
        from critui.tui.widgets.charts import Chart, FisherHeatmap

        app = make_app(home, poll_interval=0.2)
        async with app.run_test(size=(120, 30)) as pilot:
            detail = await open_detail(pilot, app, OFF)
            await pilot.press("3")
            raw = detail.query_one("#fisher-raw", Chart)
            assert await wait_for(pilot, lambda: "Fisher was off" in raw.render().plain)
            assert "yet" not in raw.render().plain
            await pilot.press("4")
            heatmap = detail.query_one(FisherHeatmap)
            assert await wait_for(pilot, lambda: "Fisher was off" in heatmap.render().plain)

    asyncio.run(scenario())


# -- item 9: plugin metrics ----------------------------------------------------------------------


def test_the_metrics_tab_charts_a_plugin_metric_toggles_its_layers_and_lists_its_warnings(tmp_path):
    home = charts_home(tmp_path)

    async def scenario():
        from textual.widgets import Select, SelectionList, Static

        from critui.tui.widgets.charts import Chart

        app = make_app(home, poll_interval=0.2)
        async with app.run_test(size=(120, 30)) as pilot:
            detail = await open_detail(pilot, app, RUN)
            await pilot.press("5")
            chart = detail.query_one("#metric-chart", Chart)
            # 4 layers × 20 epochs, less the null of conv2 in epoch 3
            assert await wait_for(pilot, lambda: chart.points == 79)
            assert detail.query_one("#metric-name", Select).value == "weight-norm"
            keys = detail.query_one("#metric-keys", SelectionList)
            assert list(keys.selected) == [f"weight-norm.{layer}" for layer in LAYERS]
            keys.deselect("weight-norm.conv1")
            assert await wait_for(pilot, lambda: chart.points == 59)
            warnings = str(detail.query_one("#metric-warnings", Static).render())
            assert "metric warnings (1)" in warnings and "conv2=nan in epoch 3" in warnings
            detail.query_one("#metric-name", Select).value = "fisher"
            assert await wait_for(pilot, lambda: chart.points == len(FISHER_EPOCHS) * (len(LAYERS) + 1))

    asyncio.run(scenario())


def test_show_prints_plugin_metrics_in_their_own_table_readable_at_80_columns(tmp_path, critui):
    home = charts_home(tmp_path)
    result = critui("show", RUN, env={"CRITUI_HOME": str(home), "COLUMNS": "80"})
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "0…" not in out and max(len(line) for line in out.splitlines()) <= 80
    assert "metrics.weight-norm" in out and "null" in out
    epoch_table = out[out.index("per-epoch metrics"):out.index("Fisher trace per layer")]
    assert "weight-norm" not in epoch_table  # not squeezed into the epoch table any more
    assert "conv2=nan in epoch 3" in " ".join(out.split())  # the warning, below


def test_exports_carry_plugin_metrics_and_the_tui_adds_deficit_window_and_seed(tmp_path):
    import csv
    import io

    from critui.runs.export import export_csv, export_json

    home = charts_home(tmp_path)
    store = RunStore(home)
    doc = store.get(RUN)
    rows = list(csv.DictReader(io.StringIO(export_csv(store, [doc]))))
    assert rows[0]["weight-norm.conv1"] == "1.0" and rows[3]["weight-norm.conv2"] == ""
    assert "deficit" not in rows[0]
    tui = list(csv.DictReader(io.StringIO(export_csv(store, [doc], with_run=True))))
    assert list(tui[0])[:7] == ["run", "epoch", "inherited", "deficit", "window_start", "window_end", "seed"]
    assert (tui[0]["deficit"], tui[0]["window_start"], tui[0]["window_end"], tui[0]["seed"]) == (
        "deficits.flip", "0", "8", "0")
    data = json.loads(export_json(store, [doc]))
    assert data["runs"][0]["epochs"][0]["weight-norm.fc"] == 4.0


# -- item 10: saving what is on screen ------------------------------------------------------------


def test_saving_a_chart_without_matplotlib_says_how_to_get_it_and_still_saves_the_csv(
    tmp_path, monkeypatch
):
    home = charts_home(tmp_path)
    monkeypatch.chdir(tmp_path)
    no_matplotlib(monkeypatch)

    async def scenario():
        from textual.widgets import Input, Static

        from critui.tui.widgets.charts import Chart
        from critui.tui.widgets.confirm import ConfirmModal
        from critui.tui.widgets.save import SaveModal

        app = make_app(home, poll_interval=0.2)
        async with app.run_test(size=(120, 30)) as pilot:
            detail = await open_detail(pilot, app, RUN)
            assert await wait_for(pilot, lambda: detail.query_one("#acc", Chart).points == 20)
            await pilot.press("p")
            assert await wait_for(pilot, lambda: isinstance(app.screen, SaveModal))
            dialog = app.screen
            path = dialog.query_one(Input)
            assert path.value == str(tmp_path / f"{RUN}-curves.csv")  # no matplotlib: data only
            assert "pip install 'critui[plot]'" in plain_text(dialog.query(Static)[1].render())
            path.value = str(tmp_path / "acc.png")
            await pilot.press("enter")
            error = dialog.query_one("#save-error", Static)
            assert await wait_for(pilot, lambda: "pip install 'critui[plot]'" in str(error.render()))
            assert not (tmp_path / "acc.png").exists() and not (tmp_path / "acc.csv").exists()
            path.value = str(tmp_path / "acc.csv")
            await pilot.press("enter")
            assert await wait_for(pilot, lambda: (tmp_path / "acc.csv").exists())
            text = (tmp_path / "acc.csv").read_text()
            assert text.startswith("chart,series,run,deficit,window_start,window_end,seed,x,y")
            assert f"test accuracy,test_acc,{RUN},deficits.flip,0,8,0,0," in text
            assert text.count("\n") == 1 + 20 + 40  # header, accuracy, train and test loss
            # again: the file exists, so it asks; no keeps it as it is
            (tmp_path / "acc.csv").write_text("mine")
            await pilot.press("p")
            assert await wait_for(pilot, lambda: isinstance(app.screen, SaveModal))
            assert app.screen.query_one(Input).value == str(tmp_path / f"{RUN}-curves.csv")
            app.screen.query_one(Input).value = str(tmp_path / "acc.csv")
            await pilot.press("enter")
            assert await wait_for(pilot, lambda: isinstance(app.screen, ConfirmModal))
            await pilot.press("n")
            assert await wait_for(pilot, lambda: isinstance(app.screen, SaveModal))
            assert (tmp_path / "acc.csv").read_text() == "mine"
            await ask(pilot, app, "enter")
            await pilot.press("y")
            assert await wait_for(pilot, lambda: (tmp_path / "acc.csv").read_text() != "mine")

    asyncio.run(scenario())


def test_exporting_a_run_asks_where_and_carries_deficit_window_and_seed(tmp_path, monkeypatch):
    home = charts_home(tmp_path)
    monkeypatch.chdir(tmp_path)

    async def scenario():
        from textual.widgets import Input

        from critui.tui.widgets.save import SaveModal

        app = make_app(home, poll_interval=0.2)
        async with app.run_test(size=(120, 30)) as pilot:
            await open_detail(pilot, app, RUN)
            await pilot.press("e")
            assert await wait_for(pilot, lambda: isinstance(app.screen, SaveModal))
            assert app.screen.query_one(Input).value == str(tmp_path / f"{RUN}.csv")
            await pilot.press("enter")
            assert await wait_for(pilot, lambda: (tmp_path / f"{RUN}.csv").exists())
        header = (tmp_path / f"{RUN}.csv").read_text().splitlines()[0]
        assert header.startswith("run,epoch,inherited,deficit,window_start,window_end,seed,")
        assert "weight-norm.conv1" in header

    asyncio.run(scenario())


def test_exporting_marked_runs_from_the_dashboard_asks_where_and_never_overwrites(tmp_path, monkeypatch):
    home = charts_home(tmp_path)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "critui-runs.csv").write_text("earlier export")

    async def scenario():
        from textual.widgets import Input

        from critui.tui.widgets.runs_table import RunsTable
        from critui.tui.widgets.save import SaveModal

        app = make_app(home, poll_interval=0.2)
        async with app.run_test(size=(120, 30)) as pilot:
            table = app.screen.query_one(RunsTable)
            assert await wait_for(pilot, lambda: len(table.shown) == 2)
            await pilot.press("space", "down", "space", "e")
            assert await wait_for(pilot, lambda: isinstance(app.screen, SaveModal))
            assert app.screen.query_one(Input).value == str(tmp_path / "critui-runs-2.csv")
            await pilot.press("enter")
            assert await wait_for(pilot, lambda: (tmp_path / "critui-runs-2.csv").exists())
        rows = (tmp_path / "critui-runs-2.csv").read_text().splitlines()
        assert rows[0].startswith("run,epoch,inherited,deficit,window_start,window_end,seed,")
        assert {line.split(",")[0] for line in rows[1:]} == {RUN, OFF}
        assert (tmp_path / "critui-runs.csv").read_text() == "earlier export"

    asyncio.run(scenario())


def test_saving_charts_as_png_and_svg_with_matplotlib(tmp_path):
    pytest.importorskip("matplotlib")
    from critui.tui.widgets.charts import Canvas, accuracy_draw, fisher_draw
    from critui.tui.widgets.save import save

    rows = [{"epoch": e, "test_acc": 0.1 * e, "fisher.a": 1.0 + e, "fisher.b": 2.0} for e in range(6)]
    charts = []
    for name, draw in (("acc", accuracy_draw([("x", rows, [1, 3])])), ("fisher", fisher_draw(rows, ["a", "b"], [1, 3]))):
        canvas = Canvas(None, 10**9, name)
        draw(canvas)
        canvas.finish()
        charts.append((name, canvas))
    png = save(tmp_path / "f.png", charts)
    assert png == [tmp_path / "f.png", tmp_path / "f.csv"]
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    save(tmp_path / "f.svg", charts)
    svg = (tmp_path / "f.svg").read_text()
    assert svg.lstrip().startswith("<?xml") and "log scale" in svg


def test_report_png_draws_the_baseline_reference_line(tmp_path):
    pytest.importorskip("matplotlib")
    from critui.runs.report import draw_png

    def row(value, acc, baseline=False):
        return {"series": "all", "value": value, "baseline": baseline, "final_acc_mean": acc,
                "final_acc_std": 0.0, "finished": 1, "reference": "baseline"}

    report = {"sweep": "s", "name": "", "primary": "deficit.end", "final_window": 5,
              "rows": [row("baseline", 0.8, True), row(2, 0.75), row(8, 0.6)]}
    draw_png(report, tmp_path / "r.svg")
    assert "reference, its no-deficit baseline" in (tmp_path / "r.svg").read_text()


def test_metrics_tab_snapshot(snap_compare, tmp_path):
    from tests.test_tui_snapshots import SIZE, loaded, settle
    from tests.test_tui_snapshots import make_app as snapshot_app

    app = snapshot_app(charts_home(tmp_path))

    async def open_metrics(pilot) -> None:
        await loaded(app, runs=2)(pilot)
        from critui.tui.screens.run_detail import RunDetailScreen

        app.push_screen(RunDetailScreen(RUN))
        await wait_for(pilot, lambda: bool(app.screen.query("#metric-warnings")))
        await pilot.press("5")
        await settle(app, pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=open_metrics)


def test_the_sweep_view_saves_its_figure_and_its_report_csv(tmp_path, monkeypatch):
    from tests.test_tui_sweep import SWEEP_ID, write_sweep

    home = tmp_path / "home"
    write_sweep(home)
    monkeypatch.chdir(tmp_path)
    plot = True
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        plot = False

    async def scenario():
        from textual.widgets import Input

        from critui.tui.screens.sweep import SweepScreen
        from critui.tui.widgets.charts import Chart
        from critui.tui.widgets.save import SaveModal

        app = make_app(home, poll_interval=0.2)
        async with app.run_test(size=(120, 40)) as pilot:
            assert await wait_for(pilot, lambda: app.polls_done >= 1)
            await pilot.press("w")
            assert await wait_for(pilot, lambda: isinstance(app.screen, SweepScreen))
            screen = app.screen
            chart = screen.query_one(Chart)
            assert await wait_for(pilot, lambda: chart.points >= 5 and not chart.busy)
            await pilot.press("p")
            assert await wait_for(pilot, lambda: isinstance(app.screen, SaveModal))
            default = Path(app.screen.query_one(Input).value)
            assert default == tmp_path / f"sweep-{SWEEP_ID}{'.png' if plot else '.csv'}"
            await pilot.press("enter")
            csv_path = default.with_suffix(".csv")
            assert await wait_for(pilot, lambda: csv_path.exists())
            if plot:
                assert default.read_bytes()[:4] == b"\x89PNG"
            # the CSV behind it: each run, its series and axis value, deficit, window and seed
            import csv

            rows = list(csv.DictReader(csv_path.open()))
            assert len(rows) == len(screen.record["runs"])
            assert list(rows[0])[:7] == ["run", "series", "value", "deficit", "window_start", "window_end", "seed"]
            flip2 = next(r for r in rows if r["series"] == "deficit=flip" and r["value"] == "2")
            assert (flip2["window_start"], flip2["window_end"], flip2["status"]) == ("0", "2", "finished")
            assert float(flip2["final_acc"]) == pytest.approx(float(flip2["final_acc_mean"]))

    asyncio.run(scenario())


@pytest.mark.parametrize("width", [60, 80, 200])
def test_a_long_run_heatmap_shares_columns_between_epochs_and_labels_whole_epochs(width):
    from critui.tui.widgets.charts import FisherHeatmap

    rows = [{"epoch": e, "test_acc": 0.5, **({"fisher.a": 1.0 + e, "fisher.b": 2.0} if e % 3 == 0 else {})}
            for e in range(300)]
    heatmap = FisherHeatmap()
    heatmap.rows, heatmap.layer_names, heatmap.window = rows, ["a", "b"], (10, 40)
    columns, cw = heatmap.columns(width - 3)
    assert cw == 1 and len(columns) <= width - 3
    assert columns[0][0] == 0 and columns[-1][1] == 300
    assert all(lo < hi for lo, hi in columns) and all(a[1] == b[0] for a, b in zip(columns, columns[1:], strict=False))
    axis = FisherHeatmap.axis(columns, cw)
    labels = axis.split()[:-1]  # then "epoch"
    assert labels[0] == "0" and all(label.isdigit() for label in labels) and len(axis) <= width - 3 + 8


def test_save_dialog_snapshot(snap_compare, tmp_path, monkeypatch):
    """The save dialog at 80×24 without matplotlib: its text wraps, the fix is on screen."""
    from tests.test_tui_snapshots import make_app as snapshot_app
    from tests.test_tui_snapshots import settle

    no_matplotlib(monkeypatch)
    monkeypatch.chdir(tmp_path)  # the default path is in the current folder: fixed here
    monkeypatch.setattr(Path, "cwd", classmethod(lambda cls: Path("/home/lab/results")))
    app = snapshot_app(charts_home(tmp_path))

    async def open_dialog(pilot) -> None:
        # Asserted, with room for a loaded machine: a wait that ran out would otherwise
        # snapshot a half-drawn screen and report only that the pictures differ.
        assert await wait_for(pilot, lambda: app.polls_done >= 1, timeout=60)
        from critui.tui.screens.run_detail import RunDetailScreen
        from critui.tui.widgets.save import SaveModal

        app.push_screen(RunDetailScreen(RUN))
        assert await wait_for(pilot, lambda: bool(app.screen.query("#metric-warnings")), timeout=60)
        await pilot.press("p")
        assert await wait_for(pilot, lambda: isinstance(app.screen, SaveModal), timeout=60)
        await settle(app, pilot)

    assert snap_compare(app, terminal_size=(80, 24), run_before=open_dialog)


def test_compare_draws_each_runs_window_in_its_colour_and_saves_with_run_columns(tmp_path, monkeypatch):
    home = charts_home(tmp_path)
    monkeypatch.chdir(tmp_path)

    async def scenario():
        from textual.widgets import Input

        from critui.tui.screens.compare import CompareScreen
        from critui.tui.widgets.charts import SERIES_COLOURS, Chart
        from critui.tui.widgets.save import SaveModal

        app = make_app(home, poll_interval=0.2)
        async with app.run_test(size=(120, 30)) as pilot:
            assert await wait_for(pilot, lambda: app.polls_done >= 1)
            app.push_screen(CompareScreen([RUN, OFF]))
            assert await wait_for(pilot, lambda: isinstance(app.screen, CompareScreen) and bool(app.screen.query(Chart)))
            chart = app.screen.query_one(Chart)
            assert await wait_for(pilot, lambda: chart.points == 26)
            vlines = [c["args"] for c in chart.figure().plt.calls if c["name"] == "vline"]
            # RUN's [0, 8) in the first colour, OFF's [0, 4) in the second
            assert vlines == [(0, SERIES_COLOURS[0]), (8, SERIES_COLOURS[0]), (0, SERIES_COLOURS[1]),
                              (4, SERIES_COLOURS[1])]
            await pilot.press("p")
            assert await wait_for(pilot, lambda: isinstance(app.screen, SaveModal))
            app.screen.query_one(Input).value = str(tmp_path / "compare.csv")
            await pilot.press("enter")
            assert await wait_for(pilot, lambda: (tmp_path / "compare.csv").exists())
        lines = (tmp_path / "compare.csv").read_text().splitlines()
        assert f",{OFF},deficits.flip,0,4,3,5," in lines[-1]  # run, deficit, window, seed, epoch 5

    asyncio.run(scenario())


def test_show_splits_a_wide_fisher_table_instead_of_cutting_its_values(tmp_path, critui):
    home = tmp_path / "home"
    run_dir = write_run(home, RUN, window=(0, 4), epochs=6, created=T0)
    names = [f"layer{i}.0.conv{j}" for i in range(1, 5) for j in (1, 2)]

    def many_layers(events):
        for e in events:
            if e["event"] == "metric":
                e["values"] = {name: 0.012345 * (k + 1) for k, name in enumerate(names)}
                e["values"]["total"] = sum(e["values"].values())
        return events

    edit_events(run_dir, many_layers)
    RunStore(home).reconcile()
    result = critui("show", RUN, env={"CRITUI_HOME": str(home), "COLUMNS": "80"})
    assert result.returncode == 0, result.stderr
    out = result.stdout
    tables = out[out.index("per-epoch metrics"):]  # (the overview cuts the long tmp directory)
    assert max(len(line) for line in out.splitlines()) <= 80 and "…" not in tables
    assert "Fisher trace per layer (raw) (1/2)" in out and "(2/2)" in out
    assert all(name in out for name in names) and "0.09876" in out  # the last layer, in full


def test_a_save_path_must_name_a_figure_or_csv_and_an_existing_folder(tmp_path):
    from critui.errors import CritUIError
    from critui.tui.widgets.save import save

    with pytest.raises(CritUIError, match=r"\.png, \.svg or \.csv"):
        save(tmp_path / "figure.txt", [])
    with pytest.raises(CritUIError, match="does not exist"):
        save(tmp_path / "missing" / "figure.csv", [])
    with pytest.raises(CritUIError, match="no chart here"):
        save(tmp_path / "figure.svg", [])
    assert list(tmp_path.iterdir()) == []  # nothing half-written
