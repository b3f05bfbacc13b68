"""A yes/no modal; dismisses with True only on an explicit yes.

The question wraps to the dialog's width, which shrinks with the terminal down to 60
columns; a question taller than the screen scrolls while the buttons stay in view.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Static


class ConfirmModal(ModalScreen[bool]):
    """Ask before something that cannot be undone."""

    DEFAULT_CSS = """
    ConfirmModal {
        align: center middle;
    }
    ConfirmModal > Vertical {
        width: 64;
        max-width: 100%;
        height: auto;
        max-height: 100%;
        border: thick $error;
        background: $surface;
        padding: 1 2;
    }
    ConfirmModal #question-box {
        height: auto;
        max-height: 100%;
    }
    ConfirmModal #question {
        width: 100%;
        height: auto;
    }
    /* Docked: a question taller than the screen scrolls above the buttons, never over them. */
    ConfirmModal Horizontal {
        dock: bottom;
        height: auto;
        align-horizontal: right;
        margin-top: 1;
    }
    ConfirmModal Button {
        margin-left: 2;
    }
    """

    BINDINGS = [Binding("y", "answer(True)", "Yes"), Binding("n,escape", "answer(False)", "No")]

    def __init__(self, question: str, yes: str = "Delete"):
        super().__init__()
        self.question = question
        self.yes = yes

    def compose(self) -> ComposeResult:
        with Vertical():
            with VerticalScroll(id="question-box"):
                # markup=False: a question quotes ids, windows like [0,4) and commands verbatim.
                yield Static(self.question, id="question", markup=False)
            with Horizontal():
                yield Button("Cancel (n)", id="no")
                yield Button(f"{self.yes} (y)", id="yes", variant="error")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)
