"""The runs table of the dashboard: one row per run, filterable and sortable, at any count.

A virtual table: it keeps every shown run's cells as plain strings and draws only the lines
on screen (Textual's line API), so 10,000 runs cost a sort and a list, never 10,000 widgets'
worth of rows. The id column stays put while the others scroll sideways (left/right), so no
column is out of reach at 80 columns.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from rich.cells import cell_len, set_cell_size
from rich.segment import Segment
from rich.style import Style
from textual.binding import Binding
from textual.events import Click
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from critui.config import deficit_label, short_id
from critui.events import final_accuracy, score_of
from critui.runs.store import entry_tags

STATUS_STYLES = {
    "finished": "green",
    "running": "cyan",
    "failed": "red",
    "interrupted": "yellow",
    "cancelled": "yellow",
    "queued": "blue",
}


class Column(NamedTuple):
    key: str
    label: str
    right: bool = False  # numbers are right-aligned
    limit: int | None = None  # a longer cell is cut with "…"


# What matters most comes first, so that a narrow terminal still shows the accuracies; the
# rest is one sideways scroll away.
COLUMNS = (
    Column("id", "id"),
    Column("status", "status"),
    Column("deficit", "deficit"),
    Column("progress", "epochs", right=True),
    Column("acc", "acc", right=True),
    Column("final", "final", right=True),
    Column("name", "name", limit=28),
    Column("seed", "seed", right=True),
    Column("sweep", "sweep"),
    Column("tags", "tags", limit=24),
    Column("dataset", "dataset"),
    Column("model", "model"),
    Column("parent", "fork of"),
)
KEYS = tuple(c.key for c in COLUMNS)
ID_WIDTH = 22  # a full id (20) and room for the mark
PADDING = 1  # on each side of a cell
# Below this many columns of the table, ids lose their date (20261129-015523-573e shows as
# 015523-573e, a suffix every command accepts), so the accuracies stay on screen.
SHOWN_FIRST = 6  # id, status, deficit, epochs, acc, final
# What `s` cycles through. "newest" is creation time, newest first (where a new run appears).
SORTS = ("newest", "status", "deficit", "acc", "final", "name", "id", "oldest")


def deficit_text(doc: dict[str, Any]) -> str:
    return deficit_label(doc.get("deficit"), doc.get("window"))


def fmt_acc(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else "-"


def row_cells(doc: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The table's cells for one run; progress and current accuracy come from its events."""
    status = doc.get("status", "?")
    done = max(len(rows), doc.get("epochs_done") or 0)
    current = score_of(rows[-1]) if rows else doc.get("last_acc")
    final = None
    if status == "finished":  # a cancelled 14/20 run has no "final" accuracy, only its last one
        # Over the rows shown: with the dashboard's joined rows, a fork's inherited epochs
        # count even where its index entry was settled unwatched.
        final = final_accuracy(rows) if rows and doc.get("final_acc") is not None else doc.get("final_acc")
    parent = f"{doc['parent']}@{doc.get('fork_epoch')}" if doc.get("parent") else ""
    seed = doc.get("seed")
    return {
        "id": doc["id"],
        "status": status,
        "deficit": deficit_text(doc),
        "progress": f"{done}/{doc.get('epochs', '?')}",
        "acc": current,
        "final": final,
        "name": doc.get("name") if isinstance(doc.get("name"), str) else "",
        "seed": str(seed) if isinstance(seed, int) else "",
        "sweep": doc.get("sweep") if isinstance(doc.get("sweep"), str) else "",
        "tags": " ".join(entry_tags(doc)),
        "dataset": short_id(doc.get("dataset")),
        "model": short_id(doc.get("model")),
        "parent": parent,
        "created": doc.get("created") or 0,
    }


def compact_id(run_id: str) -> str:
    """``20261129-015523-573e`` -> ``015523-573e``: the time and suffix, still a unique suffix."""
    date, sep, rest = run_id.partition("-")
    return rest if sep and len(date) == 8 and date.isdigit() and rest else run_id


FIELD_WORDS = {"name": "name", "sweep": "sweep", "status": "status", "deficit": "deficit", "id": "id",
               "dataset": "dataset", "model": "model", "seed": "seed"}


