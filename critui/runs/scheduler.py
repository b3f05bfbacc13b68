"""Running a sweep: its record on disk, and a scheduler that keeps N workers busy.

A sweep lives in ``HOME/sweeps/<sweep-id>/sweep.json`` (written atomically): the expanded
plan, one entry per run with its axis values, its run id, and its parent and fork epoch. The
run directories and the index stay the source of truth for how far each run got, so
``critui sweep --resume`` only re-reads the record and asks the store.

The scheduler starts a forked run only once its parent has kept the checkpoint of the fork
epoch: it copies ``ckpt/epoch-KKKK.pt`` of the parent to the child's ``ckpt/latest.pt``, and
the worker resumes there as it would after an interruption. Should the parent end without
reaching the fork (it failed, or was cancelled for good), the child trains from scratch,
which gives the same result, only slower.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from critui.devices import place_on_gpu, usable_cores, worker_slots
from critui.errors import CritUIError
from critui.files import atomic_copy, atomic_write
from critui.params import short_repr
from critui.runs.ids import check_sweep_id, is_run_id, is_sweep_id, new_sweep_id
from critui.runs.lineage import summarise_fork
from critui.train.checkpoint import LATEST, epoch_checkpoint_name

SWEEPS_DIR = "sweeps"
SWEEP_FILE = "sweep.json"


# -- the sweep record ------------------------------------------------------------------------


def sweeps_dir(store) -> Path:
    return store.home / SWEEPS_DIR


def save_record(store, record: dict[str, Any]) -> Path:
    """Write a sweep's record (atomically) into its folder, which must exist."""
    path = sweeps_dir(store) / check_sweep_id(record["id"], "the sweep record") / SWEEP_FILE
    atomic_write(path, json.dumps(record, indent=1, sort_keys=True))
    return path


def make_sweep_folder(store, name: str) -> str:
    """A new sweep id whose folder this call created: two sweeps started in the same second
    (or on two machines sharing the home) never share an id, a record or a folder."""
    sweeps_dir(store).mkdir(parents=True, exist_ok=True)
    for _ in range(100):
        sweep_id = new_sweep_id(name)
        try:
            (sweeps_dir(store) / sweep_id).mkdir(exist_ok=False)
        except FileExistsError:
            continue
        return sweep_id
    raise CritUIError(f"Could not create a new sweep folder in {sweeps_dir(store)}: every id tried was taken. "
                      "Check that folder (a full disk, or a file system that reports every name as taken).")


def record_problem(path: Path, record: Any) -> str | None:
    """What is wrong with a ``sweep.json`` as read (None: a record every reader can use).

    Each run entry is checked for what the scheduler, ``critui report`` and the TUI use: a
    run id of critui's form, its place in the plan, a parent within the plan and no loop.
    """
    if not isinstance(record, dict):
        return f"holds {type(record).__name__} instead of an object"
    if not is_sweep_id(record.get("id")):
        return f"has the id {short_repr(record.get('id'))}, which is not a critui sweep id"
    if record["id"] != path.parent.name:
        return f"names the sweep {record['id']!r}, not its folder's name {path.parent.name!r}"
    for key, types in RECORD_FIELDS.items():
        if key in record and not isinstance(record[key], types):
            return f"has {key} = {short_repr(record[key])}, which is not {RECORD_TYPE_WORDS[key]}"
    runs = record.get("runs")
    if not isinstance(runs, list):
        return "has no list of runs (its \"runs\" field is missing or not a list)"
    for position, entry in enumerate(runs):
        if problem := _entry_problem(entry, position, len(runs)):
            return f"run entry {position} {problem}"
    for position in range(len(runs)):  # parents must end at a root: a loop would hang the scheduler
        seen, at = set(), position
        while at is not None:
            if at in seen:
                return f"has a loop of parents through run entry {position}"
            seen.add(at)
            at = runs[at].get("parent")
    return None


RECORD_FIELDS: dict[str, tuple[type, ...]] = {
    "name": (str,), "config": (str, type(None)), "created": (int, float), "primary": (str, type(None)),
    "axes": (list,), "launcher": (dict, type(None)),
}
RECORD_TYPE_WORDS = {"name": "a string", "config": "a path or null", "created": "a time in seconds",
                     "primary": "an axis name or null", "axes": "a list", "launcher": "an object or null"}


