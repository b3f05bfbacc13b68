"""SVG snapshots of the dashboard, a run's detail and the plugins screen, on a fixed fake home.

Regenerate after an intended change with ``pytest tests/test_tui_snapshots.py --snapshot-update``
and look at the SVGs in tests/__snapshots__/ before committing them.
"""

from __future__ import annotations

from tests.test_tui import builtin_registry_with_failure, fake_home, steady_cursors, wait_steady

SIZE = (120, 35)


async def settle(app, pilot) -> None:
    """Until no chart on any screen of the stack has had a build in flight for 10 checks in
    a row (charts are built in thread workers), then with the text cursors held still. A
    modal is drawn over the screen below it, so that screen's charts are in the picture too."""
    from critui.tui.widgets.charts import Chart

    def quiet() -> bool:
        return not any(
            chart.busy for screen in app.screen_stack for chart in screen.query(Chart).results(Chart)
        )

    assert await wait_steady(pilot, quiet), "a chart was still being built after 60 s"
    steady_cursors(app)
    await pilot.pause(0.1)


def loaded(app, runs: int = 4):
    """A run_before that waits until the first poll has landed, the table holds ``runs``
    rows, and the charts are drawn."""

    async def wait(pilot) -> None:
        from critui.tui.widgets.runs_table import RunsTable

        def ready() -> bool:
            tables = list(app.screen.query(RunsTable).results(RunsTable))
            # The poll lands first; the table fills in when the screen handles its messages
            # (runs, then histories: each rebuilds it), and sizes its columns on the next idle
            # (DataTable's private flag says when it has).
            return app.polls_done >= 1 and all(
                t.row_count == runs for t in tables
            )

        assert await wait_steady(pilot, ready), f"the table never held {runs} runs"
        # A DataTable can keep lines painted at its empty-table column widths until the next
        # full layout; a resize forces one, so the capture never depends on that timing.
        width, height = app.size
        await pilot.resize_terminal(width - 1, height)
        await pilot.pause(0.1)
        await pilot.resize_terminal(width, height)
        await settle(app, pilot)

    return wait


def make_app(home, registry=None):
    from critui.tui.app import CritUIApp

    return CritUIApp(
        home, registry=registry, poll_interval=3600
    )  # one poll: nothing moves under the camera


def test_dashboard_snapshot(snap_compare, tmp_path):
    app = make_app(fake_home(tmp_path))
    assert snap_compare(app, terminal_size=SIZE, run_before=loaded(app))


def test_run_detail_snapshot(snap_compare, tmp_path):
    app = make_app(fake_home(tmp_path))

    async def open_detail(pilot) -> None:
        await loaded(app)(pilot)
        await pilot.press("down", "down", "enter")  # newest first: 0100-bbbb is the third row
        await settle(app, pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=open_detail)


def test_run_detail_heatmap_snapshot(snap_compare, tmp_path):
    app = make_app(fake_home(tmp_path))

    async def open_heatmap(pilot) -> None:
        await loaded(app)(pilot)
        await pilot.press("end", "enter", "4")  # the oldest run, 0000-aaaa
        await settle(app, pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=open_heatmap)


def test_plugins_snapshot(snap_compare, tmp_path, monkeypatch):
    app = make_app(tmp_path / "home", registry=builtin_registry_with_failure(monkeypatch))

    async def open_plugins(pilot) -> None:
        await loaded(app, runs=0)(pilot)
        await pilot.press("p")
        for _ in range(50):
            if app.screen.registry is not None:
                break
            await pilot.pause(0.05)
        await pilot.pause(0.2)

    assert snap_compare(app, terminal_size=SIZE, run_before=open_plugins)
