"""Fork a run from one of its epochs: a small modal asking for the epoch and any changes.

The fork itself is :func:`critui.runs.lineage.fork_run`, run in a thread worker (it may load
the plugins and copies a checkpoint); its errors are shown here, and the modal stays open
so that the epoch or the changes can be fixed.
"""

from __future__ import annotations

from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static


class ForkModal(ModalScreen[dict[str, Any] | None]):
    """Ask for a fork epoch (and optional KEY=VALUE changes); dismiss with the child's entry."""

    DEFAULT_CSS = """
    ForkModal {
        align: center middle;
    }
    ForkModal > Vertical {
        width: 76;
        max-width: 95%;
        height: auto;
        border: thick $accent;
        background: $surface;
        padding: 1 2;
    }
    ForkModal Input {
        margin-top: 1;
    }
    ForkModal #fork-error {
        color: $error;
        height: auto;
    }
    ForkModal Horizontal {
        height: auto;
        align-horizontal: right;
        margin-top: 1;
    }
    ForkModal Button {
        margin-left: 2;
    }
    """

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, run_id: str, epochs_done: int):
        super().__init__()
        self.run_id = run_id
        self.epochs_done = epochs_done

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(
                f"Fork run {self.run_id}: a new run that starts from its state after epoch K "
                f"(1 to {self.epochs_done}) and records it as its parent."
            )
            yield Input(
                placeholder=f"fork epoch K, 1 to {self.epochs_done}",
                type="integer",
                id="fork-epoch",
            )
            yield Input(
                placeholder="changes after the fork (optional), e.g. train.epochs=20 deficit.end=4",
                id="fork-sets",
            )
            yield Static("", id="fork-error", markup=False)
            with Horizontal():
                yield Button("Cancel (esc)", id="no")
                yield Button("Fork (enter)", id="yes", variant="primary")

    def on_mount(self) -> None:
        self.query_one("#fork-epoch", Input).focus()

    @on(Input.Submitted)
    @on(Button.Pressed, "#yes")
    def submit(self) -> None:
        raw = self.query_one("#fork-epoch", Input).value.strip()
        error = self.query_one("#fork-error", Static)
        try:
            epoch = int(raw)
        except ValueError:
            error.update(f"The fork epoch must be a whole number from 1 to {self.epochs_done}.")
            return
        error.update("Forking...")
        self.query_one("#yes", Button).disabled = True
        self.fork(epoch, self.query_one("#fork-sets", Input).value.split())

    @on(Button.Pressed, "#no")
    def action_cancel(self) -> None:
        self.dismiss(None)

    @work(thread=True, exclusive=True, exit_on_error=False)
    def fork(self, epoch: int, sets: list[str]) -> None:
        from critui.runs.launcher import make_launcher
        from critui.runs.lineage import fork_run

        app = self.app
        try:
            # Where the parent ran (a Slurm job forks into a Slurm job), checked before the fork exists.
            parent = app.store.get(self.run_id)
            launcher = make_launcher(app.registry, parent.get("launcher"), parent.get("launcher_settings") or {},
                                     app.store.home)
            doc, from_checkpoint = fork_run(app.store, app.registry, self.run_id, epoch, sets)
            app.start_worker(doc["id"], launcher)
        except Exception as exc:  # noqa: BLE001 - a bad epoch or change is shown, never fatal
            app.call_from_thread(self._failed, str(exc))
            return
        app.call_from_thread(self._forked, doc, from_checkpoint)

    def _failed(self, message: str) -> None:
        self.query_one("#fork-error", Static).update(message)
        self.query_one("#yes", Button).disabled = False

    def _forked(self, doc: dict[str, Any], from_checkpoint: bool) -> None:
        how = (
            "from its checkpoint"
            if from_checkpoint
            else "training the shared epochs again (no checkpoint was kept at that epoch)"
        )
        self.app.notify(f"Forked {self.run_id} into {doc['id']}, {how}.")
        self.app.poll_runs()
        self.dismiss(doc)
