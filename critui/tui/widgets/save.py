"""Saving what a screen shows: its chart(s) as PNG or SVG (matplotlib, the ``critui[plot]``
extra) and the CSV of the data behind them, to a path the user confirms.

A chart is drawn again from its recorded plotext calls (:class:`~critui.tui.widgets.charts.
Recorder`), so a saved figure has the terminal's series, colours, deficit windows, reference
lines, log scale and labels, with every point (the terminal's are downsampled). Files are
written whole or not at all (:func:`critui.files.atomic_write`), and an existing file is
replaced only after the user says so.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Static

from critui.errors import CritUIError

FIGURE_SUFFIXES = (".png", ".svg")
INSTALL_PLOT = "pip install 'critui[plot]'"
CSV_COLUMNS = ("chart", "series", "run", "deficit", "window_start", "window_end", "seed", "x", "y")


def plot_missing(path: Path | str) -> CritUIError:
    """The error when a figure is asked for without matplotlib: it names the fix."""
    return CritUIError(
        f"Saving {path} as a figure needs matplotlib, which is not installed. Install it with "
        f"{INSTALL_PLOT} (the plot extra), or give a .csv path to save only the data."
    )


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def xterm_hex(colour: Any) -> str | None:
    """A 256-colour code (as the charts use) as #rrggbb for matplotlib; a name as it is."""
    if isinstance(colour, str):
        return colour
    if not isinstance(colour, int) or not 0 <= colour <= 255:
        return None
    if colour < 16:
        base = ["#000000", "#800000", "#008000", "#808000", "#000080", "#800080", "#008080", "#c0c0c0",
                "#808080", "#ff0000", "#00ff00", "#ffff00", "#0000ff", "#ff00ff", "#00ffff", "#ffffff"]
        return base[colour]
    if colour >= 232:
        level = 8 + 10 * (colour - 232)
        return f"#{level:02x}{level:02x}{level:02x}"
    levels = (0, 95, 135, 175, 215, 255)
    c = colour - 16
    return "#" + "".join(f"{levels[v]:02x}" for v in (c // 36, (c // 6) % 6, c % 6))


def _calls(canvas, name: str) -> list[dict[str, Any]]:
    return [c for c in canvas.plt.calls if c["name"] == name]


def _last(canvas, name: str, default: Any = None) -> Any:
    calls = _calls(canvas, name)
    return calls[-1]["args"][0] if calls and calls[-1]["args"] else default


def figure_csv(charts: list[tuple[str, Any]]) -> str:
    """The data behind ``charts`` ((name, recorded canvas) pairs): one row per point, with
    the run, its deficit, window and seed when the series is a run's; reference lines as
    rows without x."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for name, canvas in charts:
        for call in _calls(canvas, "plot") + _calls(canvas, "scatter"):
            meta = call.get("meta") or {}
            xs = call.get("xs", call["args"][0] if call["args"] else [])
            ys = call.get("ys", call["args"][1] if len(call["args"]) > 1 else [])
            series = meta.get("series", call.get("label") or "")
            for x, y in zip(xs, ys, strict=False):
                writer.writerow({**meta, "chart": name, "series": series, "x": x, "y": y})
        for call in _calls(canvas, "hline"):
            writer.writerow({"chart": name, "series": "reference", "y": call["args"][0]})
        for call in _calls(canvas, "heatmap"):
            for layer, values in zip(call["layers"], call["cells"], strict=True):
                for epoch, value in zip(call["epochs"], values, strict=True):
                    if value is not None:
                        writer.writerow({**call["meta"], "chart": name, "series": layer, "x": epoch, "y": value})
    return out.getvalue()


def draw_figure(charts: list[tuple[str, Any]], suffix: str) -> bytes:
    """``charts`` side by side as one matplotlib figure, as PNG or SVG bytes."""
    try:
        import matplotlib
    except ImportError:
        raise plot_missing(f"a {suffix} file") from None
    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6 * len(charts), 4))
    axes = fig.subplots(1, len(charts), squeeze=False)[0]
    for ax, (name, canvas) in zip(axes, charts, strict=True):
        for call in _calls(canvas, "heatmap"):
            _heatmap(fig, ax, call)
        for call in _calls(canvas, "plot") + _calls(canvas, "scatter"):
            xs = call.get("xs", call["args"][0] if call["args"] else [])
            ys = call.get("ys", call["args"][1] if len(call["args"]) > 1 else [])
            colour = xterm_hex(call["kwargs"].get("color"))
            style = "-" if call["name"] == "plot" else "none"
            ax.plot(xs, ys, linestyle=style, marker="." if len(xs) < 40 else None, color=colour,
                    label=call.get("label"))
        for call in _calls(canvas, "window"):
            start, end, colour = call["args"]
            if end > start:
                ax.axvspan(start, end, color=xterm_hex(colour), alpha=0.08, linewidth=0)
        for call in _calls(canvas, "vline"):
            ax.axvline(call["args"][0], color=xterm_hex(call["args"][1] if len(call["args"]) > 1 else None),
                       linewidth=1)
        for call in _calls(canvas, "hline"):
            ax.axhline(call["args"][0], color=xterm_hex(call["args"][1] if len(call["args"]) > 1 else None),
                       linestyle="--", linewidth=1)
        if _last(canvas, "yscale") == "log":
            ax.set_yscale("log")
        for limit, setter in (("xlim", ax.set_xlim), ("ylim", ax.set_ylim)):
            calls = _calls(canvas, limit)
            if calls and len(calls[-1]["args"]) == 2:
                setter(*calls[-1]["args"])
        ticks = _calls(canvas, "xticks")
        if ticks and ticks[-1]["args"]:
            args = ticks[-1]["args"]
            ax.set_xticks(list(args[0]), list(args[1]) if len(args) > 1 else None)
        ax.set_xlabel(str(_last(canvas, "xlabel", "")))
        ax.set_ylabel(str(_last(canvas, "ylabel", "")))
        ax.set_title(str(_last(canvas, "title", name)), pad=14 if _calls(canvas, "heatmap") else 6)
        if any(call.get("label") for call in _calls(canvas, "plot")):
            ax.legend(fontsize="small")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format=suffix.lstrip("."), dpi=120)
    return buffer.getvalue()


def _heatmap(fig, ax, call: dict[str, Any]) -> None:
    """Layers × epochs as colours (viridis, like the terminal's ramp), gaps blank, the
    deficit window as a red bar above."""
    import numpy as np

    epochs, layers = call["epochs"], call["layers"]
    if not epochs or not layers:
        return
    cells = np.array([[np.nan if v is None else v for v in row] for row in call["cells"]], dtype=float)
    image = ax.imshow(np.ma.masked_invalid(cells), aspect="auto", cmap="viridis", vmin=0, vmax=1,
                      interpolation="nearest", extent=(epochs[0] - 0.5, epochs[-1] + 0.5, len(layers) - 0.5, -0.5))
    from matplotlib.ticker import MaxNLocator

    ax.set_yticks(range(len(layers)), layers)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs: never 2.5
    fig.colorbar(image, ax=ax, label="share of the epoch's trace (blank: not measured)")
    if call.get("window"):
        start, end = call["window"]
        # a red bar over the window's epochs, above the layers, as in the terminal
        ax.axvspan(start - 0.5, end - 0.5, ymin=1.01, ymax=1.05, color="red", clip_on=False)
        ax.annotate("deficit", xy=(end - 0.5, 1.03), xycoords=("data", "axes fraction"), xytext=(3, 0),
                    textcoords="offset points", va="center", fontsize="small", color="red")


def targets(path: Path) -> list[Path]:
    """The files a save to ``path`` writes: the figure and its CSV, or just the CSV."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return [path]
    if suffix not in FIGURE_SUFFIXES:
        raise CritUIError(f"Cannot save as {path.name!r}: the name should end in .png, .svg or .csv "
                          "(a figure also writes the .csv of its data next to it).")
    return [path, path.with_suffix(".csv")]


CsvText = str | Callable[[], str] | None


def save(path: Path | str, charts: list[tuple[str, Any]], csv_text: CsvText = None) -> list[Path]:
    """Write ``charts`` to ``path`` (a figure and its CSV beside it, or the CSV alone);
    ``csv_text`` (or a function making it) replaces the CSV of the plotted points (a sweep's
    report, a run's rows). Returns the files written. The figure is drawn before anything is
    written: no half-saved pair."""
    from critui.files import atomic_write

    path = Path(path).expanduser()
    files = targets(path)
    if len(files) == 2 and not charts:
        raise CritUIError(f"Cannot save {path.name!r}: there is no chart here, only data. Give a .csv path.")
    if not path.parent.is_dir():
        raise CritUIError(f"Cannot save to {path}: the folder {path.parent} does not exist. Create it or "
                          "choose another path.")
    payloads: list[str | bytes] = []
    if len(files) == 2:
        if not have_matplotlib():
            raise plot_missing(path)
        payloads.append(draw_figure(charts, path.suffix.lower()))
    payloads.append(csv_text() if callable(csv_text) else csv_text if csv_text is not None else figure_csv(charts))
    for file, payload in zip(files, payloads, strict=True):
        try:
            atomic_write(file, payload)
        except OSError as exc:
            raise CritUIError(f"Could not write {file}: {exc.strerror or exc}. Check the folder is "
                              "writable, or choose another path.") from None
    return files


def default_path(stem: str, folder: Path | None = None, figure: bool = True) -> Path:
    """``stem`` in the current folder as a PNG (as a CSV without matplotlib, or when there is
    no figure), numbered past any file already there so that the default never overwrites."""
    folder = Path.cwd() if folder is None else folder
    suffix = ".png" if figure and have_matplotlib() else ".csv"
    path = folder / f"{stem}{suffix}"
    n = 2
    while any(p.exists() for p in targets(path)):
        path = folder / f"{stem}-{n}{suffix}"
        n += 1
    return path


class SaveModal(ModalScreen[list[Path] | None]):
    """Ask where to save; replace an existing file only after a second yes."""

    DEFAULT_CSS = """
    SaveModal {
        align: center middle;
    }
    SaveModal > Vertical {
        width: 72;
        max-width: 100%;
        height: auto;
        max-height: 100%;
        border: thick $primary;
        background: $surface;
        padding: 1 2;
    }
    SaveModal Static {
        width: 100%;
        height: auto;
    }
    SaveModal #save-error {
        color: $error;
    }
    SaveModal Horizontal {
        height: auto;
        align-horizontal: right;
        margin-top: 1;
    }
    SaveModal Button {
        margin-left: 2;
    }
    """

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, what: str, charts: list[tuple[str, Any]], default: Path, csv_text: CsvText = None):
        super().__init__()
        self.what = what
        self.charts = charts
        self.default = default
        self.csv_text = csv_text

    def compose(self) -> ComposeResult:
        plot = "" if have_matplotlib() else f" PNG and SVG need matplotlib: {INSTALL_PLOT}."
        hint = (
            "A .png or .svg path writes the figure and the .csv of its data beside it; a "
            f".csv path writes the data only.{plot}" if self.charts else "The data is written as CSV."
        )
        with Vertical():
            yield Static(f"Save {self.what}", markup=False)
            yield Static(hint + " An existing file is replaced only if you say so.", classes="hint", markup=False)
            yield Input(str(self.default), id="save-path")
            yield Static("", id="save-error", markup=False)
            with Horizontal():
                yield Button("Cancel (esc)", id="cancel")
                yield Button("Save (enter)", id="save", variant="primary")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "save":
            self.submit()
        else:
            self.dismiss(None)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.submit()

    def action_cancel(self) -> None:
        self.dismiss(None)

    def error(self, message: str) -> None:
        self.query_one("#save-error", Static).update(message)

    def submit(self) -> None:
        from critui.tui.widgets.confirm import ConfirmModal

        raw = self.query_one(Input).value.strip()
        if not raw:
            self.error("Give a file name ending in .png, .svg or .csv.")
            return
        path = Path(raw).expanduser()
        try:
            files = targets(path)
        except CritUIError as exc:
            self.error(str(exc))
            return
        existing = [f for f in files if f.exists()]
        if existing:
            names = " and ".join(str(f) for f in existing)
            self.app.push_screen(
                ConfirmModal(f"{names} already exist{'s' if len(existing) == 1 else ''}. Replace?", yes="Replace"),
                lambda yes: self.write(path) if yes else None,
            )
            return
        self.write(path)

    def write(self, path: Path) -> None:
        try:
            files = save(path, self.charts, self.csv_text)
        except CritUIError as exc:
            self.error(str(exc))
            return
        self.app.notify("Wrote " + " and ".join(str(f) for f in files))
        self.dismiss(files)


def ask_save(app, what: str, charts: list[tuple[str, Any]], stem: str, csv_text: CsvText = None,
             figure: bool = True, folder: Path | None = None) -> None:
    """Open the save dialog for ``charts`` (name, recorded canvas) named after ``stem``, in
    ``folder`` (the current one by default); ``figure`` False when there is only data."""
    default = default_path(stem, folder, figure=figure and bool(charts))
    app.push_screen(SaveModal(what, charts, default, csv_text))


SWEEP_COLUMNS = ("run", "series", "value", "deficit", "window_start", "window_end", "seed", "status",
                 "final_acc", "final_acc_mean")


def sweep_csv(app, record: dict[str, Any], report: dict[str, Any] | None) -> str:
    """One row per run of a sweep: its series and axis value (as the figure groups them), its
    deficit, window and seed, its status, its final accuracy, and the mean over seeds the
    figure plots for its group."""
    from critui.runs.export import run_columns
    from critui.sweeps import axis_text
    from critui.tui.histories import joined_history

    primary = record.get("primary")
    means = {(r["series"], str(r["value"])): r.get("final_acc_mean") for r in (report or {}).get("rows", [])}
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=SWEEP_COLUMNS, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for entry in record.get("runs", []):
        axis = entry.get("axis") or {}
        series = ", ".join(axis_text(k, v) for k, v in axis.items() if k not in (primary, "seed")) or "all"
        value = "baseline" if entry.get("baseline") else axis.get(primary)
        doc = app.feed.docs.get(entry.get("run_id")) or {"id": entry.get("run_id")}
        columns = run_columns(doc)
        if entry.get("window") and columns["window_start"] is None:
            columns["window_start"], columns["window_end"] = entry["window"]
        done = doc.get("status") == "finished"
        writer.writerow({
            "run": entry.get("run_id"), "series": series, "value": value, **columns,
            "seed": axis.get("seed", columns["seed"]), "status": doc.get("status", "missing"),
            "final_acc": joined_history(app.feed, doc["id"]).final_acc if done else None,
            "final_acc_mean": means.get((series, str(value))),
        })
    return out.getvalue()


def name_series(charts: list[tuple[str, Any]], report: dict[str, Any]) -> None:
    """Label a sweep figure's unlabelled lines with their series (on screen the table below
    is the legend; a saved figure has no table): the series' colour says which it is."""
    from critui.runs.report import series_names
    from critui.tui.widgets.charts import SERIES_COLOURS

    by_colour = {SERIES_COLOURS[i % len(SERIES_COLOURS)]: name for i, name in enumerate(series_names(report))}
    for _name, canvas in charts:
        for call in _calls(canvas, "plot"):
            if not call.get("label") and call["kwargs"].get("color") in by_colour:
                call["label"] = by_colour[call["kwargs"]["color"]]


def save_screen_charts(screen, stem: str, what: str) -> None:
    """Save every chart shown on ``screen`` (the sweep view's figure); the CSV has one row
    per run of the screen's sweep (:func:`sweep_csv`) when it shows one, else the points."""
    from critui.tui.widgets.charts import Chart

    charts = [(chart.title, chart.figure()) for chart in screen.query(Chart) if chart.display]
    record = getattr(screen, "record", None)
    report = getattr(screen, "report", None)
    csv_text = None
    if isinstance(record, dict) and isinstance(record.get("runs"), list):
        csv_text = lambda: sweep_csv(screen.app, record, report)  # noqa: E731 - written on save
    if isinstance(report, dict) and report.get("rows"):
        name_series(charts, report)
    ask_save(screen.app, what, charts, stem, csv_text)
