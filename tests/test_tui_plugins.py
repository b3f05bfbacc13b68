"""Plugins at the edges, seen in the TUI: a metric's warnings in the run's detail, and `r`
(resume) asking the provenance question that `critui resume --allow-plugin-change` answers."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

import pytest

from critui import __version__
from critui.runs.store import RunStore
from tests.test_tui import make_app, wait_for, write_run
from tests.test_tui_actions import events_of, interrupt_after, trained_run

RUN = "20260101-000000-aaaa"


@pytest.fixture
def registry(monkeypatch):
    """The built-in plugins only: installed plugins vary by machine."""
    from critui.plugins import build_registry

    monkeypatch.setenv("CRITUI_LOAD_PLUGINS", "")
    return build_registry()


def record_plugins(home: Path, run_id: str, plugins: dict[str, dict[str, str]]) -> None:
    """Make the run's record (index and run.json) name these providers, as if it trained with them."""
    RunStore(home).update(run_id, plugins=plugins)
    meta_path = home / "runs" / run_id / "run.json"
    meta = json.loads(meta_path.read_text())
    meta["plugins"] = plugins
    meta_path.write_text(json.dumps(meta))


def log_lines(app) -> list[str]:
    """The lines of the run detail's event log ([] while the screen is not composed yet)."""
    from textual.widgets import Log

    found = app.screen.query("#events").results(Log)
    return [str(line) for log in found for line in log.lines]


def status_text(app) -> str:
    """The run detail's status line ("" while the screen is not composed yet)."""
    from textual.widgets import Static

    return " ".join(str(s.render()) for s in app.screen.query("#detail-status").results(Static))


def notes(app) -> str:
    return " ".join(" ".join(str(n.message).split()) for n in app._notifications)


def test_a_metrics_warnings_are_counted_in_the_status_line_and_read_in_the_log(tmp_path, registry):
    from critui.events import EventLog
    from critui.kinds import Metric, MetricContext
    from critui.plugins import PluginInfo
    from critui.train.plugin_guard import MetricRunner

    home = tmp_path / "home"
    write_run(home, RUN, epochs=4, end=None)

    class Nanny(Metric):
        name = "nanny"
        description = "NaN from epoch 1 on."

        def compute(self, ctx):
            return {"ratio": math.nan if ctx.epoch >= 1 else 0.5}

    # The worker's own writer: the events are exactly what a run with this metric records.
    log = EventLog(home / "runs" / RUN)
    runner = MetricRunner([(PluginInfo("metrics.nanny", "metrics", "nanny", Nanny, "tp-nan", "1.0"), Nanny({}, 0))], log)
    for epoch in range(3):
        runner.measure(MetricContext(model=None, epoch=epoch, epochs=4, device=None, train_x=None, train_y=None,
                                     test_x=None, test_y=None, num_classes=2, seed=0))
    log.close()
    RunStore(home).reconcile()

    async def scenario():
        from critui.tui.screens.run_detail import RunDetailScreen

        app = make_app(home, registry=registry, poll_interval=0.2)
        async with app.run_test(size=(140, 40)) as pilot:
            assert await wait_for(pilot, lambda: RUN in app.feed.docs)
            app.push_screen(RunDetailScreen(RUN))
            assert await wait_for(pilot, lambda: "2 warning(s)" in status_text(app)), status_text(app)
            await pilot.press("1")
            assert await wait_for(pilot, lambda: any(line.startswith("warning:") for line in log_lines(app)))
            warnings = [line for line in log_lines(app) if line.startswith("warning:")]
            assert len(warnings) == 2
            assert "metrics.nanny (tp-nan 1.0) returned ratio=nan in epoch 1" in warnings[0], warnings
            assert "epoch 2" in warnings[1]

    asyncio.run(scenario())


def test_resume_shows_a_changed_provider_asks_and_records_the_change(tmp_path, registry):
    home = tmp_path / "home"
    run_id = trained_run(home, registry)
    interrupt_after(home, run_id, 1)
    plugins = {p.id: {"distribution": p.distribution, "version": p.version}
               for p in (registry.get(i) for i in ("datasets.synthetic", "models.cnn", "deficits.flip", "metrics.fisher"))}
    plugins["deficits.flip"] = {"distribution": "critui", "version": "0.0.1"}  # trained by an older critui
    record_plugins(home, run_id, plugins)

    async def scenario():
        from critui.tui.screens.run_detail import RunDetailScreen
        from critui.tui.widgets.confirm import ConfirmModal

        app = make_app(home, registry=registry, poll_interval=0.2)
        async with app.run_test(size=(120, 40)) as pilot:
            assert await wait_for(pilot, lambda: run_id in app.feed.docs)
            app.push_screen(RunDetailScreen(run_id))
            await pilot.pause()
            await pilot.press("r")
            assert await wait_for(pilot, lambda: isinstance(app.screen, ConfirmModal))
            question = " ".join(app.screen.question.split())
            assert f"deficits.flip came from critui 0.0.1 and now comes from critui {__version__}" in question
            assert question.endswith("Resume anyway?")
            await pilot.press("n")  # declined: nothing starts, nothing is recorded
            await pilot.pause(0.5)
            assert app.feed.docs[run_id]["status"] == "interrupted"
            assert not [e for e in events_of(home, run_id) if e["event"] == "plugins_changed"]

            await pilot.press("r")
            assert await wait_for(pilot, lambda: isinstance(app.screen, ConfirmModal))
            await pilot.press("y")
            assert await wait_for(
                pilot, lambda: app.feed.docs[run_id]["status"] == "finished", timeout=90
            ), (home / "runs" / run_id / "log.txt").read_text()
            (changed,) = [e for e in events_of(home, run_id) if e["event"] == "plugins_changed"]
            assert changed["action"] == "resume"
            assert changed["changes"][0]["recorded"] == {"distribution": "critui", "version": "0.0.1"}
            assert RunStore(home).get(run_id)["plugins"]["deficits.flip"]["version"] == __version__
            await pilot.press("1")
            assert await wait_for(pilot, lambda: any(line.startswith("plugins changed:") for line in log_lines(app)))

    asyncio.run(scenario())


