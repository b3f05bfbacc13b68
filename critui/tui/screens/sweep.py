"""A sweep, live: final accuracy against the removal epoch (or onset), the paper's Figure 1.

The figure's data is :func:`critui.runs.report.build_report`, the same table ``critui
report`` prints; it is rebuilt in a thread worker whenever the app's poll says a run of
this sweep changed (a new epoch too), so the figure fills in while the runs train: each run
still training is a hollow point at its current test accuracy (in progress), each finished
axis value a point of the line at its final accuracy. The x axis spans the planned values
from the start. Each series' reference (its no-deficit baseline, else its earliest value) is
drawn as a horizontal line in the series' colour. Below the figure's table, every run with its
status (failed and cancelled flagged), its progress and its current accuracy; ``c`` overlays
all runs' accuracy curves instead of the figure. Runs' histories are read through
:mod:`critui.runs.lineage` (a fork's inherited epochs included).
"""

from __future__ import annotations

from typing import Any

from rich.cells import cell_len
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.coordinate import Coordinate
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Header, OptionList, Static
from textual.widgets.option_list import Option

from critui.events import score_of
from critui.runs.report import (
    SPREAD_MARK,
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
    spread_legend,
    within_spread,
)
from critui.tui.widgets.charts import SERIES_COLOURS, Canvas, Chart, Draw, rich_colour
from critui.tui.widgets.footer import FittingFooter

NO_SWEEPS = "No sweeps yet: press n for the form (its sweep section), or run `critui sweep FILE.toml`"
# The report's caveat names a command-line flag; in the TUI the form's seeds field is the way.
ONE_SEED_HINT = ("One seed: a drop of a few points can be run-to-run noise; for mean ± std, launch "
                 "it again with seeds (n, then the seeds field, e.g. 0,1,2)")
IN_PROGRESS = "○"  # a run still training: its current accuracy
STATUS_STYLE = {
    "finished": ("✓ finished", "green"),
    "running": ("▶ training", "bold cyan"),
    "queued": ("· queued", "dim"),
    "failed": ("✗ FAILED", "bold red"),
    "cancelled": ("⊘ cancelled", "bold yellow"),
    "interrupted": ("! interrupted", "bold yellow"),
    "deleted": ("deleted", "dim"),
}


def run_states(store, record: dict[str, Any], curves_cache: dict[str, Any] | None = None,
               feed=None) -> list[dict[str, Any]]:
    """Each run of the sweep as the view shows it: series and axis value (as the report groups
    them), status, epochs done of planned, current test accuracy and its accuracy curve.

    The curve is the run's joined history (:func:`critui.runs.lineage.full_rows`); a run that
    has ended is read once (``curves_cache``, keyed by its id and how it ended). With ``feed``
    (the app's :class:`~critui.tui.feed.RunsFeed`), its index entries are used and a run still
    training is drawn from the feed's live tail (read incrementally at each poll, joined by
    :func:`critui.tui.histories.joined_history`): a poll re-reads no run's whole events file."""
    from critui.runs.lineage import full_rows
    from critui.sweeps import axis_text
    from critui.tui.histories import joined_history

    docs = feed.docs if feed is not None else {d["id"]: d for d in store.all()}
    primary = record.get("primary")
    cache = curves_cache if curves_cache is not None else {}
    out = []
    for entry in record["runs"]:
        doc = docs.get(entry["run_id"])
        axis = entry["axis"]
        status = doc.get("status", "queued") if doc else "deleted"
        curve: list[tuple[int, float]] = []
        if doc is not None:
            live = status in ("running", "queued")
            history = joined_history(feed, doc["id"]) if live and feed is not None else None
            key = ("live", history.version) if history is not None else (status, doc.get("ended"), doc.get("epochs_done"))
            cached = cache.get(entry["run_id"])
            if cached is not None and cached[0] == key and (history is not None or not live):
                curve = cached[1]
            else:
                rows = history.rows if history is not None else full_rows(store, doc, docs)
                curve = [(int(r["epoch"]), float(score_of(r))) for r in rows
                         if isinstance(score_of(r), (int, float)) and isinstance(r.get("epoch"), int)]
                cache[entry["run_id"]] = (key, curve)
        out.append({
            "index": entry["index"], "run_id": entry["run_id"], "label": entry.get("label") or entry["run_id"],
            "series": ", ".join(axis_text(k, v) for k, v in axis.items() if k not in (primary, "seed")) or "all",
            "value": None if entry.get("baseline") else axis.get(primary), "baseline": bool(entry.get("baseline")),
            "status": status, "done": len(curve), "epochs": entry["epochs"],
            "acc": curve[-1][1] if curve else None, "curve": curve,
        })
    return out


