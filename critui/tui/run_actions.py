"""Stopping and deleting a run, each after a question: offered alike by the dashboard and by a
run's detail screen, which import them from here rather than from each other."""

from __future__ import annotations

from typing import Any

from critui.runs.store import forked_from_message
from critui.tui.widgets.confirm import ConfirmModal


def ask_delete(app: Any, run_id: str, then=None) -> None:
    """Confirm, then delete the run's directory and index entry; a run that forks inherit
    epochs from is refused before the question (the store refuses it too)."""
    if forks := [d["id"] for d in app.feed.docs.values() if d.get("parent") == run_id]:
        app.notify(forked_from_message(run_id, forks), severity="error", timeout=10)
        return

    def answered(yes: bool | None) -> None:
        if yes:
            app.delete_run(run_id)
            if then:
                then()

    app.push_screen(
        ConfirmModal(f"Delete run {run_id}: its directory, checkpoints and history entry?"),
        answered,
    )


def ask_cancel(app: Any, run_id: str) -> None:
    """Confirm, then stop the run; an accidental key must not end hours of training."""
    status = app.feed.docs.get(run_id, {}).get("status")
    if status not in ("running", "queued"):
        app.notify(f"{run_id} is not running ({status or 'gone'}).")
        return

    def answered(yes: bool | None) -> None:
        if yes:
            app.cancel_run(run_id)

    app.push_screen(
        ConfirmModal(
            f"Stop run {run_id}? Every completed epoch is kept; resume continues it later.",
            yes="Stop run",
        ),
        answered,
    )
