"""Screens keep to the terminal: lines that would wrap are cut with "…" instead (at 120
and 80 columns), and what matters most on them comes first."""

from __future__ import annotations

import asyncio
import json

import pytest

from critui.runs.store import RunStore
from tests.test_tui import T0, make_app, wait_for, write_run

RUN = "20260101-000000-aaaa"


def add_warnings(home, run_id: str, count: int) -> None:
    """What a metric plugin's NaN leaves in a run's events: warnings."""
    with open(home / "runs" / run_id / "events.jsonl", "a") as f:
        for i in range(count):
            f.write(json.dumps({"event": "warning", "time": T0 + i, "message": f"metrics.x returned nan in epoch {i}",
                                "plugin": "metrics.x"}) + "\n")


@pytest.mark.parametrize("width", [120, 80])
def test_the_run_status_line_with_warnings_keeps_to_one_line(tmp_path, width):
    from textual.widgets import Static

    from critui.tui.screens.run_detail import RunDetailScreen

    home = tmp_path / "home"
    write_run(home, RUN, epochs=20)
    add_warnings(home, RUN, 3)
    RunStore(home).reconcile()

    async def scenario():
        app = make_app(home, poll_interval=0.2)
        async with app.run_test(size=(width, 30)) as pilot:
            assert await wait_for(pilot, lambda: RUN in app.feed.docs)
            app.push_screen(RunDetailScreen(RUN))
            assert await wait_for(pilot, lambda: isinstance(app.screen, RunDetailScreen) and app.screen.is_mounted)
            status = app.screen.query_one("#detail-status", Static)
            assert await wait_for(pilot, lambda: "3 warning(s)" in str(status.render()))
            await pilot.pause()
            assert status.size.height == 1  # not wrapped onto a second line
            visible = str(status.render())[: status.size.width - 2]  # less its padding
            assert "3 warning(s)" in visible  # right after the status: seen at 80 columns too

    asyncio.run(scenario())


@pytest.mark.parametrize("size", [(60, 20), (80, 24), (120, 35)])
def test_the_sweep_view_keeps_its_tables_and_keys_on_screen(tmp_path, size):
    """At 60x20 the figure took the whole screen: the tables and the caption were below it,
    and the footer cut "Save plot" mid-word."""
    from textual.widgets._footer import FooterKey

    from critui.tui.screens.sweep import SweepScreen
    from tests.test_tui_sweep import SWEEP_ID, write_sweep

    home = tmp_path / "home"
    write_sweep(home)

    async def scenario():
        app = make_app(home, poll_interval=0.2)
        async with app.run_test(size=size) as pilot:
            assert await wait_for(pilot, lambda: app.polls_done >= 1)
            app.push_screen(SweepScreen(SWEEP_ID))
            assert await wait_for(pilot, lambda: isinstance(app.screen, SweepScreen) and app.screen.report is not None)
            await pilot.pause(0.2)
            screen = app.screen
            for part in ("#sweep-title", "#sweep-chart", "#sweep-table", "#sweep-caption", "#sweep-runs"):
                region = screen.query_one(part).region
                assert region.height >= (5 if part == "#sweep-chart" else 1), (part, region)
                assert region.bottom <= size[1] - 1, (part, region)  # above the footer
            keys = list(screen.query(FooterKey))
            assert sum(k.outer_size.width for k in keys) <= size[0]
            assert "Save plot" in [k.description for k in keys]

    asyncio.run(scenario())


def test_the_forms_metric_boxes_stack_on_a_narrow_terminal(tmp_path):
    """At 60 columns the second metric's box was cut ("▐X▌ metr"): under 100 they stack."""
    from textual.widgets import Checkbox

    from critui.tui.screens.new_experiment import NewExperimentScreen

    async def scenario():
        app = make_app(tmp_path / "home", poll_interval=3600)
        async with app.run_test(size=(60, 20)) as pilot:
            await pilot.press("n")
            assert await wait_for(pilot, lambda: isinstance(app.screen, NewExperimentScreen))
            screen = app.screen
            assert await wait_for(pilot, lambda: screen.ready and screen.query("#metrics-picks Checkbox"), timeout=30)
            await pilot.pause(0.2)
            boxes = list(screen.query("#metrics-picks Checkbox").results(Checkbox))
            assert len(boxes) >= 2
            for box in boxes:
                assert box.region.right <= 60 and box.size.width >= len(str(box.label)), box.region

    asyncio.run(scenario())


def test_the_run_details_footer_fits_80_columns(tmp_path):
    """At 80 columns the run detail's footer cut "Save plot" to "Save" and left a stray letter."""
    from textual.widgets._footer import FooterKey

    from critui.tui.screens.run_detail import RunDetailScreen

    home = tmp_path / "home"
    write_run(home, RUN, epochs=20)
    RunStore(home).reconcile()

    async def scenario():
        app = make_app(home, poll_interval=0.2)
        async with app.run_test(size=(80, 24)) as pilot:
            assert await wait_for(pilot, lambda: RUN in app.feed.docs)
            app.push_screen(RunDetailScreen(RUN))
            assert await wait_for(pilot, lambda: isinstance(app.screen, RunDetailScreen) and app.screen.query(FooterKey))
            await pilot.pause(0.3)
            keys = list(app.screen.query(FooterKey))
            assert sum(k.outer_size.width for k in keys) <= 80
            assert {"Back", "Fork", "Save plot"} <= {k.description for k in keys}

    asyncio.run(scenario())
