"""One run in detail: config and plugin versions, a live log tail, accuracy and loss curves,
per-layer Fisher traces (raw and as a share of the sum over layers), a layer × epoch
Fisher heatmap, and any recorded plugin metric (its keys toggled, its warnings listed), each
with the deficit window marked. Actions: cancel (asks first), resume, fork from an epoch,
delete (asks first), export the rows as CSV, and save the charts on screen (PNG/SVG + CSV)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import (
    Header,
    Log,
    Select,
    SelectionList,
    Static,
    TabbedContent,
    TabPane,
)

from critui.config import device_text, launcher_text, window_note
from critui.events import reference_series, score_of, score_text
from critui.launching import LOG_FILE
from critui.runs.lineage import JoinedHistory, read_spec_json
from critui.tui.histories import joined_history
from critui.tui.run_actions import ask_cancel, ask_delete, ask_resume
from critui.tui.widgets.charts import (
    Chart,
    FisherHeatmap,
    accuracy_draw,
    curves_draw,
    fisher_draw,
    metric_draw,
    no_fisher_text,
)
from critui.tui.widgets.footer import FittingFooter
from critui.tui.widgets.runs_table import STATUS_STYLES, deficit_text, fmt_acc

LOG_TAIL_BYTES = 16_384
RESUMABLE = ("failed", "cancelled", "interrupted")


def read_log_tail(run_dir: Path, limit: int = LOG_TAIL_BYTES) -> list[str]:
    """The last lines of a run's log.txt ([] if it is missing)."""
    try:
        with open(run_dir / LOG_FILE, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(size - limit, 0))
            data = f.read()
    except (FileNotFoundError, NotADirectoryError):
        return []
    lines = data.decode("utf-8", errors="replace").splitlines()
    return lines[1:] if size > limit and lines else lines


def event_line(event: dict[str, Any]) -> str:
    """One readable line per event for the log pane."""
    kind = event.get("event")
    if kind == "epoch":
        deficit = " deficit" if event.get("deficit_active") else ""
        return (
            f"epoch {event.get('epoch')}: {score_text(event)}  "
            f"train loss {event.get('train_loss', float('nan')):.4f}  lr {event.get('lr', 0):.3g}{deficit}"
        )
    if kind == "metric":
        return f"epoch {event.get('epoch')}: {event.get('metric')} ({len(event.get('values', {}))} values; tab 5 charts them)"
    if kind == "failed":
        return f"failed in epoch {event.get('epoch')}: {event.get('error')}"
    if kind in ("warning", "plugins_changed"):  # the message names the plugin (and key, epoch)
        return f"{'warning' if kind == 'warning' else 'plugins changed'}: {event.get('message')}"
    fields = ", ".join(
        f"{k}={v}" for k, v in event.items() if k not in ("event", "time", "traceback")
    )
    return f"{kind}: {fields}"


