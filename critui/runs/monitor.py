"""Following one run: start its worker, read its new events, keep the index in step.

Used by ``critui run``, the TUI and the sweep launcher alike. The monitor writes the index
only on state changes (started, and the end), never per epoch: per-epoch metrics stay in
``events.jsonl``.
"""

from __future__ import annotations

import os
import signal
from typing import Any

from critui.events import TERMINAL, EventTail, read_events
from critui.runs.launcher import DEFAULT_LAUNCHER, local_launcher, stop_worker
from critui.runs.lineage import fork_point, history_summary
from critui.train.worker import EXIT_BUSY


class RunMonitor:
    """One worker and its events. Call :meth:`poll` often; it never blocks."""

    def __init__(self, store, run_id: str, env: dict[str, str] | None = None, launcher=None):
        self.store = store
        self.run_id = run_id
        self.run_dir = store.run_dir(run_id)
        self.tail = EventTail(self.run_dir)
        events_file = self.run_dir / "events.jsonl"
        self.tail.offset = events_file.stat().st_size if events_file.exists() else 0
        self.end: dict[str, Any] | None = None
        self._stopping = False  # cancel() has asked the worker to stop
        # What the index said before this start, put back should the worker find the run busy.
        before = store.get(run_id)
        self._before = {k: before.get(k) for k in ("status", "pid", "manager_pid", "job", "launcher", "launcher_settings")}
        self._lineage = {k: before.get(k) for k in ("id", "parent", "fork_epoch")}
        launcher = launcher or local_launcher(store.home)
        self.process = launcher.start(self.run_dir, dict(env or {}))
        # The launcher is recorded unless it is the default, so that a resume runs where this did.
        other = launcher.id != DEFAULT_LAUNCHER
        store.update(run_id, status="running", pid=self.process.pid, manager_pid=os.getpid(),
                     job=getattr(self.process, "job", None), launcher=launcher.id if other else None,
                     launcher_settings=launcher.settings if other else None)

    @property
    def done(self) -> bool:
        return self.end is not None

    def poll(self) -> list[dict[str, Any]]:
        """The events written since the last call; settles the run once its worker has ended."""
        if self.done:
            return []
        events = self.tail.read_new()
        exited = self.process.poll() is not None
        if exited:
            events += self.tail.read_new()  # anything written just before the exit
        for event in events:
            if event["event"] == "started":
                self.store.update(
                    self.run_id, status="running", device=event.get("device"), device_name=event.get("device_name"),
                    threads=event.get("threads"), torch=event.get("torch"), started=event.get("time"), lr_at_removal=event.get("lr_at_removal"),
                )
            elif event["event"] in TERMINAL:
                self.end = event
        if exited and self.end is None:
            if self.process.returncode == EXIT_BUSY:
                self.end = {"event": "busy", "error": (
                    f"run {self.run_id} is being trained by another critui process already; "
                    "nothing was started, and that run goes on."
                )}
            elif self._stopping:  # stopped by us, but too slowly to record it (killed after the grace)
                self.end = {"event": "cancelled"}
            else:
                self.end = {"event": "failed", "reason": "exception", "error": self._silent_exit()}
        if self.end is not None:
            self._settle()
        return events

    def _silent_exit(self) -> str:
        """Why a worker that wrote no final event ended, as far as its exit code tells."""
        code = self.process.returncode
        text = f"the worker exited with code {code} without a final event"
        if job := getattr(self.process, "job", None):
            text = f"the worker's launcher job {job} ended (code {code}) without a final event"
        if code == -getattr(signal, "SIGKILL", 9):
            # Nothing in critui sends SIGKILL to a worker; the kernel's out-of-memory killer does.
            text += (
                " (SIGKILL: killed from outside, most often by the system running out of memory;"
                " try a smaller optim.batch_size, train.eval_batch_size, metrics.fisher.chunk or"
                " model, or fewer --jobs)"
            )
        elif code is not None and code < 0:
            try:
                text += f" (killed by {signal.Signals(-code).name})"
            except ValueError:
                text += f" (killed by signal {-code})"
        return f"{text}. Every finished epoch is kept; see {self.run_dir / 'log.txt'}, and continue with `critui resume {self.run_id}`."

    def cancel(self) -> None:
        """Stop the worker cleanly (it records ``cancelled``) and settle the run."""
        if self.done:
            return
        self._stopping = True
        stop_worker(self.process)
        self.poll()
        if self.end is None:
            self.end = {"event": "cancelled"}
            self._settle()

    def _settle(self) -> None:
        self.process.wait()
        kind = self.end["event"]
        if kind == "busy":  # the run is another worker's: leave its entry as it was
            self.store.update(self.run_id, **self._before)
            return
        fields = self.store.summary_fields(read_events(self.run_dir), ended_default=None if kind == "finished" else kind)
        if fork_point(self._lineage):  # a fork counts its inherited epochs too, like the run trained from scratch
            fields.update(history_summary(self.store, self._lineage))
        if kind == "failed" and not fields.get("error"):
            fields.update(status="failed", error=self.end.get("error"))
        self.store.update(self.run_id, **fields)