def _entry_problem(entry: Any, position: int, count: int) -> str | None:
    if not isinstance(entry, dict):
        return f"is {type(entry).__name__} instead of an object"
    if entry.get("index") != position or isinstance(entry.get("index"), bool):
        return f"has the index {short_repr(entry.get('index'))} instead of {position}"
    if not is_run_id(entry.get("run_id")):
        return f"has the run id {short_repr(entry.get('run_id'))}, which is not a critui run id"
    parent = entry.get("parent")
    if parent is not None and not (_whole(parent) and 0 <= parent < count and parent != position):
        return f"has the parent {short_repr(parent)}, which is not another entry of the plan"
    for key, low in (("fork_epoch", 0), ("epochs", 1)):
        if key in entry and not (_whole(entry[key]) and entry[key] >= low):
            return f"has {key} = {short_repr(entry[key])}, which is not a whole number of epochs"
    if "epochs" not in entry:
        return "has no epochs"
    if not isinstance(entry.get("axis"), dict) or not all(
            isinstance(value, (str, int, float, bool, type(None))) for value in entry["axis"].values()):
        return f"has the axis values {short_repr(entry.get('axis'))}, which is not an object of plain values"
    if not isinstance(entry.get("label", ""), str) or not isinstance(entry.get("baseline", False), bool):
        return "has a label that is not a string or a baseline that is not true or false"
    window = entry.get("window")
    if window is not None and not (isinstance(window, list) and len(window) == 2 and all(_whole(w) for w in window)):
        return f"has the window {short_repr(window)}, which is not [start, end]"
    return None


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def warn_on_stderr(message: str) -> None:
    """How the command line is told about a sweep record it skipped."""
    print(f"Warning: {message}", file=sys.stderr)


def all_records(store, on_problem: Callable[[str], None] = warn_on_stderr) -> list[dict[str, Any]]:
    """Every readable sweep record, oldest first. A record that cannot be used (not JSON, the
    wrong shape, an id that is not its folder's) is skipped and told to ``on_problem``."""
    out = []
    folder = sweeps_dir(store)
    if folder.is_dir():
        for path in sorted(folder.glob(f"*/{SWEEP_FILE}")):
            try:
                record = json.loads(path.read_bytes())
            except (OSError, ValueError, RecursionError) as exc:
                on_problem(f"{path} could not be read ({type(exc).__name__}: {short_repr(str(exc))}); "
                           "that sweep is left out. Delete its folder, or restore the file from a backup.")
                continue
            if problem := record_problem(path, record):
                on_problem(f"{path} {problem}; that sweep is left out. Delete its folder, or restore the "
                           "file from a backup.")
                continue
            for entry in record["runs"]:  # optional in the record; every reader may count on them
                entry.setdefault("parent", None)
                entry.setdefault("label", "")
            out.append(record)
    return sorted(out, key=lambda r: r.get("created", 0))


def load_record(store, ref: str, on_problem: Callable[[str], None] = warn_on_stderr) -> dict[str, Any]:
    """A sweep by id, unique prefix, or ``last``."""
    if ref not in ("last", "latest") and not SWEEP_REF.fullmatch(ref or ""):
        check_sweep_id(ref, "the command line")  # refused, with what a sweep id looks like
    records = all_records(store, on_problem)
    if not records:
        raise CritUIError(f"There are no sweeps in {store.home} yet. Start one with `critui sweep FILE.toml`.")
    if ref in ("last", "latest"):
        return records[-1]
    matches = [r for r in records if r["id"] == ref] or [r for r in records if r["id"].startswith(ref)]
    if len(matches) == 1:
        return matches[0]
    known = ", ".join(r["id"] for r in records[-5:])
    if not matches:
        raise CritUIError(f"No sweep {ref!r} in {store.home}. Known sweeps (most recent last): {known}; "
                          "`last` is the newest.")
    raise CritUIError(f"{ref!r} matches {len(matches)} sweeps ({', '.join(r['id'] for r in matches)}). Give more of the id.")


# What may name a sweep on the command line: an id or the start of one.
SWEEP_REF = re.compile(r"[a-z0-9][a-z0-9-]{0,100}")


