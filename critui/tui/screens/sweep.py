"""A sweep, live: final accuracy against the removal epoch (or onset), the paper's Figure 1.

The figure's data is :func:`critui.runs.report.build_report`, the same table ``critui
report`` prints; it is rebuilt in a thread worker whenever the app's poll says a run of
this sweep changed, so points appear as runs finish. A run that has not finished has no
point yet. Each series' reference (its no-deficit baseline, else its earliest value) is
drawn as a horizontal line in the series' colour.
"""

from __future__ import annotations

from typing import Any

from rich.cells import cell_len
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Footer, Header, OptionList, Static
from textual.widgets.option_list import Option

from critui.runs.report import (
    ONE_SEED_CAVEAT,
    figure_points,
    has_series,
    one_seed,
    per_seed_caption,
    reference_row,
    reference_text,
    row_cells,
    seed_cells,
    seed_list,
    series_names,
)
from critui.tui.widgets.charts import SERIES_COLOURS, Canvas, Chart, Draw, rich_colour

NO_SWEEPS = "No sweeps yet: run `critui sweep FILE.toml`"


def sweep_draw(report: dict[str, Any]) -> Draw:
    """Final accuracy against the primary axis, one line per series, references as hlines."""

    def draw(c: Canvas) -> None:
        points, labels = figure_points(report)
        names = series_names(report)
        ys_all: list[float] = []
        refs = []
        for i, series in enumerate(names):
            colour = SERIES_COLOURS[i % len(SERIES_COLOURS)]
            pts = points.get(series, [])
            if pts:
                xs, ys = zip(*pts, strict=True)
                c.line(list(xs), list(ys), color=colour)  # the table below is the legend
                ys_all += ys
            ref = reference_row(report, series)
            if ref is not None:
                refs.append((ref["final_acc_mean"], colour))
                ys_all.append(ref["final_acc_mean"])
        if not ys_all:
            c.plt.title(f"{c.title}: no run has finished yet")
            return
        low, high = min(ys_all), max(ys_all)
        pad = max((high - low) * 0.1, 0.01)
        c.plt.ylim(low - pad, high + pad)
        for y, colour in refs:
            c.plt.hline(y, colour)
        if labels:
            c.plt.xticks(list(range(len(labels))), labels)
            c.plt.xlim(-0.5, len(labels) - 0.5)
        c.plt.xlabel(str(report.get("primary") or "value"))
        c.plt.ylabel("final acc")

    return draw


