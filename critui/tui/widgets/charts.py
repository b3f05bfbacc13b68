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

from critui.events import score_label
from critui.runs.report import packed

# Series colours as 256-colour codes, which plotext and rich both take as they are: a colour
# name plotext does not know ("yellow") comes out in its default blue. Codes from 16 up are
# fixed RGB; Textual redraws the 16 ANSI ones through its theme, where magenta is the same red
# as the deficit window's. Distinct from each other and from that red on dark and light
# themes: blue, orange, green, magenta, teal, gold, purple, brown, grey, navy.
SERIES_COLOURS = (33, 208, 34, 163, 37, 136, 99, 130, 244, 25)
WINDOW_COLOUR = 196
REFERENCE_COLOUR = 250  # a plugin's reference curve (Metric.reference): light grey under the data
# A run without Fisher points has the metric off, or has not reached its first measurement.
NO_FISHER = "no Fisher data: metrics.fisher is off, or has not measured yet"
SETTLED = ("finished", "failed", "cancelled", "interrupted")


def no_fisher_text(doc: dict[str, Any] | None, spec: dict[str, Any] | None) -> str:
    """Why a run's Fisher charts are empty: the metric was off, the run ended before its
    first measurement, or (while it trains) none has been taken yet."""
    metrics = (spec or {}).get("metrics")
    fisher_on = any(isinstance(m, dict) and m.get("id") == "metrics.fisher" for m in metrics or [])
    if metrics is not None and not fisher_on:
        return "Fisher was off for this run (metrics.fisher is not among its metrics)"
    if (doc or {}).get("status") in SETTLED:
        return "this run recorded no Fisher trace"
    return NO_FISHER


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


class Recorder:
    """A plotext figure that also records every call made on it, so that a chart drawn in the
    terminal can be drawn again with matplotlib, and its data written as CSV (see
    :mod:`critui.tui.widgets.save`). Calls other than drawing ones (size, theme) pass through."""

    def __init__(self, plt: Plot | None):
        self._plt = plt
        self.calls: list[dict[str, Any]] = []

    def __getattr__(self, name: str):
        target = getattr(self._plt, name) if self._plt is not None else (lambda *a, **k: None)

        def call(*args, **kwargs):
            if name == "clear_data":
                self.calls = [c for c in self.calls if c["name"] not in ("plot", "scatter", "vline", "hline")]
            else:
                self.calls.append({"name": name, "args": args, "kwargs": kwargs})
            return target(*args, **kwargs)

        return call


