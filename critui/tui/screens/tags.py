"""Edit a run's tags and note (the dashboard's `t`), as `critui tag` and `critui note` do."""

from __future__ import annotations

from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Static

from critui.errors import CritUIError
from critui.runs.store import check_note, check_tag, entry_note, entry_tags


class TagsScreen(ModalScreen[bool]):
    """Tags (space-separated) and a one-line note for one run; enter saves, escape cancels."""

    DEFAULT_CSS = """
    TagsScreen {
        align: center middle;
    }
    TagsScreen > Vertical {
        width: 72;
        max-width: 100%;
        height: auto;
        max-height: 100%;
        border: thick $primary;
        background: $surface;
        padding: 1 2;
    }
    TagsScreen Label, TagsScreen #tags-error, TagsScreen #tags-hint {
        width: 100%;
        height: auto;
    }
    TagsScreen #tags-error {
        color: $error;
    }
    """

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, doc: dict[str, Any]):
        super().__init__()
        self.run_id = doc["id"]
        self.tags = entry_tags(doc)
        self.note = entry_note(doc)

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(f"Tags and note of {self.run_id}", markup=False)
            yield Label("tags (space-separated; filter the table with tag:NAME)")
            yield Input(" ".join(self.tags), id="tags-input")
            yield Label("note (one line)")
            yield Input(self.note, id="note-input")
            yield Static("", id="tags-error", markup=False)
            yield Static("enter: save   escape: cancel   tab: next field", id="tags-hint")

    def on_mount(self) -> None:
        for field in self.query(Input).results(Input):  # typing adds to what is there
            field.cursor_position = len(field.value)
        self.query_one("#tags-input", Input).focus()

    @on(Input.Submitted)
    def _save(self) -> None:
        tags = self.query_one("#tags-input", Input).value.split()
        note = self.query_one("#note-input", Input).value
        try:  # checked here, so the mistake is shown while the dialog is still open
            for tag in tags:
                check_tag(tag)
            check_note(note)
        except CritUIError as exc:
            self.query_one("#tags-error", Static).update(str(exc))
            return
        self.write(tags, note)

    @work(thread=True, exit_on_error=False)
    def write(self, tags: list[str], note: str) -> None:
        """Write them as `critui tag`/`critui note` would (the run's tags.json, then the index)."""
        store = self.app.store
        try:
            remove = [t for t in self.tags if t not in tags]
            store.annotate(self.run_id, add=tags, remove=remove, note=note)
        except (CritUIError, OSError) as exc:
            self.app.call_from_thread(self.query_one("#tags-error", Static).update, str(exc))
            return
        self.app.call_from_thread(self._saved)

    def _saved(self) -> None:
        self.app.poll_runs()
        self.dismiss(True)

    def action_cancel(self) -> None:
        self.dismiss(False)
