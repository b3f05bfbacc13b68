"""CritUIApp: the dashboard, the new-experiment form, run details and the plugin list.

The app owns one :class:`~critui.tui.feed.RunsFeed`. A timer starts a thread worker about
once a second that polls it (index, events, this app's own workers); the worker reports
the ids that changed back on the UI thread, and ``runs_changed`` tells the screens, which
redraw only what changed. Nothing that touches the disk or a subprocess runs on the UI thread.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from functools import partial
from pathlib import Path
from typing import Any

from textual import events, work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen
from textual.signal import Signal
from textual.worker import get_current_worker

from critui.runs.store import RunStore
from critui.tui.feed import RunsFeed

POLL_INTERVAL_S = 1.0
SWEEP_STEP_S = 0.5  # how often a sweep started here polls its workers and starts the next


class CritUIApp(App):
    """critui's interactive session. ``home`` is the critui home (default: CRITUI_HOME or the user data dir)."""

    TITLE = "critui"
    SUB_TITLE = "critical learning periods"
    CSS_PATH = "critui.tcss"
    BINDINGS = [Binding("q", "quit", "Quit")]

    def __init__(
        self, home: Path | str | None = None, registry=None, poll_interval: float = POLL_INTERVAL_S
    ):
        super().__init__()
        self.store = RunStore(home)
        self.feed = RunsFeed(self.store)
        self.poll_interval = poll_interval
        self._plugin_registry = registry
        self.runs_changed: Signal[set[str]] = Signal(self, "runs-changed")
        self.polls_done = 0
        self._polling = False
        self._last_error: str | None = None
        self.sweeps: dict[str, Any] = {}  # sweep id -> SweepScheduler, for sweeps started here

    # -- data --------------------------------------------------------------------------------

    @property
    def registry(self):
        """The plugin registry (built on first use; screens ask for it from a thread worker)."""
        if self._plugin_registry is None:
            from critui.plugins import get_registry

            self._plugin_registry = get_registry()
        return self._plugin_registry

    def on_mount(self) -> None:
        from critui.tui.screens.dashboard import DashboardScreen

        self.push_screen(DashboardScreen())
        self.poll_runs()
        self.set_interval(self.poll_interval, self.poll_runs)

    def poll_runs(self) -> None:
        """Start one poll unless the previous one is still going (a slow disk never piles up polls)."""
        if self._polling:
            return
        self._polling = True
        self._poll_worker()

    @work(thread=True, group="poll", exit_on_error=False)
    def _poll_worker(self) -> None:
        changed: set[str] = set()
        error = None
        problems: list[str] = []
        try:
            changed = self.feed.poll()
            problems, self.feed.problems = self.feed.problems, []
        except Exception as exc:  # noqa: BLE001 - a bad index or disk must not end the session
            error = (
                f"{type(exc).__name__}: {exc}"
                if not str(exc).startswith("The run index")
                else str(exc)
            )
        try:
            self.call_from_thread(self._after_poll, changed, error, problems)
        except RuntimeError:
            pass  # the app is shutting down

    def _after_poll(self, changed: set[str], error: str | None, problems: list[str] = ()) -> None:
        self._polling = False
        self.polls_done += 1
        for problem in problems[:5]:  # what the store skipped, each told once per session
            self.notify(problem, severity="warning", timeout=10)
        if len(problems) > 5:
            self.notify(f"...and {len(problems) - 5} more problems; `critui runs` lists them all.",
                        severity="warning", timeout=10)
        if error and error != self._last_error:
            self.notify(f"Could not read the runs: {error}", severity="error", timeout=8)
        self._last_error = error
        if changed or self.polls_done == 1:
            self.runs_changed.publish(changed)

    # -- actions shared by the screens ----------------------------------------------------------

    @work(thread=True, group="actions", exit_on_error=False)
    def cancel_run(self, run_id: str) -> None:
        try:
            result = self.feed.cancel(run_id)
        except Exception as exc:  # noqa: BLE001
            self.call_from_thread(
                self.notify, f"Could not cancel {run_id}: {exc}", severity="error"
            )
            return
        message = {
            "cancelled": f"Cancelled {run_id}; every completed epoch is kept.",
            "signalled": f"Asked {run_id}'s worker to stop.",
            "not running": f"{run_id} is not running.",
        }[result]
        self.call_from_thread(self.notify, message)
        self.call_from_thread(self.poll_runs)

    @work(thread=True, group="actions", exit_on_error=False)
    def delete_run(self, run_id: str) -> None:
        try:
            if self.feed.cancel(run_id) == "signalled":
                import time

                time.sleep(0.5)
            self.store.delete(run_id)
            self.feed.monitors.pop(run_id, None)
        except Exception as exc:  # noqa: BLE001
            self.call_from_thread(
                self.notify, f"Could not delete {run_id}: {exc}", severity="error"
            )
            return
        self.call_from_thread(self.notify, f"Deleted {run_id}.")
        self.call_from_thread(self.poll_runs)

    def export_runs(self, run_ids: list[str], folder: Path | None = None) -> None:
        """Ask where (default: the current folder, never over a file), then write the runs'
        per-epoch rows as CSV, with their deficit, window and seed."""
        from critui.runs.export import export_csv
        from critui.tui.widgets.save import ask_save

        docs = [self.feed.docs[r] for r in run_ids if r in self.feed.docs]
        if docs:
            stem = docs[0]["id"] if len(docs) == 1 else "critui-runs"
            ask_save(self, f"{len(docs)} run(s)' per-epoch rows (CSV)", [], stem, folder=folder,
                     csv_text=lambda: export_csv(self.store, docs, with_run=True), figure=False)

    def launch(self, spec, versions: dict[str, dict[str, str]], launcher=None) -> dict[str, Any]:
        """Create the run and start its worker (from a thread worker: both touch the disk)."""
        doc = self.store.create(spec, versions)
        self.start_worker(doc["id"], launcher)
        return doc

    def start_worker(self, run_id: str, launcher=None) -> None:
        """Start the worker of a run already in the store (from a thread worker); on this
        machine unless ``launcher`` says otherwise."""
        from critui.runs.monitor import RunMonitor

        self.feed.add_monitor(RunMonitor(self.store, run_id, launcher=launcher))

    @work(thread=True, group="actions", exit_on_error=False)
    def resume_run(self, run_id: str, allow_plugin_change: bool = False) -> None:
        """Continue a stopped run from its last checkpoint, as ``critui resume`` does
        (``allow_plugin_change``: as ``--allow-plugin-change``; see ``run_actions.ask_resume``)."""
        from critui.runs.launcher import make_launcher
        from critui.runs.lineage import reopen_for_resume

        try:
            # Where it ran before (a Slurm job stays a Slurm job), checked before it is claimed.
            doc = self.store.get(run_id)
            launcher = make_launcher(self.registry, doc.get("launcher"), doc.get("launcher_settings") or {},
                                     self.store.home)
            reopen_for_resume(self.store, run_id, allow_plugin_change)
            self.start_worker(run_id, launcher)
        except Exception as exc:  # noqa: BLE001 - e.g. it already finished: say so, go on
            self.call_from_thread(self.notify, f"Could not resume: {exc}", severity="error")
            return
        self.call_from_thread(self.notify, f"Resuming {run_id} from its last checkpoint.")
        self.call_from_thread(self.poll_runs)

    @work(thread=True, group="sweeps", exit_on_error=False)
    def run_sweep(self, record: dict[str, Any], gpus: list[str], launcher=None, jobs: int = 1) -> None:
        """Train a sweep's runs with the scheduler ``critui sweep`` uses, ``jobs`` workers at once.

        Should the app quit first, the runs not started yet stay queued in the sweep's record,
        and ``critui sweep --resume`` continues them.
        """
        from critui.runs.scheduler import SweepScheduler

        worker = get_current_worker()
        scheduler = SweepScheduler(self.store, record, jobs=jobs, gpus=gpus, launcher=launcher)
        self.sweeps[record["id"]] = scheduler
        try:
            while scheduler.step() and not worker.is_cancelled:
                time.sleep(SWEEP_STEP_S)
        except Exception as exc:  # noqa: BLE001 - a broken run dir must not end the session
            self.call_from_thread(
                self.notify, f"Sweep {record['id']} stopped: {exc}", severity="error"
            )
            return
        finally:
            self.sweeps.pop(record["id"], None)
        if worker.is_cancelled:
            return
        finished = sum(status == "finished" for status in scheduler.status.values())
        self.call_from_thread(
            self.notify, f"Sweep {record['id']}: {finished}/{len(scheduler.status)} runs finished."
        )

    async def action_quit(self) -> None:
        """Quit; if runs started here still train, say that they go on, and ask first."""
        active = [m.run_id for m in self.feed.monitors.values() if not m.done]
        sweeps = list(self.sweeps.items())  # copied: their scheduler threads change them
        active += [i for _, s in sweeps for i in list(s.running)]
        waiting = {sweep_id: len(s.pending) for sweep_id, s in sweeps if s.pending}
        if not active and not waiting:
            self.exit()
            return
        from critui.tui.widgets.confirm import ConfirmModal

        question = (
            f"{len(active)} run(s) started here are still training. They keep running after you "
            "quit; the next critui command records how they end."
        )
        # Each sweep on a line of its own (the dialog wraps long ones): its resume command is read whole.
        for sweep_id, count in waiting.items():
            question += (
                f"\nSweep {sweep_id} has {count} run(s) not started yet; "
                f"`critui sweep --resume {sweep_id}` continues it."
            )
        question += "\nQuit?"
        self.push_screen(
            ConfirmModal(question, yes="Quit"), lambda yes: self.exit() if yes else None
        )

    # -- command palette: every binding of the screen is a command --------------------------

    async def on_event(self, event: events.Event) -> None:
        # A screen rebuilding its fields holds the keys typed meanwhile (critui.tui.held_keys).
        held = None
        if isinstance(event, events.Key) and not event.is_forwarded:  # not one bubbling back
            held = getattr(self.screen, "held_keys", None)
        if held is not None:
            held.append(event)
            return
        await super().on_event(event)

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        seen = set()
        for _key, item in screen._bindings:
            if not item.description or item.action in seen:
                continue
            seen.add(item.action)
            help_text = (
                f"{item.tooltip} ({screen.app.get_key_display(item)})"
                if item.tooltip
                else item.description
            )
            yield SystemCommand(
                item.description, help_text, partial(screen.run_action, item.action)
            )


def run_app(home: Path | str | None = None) -> Any:
    """Entry point used by bare ``critui``."""
    return CritUIApp(home).run()
