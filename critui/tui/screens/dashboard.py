"""The dashboard: every run in a table, and live charts of the selected (or marked) runs."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Header, Input, Static

from critui.tui.histories import JoinedHistories, joined_history
from critui.tui.run_actions import ask_cancel, ask_delete
from critui.tui.screens.run_detail import run_meta
from critui.tui.widgets.charts import Chart, accuracy_draw, fisher_draw, fisher_totals_draw
from critui.tui.widgets.footer import FittingFooter
from critui.tui.widgets.runs_table import SORTS, RunsTable


class ReadHistories:
    """The joined histories of the runs whose events the feed has already read (the runs
    training, those a screen opened); ``peek`` is None for the others, which the table shows
    from their index entries: 10,000 runs never mean 10,000 events files read to draw it."""

    def __init__(self, feed):
        self.feed = feed
        self.joined = JoinedHistories(feed)

    def peek(self, run_id: str):
        return self.joined.get(run_id) if self.feed.histories.peek(run_id) is not None else None


class DashboardScreen(Screen):
    """Runs table (filter with /, sort with s, mark with space) beside their charts."""

    BINDINGS = [
        Binding("n", "new_experiment", "New", tooltip="Start a new experiment"),
        Binding("enter", "open_run", "Detail", tooltip="Open the highlighted run"),
        Binding("slash", "focus_filter", "Filter", tooltip="Filter the runs by any text"),
        Binding("s", "cycle_sort", "Sort", tooltip="Sort by the next column"),
        Binding("space", "toggle_mark", "Mark", tooltip="Mark a run to chart it with others"),
        Binding(
            "x", "cancel_run", "Cancel", tooltip="Stop the highlighted run cleanly (asks first)"
        ),
        Binding(
            "delete,D", "delete_run", "Delete", tooltip="Delete the highlighted run (asks first)"
        ),
        Binding(
            "e", "export", "Export", tooltip="Write the highlighted (or marked) runs as CSV here"
        ),
        Binding(
            "c",
            "compare",
            "Compare",
            tooltip="Overlay the marked runs' accuracy curves (all shown if none marked)",
        ),
        Binding(
            "w",
            "sweeps",
            "Sweeps",
            tooltip="A sweep's final accuracy vs removal epoch or onset, filling in live",
        ),
        Binding("t", "edit_tags", "Tags", tooltip="Edit the highlighted run's tags and note"),
        Binding("g", "save_charts", "Save plot",
                tooltip="Save the charts on screen as PNG or SVG and the CSV behind them (asks where)"),
        Binding("p", "plugins", "Plugins", tooltip="What loaded and what failed"),
        Binding("escape", "focus_table", "Table", show=False),
    ]

    # Footer keys dropped first on a narrow terminal (all stay in the palette, ctrl+p); the
    # filter box shows its own key.
    FOOTER_SPARE = (
        "plugins", "save_charts", "edit_tags", "export", "cycle_sort", "delete_run", "focus_filter", "cancel_run", "compare"
    )
    AUTO_FOCUS = "RunsTable"  # keys act on runs at once; / focuses the filter
    # Below 90 columns the charts go under the table (see critui.tcss).
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (90, "-wide")]

    def __init__(self) -> None:
        super().__init__(id="dashboard-screen")
        self.sort = SORTS[0]
        self.query_text = ""
        self.form = None  # the last new-experiment form opened here: what it launched is selected
        self.pending_select: str | None = None  # a run to select once a poll has brought it

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="dashboard"):
            with Vertical(id="left"):
                yield Input(placeholder="filter: text, tag:NAME, name:…, sweep:…  (/)", id="filter")
                yield RunsTable(id="runs")
                yield Static("reading the runs…", id="selection")
            with Vertical(id="charts"):
                yield Chart("test accuracy", id="acc-chart")
                yield Chart("Fisher trace per layer", id="fisher-chart")
        yield FittingFooter()

    def on_mount(self) -> None:
        self.app.runs_changed.subscribe(self, self.on_runs_changed)
        self.query_one(RunsTable).focus()
        if self.app.polls_done:
            self.refresh_table()

    @property
    def table(self) -> RunsTable:
        return self.query_one(RunsTable)

    def on_runs_changed(self, changed: set[str]) -> None:
        self.refresh_table()

    def on_screen_resume(self) -> None:
        if self.form is not None and self.form.launched:
            self.pending_select, self.form = self.form.launched, None
        self.refresh_table()

    def refresh_table(self) -> None:
        feed = self.app.feed
        self.table.marked &= set(feed.docs)
        select = self.pending_select if self.pending_select in feed.docs else None
        if select:  # the run just launched: shown (whatever the filter), highlighted, charted
            self.pending_select = None
            if self.query_text:
                self.query_one("#filter", Input).value = self.query_text = ""
        # Progress and accuracy over each run's whole history, a fork's inherited epochs too.
        self.table.show_runs(list(feed.docs.values()), ReadHistories(feed), self.query_text, self.sort,
                             select=select)
        self.refresh_charts()

    def selected_ids(self) -> list[str]:
        """The marked runs, else the highlighted one."""
        table = self.table
        marked = [r for r in table.shown if r in table.marked] if table.marked else []
        current = table.current_id
        return marked or ([current] if current else [])

    def refresh_charts(self) -> None:
        feed = self.app.feed
        ids = [r for r in self.selected_ids() if r in feed.docs]
        histories = {r: joined_history(feed, r) for r in ids}  # a fork's inherited epochs too
        key = tuple((r, histories[r].version) for r in ids)
        runs = [(r[-4:], histories[r].rows, feed.docs[r].get("window")) for r in ids]
        metas = [run_meta(feed.docs[r]) for r in ids]  # a saved CSV's run, deficit, window, seed
        acc = self.query_one("#acc-chart", Chart)
        acc.show(key, accuracy_draw(runs, metas=metas))
        fisher = self.query_one("#fisher-chart", Chart)
        if len(ids) == 1:
            layers = histories[ids[0]].layers
            fisher.title = f"Fisher trace per layer, {ids[0][-4:]}"
            fisher.show(key, fisher_draw(runs[0][1], layers, runs[0][2], meta=metas[0]))
        elif ids:
            fisher.title = f"total Fisher trace of {len(ids)} runs"
            fisher.show(key, fisher_totals_draw(runs, metas=metas))
        else:
            fisher.show((), None)
        sort = f"sort: {self.sort}"
        shown = f"{len(self.table.shown)}/{len(feed.docs)} runs"
        marked = f"  {len(self.table.marked)} marked" if self.table.marked else ""
        if not self.app.polls_done:  # a large home takes a moment: say so
            shown, sort = f"reading the runs in {self.app.store.home}…", ""
        elif not feed.docs:  # a new home: say how to start
            shown, sort = "no runs yet: press n for a new experiment", "(or `critui run` elsewhere)"
        self.query_one("#selection", Static).update(f"{shown}  {sort}{marked}")

    # -- events --------------------------------------------------------------------------------

    @on(RunsTable.RowHighlighted)
    def _highlighted(self, event: RunsTable.RowHighlighted) -> None:
        self.refresh_charts()

    @on(RunsTable.RowSelected)
    def _selected(self, event: RunsTable.RowSelected) -> None:
        self.action_open_run()

    @on(Input.Changed, "#filter")
    def _filter(self, event: Input.Changed) -> None:
        self.query_text = event.value
        self.refresh_table()

    @on(Input.Submitted, "#filter")
    def _filter_done(self, event: Input.Submitted) -> None:
        self.table.focus()

    # -- actions -------------------------------------------------------------------------------

    def action_new_experiment(self) -> None:
        from critui.tui.screens.new_experiment import NewExperimentScreen

        self.form = NewExperimentScreen()
        self.app.push_screen(self.form)

    def action_open_run(self) -> None:
        from critui.tui.screens.run_detail import RunDetailScreen

        run_id = self.table.current_id
        if run_id:
            self.app.push_screen(RunDetailScreen(run_id))

    def action_focus_filter(self) -> None:
        self.query_one("#filter", Input).focus()

    def action_focus_table(self) -> None:
        self.table.focus()

    def action_cycle_sort(self) -> None:
        self.sort = SORTS[(SORTS.index(self.sort) + 1) % len(SORTS)]
        self.refresh_table()

    def action_toggle_mark(self) -> None:
        self.table.toggle_mark()
        self.refresh_charts()

    def action_cancel_run(self) -> None:
        run_id = self.table.current_id
        if run_id:
            ask_cancel(self.app, run_id)

    def action_delete_run(self) -> None:
        run_id = self.table.current_id
        if run_id:
            ask_delete(self.app, run_id)

    def action_export(self) -> None:
        ids = self.selected_ids()
        if ids:
            self.app.export_runs(ids)

    def action_compare(self) -> None:
        from critui.tui.screens.compare import CompareScreen

        ids = [r for r in self.table.shown if r in self.table.marked] or list(self.table.shown)
        if ids:
            self.app.push_screen(CompareScreen(ids))

    def action_sweeps(self) -> None:
        from critui.tui.screens.sweep import open_sweeps

        open_sweeps(self.app)

    def action_edit_tags(self) -> None:
        from critui.tui.screens.tags import TagsScreen

        run_id = self.table.current_id
        if run_id and run_id in self.app.feed.docs:
            self.app.push_screen(TagsScreen(self.app.feed.docs[run_id]))

    def action_save_charts(self) -> None:
        """Save the charts on screen (the highlighted or marked runs') as PNG/SVG and CSV."""
        from critui.tui.widgets.save import save_screen_charts

        ids = self.selected_ids()
        if not ids:
            self.app.notify("No run is charted: highlight or mark one first.", severity="warning")
            return
        stem = ids[0] if len(ids) == 1 else f"critui-{len(ids)}-runs"
        save_screen_charts(self, stem, f"the charts of {', '.join(r[-4:] for r in ids)}")

    def action_plugins(self) -> None:
        from critui.tui.screens.plugins import PluginsScreen

        self.app.push_screen(PluginsScreen())
