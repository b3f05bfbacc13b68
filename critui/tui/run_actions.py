"""Stopping, deleting and resuming a run, each after a question where one is due: offered
alike by the dashboard and by a run's detail screen, which import them from here rather
than from each other."""

from __future__ import annotations

from typing import Any

from critui.errors import CritUIError
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


def ask_resume(app: Any, run_id: str) -> None:
    """Resume the run as ``critui resume`` does, after the question its flag answers there.

    Its plugins must come from the distributions and versions it recorded
    (:mod:`critui.provenance`): a plugin nothing provides now is refused, naming the
    distribution and version to install, and no worker starts; a plugin from another
    distribution or version is shown with both, and "Resume anyway" resumes it as
    ``--allow-plugin-change`` does, recording the change in the run's events.
    """
    from critui.provenance import check_provenance
    from critui.runs.lineage import read_spec

    doc = app.feed.docs.get(run_id) or {"id": run_id}
    try:
        # allow_change: the changes come back to be asked about; a missing plugin, or a new
        # provider that takes other parameters than the run has, still raises.
        spec = read_spec(app.store.run_dir(run_id), [])
        changes = check_provenance(doc, app.registry, allow_change=True, spec=spec)
    except CritUIError as exc:
        app.notify(f"Could not resume: {exc}", severity="error", timeout=20)
        return
    if not changes:
        app.resume_run(run_id)
        return
    listed = "\n".join(f"- {change.describe()}." for change in changes)
    question = (
        f"Run {run_id} was trained with other plugin code than is installed now:\n{listed}\n"
        "Its remaining epochs would be trained by the new code; the change is recorded in its "
        "events and shown by `critui show`. To continue it as it was, install what it was trained "
        "with instead.\nResume anyway?"
    )

    def answered(yes: bool | None) -> None:
        if yes:
            app.resume_run(run_id, allow_plugin_change=True)

    app.push_screen(ConfirmModal(question, yes="Resume anyway"), answered)