def report_key(record: dict[str, Any], docs: dict[str, dict[str, Any]]) -> tuple:
    """What :func:`critui.runs.report.build_report` depends on: the sweep's runs and how each
    ended. A run still training adds nothing to the figure's table until it finishes, so its
    new epochs leave the key (and the report) as they were."""
    out = []
    for entry in record.get("runs", []):
        doc = docs.get(entry["run_id"]) or {}
        status = doc.get("status")
        settled = status not in ("running", "queued")
        out.append((entry["run_id"], status, doc.get("ended"), doc.get("final_acc") if settled else None,
                    doc.get("epochs_done") if settled else None))
    return (record.get("id"), len(record.get("runs", [])), tuple(out))


def spread_marks(report: dict[str, Any]) -> list[bool | None]:
    """Each row's ``~`` mark (:func:`critui.runs.report.within_spread`): True when its drop is
    within the seeds' spread, None where that cannot be said (one seed, the reference)."""
    return [r["within_spread"] if "within_spread" in r else within_spread(r) for r in report["rows"]]


def planned_values(record: dict[str, Any] | None) -> list[Any]:
    """The primary axis's values, as planned (the x axis from the start)."""
    if not record:
        return []
    primary = record.get("primary")
    return list(dict.fromkeys(e["axis"].get(primary) for e in record.get("runs", [])
                              if not e.get("baseline") and e["axis"].get(primary) is not None))


def partial_points(report: dict[str, Any], states: list[dict[str, Any]], labels: list[str]) -> dict[str, list]:
    """Per series, (x, current test accuracy) of each run still training that has an epoch:
    the figure's points in progress, one per run, at its axis value."""
    out: dict[str, list] = {}
    for st in states:
        if st["baseline"] or st["acc"] is None or st["status"] != "running":
            continue  # a failed or cancelled run is no point in progress: the runs table flags it
        value = st["value"]
        if labels:
            if str(value) not in labels:
                continue
            x = float(labels.index(str(value)))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            x = float(value)
        else:
            continue
        out.setdefault(st["series"], []).append((x, st["acc"]))
    return {k: sorted(v) for k, v in out.items()}


