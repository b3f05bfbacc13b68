"""SVG snapshots of the dashboard, a run's detail and the plugins screen, on a fixed fake home.

Regenerate after an intended change with ``pytest tests/test_tui_snapshots.py --snapshot-update``
and look at the SVGs in tests/__snapshots__/ before committing them.
"""

from __future__ import annotations

from tests.test_tui import builtin_registry_with_failure, fake_home

SIZE = (120, 35)


async def settle(app, pilot) -> None:
    """Until no chart has a build in flight (charts are built in thread workers)."""
    from critui.tui.widgets.charts import Chart

    await pilot.pause(0.1)
    for _ in range(100):
        if not any(c.busy for c in app.screen.query(Chart).results(Chart)):
            break
        await pilot.pause(0.05)
    await pilot.pause(0.1)


def loaded(app):
    """A run_before that waits until the first poll has landed and the charts are drawn."""

    async def wait(pilot) -> None:
        for _ in range(100):
            if app.polls_done >= 1:
                break
            await pilot.pause(0.05)
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
        await pilot.press("down", "enter")
        await settle(app, pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=open_detail)


def test_run_detail_heatmap_snapshot(snap_compare, tmp_path):
    app = make_app(fake_home(tmp_path))

    async def open_heatmap(pilot) -> None:
        await loaded(app)(pilot)
        await pilot.press("enter", "4")
        await settle(app, pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=open_heatmap)


def test_plugins_snapshot(snap_compare, tmp_path, monkeypatch):
    app = make_app(tmp_path / "home", registry=builtin_registry_with_failure(monkeypatch))

    async def open_plugins(pilot) -> None:
        await loaded(app)(pilot)
        await pilot.press("p")
        for _ in range(50):
            if app.screen.registry is not None:
                break
            await pilot.pause(0.05)
        await pilot.pause(0.2)

    assert snap_compare(app, terminal_size=SIZE, run_before=open_plugins)