def metric_groups(rows: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Every recorded metric (Fisher and plugin metrics) by name, with its ``name.key`` keys
    in the order they were first written (a per-layer metric: forward order)."""
    groups: dict[str, dict[str, None]] = {}
    for row in rows:
        for key in row:
            if "." in key:
                groups.setdefault(key.split(".", 1)[0], {}).setdefault(key)
    return {name: list(keys) for name, keys in sorted(groups.items())}


def metric_warnings(events: list[dict[str, Any]]) -> list[str]:
    """The run's metric warnings (a value recorded as null, a metric switched off), one line each."""
    lines = []
    for e in events:
        if e.get("event") == "warning" and (e.get("plugin") or "").startswith("metrics."):
            epoch = f"epoch {e['epoch']}: " if isinstance(e.get("epoch"), int) else ""
            lines.append(f"{epoch}{e.get('message', '')}")
    return lines


def run_meta(doc: dict[str, Any]) -> dict[str, Any]:
    """The run's columns in a saved chart's CSV: its id, deficit, window and seed."""
    from critui.runs.export import run_columns

    return {"run": doc.get("id"), **run_columns(doc)}


def config_table(doc: dict[str, Any], spec: dict[str, Any], joined: JoinedHistory | None = None) -> Table:
    """The run's settings; its progress and final accuracy from ``joined`` (its whole
    history, inherited epochs included) when given, else from the index."""
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    status = Text(doc.get("status", "?"), style=STATUS_STYLES.get(doc.get("status"), ""))
    if doc.get("error"):
        status.append(f"  {doc['error']}", style="red")
    table.add_row("status", status)
    table.add_row("name", Text(str(doc.get("name") or "")))  # text, never markup
    table.add_row("experiment", f"{doc.get('dataset')} / {doc.get('model')} / {deficit_text(doc)}")
    final = joined.final_acc if joined is not None else doc.get("final_acc")
    if joined is not None:
        inherited = f" ({joined.inherited} inherited)" if joined.inherited else ""
        table.add_row("progress", f"{joined.epochs_done}/{doc.get('epochs')} epochs{inherited}")
    table.add_row("final acc", fmt_acc(final) + " (mean of the last 5 epochs)")
    table.add_row("seed", str(doc.get("seed")))
    if doc.get("parent"):
        table.add_row("forked from", f"{doc['parent']} at epoch {doc.get('fork_epoch')}")
    if doc.get("lr_at_removal") is not None:
        table.add_row("lr at removal", f"{doc['lr_at_removal']:.4g}")
    if note := window_note(spec):
        table.add_row("note", Text(note, style="yellow"))
    table.add_row("device", device_text(doc))
    if launched := launcher_text(doc):
        table.add_row("launcher", launched)
    table.add_row("git commit", str(doc.get("git_commit") or "-"))
    plugins = doc.get("plugins") or {}
    for section in ("dataset", "model", "deficit"):
        part = spec.get(section)
        if part:
            version = plugins.get(part["id"], {})
            params = ", ".join(f"{k}={v}" for k, v in part.get("params", {}).items())
            table.add_row(
                section,
                f"{part['id']} ({version.get('distribution', '?')} {version.get('version', '?')})"
                f"\n{params}",
            )
    for metric in spec.get("metrics", []):
        version = plugins.get(metric["id"], {})
        params = ", ".join(f"{k}={v}" for k, v in metric.get("params", {}).items())
        table.add_row(
            "metric",
            f"{metric['id']} ({version.get('distribution', '?')} {version.get('version', '?')})"
            f"\n{params}",
        )
    for section in ("optim", "train"):
        if spec.get(section):
            table.add_row(section, ", ".join(f"{k}={v}" for k, v in spec[section].items()))
    return table


class RunDetailScreen(Screen):
    """Everything about one run, updating live while it trains."""

    DEFAULT_CSS = """
    RunDetailScreen #metric-pick {
        width: 30;
        max-width: 40%;
    }
    RunDetailScreen #metric-keys {
        height: auto;
        max-height: 1fr;
    }
    RunDetailScreen #metric-main {
        width: 1fr;
    }
    RunDetailScreen #metric-warnings {
        height: auto;
        max-height: 8;
    }
    """

    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back", tooltip="Back to the dashboard"),
        Binding("x", "cancel_run", "Cancel run", tooltip="Stop this run cleanly (asks first)"),
        Binding(
            "r",
            "resume_run",
            "Resume",
            tooltip="Continue this failed, cancelled or interrupted run from its last checkpoint",
        ),
        Binding(
            "f",
            "fork_run",
            "Fork",
            tooltip="Start a new run from this run's state after an epoch, optionally changed",
        ),
        Binding("delete,D", "delete_run", "Delete", tooltip="Delete this run (asks first)"),
        Binding(
            "e", "export", "Export CSV", tooltip="Write this run's per-epoch metrics as CSV (asks where)"
        ),
        Binding(
            "p", "save_chart", "Save plot",
            tooltip="Save the charts of this tab as PNG or SVG, with the CSV of their data (asks where)",
        ),
        Binding("1", "tab('overview')", "Overview", show=False),
        Binding("2", "tab('curves')", "Curves", show=False),
        Binding("3", "tab('fisher')", "Fisher", show=False),
        Binding("4", "tab('heatmap')", "Heatmap", show=False),
        Binding("5", "tab('metrics')", "Metrics", show=False),
    ]
    # Left out first on a narrow terminal (their keys still work, and ctrl+p lists them).
    FOOTER_SPARE = ("export", "delete_run", "resume_run", "cancel_run")

    def __init__(self, run_id: str):
        super().__init__()
        self.run_id = run_id
        self.spec: dict[str, Any] = {}
        self._events_shown = 0
        self._problems_shown = 0
        self._log_text: list[str] = []
        self._groups: dict[str, list[str]] = {}
        self._chosen: dict[str, list[str]] = {}  # per metric, the keys toggled on
        self._metric_warnings: list[str] = []

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="detail-body"):
            yield Static("", id="detail-status")
            with TabbedContent(id="detail", initial="curves"):
                with TabPane("Overview (1)", id="overview"):
                    with Horizontal():
                        with VerticalScroll(id="config"):
                            yield Static("", id="config-text")
                        with Vertical(id="log"):
                            yield Log(id="events", max_lines=2000)
                            yield Log(id="logfile", max_lines=400)
                with TabPane("Curves (2)", id="curves"):
                    with Horizontal(classes="pair"):
                        yield Chart("test accuracy", id="acc")
                        yield Chart("loss", id="loss")
                with TabPane("Fisher (3)", id="fisher"):
                    with Horizontal(classes="pair"):
                        yield Chart("Fisher trace per layer (log)", id="fisher-raw")
                        yield Chart("share of the sum over layers", id="fisher-norm")
                with TabPane("Heatmap (4)", id="heatmap"):
                    with VerticalScroll():
                        yield FisherHeatmap(id="fisher-heatmap")
                with TabPane("Metrics (5)", id="metrics"):
                    with Horizontal(id="metrics-body"):
                        with Vertical(id="metric-pick"):
                            yield Select([], prompt="metric", allow_blank=True, id="metric-name")
                            yield SelectionList(id="metric-keys")
                        with Vertical(id="metric-main"):
                            yield Chart("metric", id="metric-chart")
                            yield Static("", id="metric-warnings", markup=False)
        yield FittingFooter()  # at 80 columns Footer cut "Save plot" mid-word

    def on_mount(self) -> None:
        self.app.runs_changed.subscribe(self, self.on_runs_changed)
        self.load_spec()
        self.refresh_view()

    @property
    def doc(self) -> dict[str, Any] | None:
        return self.app.feed.docs.get(self.run_id)

    @work(thread=True, exit_on_error=False)
    def load_spec(self) -> None:
        problems: list = []
        spec = read_spec_json(self.app.store.run_dir(self.run_id), problems) or {}
        self.app.call_from_thread(self._spec_loaded, spec)
        for problem in problems:
            self.app.call_from_thread(self.app.notify, str(problem), severity="warning", timeout=10)

    def _spec_loaded(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.refresh_view()

    def on_runs_changed(self, changed: set[str]) -> None:
        if self.run_id in changed:
            self.refresh_view()

    def refresh_view(self) -> None:
        doc = self.doc
        status = self.query_one("#detail-status", Static)
        if doc is None:
            status.update(
                Text(f"run {self.run_id} is no longer in the index (deleted?)", style="yellow")
            )
            return
        joined = joined_history(self.app.feed, self.run_id)
        rows = joined.rows
        window = doc.get("window")
        current = score_of(rows[-1]) if rows else None
        # A plugin's warnings (a metric's NaN, a metric switched off) are counted where the eye is.
        own = self.app.feed.histories.get(self.run_id)
        warnings = sum(e.get("event") == "warning" for e in (own.events if own else []))
        # One line at any width: the warnings right after the status, where a narrow terminal
        # still shows them, and the deficit (which can be long) cut with "…" rather than wrapped.
        line = Text.assemble(
            (f"run {self.run_id}  ", "bold"),
            (doc.get("status", "?"), STATUS_STYLES.get(doc.get("status"), "")),
            (f"  ⚠ {warnings} warning(s) (Overview log)" if warnings else "", "yellow"),
            f"  {joined.epochs_done}/{doc.get('epochs')} epochs  acc {fmt_acc(current)}"
            f"  final {fmt_acc(joined.final_acc)}  {deficit_text(doc)}",
        )
        line.no_wrap, line.overflow = True, "ellipsis"
        status.update(line)
        self.query_one("#config-text", Static).update(config_table(doc, self.spec, joined))
        key = (self.run_id, joined.version)
        acc = self.query_one("#acc", Chart)
        meta = run_meta(doc)
        acc.show(key, accuracy_draw([("test_acc", rows, window)], metas=[meta]))
        loss = self.query_one("#loss", Chart)
        loss.show(key, curves_draw(rows, ("train_loss", "test_loss"), window, "loss", meta=meta))
        layers = joined.layers
        raw = self.query_one("#fisher-raw", Chart)
        norm = self.query_one("#fisher-norm", Chart)
        empty = no_fisher_text(doc, self.spec or None)
        raw.show(key + (empty,), fisher_draw(rows, layers, window, empty=empty, meta=meta))
        norm.show(key + (empty,), fisher_draw(rows, layers, window, normalised=True, empty=empty, meta=meta))
        heatmap = self.query_one(FisherHeatmap)
        heatmap.meta = meta
        heatmap.show(key + (empty,), rows, layers, window, empty=empty)
        history = self.app.feed.histories.get(self.run_id)
        self.refresh_metrics(rows, window, key, history.events if history else [])
        self.tail_log(history.events if history else [])
        self.warn_skipped(getattr(getattr(history, "tail", None), "problems", []))

    # -- the metrics tab -------------------------------------------------------------------------

    def refresh_metrics(self, rows: list[dict[str, Any]], window, key: Any, events: list[dict[str, Any]]) -> None:
        """The metric picker's choices, the chosen metric's chart and the metric warnings."""
        groups = metric_groups(rows)
        name_select = self.query_one("#metric-name", Select)
        if list(groups) != list(self._groups):
            self._groups = groups
            current = name_select.value
            name_select.set_options([(name, name) for name in groups])
            if current in groups:
                name_select.value = current
            elif groups:
                # a plugin metric first: Fisher has its own tabs
                name_select.value = next((n for n in groups if n != "fisher"), next(iter(groups)))
        self._groups = groups
        self.fill_keys()
        self.draw_metric(rows, window, key)
        warnings = metric_warnings(events)
        if warnings != self._metric_warnings:
            self._metric_warnings = warnings
            shown = warnings[-8:]
            more = f"\n… and {len(warnings) - len(shown)} earlier (critui show lists them)" if len(warnings) > len(shown) else ""
            self.query_one("#metric-warnings", Static).update(
                Text(f"metric warnings ({len(warnings)})\n" + "\n".join(shown) + more, style="yellow")
                if warnings else ""
            )

    @property
    def metric_name(self) -> str | None:
        value = self.query_one("#metric-name", Select).value
        return value if isinstance(value, str) and value in self._groups else None

    def fill_keys(self) -> None:
        """The chosen metric's keys in the toggle list, all on the first time it is shown."""
        name = self.metric_name
        keys = self._groups.get(name, []) if name else []
        chosen = self._chosen.setdefault(name, list(keys)) if name else []
        listing = self.query_one("#metric-keys", SelectionList)
        if [listing.get_option_at_index(i).value for i in range(listing.option_count)] != keys:
            listing.clear_options()
            listing.add_options([(k.split(".", 1)[-1], k, k in chosen) for k in keys])

    def draw_metric(self, rows=None, window=None, key=None) -> None:
        doc = self.doc
        if doc is None:
            return
        if rows is None:
            joined = joined_history(self.app.feed, self.run_id)
            rows, window, key = joined.rows, doc.get("window"), (self.run_id, joined.version)
        name = self.metric_name
        keys = [k for k in self._groups.get(name, []) if k in self._chosen.get(name, [])] if name else []
        chart = self.query_one("#metric-chart", Chart)
        chart.title = f"{name} per epoch" if name else "no plugin metric recorded yet"
        history = self.app.feed.histories.get(self.run_id)
        references = reference_series(history.events) if history else {}  # Metric.reference curves
        chart.show(
            (key, name, tuple(keys), len(references)),
            metric_draw(rows, keys, window, name or "", meta=run_meta(doc), log=name == "fisher",
                        references=references) if name else None,
        )

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "metric-name":
            self.fill_keys()
            self.draw_metric()

    def on_selection_list_selected_changed(self, event: SelectionList.SelectedChanged) -> None:
        name = self.metric_name
        if name:
            self._chosen[name] = list(event.selection_list.selected)
            self.draw_metric()

    def warn_skipped(self, problems: list) -> None:
        """Say once which lines of the run's events were unusable (and skipped)."""
        new = problems[self._problems_shown :]
        self._problems_shown = len(problems)
        if new:
            more = f" (and {len(new) - 1} more such line(s))" if len(new) > 1 else ""
            self.app.notify(f"Skipped {new[0]}{more}", severity="warning", timeout=10)

    def tail_log(self, events: list[dict[str, Any]]) -> None:
        log = self.query_one("#events", Log)
        new = events[self._events_shown :]
        self._events_shown = len(events)
        if new:
            log.write_lines([event_line(e) for e in new])
        self.read_log()

    @work(thread=True, exclusive=True, group="log", exit_on_error=False)
    def read_log(self) -> None:
        lines = read_log_tail(self.app.store.run_dir(self.run_id))
        self.app.call_from_thread(self._show_log_file, lines)

    def _show_log_file(self, lines: list[str]) -> None:
        if lines != self._log_text:
            self._log_text = lines
            logfile = self.query_one("#logfile", Log)
            logfile.clear()
            logfile.write_lines(lines[-200:])

    # -- actions -------------------------------------------------------------------------------

    def action_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab

    def action_cancel_run(self) -> None:
        ask_cancel(self.app, self.run_id)

    def action_resume_run(self) -> None:
        status = (self.doc or {}).get("status")
        if status not in RESUMABLE:
            self.app.notify(
                f"Run {self.run_id} is {status or 'gone'}; only a failed, cancelled or "
                "interrupted run can be resumed.",
                severity="warning",
            )
            return
        ask_resume(self.app, self.run_id)

    def action_fork_run(self) -> None:
        from critui.tui.screens.fork import ForkModal

        done = joined_history(self.app.feed, self.run_id).epochs_done
        if self.doc is None or not done:
            self.app.notify(
                f"Run {self.run_id} has no finished epoch to fork from yet.", severity="warning"
            )
            return
        self.app.push_screen(ForkModal(self.run_id, done), self._forked)

    def _forked(self, doc: dict[str, Any] | None) -> None:
        if doc:
            self.app.push_screen(RunDetailScreen(doc["id"]))

    def action_delete_run(self) -> None:
        ask_delete(self.app, self.run_id, then=self.dismiss)

    def action_export(self) -> None:
        self.app.export_runs([self.run_id])  # asks where; with the deficit, window and seed

    def action_save_chart(self) -> None:
        """Save the chart(s) of the tab on screen: the figure as PNG/SVG and its CSV."""
        from critui.tui.widgets.save import ask_save

        tab = self.query_one(TabbedContent).active
        ids = {"curves": ("#acc", "#loss"), "fisher": ("#fisher-raw", "#fisher-norm"),
               "metrics": ("#metric-chart",)}.get(tab)
        if tab == "heatmap":
            charts = [("Fisher heatmap", self.query_one(FisherHeatmap).figure())]
        elif ids:
            charts = [(self.query_one(i, Chart).title, self.query_one(i, Chart).figure()) for i in ids]
        else:
            self.app.notify("Switch to a chart tab (2 to 5) to save its charts.", severity="warning")
            return
        ask_save(self.app, f"the {tab} of run {self.run_id}", charts, f"{self.run_id}-{tab}")