def test_resume_refuses_a_missing_plugin_naming_what_to_install_and_starts_nothing(tmp_path, registry):
    home = tmp_path / "home"
    write_run(home, RUN, deficit="deficits.blur", window=(0, 4), epochs=8, done=3, end="failed")
    RunStore(home).reconcile()
    plugins = dict(RunStore(home).get(RUN)["plugins"])
    plugins["deficits.occlude"] = {"distribution": "tp-occlude", "version": "1.2"}
    record_plugins(home, RUN, plugins)
    before = events_of(home, RUN)

    async def scenario():
        from critui.tui.screens.run_detail import RunDetailScreen
        from critui.tui.widgets.confirm import ConfirmModal

        app = make_app(home, registry=registry, poll_interval=0.2)
        async with app.run_test(size=(120, 40)) as pilot:
            assert await wait_for(pilot, lambda: RUN in app.feed.docs)
            app.push_screen(RunDetailScreen(RUN))
            await pilot.pause()
            await pilot.press("r")
            assert await wait_for(pilot, lambda: "pip install 'tp-occlude==1.2'" in notes(app)), notes(app)
            assert "deficits.occlude came from tp-occlude 1.2" in notes(app)
            assert not isinstance(app.screen, ConfirmModal)
            await pilot.pause(0.5)
            assert app.feed.docs[RUN]["status"] == "failed"
            assert events_of(home, RUN) == before and not app.feed.monitors

    asyncio.run(scenario())


def test_fork_asks_about_a_changed_provider_and_records_the_change_in_the_child(tmp_path, registry):
    """The fork dialog asks the question `critui fork --allow-plugin-change` answers: declined,
    nothing is created; accepted, the child exists and records the change in its events."""
    from textual.widgets import Input, Static

    from critui.tui.screens.fork import ForkModal
    from critui.tui.screens.run_detail import RunDetailScreen
    from critui.tui.widgets.confirm import ConfirmModal

    home = tmp_path / "home"
    run_id = trained_run(home, registry)
    plugins = {p.id: {"distribution": p.distribution, "version": p.version}
               for p in (registry.get(i) for i in ("datasets.synthetic", "models.cnn", "deficits.flip", "metrics.fisher"))}
    plugins["deficits.flip"] = {"distribution": "critui", "version": "0.0.1"}  # trained by an older critui
    record_plugins(home, run_id, plugins)

    async def scenario():
        app = make_app(home, registry=registry, poll_interval=0.2)
        started = []
        app.start_worker = lambda rid, launcher=None: started.append(rid)  # trains nothing here
        async with app.run_test(size=(120, 40)) as pilot:
            assert await wait_for(pilot, lambda: run_id in app.feed.docs)
            app.push_screen(RunDetailScreen(run_id))
            assert await wait_for(pilot, lambda: app.feed.histories.get(run_id) is not None, timeout=30)
            await pilot.press("f")
            assert await wait_for(pilot, lambda: isinstance(app.screen, ForkModal))
            modal = app.screen
            modal.query_one("#fork-epoch", Input).value = "1"
            await pilot.press("enter")
            assert await wait_for(pilot, lambda: isinstance(app.screen, ConfirmModal), timeout=30)
            question = " ".join(app.screen.question.split())
            assert f"deficits.flip came from critui 0.0.1 and now comes from critui {__version__}" in question
            assert question.endswith("Fork anyway?")
            await pilot.press("n")  # declined: the dialog says so, nothing is created
            error = modal.query_one("#fork-error", Static)
            assert await wait_for(pilot, lambda: "Not forked" in str(error.render()))
            assert len(RunStore(home).all()) == 1 and not started

            await pilot.press("enter")
            assert await wait_for(pilot, lambda: isinstance(app.screen, ConfirmModal), timeout=30)
            await pilot.press("y")
            assert await wait_for(pilot, lambda: len(started) == 1, timeout=30)
            (child,) = started
            assert RunStore(home).get(child)["parent"] == run_id
            (changed,) = [e for e in events_of(home, child) if e["event"] == "plugins_changed"]
            assert changed["action"] == "fork"

    asyncio.run(scenario())