def sweep_draw(report: dict[str, Any], states: list[dict[str, Any]] | None = None,
               planned: list[Any] | None = None) -> Draw:
    """Final accuracy against the primary axis, one line per series, references as hlines;
    values still training as hollow points at their runs' current accuracy; the x axis
    spanning the planned values."""

    def draw(c: Canvas) -> None:
        points, labels = figure_points(report)
        partial = partial_points(report, states or [], labels)
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
            if part := partial.get(series):
                xs, ys = zip(*part, strict=True)
                c.plt.scatter(list(xs), list(ys), marker=IN_PROGRESS, color=colour)
                ys_all += ys
            ref = reference_row(report, series)
            if ref is not None:
                refs.append((ref["final_acc_mean"], colour))
                ys_all.append(ref["final_acc_mean"])
        numeric = [float(v) for v in (planned or [])
                   if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if labels:
            c.plt.xticks(list(range(len(labels))), labels)
            c.plt.xlim(-0.5, len(labels) - 0.5)
        elif numeric:  # fixed from the start: points land where they belong as runs finish
            low_x, high_x = min(numeric), max(numeric)
            pad_x = max((high_x - low_x) * 0.05, 0.5)
            c.plt.xlim(low_x - pad_x, high_x + pad_x)
            ticks = sorted(set(numeric))
            step = max(1, -(-len(ticks) * 6 // max(c.width - 10, 6)))  # about 6 columns a label
            shown = ticks[::step]
            c.plt.xticks(shown, [f"{t:g}" for t in shown])
        c.plt.xlabel(str(report.get("primary") or "value"))
        c.plt.ylabel("final acc")
        if not ys_all:
            c.plt.title(f"{c.title}: no run has trained an epoch yet")
            c.plt.ylim(0, 1)
            return
        low, high = min(ys_all), max(ys_all)
        pad = max((high - low) * 0.1, 0.01)
        c.plt.ylim(low - pad, high + pad)
        for y, colour in refs:
            c.plt.hline(y, colour)

    return draw


def raster(curves: list[list[tuple[float, float]]], columns: int, rows: int,
           xlim: tuple[float, float], ylim: tuple[float, float]) -> tuple[list[float], list[float]]:
    """The cells of a ``columns`` × ``rows`` grid over ``xlim`` × ``ylim`` that the polylines
    ``curves`` pass through, each once, as data coordinates (cell centres).

    The sweep overlay draws 36 curves or more in two or three colours: plotext joins each
    curve's points itself, one series at a time, which cost 100-400 ms a build under load.
    Traced here on a grid at least as fine as plotext's (half blocks: two per cell each way)
    and drawn as one scatter per colour, the curves cost what the cells they cover cost,
    and curves that overlap (seeds of one value) are drawn once."""
    (x0, x1), (y0, y1) = xlim, ylim
    sx = (columns - 1) / ((x1 - x0) or 1.0)
    sy = (rows - 1) / ((y1 - y0) or 1.0)
    cells: set[tuple[int, int]] = set()
    for curve in curves:
        px = [(x - x0) * sx for x, _ in curve]
        py = [(y - y0) * sy for _, y in curve]
        cells.add((round(px[0]), round(py[0])))
        for i in range(1, len(px)):
            ax, ay, dx, dy = px[i - 1], py[i - 1], px[i] - px[i - 1], py[i] - py[i - 1]
            steps = int(max(abs(dx), abs(dy))) + 1
            for k in range(1, steps + 1):
                t = k / steps
                cells.add((round(ax + dx * t), round(ay + dy * t)))
    ordered = sorted(cells)
    return [x0 + i / sx for i, _ in ordered], [y0 + j / sy for _, j in ordered]


def curves_draw_all(report: dict[str, Any], states: list[dict[str, Any]]) -> Draw:
    """Every run's test accuracy by epoch, in its series' colour: the whole sweep at a glance
    (a run still training is a line that stops at its last epoch). On screen each series'
    curves are traced into cells (:func:`raster`) and drawn at once; a saved figure gets
    every run's whole curve as a line."""

    def draw(c: Canvas) -> None:
        names = series_names(report)
        by_series: dict[int, list[list[tuple[float, float]]]] = {}
        for st in states:
            if not st["curve"]:
                continue
            i = names.index(st["series"]) if st["series"] in names else 0
            colour = SERIES_COLOURS[i % len(SERIES_COLOURS)]
            if c.for_file:
                xs, ys = zip(*st["curve"], strict=True)
                first = i not in by_series
                c.line(list(xs), list(ys), color=colour, label=st["series"] if first and len(names) > 1 else None,
                       meta={"series": st["series"], "run": st["run_id"]})
            by_series.setdefault(i, []).append(st["curve"])
        if not by_series:
            c.plt.title(f"{c.title}: no run has trained an epoch yet")
            return
        curves = [curve for group in by_series.values() for curve in group]
        low_x = min(x for curve in curves for x, _ in curve)
        high_x = max(max(x for curve in curves for x, _ in curve), low_x + 1)
        low_y = min(y for curve in curves for _, y in curve)
        high_y = max(y for curve in curves for _, y in curve)
        pad = max((high_y - low_y) * 0.05, 0.01)
        ylim = (low_y - pad, high_y + pad)
        if not c.for_file:
            for i, group in sorted(by_series.items()):
                colour = SERIES_COLOURS[i % len(SERIES_COLOURS)]
                xs, ys = raster(group, 2 * max(c.width, 10), 2 * max(getattr(c, "height", 0) or 40, 4), (low_x, high_x), ylim)
                c.plt.scatter(xs, ys, marker="hd", color=colour)
                c.points += len(xs)
                if len(names) > 1:
                    c.legend.append((names[i], colour))
            c.xrange = (low_x, high_x)
        c.plt.ylim(*ylim)
        c.epoch_axis()
        c.plt.ylabel("test acc")

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
    SweepScreen #sweep-table, SweepScreen #sweep-runs {
        height: 1fr;
        min-height: 3;
    }
    SweepScreen #sweep-caption {
        height: auto;
        padding: 0 1;
        color: $text-muted;
    }
    /* A short terminal (under 30 rows): the caption keeps two lines and the chart gives way,
       so the tables stay on screen (at 60x20 the chart took them all). */
    SweepScreen.-short #sweep-chart {
        height: 1fr;
        min-height: 5;
    }
    SweepScreen.-short #sweep-caption {
        max-height: 2;
    }
    """
    VERTICAL_BREAKPOINTS = [(0, "-short"), (30, "-tall")]
    FOOTER_SPARE = ("reload", "toggle_seeds")  # left out first on a narrow terminal (keys still work)

    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back", tooltip="Back to the dashboard"),
        Binding("r", "reload", "Reload", tooltip="Re-read the sweep and its runs now"),
        Binding(
            "s",
            "toggle_seeds",
            "Per seed",
            tooltip="Each seed's final accuracy and its drop from that seed's reference, or the mean",
        ),
        Binding(
            "c",
            "toggle_curves",
            "Curves",
            tooltip="Every run's test accuracy by epoch overlaid, or the figure (final accuracy by axis value)",
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
        self.curves = False  # the chart: the figure, or every run's accuracy curve (key c)
        self.states: list[dict[str, Any]] = []  # each run: status, progress, accuracy (run_states)
        self.partial = 0  # points in progress on the figure (for tests)
        self._curves_cache: dict[str, Any] = {}
        self._report_cache: tuple[tuple, dict[str, Any]] | None = None  # (report_key, report)
        self._table_cells: dict[str, tuple] = {}  # each table's (columns, rows) on screen
        self.table_fills = 0  # tables filled whole (for tests)
        self.table_updates = 0  # tables updated cell by cell (for tests)
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
            yield DataTable(id="sweep-runs", cursor_type="row", zebra_stripes=True)
        yield FittingFooter()

    def on_mount(self) -> None:
        self.app.runs_changed.subscribe(self, self.on_runs_changed)
        self.query_one("#sweep-table", DataTable).focus()
        self.reload()

    def on_screen_resume(self) -> None:
        self.reload()

    def on_runs_changed(self, changed: set[str]) -> None:
        if not self.run_ids or changed & self.run_ids:
            self.reload()

    def action_reload(self) -> None:
        self._report_cache = None  # r: read every run again, not only those that changed
        self.reload()

    def action_toggle_seeds(self) -> None:
        self.per_seed = not self.per_seed
        if self.report is not None:
            self.show_report(self.report)

    def action_toggle_curves(self) -> None:
        self.curves = not self.curves
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
        record, report, states, error = None, None, [], None
        try:
            record, report, states = self.load_data()
        except Exception as exc:  # noqa: BLE001 - a half-written run must not end the screen
            error = f"{type(exc).__name__}: {exc}"
        try:
            self.app.call_from_thread(self._loaded, record, report, error, states)
        except RuntimeError:
            pass  # the app is closing

    def load_data(self) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
        """The sweep's record, its report and each run's state (from a thread worker).

        Once the app has polled, its index entries and live tails are used: the report is
        built again only when a run of the sweep ended or changed status (:func:`report_key`),
        and a training run's new epochs come from the feed's tail, so a poll during a sweep
        reads no events file whole."""
        from critui.runs.report import build_report
        from critui.runs.scheduler import load_record

        store = self.app.store
        record = load_record(store, self.sweep_id, on_problem=self._problem)
        feed = self.app.feed if self.app.polls_done else None
        key = report_key(record, feed.docs) if feed is not None else None
        cached = self._report_cache
        if key is not None and cached is not None and cached[0] == key:
            report = cached[1]
        else:
            report = build_report(store, record)
            self._report_cache = (key, report) if key is not None else None
        return record, report, run_states(store, record, self._curves_cache, feed=feed)

    def _problem(self, message: str) -> None:
        """A sweep record that was skipped: a warning (once), from the loading thread."""
        if message in self._told:
            return
        self._told.add(message)
        try:
            self.app.call_from_thread(self.app.notify, message, severity="warning", markup=False, timeout=10)
        except RuntimeError:
            pass  # the app is closing

    def _loaded(self, record, report, error: str | None, states=()) -> None:
        self._loading = False
        if error is not None:
            self.query_one("#sweep-caption", Static).update(Text(f"Could not read the sweep: {error}"))
        elif self.is_mounted:
            self.record = record
            self.states = list(states)
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
        total = len(self.states) or sum(r["runs"] for r in rows)
        counts: dict[str, int] = {}
        for st in self.states:
            counts[st["status"]] = counts.get(st["status"], 0) + 1
        finished = counts.get("finished", sum(r["finished"] for r in rows) if not self.states else 0)
        extra = [f"{counts[k]} {word}" for k, word in (("running", "training"), ("queued", "queued"),
                 ("failed", "FAILED"), ("cancelled", "cancelled"), ("interrupted", "interrupted")) if counts.get(k)]
        name = report.get("name")
        self.query_one("#sweep-title", Static).update(Text(  # a name is text, never markup
            f"sweep {report['sweep']}"
            + (f" ({name})" if name else "")
            + f": final test accuracy vs {primary}, {finished}/{total} runs finished"
            + (f" ({', '.join(extra)})" if extra else "")
        ))
        live = tuple((st["run_id"], st["status"], st["done"], st["acc"]) for st in self.states)
        key = (self.curves, live, tuple(
            (r["series"], str(r["value"]), r["finished"], r["final_acc_mean"], r["final_acc_std"])
            for r in rows
        ))
        chart = self.query_one(Chart)
        if self.curves:
            chart.title = "test accuracy by epoch, every run of the sweep (c: the figure)"
            chart.show(key, curves_draw_all(report, self.states))
        else:
            chart.title = f"final test accuracy (mean of last {report['final_window']}) vs {primary}"
            _, labels = figure_points(report)
            self.partial = sum(len(v) for v in partial_points(report, self.states, labels).values())
            chart.show(key, sweep_draw(report, self.states, planned_values(self.record)))
        self._fill_table(report, names, primary)
        self._fill_runs(names)
        caption = "one point per finished axis value (mean over seeds)"
        if self.partial and not self.curves:
            caption += f"; {IN_PROGRESS} in progress: the current accuracy of runs still training"
        if any(r.get("reference") is not None for r in rows):
            caption += f"; horizontal line: each series' reference, {reference_text(report)}"
        if self.per_seed:
            caption += f". {per_seed_caption(report)}"
        elif one_seed(report):
            caption += f". {ONE_SEED_HINT}"
        if not self.per_seed and any(mark is not None for mark in spread_marks(report)):
            caption += f"\n{spread_legend()}"  # the table's ~ column, on a line of its own
        self.query_one("#sweep-caption", Static).update(caption)

    def _fill_runs(self, names: list[str]) -> None:
        """Every run: its label, status (failed and cancelled flagged), progress, accuracy."""
        table = self.query_one("#sweep-runs", DataTable)
        rows = []
        for st in self.states:
            word, style = STATUS_STYLE.get(st["status"], (st["status"], ""))
            colour = rich_colour(SERIES_COLOURS[names.index(st["series"]) % len(SERIES_COLOURS)]) \
                if st["series"] in names else ""
            acc = "-" if st["acc"] is None else f"{st['acc']:.4f}"
            rows.append([
                Text(f"#{st['index']}", justify="right"), Text(st["label"], style=colour),
                Text(word, style=style), Text(f"{st['done']}/{st['epochs']}", justify="right"),
                Text(acc, justify="right"),
            ])
        self._set_table(table, ["#", "run", "status", "epochs", "test acc"], rows)

    def _fill_table(self, report: dict[str, Any], names: list[str], primary: str) -> None:
        table = self.query_one("#sweep-table", DataTable)
        multi = has_series(names)
        single = one_seed(report)
        seeds = seed_list(report)
        numbers = (
            [f"seed {seed}" for seed in seeds]
            if self.per_seed
            else ["seeds", "final acc", "drop", "lr at removal"]  # final acc: mean ± std
        )
        marks = spread_marks(report) if not self.per_seed else []
        if any(mark is not None for mark in marks):  # as `critui report`: a column of its own after the drop
            numbers.insert(3, SPREAD_MARK)
        columns = (["series"] if multi else []) + [primary, *numbers]
        rows = []
        for i, r in enumerate(report["rows"]):
            colour = rich_colour(SERIES_COLOURS[names.index(r["series"]) % len(SERIES_COLOURS)])
            value = "no deficit" if r["baseline"] else str(r["value"])
            shown = seed_cells(r, seeds) if self.per_seed else row_cells(r, single)
            cells = [Text(cell, justify="right") for cell in (value, *shown)]
            if SPREAD_MARK in numbers:
                cells.insert(4, Text(SPREAD_MARK if marks[i] else "", style="bold"))
            series = [Text(f"━━ {r['series']}", style=colour)] if multi else []
            rows.append([*series, *cells])
        self._set_table(table, columns, rows)

    def _set_table(self, table: DataTable, columns: list[str], rows: list[list[Text]]) -> None:
        """Show ``rows`` under ``columns``: when the columns, their widths and the number of rows
        are as on screen, only the cells that changed are written (a poll during a sweep
        changes a few runs' progress); otherwise the table is filled again, cursor kept."""
        widths = [max(cell_len(text) for text in [label, *(row[c].plain for row in rows)])
                  for c, label in enumerate(columns)]
        shape = (tuple(columns), tuple(widths), len(rows))
        cells = [[(t.plain, str(t.style), t.justify) for t in row] for row in rows]
        before = self._table_cells.get(table.id or "")
        self._table_cells[table.id or ""] = (shape, cells)
        if before is not None and before[0] == shape and table.row_count == len(rows):
            for r, (old, new) in enumerate(zip(before[1], cells, strict=True)):
                for c, (was, now) in enumerate(zip(old, new, strict=True)):
                    if was != now:
                        table.update_cell_at(Coordinate(r, c), rows[r][c])
            self.table_updates += 1
            return
        cursor = table.cursor_row
        table.clear(columns=True)
        # Explicit widths: columns cleared and re-added in one refresh kept their headers'
        # widths on screen, cutting "deficit=blur" to "def" (Textual 8.2).
        for label, width in zip(columns, widths, strict=True):
            table.add_column(label, width=width)
        for i, row in enumerate(rows):
            table.add_row(*row, key=str(i))
        if table.row_count:
            table.move_cursor(row=min(cursor, table.row_count - 1))
        self.table_fills += 1


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