def matches(cells: dict[str, Any], query: str) -> bool:
    """Every word of the query matches: ``tag:NAME`` a tag exactly, ``name:``, ``sweep:`` (and
    the other ``column:`` words) that column's text, any other word some cell's text."""
    haystack = None
    for word in query.lower().split():
        field, sep, value = word.partition(":")
        if sep and field == "tag":
            if value not in cells["tags"].lower().split():
                return False
        elif sep and field in FIELD_WORDS:
            if value not in str(cells[FIELD_WORDS[field]]).lower():
                return False
        else:
            if haystack is None:
                haystack = " ".join(str(v) for k, v in cells.items() if k != "created").lower()
            if word not in haystack:
                return False
    return True


def sort_key(sort: str):
    """A key function over rows' cells for ``sort`` (ties: newest first)."""
    if sort == "newest":
        return lambda c: -c["created"]
    if sort == "oldest":
        return lambda c: c["created"]
    if sort in ("acc", "final"):  # best first, missing last
        return lambda c: (-c[sort] if isinstance(c[sort], (int, float)) else 1.0, -c["created"])
    return lambda c: (str(c[sort]).lower(), -c["created"])


def shown_text(value: Any, column: Column) -> str:
    """A cell as the table writes it: accuracies to 3 places, unprintable characters as "?"."""
    if column.key in ("acc", "final"):
        return fmt_acc(value)
    text = value if type(value) is str else str(value)
    if not text.isprintable():  # a name from run.json is drawn, never obeyed (no escapes)
        text = "".join(ch if ch.isprintable() else "?" for ch in text)
    if column.limit and len(text) > column.limit // 2 and cell_len(text) > column.limit:
        text = set_cell_size(text, column.limit - 1) + "…"
    return text