def create_sweep(store, sweep, planned, nodes, versions: Callable[[Any], dict], config_path: str | None,
                 launcher: dict[str, Any] | None = None) -> dict[str, Any]:
    """Create every run of the plan (parents first) and the sweep record; return the record."""
    from critui.runs.planner import topological

    sweep_id = make_sweep_folder(store, Path(config_path).stem if config_path else sweep.name)
    entries: list[dict[str, Any]] = [{} for _ in nodes]
    for i in topological(nodes):
        node, run = nodes[i], planned[i]
        parent = entries[node.parent]["run_id"] if node.parent is not None else None
        extra = {"sweep": sweep_id, "axis": run.axis}
        if parent:
            extra.update(parent=parent, fork_epoch=node.fork_epoch)
        doc = store.create(node.spec, versions(node.spec), extra=extra)
        entries[i] = {
            "index": i, "run_id": doc["id"], "axis": run.axis, "baseline": run.baseline, "label": run.label(),
            "parent": node.parent, "fork_epoch": node.fork_epoch if node.parent is not None else 0,
            "epochs": node.spec.epochs, "window": list(node.spec.window()) if node.spec.window() else None,
        }
    record = {
        "id": sweep_id, "name": sweep.name, "config": config_path, "created": time.time(),
        "primary": sweep.primary, "axes": sweep.axis_names(), "runs": entries,
        "launcher": launcher,  # where its workers ran, for `critui sweep --resume`
    }
    save_record(store, record)
    return record


# -- the scheduler ---------------------------------------------------------------------------


def left_behind(store, record: dict[str, Any], docs: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """The sweep's runs whose local worker still trains, sorted by whether a live manager
    follows them: ``{"managed": [docs], "orphans": [(doc, pid)], "jobs": [docs]}``.

    A TUI that quit leaves its workers training with no manager: those are orphans, which
    ``critui sweep --resume`` adopts (follows to their end) instead of starting them again.
    A run whose manager (a ``critui sweep`` or a TUI) is alive is that manager's."""
    from critui.events import read_events, worker_pid
    from critui.processes import pid_alive

    docs = docs if docs is not None else {d["id"]: d for d in store.all()}
    out: dict[str, list] = {"managed": [], "orphans": [], "jobs": []}
    for entry in record["runs"]:
        doc = docs.get(entry["run_id"])
        if not doc or doc.get("status") != "running":
            continue
        if doc.get("job"):
            out["jobs"].append(doc)
            continue
        try:
            pid = worker_pid(read_events(store.run_dir(doc["id"])))
        except OSError:
            pid = None
        pid = pid if pid_alive(pid, doc["id"]) else (doc.get("pid") if pid_alive(doc.get("pid"), doc["id"]) else None)
        if pid is None:
            continue  # its worker is gone: the store settles it, and the scheduler starts it again
        manager = doc.get("manager_pid")
        if manager not in (None, os.getpid()) and pid_alive(manager):
            out["managed"].append(doc)
        else:
            out["orphans"].append((doc, pid))
    return out


class AdoptedProcess:
    """A worker this process did not start, seen through its pid as a ``Popen`` is: ``poll``
    says whether it still runs, ``terminate`` and ``kill`` signal it only while it is still
    that run's worker (:func:`critui.processes.signal_process`)."""

    def __init__(self, pid: int, run_id: str):
        self.pid = pid
        self.run_id = run_id
        self.returncode: int | None = None
        self.job = None

    def poll(self) -> int | None:
        from critui.processes import pid_alive

        if self.returncode is None and not pid_alive(self.pid, self.run_id):
            self.returncode = 0  # not our child: its exit code is not ours to read; its events tell
        return self.returncode

    def send_signal(self, signum: int) -> None:
        from critui.processes import signal_process

        signal_process(self.pid, signum, marker=self.run_id)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def wait(self, timeout: float | None = None) -> int:
        import subprocess

        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"worker of {self.run_id}", timeout)
            time.sleep(0.1)
        return self.returncode or 0


