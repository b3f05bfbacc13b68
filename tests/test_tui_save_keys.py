"""A key saves what is on screen from the dashboard too (`g`; `p` is Plugins there), as
`p` does in the run detail and the sweep view: the figure and the CSV behind it."""

from __future__ import annotations

import asyncio
import csv
import io

from tests.test_tui import make_app, wait_for
from tests.test_tui_charts import OFF, RUN, charts_home


def test_the_dashboard_saves_its_charts_with_g_and_shows_the_key(tmp_path, monkeypatch):
    home = charts_home(tmp_path)
    monkeypatch.chdir(tmp_path)

    async def scenario():
        from textual.widgets import Input
        from textual.widgets._footer import FooterKey

        from critui.tui.widgets.charts import Chart
        from critui.tui.widgets.runs_table import RunsTable
        from critui.tui.widgets.save import SaveModal

        app = make_app(home, poll_interval=0.2)
        async with app.run_test(size=(200, 40)) as pilot:
            table = app.screen.query_one(RunsTable)
            assert await wait_for(pilot, lambda: table.row_count == 2)
            keys = {key.key: key.description for key in app.screen.query(FooterKey)}
            assert keys.get("g") == "Save plot" and keys.get("p") == "Plugins"  # in the key hints
            await pilot.press("space")  # both runs marked: both charted, both saved
            await pilot.press("down")
            await pilot.press("space")
            acc = app.screen.query_one("#acc-chart", Chart)
            assert await wait_for(pilot, lambda: acc.data_key and len(acc.data_key) == 2 and acc.points and not acc.busy)
            await pilot.press("g")
            assert await wait_for(pilot, lambda: isinstance(app.screen, SaveModal))
            app.screen.query_one(Input).value = str(tmp_path / "dash.csv")
            await pilot.press("enter")
            assert await wait_for(pilot, lambda: (tmp_path / "dash.csv").exists())

    asyncio.run(scenario())
    rows = list(csv.DictReader(io.StringIO((tmp_path / "dash.csv").read_text())))
    acc = [r for r in rows if r["chart"] == "test accuracy"]
    assert {r["run"] for r in acc} == {RUN, OFF}
    flip = next(r for r in acc if r["run"] == RUN)
    assert (flip["deficit"], flip["window_start"], flip["window_end"]) == ("deficits.flip", "0", "8")
    assert any(r["chart"].startswith("total Fisher trace") for r in rows)  # the second chart too