class RunsTable(ScrollView, can_focus=True):
    """Runs, one row each, keyed by run id. Marked runs (space) are charted together."""

    BINDINGS = [
        Binding("enter", "select_cursor", "Detail", tooltip="Open the highlighted run"),
        Binding("up", "cursor(-1)", "Up", show=False),
        Binding("down", "cursor(1)", "Down", show=False),
        Binding("pageup", "page(-1)", show=False),
        Binding("pagedown", "page(1)", show=False),
        Binding("home", "cursor_to(0)", show=False),
        Binding("end", "cursor_to(-1)", show=False),
        Binding("left", "sideways(-1)", "Scroll left", show=False),
        Binding("right", "sideways(1)", "Scroll right", show=False),
    ]
    COMPONENT_CLASSES = {"runs-table--header", "runs-table--cursor", "runs-table--even-row"}
    DEFAULT_CSS = """
    RunsTable {
        height: 1fr;
        background: $surface;
        scrollbar-gutter: stable;
    }
    RunsTable > .runs-table--header {
        text-style: bold;
        background: $panel;
        color: $foreground;
    }
    RunsTable > .runs-table--cursor {
        background: $block-cursor-blurred-background;
    }
    RunsTable:focus > .runs-table--cursor {
        background: $block-cursor-background;
        color: $block-cursor-foreground;
        text-style: $block-cursor-text-style;
    }
    RunsTable > .runs-table--even-row {
        background: $surface-lighten-1 20%;
    }
    """

    class RowHighlighted(Message):
        """The cursor moved to another run (or the runs under it changed)."""

        def __init__(self, table: RunsTable, run_id: str | None) -> None:
            super().__init__()
            self.table, self.run_id = table, run_id

        @property
        def control(self) -> RunsTable:
            return self.table

    class RowSelected(Message):
        """Enter (or a second click) on a run."""

        def __init__(self, table: RunsTable, run_id: str) -> None:
            super().__init__()
            self.table, self.run_id = table, run_id

        @property
        def control(self) -> RunsTable:
            return self.table

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.marked: set[str] = set()
        self.shown: list[str] = []
        self.compact = False  # ids without their date: see SHOWN_FIRST
        self.cursor_row = 0
        self.widths = [cell_len(c.label) for c in COLUMNS]
        self._rows: list[list[str]] = []  # each shown run's cells, as written, in COLUMNS order
        self._cache: dict[str, tuple] = {}  # run id -> (entry, history version, cells, texts, widths)
        self._index: dict[str, int] = {}  # run id -> its row
        self._shown_with: tuple | None = None  # show_runs' arguments, to redraw on a resize
        self._highlighted: str | None = None

    # -- what the table holds ------------------------------------------------------------------

    @property
    def row_count(self) -> int:
        return len(self.shown)

    @property
    def current_id(self) -> str | None:
        if not self.shown or not 0 <= self.cursor_row < len(self.shown):
            return None
        return self.shown[self.cursor_row]

    def get_row_at(self, row: int) -> list[str]:
        """The cells of the ``row``-th shown run, as written (the id with its mark)."""
        cells = list(self._rows[row])
        cells[0] = self.id_text(cells[0])
        return cells

    def get_row(self, run_id: str) -> list[str]:
        """A shown run's cells, as written, in :data:`COLUMNS` order."""
        return self.get_row_at(self._index[run_id])

    def cell(self, run_id: str, key: str) -> str:
        """One cell of a shown run, by column key (``status``, ``final``, ``tags``...)."""
        return self.get_row(run_id)[KEYS.index(key)]

    def id_text(self, run_id: str) -> str:
        return ("● " if run_id in self.marked else "") + (compact_id(run_id) if self.compact else run_id)

    def show_runs(
        self,
        docs: list[dict[str, Any]],
        histories: dict[str, Any],
        query: str = "",
        sort: str = "newest",
        select: str | None = None,
    ) -> None:
        """Fill the rows, keeping the cursor on the same run (or moving it to ``select``)."""
        self._shown_with = (docs, histories, query, sort)
        current = select or self.current_id
        peek = histories.peek if hasattr(histories, "peek") else histories.get  # peek: only those read
        cache, self._cache = self._cache, {}
        entries = []
        for doc in docs:
            history = peek(doc["id"])
            version = getattr(history, "version", None)
            entry = cache.get(doc["id"])
            # A run whose entry and history are as they were keeps its cells: a poll that
            # changes one run of 10,000 formats one row.
            if entry is None or entry[1] != version or (entry[0] is not doc and entry[0] != doc):
                cells = row_cells(doc, getattr(history, "rows", []))
                texts = [shown_text(cells[col.key], col) for col in COLUMNS]
                entry = (doc, version, cells, texts, [len(t) if t.isascii() else cell_len(t) for t in texts])
            self._cache[doc["id"]] = entry
            entries.append(entry)
        if query.strip():
            entries = [e for e in entries if matches(e[2], query)]
        by_cells = sort_key(sort)
        entries.sort(key=lambda e: by_cells(e[2]))
        self.shown = [e[2]["id"] for e in entries]
        self._index = {run_id: i for i, run_id in enumerate(self.shown)}
        self._rows = [e[3] for e in entries]
        widths = [cell_len(c.label) for c in COLUMNS]
        if entries:
            widths = [max(w, m) for w, m in zip(widths, map(max, zip(*(e[4] for e in entries), strict=True)), strict=True)]
        widths[0] = ID_WIDTH
        needed = sum(w + 2 * PADDING for w in widths[:SHOWN_FIRST]) + 2  # and the scrollbar
        self.compact = 0 < self.size.width < needed
        if self.compact and self._rows:
            widths[0] = ID_WIDTH - (len(self.shown[0]) - len(compact_id(self.shown[0])))
        self.widths = widths
        self.virtual_size = Size(sum(w + 2 * PADDING for w in widths), len(self._rows) + 1)
        row = self._index.get(current, min(self.cursor_row, len(self.shown) - 1)) if current else 0
        self.move_cursor(row=max(row, 0), scroll=current == select or current is None)
        self.refresh()

    def toggle_mark(self) -> None:
        run_id = self.current_id
        if run_id is None:
            return
        self.marked ^= {run_id}
        self.refresh()

    # -- the cursor ----------------------------------------------------------------------------

    def move_cursor(self, row: int, animate: bool = False, scroll: bool = True) -> None:
        """Put the cursor on ``row`` (clamped), scroll it into view, say which run it is on."""
        self.cursor_row = max(0, min(row, len(self.shown) - 1)) if self.shown else 0
        if scroll:
            self.scroll_to_cursor()
        self.refresh()
        if self.current_id != self._highlighted:
            self._highlighted = self.current_id
            self.post_message(self.RowHighlighted(self, self.current_id))

    def scroll_to_cursor(self) -> None:
        visible = max(self.scrollable_content_region.height - 1, 1)  # less the header
        top = int(self.scroll_y)
        # At once, not after the next refresh: a deferred scroll could be overtaken by a poll's
        # refill and leave the cursor below the visible rows. Forced: rows that arrived since
        # the last layout have no scrollbar yet, and Textual drops a scroll without one (End
        # right after the runs first appeared left the cursor out of sight).
        if self.cursor_row < top:
            self.scroll_to(y=self.cursor_row, animate=False, immediate=True, force=True)
        elif self.cursor_row >= top + visible:
            self.scroll_to(y=self.cursor_row - visible + 1, animate=False, immediate=True, force=True)

    def action_cursor(self, step: int) -> None:
        self.move_cursor(self.cursor_row + step)

    def action_page(self, step: int) -> None:
        self.move_cursor(self.cursor_row + step * max(self.scrollable_content_region.height - 2, 1))

    def action_cursor_to(self, row: int) -> None:
        self.move_cursor(row if row >= 0 else len(self.shown) - 1)

    def action_sideways(self, step: int) -> None:
        """Scroll one column left or right (the id column stays)."""
        edges, x = [], 0
        for w in self.widths[1:]:
            edges.append(x)
            x += w + 2 * PADDING
        now = int(self.scroll_x)
        if step > 0:
            target = next((e for e in edges if e > now), now)
        else:
            target = max((e for e in edges if e < now), default=0)
        self.scroll_to(x=target, animate=False)

    def action_select_cursor(self) -> None:
        if self.current_id is not None:
            self.post_message(self.RowSelected(self, self.current_id))

    def on_click(self, event: Click) -> None:
        row = int(self.scroll_y) + event.y - 1
        if event.y == 0 or not 0 <= row < len(self.shown):
            return
        if row == self.cursor_row:
            self.action_select_cursor()
        else:
            self.move_cursor(row, scroll=False)

    def on_resize(self) -> None:
        if self._shown_with is not None:
            self.show_runs(*self._shown_with)

    # -- drawing: only the lines on screen -------------------------------------------------------

    def _cells_line(self, cells: list[str], style: Style, status_style: bool) -> tuple[Strip, Strip]:
        """The id cell and the rest of a line, each a strip of padded cells."""
        parts = []
        for i, (column, text, width) in enumerate(zip(COLUMNS, cells, self.widths, strict=True)):
            text = set_cell_size(text, width) if cell_len(text) > width else text
            pad = " " * (width - cell_len(text))
            body = pad + text if column.right else text + pad
            cell_style = style
            if status_style and column.key == "status" and text.strip() in STATUS_STYLES:
                cell_style = style + Style.parse(STATUS_STYLES[text.strip()])
            parts.append(Segment(f" {body} ", cell_style) if i else None)
            if i == 0:
                first = Strip([Segment(f" {body} ", style)], width + 2 * PADDING)
        rest = Strip([p for p in parts if p is not None])
        return first, rest

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        base = self.rich_style
        if y == 0:
            style = base + self.get_component_rich_style("runs-table--header")
            cells = [c.label for c in COLUMNS]
            status_style = False
        else:
            row = int(self.scroll_y) + y - 1
            if not 0 <= row < len(self._rows):
                return Strip.blank(width, base)
            style = base
            if row % 2:
                style += self.get_component_rich_style("runs-table--even-row")
            if row == self.cursor_row:
                style += self.get_component_rich_style("runs-table--cursor")
            cells = list(self._rows[row])
            cells[0] = self.id_text(cells[0])
            status_style = row != self.cursor_row or not self.has_focus
        first, rest = self._cells_line(cells, style, status_style)
        x = int(self.scroll_x)
        room = max(width - first.cell_length, 0)
        rest = rest.crop(x, x + room).extend_cell_length(room, style)
        return Strip.join([first, rest]).crop(0, width).simplify()
