"""What the TUI knows about the runs: the index documents and each run's events, kept fresh.

:class:`RunsFeed` is polled from a thread worker about once a second. It reads the index
(so runs started by ``critui run`` in another terminal appear), tails every run's
``events.jsonl`` from where it left off, and polls the workers this app launched itself.
It returns the ids that changed, so screens redraw only what needs it.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any

from critui.events import EVENTS_FILE, EventTail, epoch_table, worker_pid
from critui.processes import signal_process
from critui.runs.lineage import summarise_fork

RECONCILE_EVERY = 5  # polls between reconciliations (settles runs whose manager died)
ACTIVE = ("queued", "running")


def well_formed(event: dict[str, Any]) -> bool:
    """Whether an event has the fields the charts rely on; anything else is skipped."""
    kind = event.get("event")
    if kind == "epoch":
        return isinstance(event.get("epoch"), int) and isinstance(
            event.get("test_acc", 0.0), (int, float, type(None))
        )
    if kind == "metric":
        return (
            isinstance(event.get("epoch"), int)
            and isinstance(event.get("metric"), str)
            and isinstance(event.get("values", {}), dict)
        )
    return isinstance(kind, str)


class RunHistory:
    """One run's events and per-epoch rows; ``version`` grows whenever they change."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.tail = EventTail(self.run_dir)
        self.events: list[dict[str, Any]] = []
        self.rows: list[dict[str, Any]] = []
        self.version = 0

    def refresh(self) -> bool:
        new = [e for e in self.tail.read_new() if well_formed(e)]
        if not new:
            return False
        events = self.events + new
        self.rows = epoch_table(events)  # replaced whole: readers on the UI thread see old or new
        self.events = events
        self.version += 1
        return True

    @property
    def worker_pid(self) -> int | None:
        return worker_pid(self.events)

    def layers(self) -> list[str]:
        """Fisher layer names in forward order (as the metric wrote them)."""
        names: list[str] = []
        for row in self.rows:
            for key in row:
                if key.startswith("fisher.") and key != "fisher.total" and key[7:] not in names:
                    names.append(key[7:])
        return names


class Histories(dict):
    """Run id -> :class:`RunHistory`, read on first use: the runs still training are tailed at
    every poll, and any other run's events are read only when a screen asks for them (a home
    of 10,000 runs is not 10,000 files read per poll). ``peek`` never reads."""

    def __init__(self, feed: RunsFeed):
        super().__init__()
        self._feed = feed

    def __missing__(self, run_id: str) -> RunHistory:
        if run_id not in self._feed.docs:
            raise KeyError(run_id)
        history = RunHistory(self._feed.store.run_dir(run_id))
        history.refresh()
        return self.setdefault(run_id, history)

    def __contains__(self, run_id: object) -> bool:
        return dict.__contains__(self, run_id) or run_id in self._feed.docs

    def get(self, run_id: str, default: Any = None) -> Any:
        try:
            return self[run_id]
        except KeyError:
            return default

    def peek(self, run_id: str) -> RunHistory | None:
        """The history if it was read already; never reads one."""
        return dict.get(self, run_id)


