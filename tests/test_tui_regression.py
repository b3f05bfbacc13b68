"""A regression run (a plugin's task scored by test MSE, lower is better, such as the
deep-linear plugin's) is drawn by its score in the TUI: the table's current value, the run
detail's status line, log and chart."""

from __future__ import annotations

import asyncio
import json

from critui.runs.store import RunStore
from tests.test_tui import make_app, wait_for, write_run

RUN = "20260101-000000-aaaa"


def as_regression(home, run_id: str) -> list[float]:
    """Rewrite a run's epoch events as a regression's: ``score`` (a test MSE) in place of
    accuracy. Returns the scores by epoch."""
    path = home / "runs" / run_id / "events.jsonl"
    events, scores = [], []
    for line in path.read_text().splitlines():
        event = json.loads(line)
        if event["event"] == "epoch":
            score = round(1.0 / (event["epoch"] + 2), 6)
            scores.append(score)
            for key in ("train_acc", "test_acc"):
                event.pop(key)
            event.update(score=score, score_name="test_mse", higher_is_better=False)
        events.append(event)
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return scores


def test_a_regression_run_shows_its_score_in_the_table_status_log_and_chart(tmp_path):
    from textual.widgets import Static

    from critui.tui.screens.run_detail import RunDetailScreen
    from critui.tui.widgets.charts import Chart
    from critui.tui.widgets.runs_table import RunsTable

    home = tmp_path / "home"
    write_run(home, RUN, deficit=None, epochs=6, end=None)
    scores = as_regression(home, RUN)
    RunStore(home).reconcile()

    async def scenario():
        app = make_app(home, poll_interval=0.2)
        async with app.run_test(size=(120, 40)) as pilot:
            table = app.screen.query_one(RunsTable)
            shown = lambda: RUN in app.feed.docs and table.row_count > 0 and table.cell(RUN, "acc")  # noqa: E731 - after the first poll
            assert await wait_for(pilot, lambda: shown() == f"{scores[-1]:.3f}", timeout=30)
            app.push_screen(RunDetailScreen(RUN))
            assert await wait_for(pilot, lambda: isinstance(app.screen, RunDetailScreen) and app.screen.is_mounted)
            await pilot.pause()
            screen = app.screen
            status = screen.query_one("#detail-status", Static)
            assert await wait_for(pilot, lambda: f"acc {scores[-1]:.3f}" in str(status.render()), timeout=30)
            chart = screen.query_one("#acc", Chart)
            assert await wait_for(pilot, lambda: chart.points == len(scores), timeout=30)  # every epoch drawn

    asyncio.run(scenario())
