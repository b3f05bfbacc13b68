"""The runs table of the dashboard: one row per run, filterable and sortable."""

from __future__ import annotations

from typing import Any

from rich.cells import cell_len
from rich.markup import escape
from rich.text import Text
from textual.binding import Binding
from textual.widgets import DataTable

from critui.config import deficit_label, short_id
from critui.events import final_accuracy

STATUS_STYLES = {
    "finished": "green",
    "running": "cyan",
    "failed": "red",
    "interrupted": "yellow",
    "cancelled": "yellow",
    "queued": "blue",
}
# What matters most comes first, so that a narrow terminal still shows the accuracies.
COLUMNS = (
    ("id", "id"),
    ("status", "status"),
    ("deficit", "deficit"),
    ("progress", "epochs"),
    ("acc", "acc"),
    ("final", "final"),
    ("dataset", "dataset"),
    ("model", "model"),
    ("parent", "fork of"),
)
ID_WIDTH = 22  # a full id (20) and room for the mark
# Below this many columns of the table, ids lose their date (20261129-015523-573e shows as
# 015523-573e, a suffix every command accepts), so the accuracies stay on screen.
SHOWN_FIRST = 6  # id, status, deficit, epochs, acc, final
# What `s` cycles through: (name, key function over a row's cells). "created" is the index order.
SORTS = ("created", "status", "deficit", "acc", "final", "id")


def deficit_text(doc: dict[str, Any]) -> str:
    return deficit_label(doc.get("deficit"), doc.get("window"))


def fmt_acc(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else "-"


def row_cells(doc: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The table's cells for one run; progress and current accuracy come from its events."""
    done = max(len(rows), doc.get("epochs_done") or 0)
    current = rows[-1].get("test_acc") if rows else doc.get("last_acc")
    # A settled run's final accuracy over the rows shown: with the dashboard's joined rows, a
    # fork's inherited epochs count even where its index entry was settled unwatched.
    final = final_accuracy(rows) if rows and doc.get("final_acc") is not None else doc.get("final_acc")
    parent = f"{doc['parent']}@{doc.get('fork_epoch')}" if doc.get("parent") else ""
    return {
        "id": doc["id"],
        "status": doc.get("status", "?"),
        "dataset": short_id(doc.get("dataset")),
        "model": short_id(doc.get("model")),
        "deficit": deficit_text(doc),
        "progress": f"{done}/{doc.get('epochs', '?')}",
        "acc": current,
        "final": final,
        "parent": parent,
        "created": doc.get("created") or 0,
    }


def compact_id(run_id: str) -> str:
    """``20261129-015523-573e`` -> ``015523-573e``: the time and suffix, still a unique suffix."""
    date, sep, rest = run_id.partition("-")
    return rest if sep and len(date) == 8 and date.isdigit() and rest else run_id


def matches(cells: dict[str, Any], query: str) -> bool:
    """Every word of the query appears in some cell (case-insensitive)."""
    haystack = " ".join(str(v) for k, v in cells.items() if k != "created").lower()
    return all(word in haystack for word in query.lower().split())


def sort_value(cells: dict[str, Any], sort: str) -> Any:
    value = cells[sort]
    if sort in ("acc", "final"):
        return -value if isinstance(value, (int, float)) else 1.0  # best first, missing last
    return value


class RunsTable(DataTable):
    """Runs, one row each, keyed by run id. Marked runs (space) are charted together."""

    BINDINGS = [Binding("enter", "select_cursor", "Detail", tooltip="Open the highlighted run")]

    DEFAULT_CSS = """
    RunsTable {
        height: 1fr;
    }
    """

    def __init__(self, **kwargs: Any):
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self.marked: set[str] = set()
        self.shown: list[str] = []
        self.compact = False  # ids without their date: see SHOWN_FIRST
        self._shown_with: tuple | None = None  # show_runs' arguments, to redraw on a resize

    def on_mount(self) -> None:
        for key, label in COLUMNS:
            self.add_column(label, key=key, width=ID_WIDTH if key == "id" else None)  # room for the mark

    def on_resize(self) -> None:
        if self._shown_with is not None:
            self.show_runs(*self._shown_with)

    def id_text(self, run_id: str) -> str:
        return escape(("● " if run_id in self.marked else "") + (compact_id(run_id) if self.compact else run_id))

    @property
    def current_id(self) -> str | None:
        if not self.shown or self.cursor_row < 0 or self.cursor_row >= len(self.shown):
            return None
        return self.shown[self.cursor_row]

    def show_runs(
        self,
        docs: list[dict[str, Any]],
        histories: dict[str, Any],
        query: str = "",
        sort: str = "created",
    ) -> None:
        """Rebuild the rows, keeping the cursor on the same run."""
        self._shown_with = (docs, histories, query, sort)
        current = self.current_id
        peek = getattr(histories, "peek", histories.get)  # only histories already read: never all
        cells = [row_cells(d, getattr(peek(d["id"]), "rows", [])) for d in docs]
        cells = [c for c in cells if matches(c, query)]
        cells.sort(key=lambda c: (sort_value(c, sort), c["created"]))
        self.clear()
        self.shown = [c["id"] for c in cells]
        # A str cell is read as markup by the DataTable: what an index holds ("[link=...]" in a
        # plugin id) is escaped, so it is shown as written, never obeyed.
        rows = [
            [
                c["id"],
                Text(c["status"], style=STATUS_STYLES.get(c["status"], "")),
                escape(c["deficit"]),
                Text(c["progress"], justify="right"),
                Text(fmt_acc(c["acc"]), justify="right"),
                Text(fmt_acc(c["final"]), justify="right"),
                escape(c["dataset"]),
                escape(c["model"]),
                escape(c["parent"]),
            ]
            for c in cells
        ]
        # Explicit widths, set before the rows arrive: with automatic ones, a real terminal
        # (not Pilot) painted the first rows at the headers' widths ("finish", "blur [0")
        # and kept that paint until the cursor moved over them (Textual 8.2).
        widths = [max([cell_len(column.label.plain), *(cell_len(str(row[i])) for row in rows)])
                  for i, column in enumerate(self.ordered_columns)]
        widths[0] = ID_WIDTH
        needed = sum(w + 2 * self.cell_padding for w in widths[:SHOWN_FIRST]) + 2  # and the scrollbar
        self.compact = 0 < self.size.width < needed
        if self.compact:
            widths[0] = ID_WIDTH - (len(cells[0]["id"]) - len(compact_id(cells[0]["id"]))) if cells else ID_WIDTH
        for i, column in enumerate(self.ordered_columns):
            column.auto_width = False
            column.width = widths[i]
        for row in rows:
            row[0] = self.id_text(row[0])
        for c, row in zip(cells, rows, strict=True):
            self.add_row(*row, key=c["id"])
        if current in self.shown:
            self.move_cursor(row=self.shown.index(current), animate=False)

    def toggle_mark(self) -> None:
        run_id = self.current_id
        if run_id is None:
            return
        self.marked ^= {run_id}
        self.update_cell(run_id, "id", self.id_text(run_id))