class RunsFeed:
    """Index documents, run histories and this app's own workers, polled together."""

    def __init__(self, store):
        self.store = store
        self.docs: dict[str, dict[str, Any]] = {}
        self.histories = Histories(self)
        self.monitors: dict[str, Any] = {}  # run id -> RunMonitor, for runs this app launched
        self.polls = 0
        self.problems: list[str] = []  # the store's warnings not yet shown
        self._index_key: tuple | None = None
        self._cursor: tuple[int, int] | None = None  # where the index stood at the last read
        self._active: dict[str, None] = {}  # run ids queued or running (an ordered set)
        self._interrupted: dict[str, None] = {}
        self._sizes: dict[str, int] = {}  # events file sizes of interrupted runs, when first seen
        self._lock = threading.Lock()

    def poll(self) -> set[str]:
        """Bring everything up to date; return the ids of runs that changed (added, removed too).

        The index is re-read only when a process changed it, and only the histories of runs
        that are active or just changed are tailed: a poll of a quiet home of any size is a
        few stats."""
        with self._lock:
            ended = []
            for monitor in list(self.monitors.values()):
                if not monitor.done:
                    monitor.poll()
                    if monitor.done:
                        ended.append(monitor.run_id)
            if self.polls % RECONCILE_EVERY == 0:
                self.store.reconcile()
            self.polls += 1
            docs, changed = self._read_docs(ended)
            grown = self._grown(docs)
            for run_id, history in list(dict.items(self.histories)):
                if run_id not in docs:
                    del self.histories[run_id]
                elif (run_id in changed or run_id in grown or docs[run_id].get("status") in ACTIVE) \
                        and history.refresh():
                    changed.add(run_id)
            for run_id in [*self._active, *grown]:
                if not dict.__contains__(self.histories, run_id):
                    history = RunHistory(self.store.run_dir(run_id))
                    history.refresh()
                    self.histories.setdefault(run_id, history)
                    changed.add(run_id)
            self.docs = docs
            self.problems += self.store.take_problems()
            return changed

    def _grown(self, docs: dict[str, dict[str, Any]]) -> list[str]:
        """Interrupted runs whose events grew since first seen: a worker the index has not
        caught up with yet (reconcile marks it running later); a stat each, no read."""
        grown = []
        for run_id in self._interrupted:
            if run_id not in docs:
                continue
            try:
                size = os.stat(self.store.run_dir(run_id) / EVENTS_FILE).st_size
            except OSError:
                size = 0
            before, self._sizes[run_id] = self._sizes.get(run_id, size), size
            if before != size:  # loaded or not: a history already shown must follow it too
                grown.append(run_id)
        return grown

    def _read_docs(self, ended: list[str]) -> tuple[dict[str, dict[str, Any]], set[str]]:
        """The index documents, re-read only if the index changed; and the ids that changed.

        Only the entries that changed since the last read are taken (the journal's new lines),
        so a poll after one run's update costs the same at 10 or 10,000 runs."""
        key = self.store.index_key()
        if key == self._index_key and not ended:
            return self.docs, set()
        docs = dict(self.docs)  # a new dict: the UI thread may be reading the old one
        changed = self._take(self.store.changes(self._cursor), docs)
        forks = [r for r in ended if docs.get(r, {}).get("parent")]
        for run_id in forks:
            summarise_fork(self.store, run_id)
        if forks:
            changed |= self._take(self.store.changes(self._cursor), docs)
        self._index_key = key
        return docs, changed

    def _take(self, news, docs: dict[str, dict[str, Any]]) -> set[str]:
        """Apply :meth:`RunStore.changes`'s answer to ``docs`` (oldest first); the ids changed."""
        self._cursor = news.cursor
        if news.everything is not None:
            fresh = {d["id"]: d for d in news.everything}
            changed = {r for r, d in fresh.items() if docs.get(r) != d} | (docs.keys() - fresh.keys())
            docs.clear()
            docs.update(fresh)
            self._active = {r: None for r, d in fresh.items() if d.get("status") in ACTIVE}
            self._interrupted = {r: None for r, d in fresh.items() if d.get("status") == "interrupted"}
            return changed
        changed = set()
        for run_id in news.removed:
            if docs.pop(run_id, None) is not None:
                changed.add(run_id)
        newest = docs[next(reversed(docs))]["created"] if docs else float("-inf")
        reorder = False
        for run_id, doc in news.changed.items():
            if docs.get(run_id) == doc:
                continue
            reorder |= run_id not in docs and doc["created"] < newest  # e.g. a run folder indexed again
            docs[run_id] = doc
            changed.add(run_id)
        if reorder:
            ordered = sorted(docs.values(), key=lambda d: d["created"])
            docs.clear()
            docs.update((d["id"], d) for d in ordered)
        for run_id in changed:
            status = docs.get(run_id, {}).get("status")
            for group, member in ((self._active, status in ACTIVE), (self._interrupted, status == "interrupted")):
                if member:
                    group[run_id] = None
                else:
                    group.pop(run_id, None)
        return changed

    def add_monitor(self, monitor) -> None:
        self.monitors[monitor.run_id] = monitor

    def cancel(self, run_id: str) -> str:
        """Stop a run: through its monitor if this app launched it, through its launcher if it is
        a cluster job, else SIGTERM its worker."""
        monitor = self.monitors.get(run_id)
        if monitor is not None and not monitor.done:
            with self._lock:  # never while a poll reads the same monitor's events
                monitor.cancel()
            return "cancelled"
        doc = self.docs.get(run_id) or {}
        if doc.get("job") and doc.get("status") == "running":  # a cluster job: its launcher stops it
            from critui.runs.launcher import job_cancel

            return "signalled" if job_cancel(doc, self.store.home) else "not running"
        history = self.histories.get(run_id)
        pid = history.worker_pid if history else None
        # Only this run's live worker: never a pid that a damaged events line names (-1 is every
        # process the user may signal). The worker records `cancelled` and exits.
        return "signalled" if signal_process(pid, signal.SIGTERM, marker=run_id) else "not running"