class Canvas:
    """One build of a chart: a fresh plotext figure, its width, the points plotted on it and
    the legend's (label, colour) entries."""

    def __init__(self, plt: Plot | None, width: int, title: str):
        self.plt = Recorder(plt)
        self.width = width
        self.title = title
        self.points = 0
        self.legend: list[tuple[str, int]] = []
        self.xrange: tuple[float, float] | None = None  # of the series drawn
        self.windows: list[tuple[tuple[int, int], int]] = []
        self.epochs = False  # the x axis is epochs: integer ticks, clipped to the data
        self.for_file = plt is None or width >= 10**6  # recorded for saving, not for the terminal

    def line(self, xs, ys, *, label: str | None = None, color: int = SERIES_COLOURS[0],
             meta: dict[str, Any] | None = None) -> None:
        """Plot one series, downsampled to the chart width (one point per column is all a line
        shows). A label goes into the legend under the chart: plotext's own legend sits in
        the top-left corner, over the early epochs where the Fisher trace peaks. ``meta``
        (run, deficit, window, seed) goes with the series into a saved CSV."""
        full_xs, full_ys = list(xs), list(ys)
        xs, ys = downsample(xs, ys, self.width)
        if label is not None:
            self.legend.append((label, color))
        if xs:
            self.plt.plot(xs, ys, marker="hd", color=color)  # half blocks: 3x faster to build than braille
            # the recording keeps the whole series, for a saved figure and its CSV
            self.plt.calls[-1].update(xs=full_xs, ys=full_ys, label=label, meta=meta or {})
            self.points += len(xs)
            lo, hi = min(full_xs), max(full_xs)
            self.xrange = (lo, hi) if self.xrange is None else (min(self.xrange[0], lo), max(self.xrange[1], hi))

    def window(self, window: Sequence[int] | None, color: int = WINDOW_COLOUR) -> None:
        """Mark a deficit window [start, end) with two vertical lines in ``color``; drawn by
        :meth:`finish`, inside the x range of the data (a window past the data does not
        stretch the axis)."""
        if window and len(window) == 2:
            self.windows.append(((int(window[0]), int(window[1])), color))

    def epoch_axis(self) -> None:
        """The x axis is epochs: whole-number ticks, labelled "epoch"."""
        self.epochs = True
        self.plt.xlabel("epoch")

    def log_y(self, label: str) -> None:
        """A log y axis, said in its label."""
        self.plt.yscale("log")
        self.plt.ylabel(f"{label} (log scale)")

    def finish(self) -> None:
        """Windows and ticks, once every series is drawn and the data's x range is known."""
        if self.xrange is None:
            return
        lo, hi = self.xrange
        drawn = set()
        for (start, end), colour in self.windows:
            # for a saved figure, which shades the window (plotext has only lines)
            self.plt.calls.append({"name": "window", "args": (max(start, lo), min(end, hi), colour), "kwargs": {}})
            for x in (start, end):
                if lo <= x <= hi and (x, colour) not in drawn:
                    drawn.add((x, colour))
                    self.plt.vline(x, colour)
        if self.epochs:
            most = 12 if self.for_file else max(self.width // 8, 2)
            ticks = integer_ticks(lo, hi, most)
            if hi > lo:
                self.plt.xlim(lo, hi)
            self.plt.xticks(ticks, [str(t) for t in ticks])


def integer_ticks(lo: float, hi: float, most: int) -> list[int]:
    """At most ``most`` whole-number ticks from ``lo`` to ``hi`` on a 1-2-5 step: epochs are
    counted, never 1.2 or 2.5."""
    lo_i, hi_i = math.ceil(lo), math.floor(hi)
    if hi_i < lo_i:
        return [round(lo)]
    step, scale = 1, 1
    while (hi_i - lo_i) // step + 1 > max(most, 2):
        for factor in (1, 2, 5, 10):
            step = factor * scale
            if (hi_i - lo_i) // step + 1 <= max(most, 2):
                break
        scale *= 10
    first = math.ceil(lo_i / step) * step
    return list(range(first, hi_i + 1, step)) or [lo_i]


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
        self.meta: dict[str, Any] = {}  # what a saved copy is named after (see save.py)

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
        canvas.height = height  # rows of the terminal chart (the sweep overlay traces at this size)
        if draw is not None:
            try:
                draw(canvas)
                canvas.finish()
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

    def figure(self) -> Canvas:
        """The drawing on screen, recorded (every series whole, not downsampled), for saving."""
        with _PLOTEXT:
            canvas = Canvas(Plot(), 10**9, self.title)
            canvas.plt.title(self.title)
            if self._draw is not None:
                try:
                    self._draw(canvas)
                    canvas.finish()
                except Exception as exc:  # noqa: BLE001 - as on screen: a chart never takes the app down
                    canvas = Canvas(Plot(), 10**9, self.title)
                    canvas.plt.title(f"cannot draw ({type(exc).__name__}): {self.title}")
            return canvas

    def build(self) -> Text:
        """Build the current drawing at the current size, here and now (timed by the benchmark)."""
        text, self.points = self.build_text(
            self.size.width,
            self.size.height,
            self._get_plotext_theme_name(self.app.theme),
            self._draw,
        )
        return text


def mark_window(c: Canvas, window: Sequence[int] | None, color: int = WINDOW_COLOUR) -> None:
    """The deficit window [start, end) as two vertical lines: onset and removal."""
    c.window(window, color)


def accuracy_draw(
    runs: list[tuple[str, list[dict[str, Any]], Any]],
    key: str = "test_acc",
    ylabel: str = "test acc",
    legend: bool = True,
    metas: Sequence[dict[str, Any]] | None = None,
) -> Draw:
    """Test accuracy per epoch of several runs, each with its deficit window marked in its
    own colour (one run: in red); a legend names them unless there is one run or ``legend``
    is off. ``metas`` (one per run) go into a saved CSV. A regression's runs (a ``score``, such
    as a test MSE, in place of accuracy) draw that score, named with its direction."""
    regression = key == "test_acc" and any(rows and "score" in rows[-1] for _, rows, _ in runs)
    if regression:
        key = "score"
        ylabel = score_label(next(rows for _, rows, _ in runs if rows and "score" in rows[-1]))

    def draw(c: Canvas) -> None:
        for i, (label, rows, window) in enumerate(runs):
            colour = SERIES_COLOURS[i % len(SERIES_COLOURS)]
            xs, ys = series(rows, key)
            meta = metas[i] if metas and i < len(metas) else {}
            c.line(xs, ys, label=label if legend and len(runs) > 1 else None, color=colour,
                   meta={"series": label, **meta})
            mark_window(c, window, colour if len(runs) > 1 else WINDOW_COLOUR)
        c.epoch_axis()
        c.plt.ylabel(ylabel)

    return draw


def curves_draw(rows: list[dict[str, Any]], keys: Sequence[str], window, ylabel: str,
                meta: dict[str, Any] | None = None) -> Draw:
    """Several metrics of one run (e.g. train and test loss)."""

    def draw(c: Canvas) -> None:
        for i, key in enumerate(keys):
            xs, ys = series(rows, key)
            c.line(xs, ys, label=key, color=SERIES_COLOURS[i % len(SERIES_COLOURS)],
                   meta={"series": key, **(meta or {})})
        mark_window(c, window)
        c.epoch_axis()
        c.plt.ylabel(ylabel)

    return draw


def fisher_draw(
    rows: list[dict[str, Any]], layers: list[str], window, normalised: bool = False,
    empty: str = NO_FISHER, meta: dict[str, Any] | None = None,
) -> Draw:
    """Per-layer Fisher traces; raw on a log scale, or as a share of the sum over layers.
    ``empty`` is the title when there is nothing to draw (see :func:`no_fisher_text`)."""

    def draw(c: Canvas) -> None:
        data = normalised_fisher(rows, layers) if normalised else rows
        positive = True
        for i, layer in enumerate(layers):
            xs, ys = series(data, f"fisher.{layer}")
            positive = positive and all(y > 0 for y in ys)
            c.line(xs, ys, label=layer, color=SERIES_COLOURS[i % len(SERIES_COLOURS)],
                   meta={"series": layer, **(meta or {})})
        if not c.points:
            c.plt.title(fitted(empty, c.width))
            return
        if not normalised and positive:
            c.log_y("Fisher trace")
        elif normalised:
            c.plt.ylabel("share")
        mark_window(c, window)
        c.epoch_axis()

    return draw


def metric_draw(rows: list[dict[str, Any]], keys: Sequence[str], window, ylabel: str,
                meta: dict[str, Any] | None = None, log: bool = False,
                references: dict[str, tuple[list[float], list[float]]] | None = None) -> Draw:
    """Any recorded metric's keys (a plugin metric's layers) against the epoch; an epoch where
    a value is null (the metric returned NaN) has no point. ``log``: a log scale when every
    value is positive. ``references`` (:func:`critui.events.reference_series`): a plugin's
    predicted curve for a key, overlaid in the reference colour, one legend entry for all."""

    def draw(c: Canvas) -> None:
        positive = True
        for i, key in enumerate(keys):
            xs, ys = series(rows, key)
            positive = positive and all(y > 0 for y in ys)
            c.line(xs, ys, label=key.split(".", 1)[-1], color=SERIES_COLOURS[i % len(SERIES_COLOURS)],
                   meta={"series": key, **(meta or {})})
        drawn = [key for key in keys if key in (references or {})]
        for j, key in enumerate(drawn):
            xs, ys = references[key]  # type: ignore[index]
            positive = positive and all(y > 0 for y in ys)
            c.line(xs, ys, label="reference" if j == 0 else None, color=REFERENCE_COLOUR,
                   meta={"series": f"{key} (reference)", **(meta or {})})
        if not c.points:
            c.plt.title(fitted(f"{c.title}: no values recorded" if keys else f"{c.title}: no key chosen", c.width))
            return
        if log and positive:
            c.log_y(ylabel)
        else:
            c.plt.ylabel(ylabel)
        mark_window(c, window)
        c.epoch_axis()

    return draw


def fisher_totals_draw(runs: list[tuple[str, list[dict[str, Any]], Any]],
                       metas: Sequence[dict[str, Any]] | None = None,
                       empty: str = NO_FISHER) -> Draw:
    """The total Fisher trace (sum over layers) of several runs, overlaid on a log scale,
    each run's deficit window in its colour; the x range is the data's.

    Per-layer curves of several runs would be runs × layers lines in one small chart; the
    total keeps one line per run, and its peak and decay are what the paper compares.
    """

    def draw(c: Canvas) -> None:
        positive = True
        for i, (label, rows, window) in enumerate(runs):
            colour = SERIES_COLOURS[i % len(SERIES_COLOURS)]
            xs, ys = series(rows, "fisher.total")
            positive = positive and all(y > 0 for y in ys)
            meta = metas[i] if metas and i < len(metas) else {}
            c.line(xs, ys, label=label, color=colour, meta={"series": label, **meta})
            if xs:
                mark_window(c, window, colour if len(runs) > 1 else WINDOW_COLOUR)
        if not c.points:
            c.plt.title(fitted(empty, c.width))
            return
        if positive:
            c.log_y("Fisher trace")
        c.epoch_axis()

    return draw


# Low to high: a perceptually ordered ramp (viridis' endpoints and midpoints).
RAMP = ("#440154", "#46327e", "#365c8d", "#277f8e", "#1fa187", "#4ac16d", "#a0da39", "#fde725")


class FisherHeatmap(Widget):
    """Layers × epochs, each cell the layer's share of that epoch's Fisher trace; the deficit
    window is marked by a red bar over its epochs. Columns are epochs, evenly spaced: an
    epoch without a measurement is a gap, so the window sits at its true epochs. More epochs
    than columns share a column (the mean of the measurements in it)."""

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
        self.empty = NO_FISHER
        self.meta: dict[str, Any] = {}

    def show(self, key: Any, rows: list[dict[str, Any]], layers: list[str], window,
             empty: str = NO_FISHER) -> None:
        if key == self.data_key:
            return
        self.data_key, self.rows, self.layer_names, self.window = key, rows, layers, window
        self.empty = empty
        self.refresh(layout=True)

    def get_content_height(self, container, viewport, width: int) -> int:
        return max(len(self.layer_names), 1) + 3

    def render(self) -> Text:
        try:
            return self.grid()
        except Exception as exc:  # noqa: BLE001 - never take the app down over a cell
            return Text(f"cannot draw the heatmap ({type(exc).__name__}: {exc})", style="red")

    def epochs(self) -> tuple[int, int] | None:
        """The first and last epoch of the run's rows (the heatmap's x range)."""
        epochs = [r["epoch"] for r in self.rows if isinstance(r.get("epoch"), int)]
        return (min(epochs), max(epochs)) if epochs else None

    def columns(self, cells: int) -> tuple[list[tuple[int, int]], int]:
        """The epoch range [first, end) of each column, and the characters per column."""
        first, last = self.epochs()
        n_epochs = last - first + 1
        if n_epochs <= cells:
            cw = max(1, min(cells // n_epochs, 6))  # a few characters per epoch when they are few
            return [(e, e + 1) for e in range(first, last + 1)], cw
        bounds = [first + i * n_epochs // cells for i in range(cells + 1)]
        return [(bounds[i], bounds[i + 1]) for i in range(cells) if bounds[i + 1] > bounds[i]], 1

    def figure(self) -> Canvas:
        """The heatmap recorded for saving: one ``heatmap`` call with every epoch of the run
        (None where no measurement), its layers and window (see save.py)."""
        canvas = Canvas(None, 10**9, "Fisher heatmap")
        span = self.epochs()
        by_epoch = self.shares()
        epochs = list(range(span[0], span[1] + 1)) if span and by_epoch else []
        cells = [[by_epoch[e].get(f"fisher.{layer}") if e in by_epoch else None for e in epochs]
                 for layer in self.layer_names]
        canvas.plt.calls.append({"name": "heatmap", "args": (), "kwargs": {}, "epochs": epochs,
                                 "layers": list(self.layer_names), "cells": cells,
                                 "window": tuple(self.window) if self.window else None, "meta": self.meta})
        canvas.plt.title("share of each epoch's Fisher trace per layer")
        canvas.plt.xlabel("epoch")
        return canvas

    def shares(self) -> dict[int, dict[str, Any]]:
        """Each measured epoch's shares of its Fisher trace, by epoch."""
        return {r["epoch"]: r for r in normalised_fisher(self.rows, self.layer_names)}

    def grid(self) -> Text:
        """The heatmap as rich text: a deficit bar, one row per layer, an epoch axis, a legend."""
        by_epoch = self.shares()
        if not by_epoch:
            return Text(self.empty[:1].upper() + self.empty[1:] + ".", style="dim")
        label_w = min(max(len(name) for name in self.layer_names), 16) + 1
        cells = max(self.size.width - label_w - 1, 1)
        columns, cw = self.columns(cells)
        text = Text()
        text.append(" " * label_w)
        for lo, hi in columns:
            active = self.window and len(self.window) == 2 and lo < self.window[1] and hi > self.window[0]
            text.append(("▄" if active else " ") * cw, style=rich_colour(WINDOW_COLOUR) if active else "")
        text.append("  deficit\n" if self.window else "\n", style=rich_colour(WINDOW_COLOUR))
        for layer in self.layer_names:
            text.append(layer[: label_w - 1].ljust(label_w))
            for lo, hi in columns:
                values = [by_epoch[e].get(f"fisher.{layer}") for e in range(lo, hi) if e in by_epoch]
                values = [v for v in values if isinstance(v, (int, float))]
                if not values:
                    text.append(" " * cw)  # no measurement in these epochs: a gap
                    continue
                share = sum(values) / len(values)
                text.append("█" * cw, style=RAMP[min(int(share * len(RAMP)), len(RAMP) - 1)])
            text.append("\n")
        text.append(" " * label_w + self.axis(columns, cw) + "\n", style="dim")
        text.append(" " * label_w + "share of the epoch's trace: ", style="dim")
        for colour in RAMP:
            text.append("█", style=colour)
        text.append(" 0 → 1; a gap: no measurement", style="dim")
        return text

    @staticmethod
    def axis(columns: list[tuple[int, int]], cw: int) -> str:
        """Whole-epoch labels under the columns they start, as many as fit apart."""
        width = len(columns) * cw
        line = [" "] * (width + 8)
        first, last = columns[0][0], columns[-1][1] - 1
        ticks = integer_ticks(first, last, max(width // 6, 2))
        if last not in ticks and (not ticks or last - ticks[-1] > 0):
            ticks.append(last)
        placed: list[tuple[int, str]] = []
        for tick in ticks:
            col = next((i for i, (lo, hi) in enumerate(columns) if lo <= tick < hi), None)
            if col is None:
                continue
            label = str(tick)
            pos = col * cw
            if tick == last:
                pos = max(min(pos, width - len(label)), 0)
                while placed and placed[-1][0] + len(placed[-1][1]) >= pos:
                    placed.pop()  # the last epoch's label wins over a tick crowding it
            elif placed and placed[-1][0] + len(placed[-1][1]) >= pos:
                continue
            placed.append((pos, label))
        for pos, label in placed:
            line[pos : pos + len(label)] = label
        return "".join(line).rstrip() + "  epoch"