class AdoptingLauncher:
    """A launcher that starts nothing: it hands :class:`~critui.runs.monitor.RunMonitor` the
    live worker of a run left behind, so that the run is followed (events, end, index) as if
    this process had started it."""

    id = "launchers.local"  # the run keeps its record: it trains where it always did
    local = True
    settings: dict[str, Any] = {}

    def __init__(self, pid: int, run_id: str):
        self.pid, self.run_id = pid, run_id

    def start(self, run_dir: Path, env: dict[str, str]) -> AdoptedProcess:
        return AdoptedProcess(self.pid, self.run_id)



def cpu_threads_per_worker(jobs: int) -> int:
    """Split the cores between workers: one thread each beats two on a shared small machine."""
    return max(1, usable_cores() // max(1, jobs))


def split_threads(planned, jobs: int, local: bool) -> None:
    """Give each run that leaves ``train.threads`` at 0 (auto) its share of the cores when
    ``jobs`` local workers train at once: ``critui sweep --jobs`` and the TUI's form alike.
    Elsewhere (a cluster launcher) each worker has its own job's cores and keeps auto."""
    if not local:
        return
    threads = cpu_threads_per_worker(jobs)
    for run in planned:
        if not run.spec.train["threads"]:
            run.spec.train["threads"] = threads


def plan_sweep(planned, jobs: int, local: bool):
    """The thread split, then the fork tree and its cost: ``(nodes, scratch, forked)``, the
    plan ``critui sweep`` prints and creates, and the one the TUI's form previews."""
    from critui.runs.planner import cost, plan_tree

    split_threads(planned, jobs, local)
    nodes = plan_tree([run.spec for run in planned])
    scratch, forked = cost(nodes)
    return nodes, scratch, forked


def detect_gpus() -> list[str]:
    from critui.devices import no_gpu_driver

    if no_gpu_driver():
        return []
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    except Exception:  # noqa: BLE001 - no usable CUDA is simply no GPU
        return []


class SweepScheduler:
    """Runs a sweep's pending runs, ``jobs`` at a time, children after their fork checkpoint.

    With GPUs and ``per_gpu`` = k, up to k workers share each GPU (G·k at once), each pinned
    to its GPU through ``CUDA_VISIBLE_DEVICES``; without ``per_gpu``, ``jobs`` workers are
    spread over the GPUs, least-loaded first.
    """

    def __init__(self, store, record: dict[str, Any], jobs: int = 1, gpus: list[str] | None = None,
                 per_gpu: int | None = None,
                 on_event: Callable[[dict[str, Any], dict[str, Any]], None] | None = None,
                 on_start: Callable[[dict[str, Any]], None] | None = None,
                 on_end: Callable[[dict[str, Any], str], None] | None = None,
                 launcher=None):
        self.store = store
        self.launcher = launcher
        self.record = record
        self.gpus = list(gpus or [])
        self.per_gpu = per_gpu if self.gpus else None
        self.jobs = worker_slots(self.gpus, jobs, self.per_gpu)
        self.on_event = on_event or (lambda entry, event: None)
        self.on_start = on_start or (lambda entry: None)
        self.on_end = on_end or (lambda entry, status: None)
        self.running: dict[int, Any] = {}  # entry index -> RunMonitor
        self.gpu_of: dict[int, str] = {}
        self.entries = record["runs"]
        docs = {d["id"]: d for d in store.all()}
        # A run deleted since (`critui delete`, the TUI) is gone for good: it is skipped,
        # not restarted, and counts as "deleted" in the sweep's outcome.
        self.status = {
            e["index"]: docs[e["run_id"]].get("status", "queued") if e["run_id"] in docs else "deleted"
            for e in self.entries
        }
        self.pending = [e["index"] for e in self.entries if self.status[e["index"]] not in ("finished", "deleted")]
        self.pending.sort(key=self._depth)
        self.adopted: list[int] = []  # entries whose live worker an earlier session left behind

    def adopt(self, orphans: list[tuple[dict[str, Any], int]]) -> list[int]:
        """Follow the live workers of ``orphans`` (from :func:`left_behind`) as running runs:
        they are not started again, their children wait for their checkpoints, and their end
        is recorded as if this scheduler had started them. Returns the entries adopted."""
        from critui.events import EventTail
        from critui.runs.monitor import RunMonitor

        index_of = {e["run_id"]: e["index"] for e in self.entries}
        for doc, pid in orphans:
            index = index_of.get(doc["id"])
            if index is None or index not in self.pending:
                continue
            self.pending.remove(index)
            monitor = RunMonitor(self.store, doc["id"], launcher=AdoptingLauncher(pid, doc["id"]))
            # From the first event, not from the end of the file as for a worker just started:
            # one that wrote its final event and is still exiting would otherwise end "failed".
            monitor.tail = EventTail(monitor.run_dir)
            self.running[index] = monitor
            self.status[index] = "running"
            self.adopted.append(index)
            self.on_start(self.entries[index])
        return list(self.adopted)

    def _depth(self, index: int) -> tuple[int, int]:
        depth, entry = 0, self.entries[index]
        while entry.get("parent") is not None:
            depth += 1
            entry = self.entries[entry["parent"]]
        return depth, self.entries[index].get("fork_epoch") or 0

    # -- one step at a time, so that the CLI (and tests) can drive it ------------------------

    def step(self) -> bool:
        """Poll the running workers, start what can start; False once everything has ended."""
        for index, monitor in list(self.running.items()):
            for event in monitor.poll():
                self.on_event(self.entries[index], event)
            if monitor.done:
                del self.running[index]
                self.gpu_of.pop(index, None)
                self.status[index] = monitor.end["event"] if monitor.end else "failed"
                if self.entries[index].get("parent") is not None:
                    summarise_fork(self.store, self.entries[index]["run_id"])
                self.on_end(self.entries[index], self.status[index])
        for index in list(self.pending):
            if len(self.running) >= self.jobs:
                break
            if self._prepare(index):
                self.pending.remove(index)
                self._start(index)
        return bool(self.pending or self.running)

    def run(self, interval: float = 0.2) -> dict[int, str]:
        while self.step():
            time.sleep(interval)
        return self.status

    def cancel(self) -> None:
        """Stop every worker (all signalled first, then awaited) and mark unstarted runs cancelled."""
        from critui.runs.launcher import stop_worker

        for monitor in self.running.values():
            if monitor.process.poll() is None:
                try:
                    monitor.process.terminate()
                except ProcessLookupError:
                    pass
        for index, monitor in list(self.running.items()):
            stop_worker(monitor.process)
            monitor.cancel()
            self.status[index] = monitor.end["event"] if monitor.end else "cancelled"
        self.running.clear()
        for index in self.pending:
            self.store.update(self.entries[index]["run_id"], status="cancelled", ended=time.time())
            self.status[index] = "cancelled"

    # -- internals ---------------------------------------------------------------------------

    def _prepare(self, index: int) -> bool:
        """Whether the run can start now; puts the parent's fork checkpoint in place first."""
        entry = self.entries[index]
        run_dir = self.store.run_dir(entry["run_id"])
        latest = run_dir / "ckpt" / LATEST
        parent = entry.get("parent")
        if parent is None or latest.exists():
            return True
        k = entry["fork_epoch"]
        kept = self.store.run_dir(self.entries[parent]["run_id"]) / "ckpt" / epoch_checkpoint_name(k)
        if kept.exists():
            latest.parent.mkdir(parents=True, exist_ok=True)
            atomic_copy(kept, latest)
            return True
        parent_waiting = parent in self.pending or parent in self.running
        if parent_waiting:
            return False
        # The parent ended without reaching the fork: train this run from scratch instead.
        entry["parent"], entry["fork_epoch"] = None, 0
        save_record(self.store, self.record)
        self.store.update(entry["run_id"], parent=None, fork_epoch=None)
        return True

    def _start(self, index: int) -> None:
        from critui.runs.monitor import RunMonitor

        env: dict[str, str] = {}
        gpu = place_on_gpu(self.gpus, list(self.gpu_of.values()), self.per_gpu)
        if gpu is not None:
            self.gpu_of[index] = gpu
            env["CUDA_VISIBLE_DEVICES"] = gpu
        self.store.update(self.entries[index]["run_id"], error=None)
        self.running[index] = RunMonitor(self.store, self.entries[index]["run_id"], env=env, launcher=self.launcher)
        self.status[index] = "running"
        self.on_start(self.entries[index])
