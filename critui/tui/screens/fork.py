"""Fork a run from one of its epochs: a small modal asking for the epoch and any changes.

The fork itself is :func:`critui.runs.lineage.fork_run`, run in a thread worker (it may load
the plugins and copies a checkpoint); its errors are shown here, and the modal stays open
so that the epoch or the changes can be fixed. Before the fork, the modal says whether the
epochs it shares with its parent come from a checkpoint the parent kept or are trained again.
Its text wraps to its width, which shrinks with the terminal down to 60 columns; what does
not fit in its height scrolls, the buttons staying in view.
"""

from __future__ import annotations

from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Static


class ForkModal(ModalScreen[dict[str, Any] | None]):
    """Ask for a fork epoch (and optional KEY=VALUE changes); dismiss with the child's entry."""

    DEFAULT_CSS = """
    ForkModal {
        align: center middle;
    }
    ForkModal > Vertical {
        width: 76;
        max-width: 100%;
        height: auto;
        max-height: 100%;
        border: thick $accent;
        background: $surface;
        padding: 0 1;
    }
    ForkModal #fork-body {
        height: auto;
        max-height: 100%;
    }
    ForkModal Static {
        width: 100%;
        height: auto;
    }
    ForkModal #fork-source {
        color: $text-muted;
    }
    ForkModal #fork-error {
        color: $error;
        display: none;  /* shown with its first message: at 60x20 every line counts */
    }
    /* Docked: text taller than the screen scrolls above the buttons, never over them. */
    ForkModal Horizontal {
        dock: bottom;
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
        self.kept: list[int] | None = None  # epochs the parent kept a checkpoint after; None: not read yet

    def compose(self) -> ComposeResult:
        with Vertical():
            with VerticalScroll(id="fork-body"):
                # First: a refusal is what the user must read, and at the top it needs no scrolling.
                yield Static("", id="fork-error", markup=False)
                yield Static(
                    f"Fork run {self.run_id} into a new run that starts from its state after epoch K "
                    f"(1 to {self.epochs_done}) and records it as its parent. Changes may act only "
                    "from epoch K on: metrics, more train.epochs, the deficit window at K or later.",
                    id="fork-intro",
                    markup=False,
                )
                yield Input(
                    placeholder=f"fork epoch K, 1 to {self.epochs_done}",
                    type="integer",
                    id="fork-epoch",
                )
                yield Input(
                    placeholder="changes (optional), e.g. train.epochs=20",
                    id="fork-sets",
                )
                yield Static("Looking for the checkpoints the run kept...", id="fork-source", markup=False)
            with Horizontal():
                yield Button("Cancel (esc)", id="no")
                yield Button("Fork (enter)", id="yes", variant="primary")

    def on_mount(self) -> None:
        self.query_one("#fork-epoch", Input).focus()
        self.find_kept()

    @work(thread=True, exclusive=True, group="kept", exit_on_error=False)
    def find_kept(self) -> None:
        """The epochs a fork can start from a checkpoint at (reading them may import torch)."""
        try:
            kept = kept_epochs(self.app.store, self.run_id, self.epochs_done)
        except Exception:  # noqa: BLE001 - without the list the fork itself still says how it started
            kept = []
        self.app.call_from_thread(self._found_kept, kept)

    def _found_kept(self, kept: list[int]) -> None:
        self.kept = kept
        self.show_source()

    @on(Input.Changed, "#fork-epoch")
    def show_source(self) -> None:
        """Say whether a fork at the typed epoch reuses a kept checkpoint or trains the shared epochs again."""
        if self.kept is None:
            return
        self.query_one("#fork-source", Static).update(
            source_text(self.run_id, self.query_one("#fork-epoch", Input).value, self.epochs_done, self.kept)
        )

    @on(Input.Submitted)
    @on(Button.Pressed, "#yes")
    def submit(self) -> None:
        raw = self.query_one("#fork-epoch", Input).value.strip()
        error = self.query_one("#fork-error", Static)
        try:
            epoch = int(raw)
        except ValueError:
            self._failed(f"The fork epoch must be a whole number from 1 to {self.epochs_done}.")
            return
        error.update("Forking...")
        error.display = True
        self.query_one("#yes", Button).disabled = True
        self.fork(epoch, self.query_one("#fork-sets", Input).value.split())

    @on(Button.Pressed, "#no")
    def action_cancel(self) -> None:
        self.dismiss(None)

    @work(thread=True, exclusive=True, exit_on_error=False)
    def fork(self, epoch: int, sets: list[str], allow_plugin_change: bool = False) -> None:
        from critui.provenance import check_provenance
        from critui.runs.launcher import make_launcher
        from critui.runs.lineage import fork_run, read_spec

        app = self.app
        try:
            # Where the parent ran (a Slurm job forks into a Slurm job), checked before the fork exists.
            parent = app.store.get(self.run_id)
            launcher = make_launcher(app.registry, parent.get("launcher"), parent.get("launcher_settings") or {},
                                     app.store.home)
            if not allow_plugin_change:
                # The question `--allow-plugin-change` answers on the command line; a missing
                # plugin, or one taking other parameters, still raises here.
                spec = read_spec(app.store.run_dir(self.run_id), [])
                changes = check_provenance(parent, app.registry, allow_change=True, action="fork", spec=spec)
                if changes:
                    app.call_from_thread(self._ask_plugin_change, epoch, sets, changes)
                    return
            doc, from_checkpoint = fork_run(app.store, app.registry, self.run_id, epoch, sets,
                                            allow_plugin_change=allow_plugin_change)
            app.start_worker(doc["id"], launcher)
        except Exception as exc:  # noqa: BLE001 - a bad epoch or change is shown, never fatal
            app.call_from_thread(self._failed, str(exc))
            return
        app.call_from_thread(self._forked, doc, from_checkpoint)

    def _ask_plugin_change(self, epoch: int, sets: list[str], changes: list) -> None:
        """The parent was trained with other plugin code than is installed now: fork anyway
        (the change is recorded in the child's events, as ``--allow-plugin-change`` does)?"""
        from critui.tui.widgets.confirm import ConfirmModal

        listed = "\n".join(f"- {change.describe()}." for change in changes)
        question = (
            f"Run {self.run_id} was trained with other plugin code than is installed now:\n{listed}\n"
            f"The fork's epochs after {epoch} would be trained by the new code; the change is recorded "
            "in its events and shown by `critui show`.\nFork anyway?"
        )

        def answered(yes: bool | None) -> None:
            if yes:
                self.fork(epoch, sets, allow_plugin_change=True)
            else:
                self._failed("Not forked: the installed plugins differ from the ones the run was trained with.")

        self.app.push_screen(ConfirmModal(question, yes="Fork anyway"), answered)

    def _failed(self, message: str) -> None:
        error = self.query_one("#fork-error", Static)
        error.update(message)
        error.display = True
        self.query_one("#yes", Button).disabled = False
        self.call_after_refresh(self.query_one("#fork-body").scroll_home, animate=False)

    def _forked(self, doc: dict[str, Any], from_checkpoint: bool) -> None:
        how = (
            "from its checkpoint"
            if from_checkpoint
            else "training the shared epochs again (no checkpoint was kept at that epoch)"
        )
        self.app.notify(f"Forked {self.run_id} into {doc['id']}, {how}.")
        self.app.poll_runs()
        self.dismiss(doc)


def kept_epochs(store, run_id: str, epochs_done: int) -> list[int]:
    """The epochs (1 to ``epochs_done``) after which run ``run_id`` kept a checkpoint a fork can use.

    Only the candidates are checked (the kept ``epoch-KKKK.pt`` files and the epoch of the last
    checkpoint event, which ``latest.pt`` may hold): asking about every epoch would read a long
    run's events once per epoch.
    """
    from critui.events import read_events
    from critui.runs.lineage import fork_source

    parent = store.get(run_id)
    run_dir = store.run_dir(parent["id"])
    candidates = {int(digits) for p in (run_dir / "ckpt").glob("epoch-*.pt")
                  if (digits := p.stem.removeprefix("epoch-")).isdigit()}
    marks = [e.get("epoch") for e in read_events(run_dir) if e["event"] == "checkpoint"]
    candidates.update(m for m in marks[-1:] if isinstance(m, int))
    return sorted(k for k in candidates if 1 <= k <= epochs_done and fork_source(store, parent, k))


def source_text(run_id: str, typed: str, epochs_done: int, kept: list[int]) -> str:
    """Where a fork after epoch ``typed`` gets its shared epochs: ``kept`` checkpoint or training again."""
    listed = ", ".join(map(str, kept))
    try:
        epoch = int(typed)
    except ValueError:
        epoch = None
    if epoch is None or not 1 <= epoch <= epochs_done:
        if not kept:
            return (f"Run {run_id} kept no checkpoint to fork from: a fork trains the shared epochs "
                    "again first (the same result, only slower).")
        return (f"Run {run_id} kept checkpoints after epoch {listed}: a fork there reuses them; "
                "from any other epoch it trains the shared epochs again first.")
    epochs = f"{epoch} epoch{'s' if epoch != 1 else ''}"
    if epoch in kept:
        return (f"The first {epochs} will be reused from the checkpoint run {run_id} kept after "
                f"epoch {epoch}; the fork trains only the epochs after them.")
    also = f" (checkpoints kept after epoch {listed})" if kept else ""
    return (f"Run {run_id} kept no checkpoint after epoch {epoch}{also}: the fork will retrain "
            f"its first {epochs} before the new ones, the same result, only slower.")
