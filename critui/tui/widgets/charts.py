"""Charts of runs: plotext line charts that redraw only on change, and a Fisher heatmap.

A chart is given a *key* with its data (run ids and their history versions); it rebuilds
its plotext figure only when that key, its size or the theme changes, never on a plain
refresh, and in a thread worker, never on the UI thread. Series are downsampled to the
chart's width first, so a 300-epoch history costs what 100 epochs do.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from rich.text import Text
from textual import work
from textual.widget import Widget
from textual_plotext import PlotextPlot
from textual_plotext.plot import Plot

from critui.runs.report import packed

# Series colours as 256-colour codes, which plotext and rich both take as they are: a colour
# name plotext does not know ("yellow") comes out in its default blue. Codes from 16 up are
# fixed RGB; Textual redraws the 16 ANSI ones through its theme, where magenta is the same red
# as the deficit window's. Distinct from each other and from that red on dark and light
# themes: blue, orange, green, magenta, teal, gold, purple, brown, grey, navy.
SERIES_COLOURS = (33, 208, 34, 163, 37, 136, 99, 130, 244, 25)
WINDOW_COLOUR = 196
# A run without Fisher points has the metric off, or has not reached its first measurement.
NO_FISHER = "no Fisher data yet (is metrics.fisher on?)"


def rich_colour(code: int) -> str:
    """The rich style of a chart colour, so a legend or a table key matches its line."""
    return f"color({code})"
# plotext keeps some module-level state; one build at a time (the GIL would serialise them anyway).
_PLOTEXT = threading.Lock()


def downsample(
    xs: Sequence[float], ys: Sequence[float], points: int
) -> tuple[list[float], list[float]]:
    """At most ``points`` evenly strided samples, always keeping the last one."""
    n = len(xs)
    if points <= 0 or n <= points:
        return list(xs), list(ys)
    stride = math.ceil(n / points)
    idx = list(range(0, n, stride))
    if idx[-1] != n - 1:
        idx.append(n - 1)
    return [xs[i] for i in idx], [ys[i] for i in idx]


def series(rows: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """(epochs, values) of one metric, skipping epochs where it is missing or not finite."""
    xs, ys = [], []
    for row in rows:
        value = row.get(key)
        if isinstance(value, (int, float)) and math.isfinite(value):
            xs.append(row["epoch"])
            ys.append(float(value))
    return xs, ys


def normalised_fisher(rows: list[dict[str, Any]], layers: list[str]) -> list[dict[str, Any]]:
    """Rows whose ``fisher.<layer>`` values are divided by the sum over layers of that epoch."""
    out = []
    for row in rows:
        values = [row.get(f"fisher.{layer}") for layer in layers]
        present = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
        total = sum(present)
        if not present or total <= 0:
            continue
        shares = {
            f"fisher.{layer}": v / total
            for layer, v in zip(layers, values, strict=False)
            if isinstance(v, (int, float)) and math.isfinite(v)
        }
        out.append({"epoch": row["epoch"], **shares})
    return out


def fitted(title: str, width: int) -> str:
    """``title`` cut to fit a chart ``width`` columns wide: plotext drops a longer one entirely."""
    room = max(width - 4, 1)
    return title if len(title) <= room else title[: room - 1] + "…"


class Canvas:
    """One build of a chart: a fresh plotext figure, its width, the points plotted on it and
    the legend's (label, colour) entries."""

    def __init__(self, plt: Plot, width: int, title: str):
        self.plt = plt
        self.width = width
        self.title = title
        self.points = 0
        self.legend: list[tuple[str, int]] = []

    def line(self, xs, ys, *, label: str | None = None, color: int = SERIES_COLOURS[0]) -> None:
        """Plot one series, downsampled to the chart width (one point per column is all a line
        shows). A label goes into the legend under the chart: plotext's own legend sits in
        the top-left corner, over the early epochs where the Fisher trace peaks."""
        xs, ys = downsample(xs, ys, self.width)
        if label is not None:
            self.legend.append((label, color))
        if xs:
            self.plt.plot(xs, ys, marker="hd", color=color)  # half blocks: 3x faster to build than braille
            self.points += len(xs)


