"""Compare: the test-accuracy curves of several runs overlaid, and their final accuracies."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header

from critui.events import score_of
from critui.tui.histories import joined_history
from critui.tui.screens.run_detail import run_meta
from critui.tui.widgets.charts import SERIES_COLOURS, Chart, accuracy_draw, rich_colour
from critui.tui.widgets.runs_table import deficit_text, fmt_acc


class CompareScreen(Screen):
    """The marked runs side by side: one chart, one row each (colour = curve colour)."""

    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back", tooltip="Back to the dashboard"),
        Binding(
            "p", "save_chart", "Save plot",
            tooltip="Save the chart as PNG or SVG, with the CSV of its data (asks where)",
        ),
    ]

    def __init__(self, run_ids: list[str]):
        super().__init__()
        self.run_ids = run_ids

    def compose(self) -> ComposeResult:
        yield Header()
        yield Chart("test accuracy (each run's deficit window: vertical lines in its colour)", id="compare-chart")
        yield DataTable(id="compare-table", cursor_type="row")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("curve", "run", "deficit [window)", "epochs", "best acc", "final acc")
        self.app.runs_changed.subscribe(self, lambda changed: self.refresh_view())
        self.refresh_view()

    def refresh_view(self) -> None:
        feed = self.app.feed
        ids = [r for r in self.run_ids if r in feed.docs]
        histories = [joined_history(feed, r) for r in ids]  # a fork's inherited epochs too
        runs = [(r[-4:], h.rows, feed.docs[r].get("window")) for r, h in zip(ids, histories, strict=True)]
        chart = self.query_one(Chart)
        chart.show(
            tuple((r, h.version) for r, h in zip(ids, histories, strict=True)),
            # the table below is the legend
            accuracy_draw(runs, legend=False, metas=[run_meta(feed.docs[r]) for r in ids]),
        )
        table = self.query_one(DataTable)
        table.clear()
        for i, (run_id, history) in enumerate(zip(ids, histories, strict=True)):
            doc, rows = feed.docs[run_id], history.rows
            best = max(
                (score_of(r) for r in rows if isinstance(score_of(r), (int, float))),
                default=None,
            )
            table.add_row(
                f"[{rich_colour(SERIES_COLOURS[i % len(SERIES_COLOURS)])}]━━ {run_id[-4:]}[/]",
                run_id,
                deficit_text(doc),
                f"{history.epochs_done}/{doc.get('epochs')}",
                fmt_acc(best),
                fmt_acc(history.final_acc),
                key=run_id,
            )

    def action_save_chart(self) -> None:
        from critui.tui.widgets.save import ask_save

        chart = self.query_one(Chart)
        ask_save(self.app, f"the comparison of {len(self.run_ids)} runs", [(chart.title, chart.figure())],
                 "critui-compare")