class SweepScreen(Screen):
    """One sweep: its figure (growing as runs finish) above its table of axis values."""

    DEFAULT_CSS = """
    SweepScreen #sweep-title {
        height: auto;
        padding: 0 1;
        text-style: bold;
    }
    SweepScreen #sweep-chart {
        height: 2fr;
        min-height: 6;
    }
    SweepScreen #sweep-table {
        height: 1fr;
        min-height: 3;
    }
    SweepScreen #sweep-caption {
        height: auto;
        padding: 0 1;
        color: $text-muted;
    }
    """

    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back", tooltip="Back to the dashboard"),
        Binding("r", "reload", "Reload", tooltip="Re-read the sweep and its runs now"),
        Binding(
            "s",
            "toggle_seeds",
            "Per seed",
            tooltip="Each seed's final accuracy and its drop from that seed's reference, or the mean",
        ),
        Binding("p", "save_chart", "Save plot", tooltip="Save the figure as PNG or SVG and its CSV (asks where)"),
    ]

    def action_save_chart(self) -> None:
        from critui.tui.widgets.save import save_screen_charts

        save_screen_charts(self, f"sweep-{self.sweep_id}", f"sweep {self.sweep_id}")

    def __init__(self, sweep_id: str, record: dict[str, Any] | None = None):
        super().__init__()
        self.sweep_id = sweep_id
        self.record = record
        self.report: dict[str, Any] | None = None
        self.run_ids: set[str] = {e["run_id"] for e in (record or {}).get("runs", [])}
        self.refreshes = 0  # reports shown (for tests)
        self.per_seed = False  # the table: mean ± std over seeds, or each seed (key s)
        self._loading = False
        self._again = False
        self._told: set[str] = set()  # record problems already shown: each reload meets them again

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="sweep"):
            yield Static(f"sweep {self.sweep_id}", id="sweep-title")
            yield Chart("final test accuracy", id="sweep-chart")
            yield DataTable(id="sweep-table", cursor_type="row", zebra_stripes=True)
            yield Static("", id="sweep-caption")
        yield Footer()

    def on_mount(self) -> None:
        self.app.runs_changed.subscribe(self, self.on_runs_changed)
        self.query_one(DataTable).focus()
        self.reload()

    def on_screen_resume(self) -> None:
        self.reload()

    def on_runs_changed(self, changed: set[str]) -> None:
        if not self.run_ids or changed & self.run_ids:
            self.reload()

    def action_reload(self) -> None:
        self.reload()

    def action_toggle_seeds(self) -> None:
        self.per_seed = not self.per_seed
        if self.report is not None:
            self.show_report(self.report)

    # -- loading (off the UI thread: the report reads every run's events) -------------------

    def reload(self) -> None:
        """Rebuild the report unless a build is running; then once more after it lands."""
        if self._loading:
            self._again = True
            return
        self._loading = True
        self._again = False
        self._load_worker()

    @work(thread=True, group="sweep-report", exit_on_error=False)
    def _load_worker(self) -> None:
        from critui.runs.report import build_report
        from critui.runs.scheduler import load_record

        record, report, error = None, None, None
        try:
            record = load_record(self.app.store, self.sweep_id, on_problem=self._problem)
            report = build_report(self.app.store, record)
        except Exception as exc:  # noqa: BLE001 - a half-written run must not end the screen
            error = f"{type(exc).__name__}: {exc}"
        try:
            self.app.call_from_thread(self._loaded, record, report, error)
        except RuntimeError:
            pass  # the app is closing

    def _problem(self, message: str) -> None:
        """A sweep record that was skipped: a warning (once), from the loading thread."""
        if message in self._told:
            return
        self._told.add(message)
        try:
            self.app.call_from_thread(self.app.notify, message, severity="warning", markup=False, timeout=10)
        except RuntimeError:
            pass  # the app is closing

    def _loaded(self, record, report, error: str | None) -> None:
        self._loading = False
        if error is not None:
            self.query_one("#sweep-caption", Static).update(Text(f"Could not read the sweep: {error}"))
        elif self.is_mounted:
            self.record = record
            self.run_ids = {e["run_id"] for e in record.get("runs", [])}
            self.show_report(report)
        if self._again:
            self.reload()

    # -- drawing -----------------------------------------------------------------------------

    def show_report(self, report: dict[str, Any]) -> None:
        self.report = report
        self.refreshes += 1
        rows = report["rows"]
        primary = report.get("primary") or "value"
        names = series_names(report)
        finished = sum(r["finished"] for r in rows)
        total = sum(r["runs"] for r in rows)
        name = report.get("name")
        self.query_one("#sweep-title", Static).update(Text(  # a name is text, never markup
            f"sweep {report['sweep']}"
            + (f" ({name})" if name else "")
            + f": final test accuracy vs {primary}, {finished}/{total} runs finished"
        ))
        key = tuple(
            (r["series"], str(r["value"]), r["finished"], r["final_acc_mean"], r["final_acc_std"])
            for r in rows
        )
        chart = self.query_one(Chart)
        chart.title = f"final test accuracy (mean of last {report['final_window']}) vs {primary}"
        chart.show(key, sweep_draw(report))
        self._fill_table(report, names, primary)
        caption = "one point per finished axis value (mean over seeds)"
        if any(r.get("reference") is not None for r in rows):
            caption += f"; horizontal line: each series' reference, {reference_text(report)}"
        if self.per_seed:
            caption += f". {per_seed_caption(report)}"
        elif one_seed(report):
            caption += f". {ONE_SEED_CAVEAT}"
        self.query_one("#sweep-caption", Static).update(caption)

    def _fill_table(self, report: dict[str, Any], names: list[str], primary: str) -> None:
        table = self.query_one(DataTable)
        cursor = table.cursor_row
        table.clear(columns=True)
        multi = has_series(names)
        single = one_seed(report)
        seeds = seed_list(report)
        numbers = (
            [f"seed {seed}" for seed in seeds]
            if self.per_seed
            else ["seeds", "final acc", "drop", "lr at removal"]  # final acc: mean ± std
        )
        columns = (["series"] if multi else []) + [primary, *numbers]
        rows = []
        for r in report["rows"]:
            colour = rich_colour(SERIES_COLOURS[names.index(r["series"]) % len(SERIES_COLOURS)])
            value = "no deficit" if r["baseline"] else str(r["value"])
            shown = seed_cells(r, seeds) if self.per_seed else row_cells(r, single)
            cells = [Text(cell, justify="right") for cell in (value, *shown)]
            series = [Text(f"━━ {r['series']}", style=colour)] if multi else []
            rows.append([*series, *cells])
        # Explicit widths: columns cleared and re-added in one refresh kept their headers'
        # widths on screen, cutting "deficit=blur" to "def" (Textual 8.2).
        for c, label in enumerate(columns):
            cells = [row[c].plain if isinstance(row[c], Text) else row[c] for row in rows]
            table.add_column(label, width=max(cell_len(text) for text in [label, *cells]))
        for i, cells in enumerate(rows):
            table.add_row(*cells, key=str(i))
        if table.row_count:
            table.move_cursor(row=min(cursor, table.row_count - 1))