def legend_lines(entries: list[tuple[str, int]], width: int) -> list[Text]:
    """The legend as lines of ``━━ label`` keys in their colours, wrapped to ``width``."""
    keys = [Text.assemble(("━━", rich_colour(colour)), f" {label}") for label, colour in entries]
    lines = packed(keys, width, gap="  ")
    for line in lines:
        line.truncate(width, overflow="ellipsis")
    return lines


Draw = Callable[[Canvas], None]  # the plotext calls of one chart


class Chart(PlotextPlot):
    """A plotext chart built off the UI thread. Call :meth:`show` with a key and a draw function.

    A build runs in a thread worker on a fresh figure whenever the key, the size or the theme
    changes; until it lands the previous drawing stays on screen, so typing and scrolling
    never wait for plotext.
    """

    DEFAULT_CSS = """
    Chart {
        height: 1fr;
        min-height: 6;
    }
    """

    def __init__(self, title: str = "", *, id: str | None = None, classes: str | None = None):
        super().__init__(id=id, classes=classes)
        self.title = title
        self.data_key: Any = None
        self.points = (
            0  # how many points the drawing on screen plotted (for tests and the benchmark)
        )
        self.redraws = 0
        self.built_at = 0.0  # perf_counter when the drawing on screen was built
        self._draw: Draw | None = None
        self._job: Any = None  # what is on screen: (data key, width, height, theme)
        self._pending: Any = None  # what is being built
        self._rendered: Text = Text("")

    @property
    def busy(self) -> bool:
        return self._pending is not None

    def show(self, key: Any, draw: Draw | None) -> bool:
        """Draw with ``draw`` if ``key`` differs from the last one; return whether it did."""
        if key == self.data_key:
            return False
        self.data_key = key
        self._draw = draw
        self._request()
        return True

    def on_resize(self) -> None:
        self._request()

    def _register_theme(self, app_theme_name: str) -> None:
        super()._register_theme(app_theme_name)
        self._request()

    def _request(self) -> None:
        if not self.is_mounted or self.size.width <= 0 or self.size.height <= 0:
            return  # a resize brings it back
        job = (
            self.data_key,
            self.size.width,
            self.size.height,
            self._get_plotext_theme_name(self.app.theme),
        )
        if job in (self._job, self._pending):
            return
        self._pending = job
        self._build_worker(job, self._draw)

    @work(thread=True, group="charts", exit_on_error=False)
    def _build_worker(self, job, draw: Draw | None) -> None:
        text, points = self.build_text(job[1], job[2], job[3], draw)
        try:
            self.app.call_from_thread(self._built, job, text, points)
        except RuntimeError:
            pass  # the app is closing

    def _built(self, job, text: Text, points: int) -> None:
        if job != self._pending:
            return  # a newer build was asked for; it will land
        self._pending = None
        self._job, self._rendered, self.points = job, text, points
        self.redraws += 1
        self.built_at = time.perf_counter()
        self.refresh()

    def render(self) -> Text:
        return self._rendered

    def build_text(
        self, width: int, height: int, theme: str, draw: Draw | None
    ) -> tuple[Text, int]:
        """Build the figure on a fresh plotext figure (any thread): its text and points plotted."""
        with _PLOTEXT:
            return self._build_text(width, height, theme, draw)

    def _build_text(
        self, width: int, height: int, theme: str, draw: Draw | None
    ) -> tuple[Text, int]:
        plt = Plot()
        width, height = max(width, 10), max(height, 4)
        plt.plotsize(width, height)
        plt._set_size(width, height)
        plt.theme(theme)
        plt.title(fitted(self.title, width))
        canvas = Canvas(plt, width, self.title)
        if draw is not None:
            try:
                draw(canvas)
            except Exception as exc:  # noqa: BLE001 - a chart must never take the app down
                plt.clear_data()
                plt.title(fitted(f"cannot draw ({type(exc).__name__}): {self.title}", width))
                canvas.points, canvas.legend = 0, []
        # The legend takes rows from the plot, at most a third of them.
        legend = legend_lines(canvas.legend, width)[: height // 3] if canvas.points else []
        if legend:
            plt.plotsize(width, height - len(legend))
            plt._set_size(width, height - len(legend))
        plot = Text.from_ansi(plt.build())
        plot.rstrip()  # its last newline, which would leave a blank line over the legend
        return Text("\n").join([plot, *legend]), canvas.points

    def build(self) -> Text:
        """Build the current drawing at the current size, here and now (timed by the benchmark)."""
        text, self.points = self.build_text(
            self.size.width,
            self.size.height,
            self._get_plotext_theme_name(self.app.theme),
            self._draw,
        )
        return text


def mark_window(plt, window: Sequence[int] | None) -> None:
    """The deficit window [start, end) as two vertical lines: onset and removal."""
    if window:
        start, end = window
        plt.vline(start, WINDOW_COLOUR)
        plt.vline(end, WINDOW_COLOUR)


def accuracy_draw(
    runs: list[tuple[str, list[dict[str, Any]], Any]],
    key: str = "test_acc",
    ylabel: str = "test acc",
    legend: bool = True,
) -> Draw:
    """Test accuracy per epoch of several runs, each with its deficit window marked; a
    legend names them unless there is one run or ``legend`` is off."""

    def draw(c: Canvas) -> None:
        for i, (label, rows, window) in enumerate(runs):
            colour = SERIES_COLOURS[i % len(SERIES_COLOURS)]
            xs, ys = series(rows, key)
            c.line(xs, ys, label=label if legend and len(runs) > 1 else None, color=colour)
            mark_window(c.plt, window)
        c.plt.xlabel("epoch")
        c.plt.ylabel(ylabel)

    return draw


def curves_draw(rows: list[dict[str, Any]], keys: Sequence[str], window, ylabel: str) -> Draw:
    """Several metrics of one run (e.g. train and test loss)."""

    def draw(c: Canvas) -> None:
        for i, key in enumerate(keys):
            xs, ys = series(rows, key)
            c.line(xs, ys, label=key, color=SERIES_COLOURS[i % len(SERIES_COLOURS)])
        mark_window(c.plt, window)
        c.plt.xlabel("epoch")
        c.plt.ylabel(ylabel)

    return draw


def fisher_draw(
    rows: list[dict[str, Any]], layers: list[str], window, normalised: bool = False
) -> Draw:
    """Per-layer Fisher traces; raw on a log scale, or as a share of the sum over layers."""

    def draw(c: Canvas) -> None:
        data = normalised_fisher(rows, layers) if normalised else rows
        positive = True
        for i, layer in enumerate(layers):
            xs, ys = series(data, f"fisher.{layer}")
            positive = positive and all(y > 0 for y in ys)
            c.line(xs, ys, label=layer, color=SERIES_COLOURS[i % len(SERIES_COLOURS)])
        if not c.points:
            c.plt.title(fitted(NO_FISHER, c.width))
            return
        if not normalised and positive:
            c.plt.yscale("log")
        mark_window(c.plt, window)
        c.plt.xlabel("epoch")

    return draw


def fisher_totals_draw(runs: list[tuple[str, list[dict[str, Any]], Any]]) -> Draw:
    """The total Fisher trace (sum over layers) of several runs, overlaid on a log scale.

    Per-layer curves of several runs would be runs × layers lines in one small chart; the
    total keeps one line per run, and its peak and decay are what the paper compares.
    """

    def draw(c: Canvas) -> None:
        positive = True
        for i, (label, rows, _window) in enumerate(runs):
            xs, ys = series(rows, "fisher.total")
            positive = positive and all(y > 0 for y in ys)
            c.line(xs, ys, label=label, color=SERIES_COLOURS[i % len(SERIES_COLOURS)])
        if not c.points:
            c.plt.title(fitted(NO_FISHER, c.width))
            return
        if positive:
            c.plt.yscale("log")
        for window in {tuple(w) for _label, _rows, w in runs if w}:
            mark_window(c.plt, window)  # each distinct window once: runs often share one
        c.plt.xlabel("epoch")

    return draw


# Low to high: a perceptually ordered ramp (viridis' endpoints and midpoints).
RAMP = ("#440154", "#46327e", "#365c8d", "#277f8e", "#1fa187", "#4ac16d", "#a0da39", "#fde725")


class FisherHeatmap(Widget):
    """Layers × epochs, each cell the layer's share of that epoch's Fisher trace; the deficit
    window is marked by a red bar over its epochs. Epochs are bucketed to fit the width."""

    DEFAULT_CSS = """
    FisherHeatmap {
        height: auto;
        min-height: 4;
    }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None):
        super().__init__(id=id, classes=classes)
        self.rows: list[dict[str, Any]] = []
        self.layer_names: list[str] = []
        self.window: Sequence[int] | None = None
        self.data_key: Any = None

    def show(self, key: Any, rows: list[dict[str, Any]], layers: list[str], window) -> None:
        if key == self.data_key:
            return
        self.data_key, self.rows, self.layer_names, self.window = key, rows, layers, window
        self.refresh(layout=True)

    def get_content_height(self, container, viewport, width: int) -> int:
        return max(len(self.layer_names), 1) + 3

    def render(self) -> Text:
        try:
            return self.grid()
        except Exception as exc:  # noqa: BLE001 - never take the app down over a cell
            return Text(f"cannot draw the heatmap ({type(exc).__name__}: {exc})", style="red")

    def grid(self) -> Text:
        """The heatmap as rich text: a deficit bar, one row per layer, an epoch axis, a legend."""
        data = normalised_fisher(self.rows, self.layer_names)
        if not data:
            return Text(NO_FISHER.capitalize() + ".", style="dim")
        label_w = min(max(len(name) for name in self.layer_names), 16) + 1
        cells = max(self.size.width - label_w - 1, 1)
        n = min(cells, len(data))
        buckets = [data[i * len(data) // n : (i + 1) * len(data) // n] for i in range(n)]
        cw = max(1, min(cells // n, 6))  # a few columns per epoch when there are few epochs
        text = Text()
        text.append(" " * label_w)
        for bucket in buckets:
            active = self.window and any(
                self.window[0] <= r["epoch"] < self.window[1] for r in bucket
            )
            text.append(("▄" if active else " ") * cw, style=rich_colour(WINDOW_COLOUR) if active else "")
        text.append("  deficit\n" if self.window else "\n", style=rich_colour(WINDOW_COLOUR))
        for layer in self.layer_names:
            text.append(layer[: label_w - 1].ljust(label_w))
            for bucket in buckets:
                values = [r.get(f"fisher.{layer}", 0.0) for r in bucket]
                share = sum(values) / len(values)
                text.append("█" * cw, style=RAMP[min(int(share * len(RAMP)), len(RAMP) - 1)])
            text.append("\n")
        first, last = buckets[0][0]["epoch"], buckets[-1][-1]["epoch"]
        axis = f"epoch {first}"
        text.append(
            " " * label_w + axis + f"{last}".rjust(max(len(buckets) * cw - len(axis), 1)) + "\n",
            style="dim",
        )
        text.append(" " * label_w + "share of the epoch's trace: ", style="dim")
        for colour in RAMP:
            text.append("█", style=colour)
        text.append(" 0 → 1", style="dim")
        return text