class SweepPicker(ModalScreen[str | None]):
    """Choose one sweep (newest first); dismisses with its id, or None."""

    DEFAULT_CSS = """
    SweepPicker {
        align: center middle;
    }
    SweepPicker > Vertical {
        width: 80%;
        max-width: 100;
        height: auto;
        max-height: 80%;
        border: round $accent;
        background: $surface;
        padding: 0 1;
    }
    SweepPicker OptionList {
        height: auto;
        max-height: 20;
    }
    """

    BINDINGS = [Binding("escape", "dismiss_none", "Cancel")]

    def __init__(self, records: list[dict[str, Any]]):
        super().__init__()
        self.records = records

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static("Open which sweep? (newest first)")
            yield OptionList(
                *(Option(Text(sweep_label(r)), id=r["id"]) for r in self.records), id="sweep-picker"
            )

    def on_mount(self) -> None:
        self.query_one(OptionList).focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def action_dismiss_none(self) -> None:
        self.dismiss(None)


def sweep_label(record: dict[str, Any]) -> str:
    import time

    created = record.get("created")
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(created)) if created else "?"
    runs = len(record.get("runs", []))
    name = record.get("name") or ""
    return f"{record['id']}  {name}  ({runs} runs, {when})"


def open_sweeps(app) -> None:
    """Open the only sweep, or a picker of them (newest first); say so when there is none."""

    def load() -> None:
        from critui.runs.scheduler import all_records

        def problem(message: str) -> None:
            app.call_from_thread(app.notify, message, severity="warning", markup=False, timeout=10)

        try:
            records = list(reversed(all_records(app.store, on_problem=problem)))
        except Exception as exc:  # noqa: BLE001
            app.call_from_thread(app.notify, f"Could not read the sweeps: {exc}", severity="error")
            return
        app.call_from_thread(show, records)

    def show(records: list[dict[str, Any]]) -> None:
        if not records:
            app.notify(NO_SWEEPS)
        elif len(records) == 1:
            app.push_screen(SweepScreen(records[0]["id"], records[0]))
        else:
            by_id = {r["id"]: r for r in records}

            def chosen(sweep_id: str | None) -> None:
                if sweep_id:
                    app.push_screen(SweepScreen(sweep_id, by_id.get(sweep_id)))

            app.push_screen(SweepPicker(records), chosen)

    app.run_worker(load, thread=True, group="sweeps", exit_on_error=False)
