"""The run store: one directory per run, and a TinyDB index of all of them.

Each run directory (``HOME/runs/<run-id>/``) is self-describing: ``run.json`` (who made it,
with which plugins, on which commit), ``spec.json`` (the resolved config), ``events.jsonl``
(what happened), ``ckpt/`` and ``log.txt``. The index (``HOME/history.json``) is a summary
for listing and filtering. It is written only by managing processes, only on state changes,
under a file lock, and atomically (write a temporary file, then rename), so a TUI and any
number of ``critui run`` processes can share one home.

Because the run directories are the source of truth, :meth:`RunStore.reconcile` can always
bring the index up to date with them: a run whose worker died becomes ``interrupted``, a
run that finished while nobody watched becomes ``finished``, and a directory the index
lost is added back.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout
from tinydb import Query, TinyDB
from tinydb.storages import Storage

from critui.config import RunSpec
from critui.errors import CritUIError
from critui.events import (
    TERMINAL,
    epoch_table,
    final_accuracy,
    outcome,
    pid_alive,
    read_events,
    worker_pid,
)

INDEX_FILE = "history.json"
LOCK_FILE = "history.lock"
RUNS_DIR = "runs"
ACTIVE = ("queued", "running")
STATUSES = ("queued", "running", "finished", "failed", "cancelled", "interrupted")
LOCK_TIMEOUT_S = 30.0


def default_home() -> Path:
    """``CRITUI_HOME`` if set, else the per-user data directory."""
    env = os.environ.get("CRITUI_HOME")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("critui", appauthor=False))


class AtomicJSONStorage(Storage):
    """TinyDB storage that never leaves a half-written index: write aside, then rename."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def read(self) -> dict[str, Any] | None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        if not text.strip():
            return None
        try:
            return json.loads(text)
        except ValueError:
            raise CritUIError(
                f"The run index {self.path} is corrupt (not valid JSON). Your runs are safe in "
                f"{self.path.parent / RUNS_DIR}: move the index aside (mv {self.path} "
                f"{self.path}.bad) and any critui command rebuilds it from the run directories."
            ) from None

    def write(self, data: dict[str, Any]) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=1, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            raise CritUIError(
                f"Could not write the run index {self.path}: {exc.strerror or exc}. Free some "
                "disk space or point --home / CRITUI_HOME at a writable folder; no run was lost."
            ) from None
        finally:
            if tmp.exists():
                tmp.unlink()

    def close(self) -> None:
        pass


def new_run_id() -> str:
    """Sortable and unique across processes: time, then random hex."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


def git_commit() -> str | None:
    """The commit of the critui source tree, with ``-dirty`` if it has local changes."""
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5)
        return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def forked_from_message(run_id: str, forks: list[str]) -> str:
    """Why a run with forks cannot be deleted, and what to do."""
    shown = ", ".join(forks[:4]) + (f" and {len(forks) - 4} more" if len(forks) > 4 else "")
    return (
        f"Run {run_id} cannot be deleted: {len(forks)} forked run(s) ({shown}) inherit their "
        "epochs before the fork from it, and would lose them. Delete those runs first (or "
        "together with it, in one `critui delete`), or keep it."
    )


class RunStore:
    """The runs under one critui home."""

    def __init__(self, home: Path | str | None = None):
        self.home = Path(home).expanduser() if home else default_home()
        self.runs_dir = self.home / RUNS_DIR
        try:
            self.runs_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CritUIError(
                f"Cannot create the critui home {self.home}: {exc.strerror or exc}. Choose a "
                "writable folder with --home DIR or CRITUI_HOME=DIR."
            ) from None
        self._lock = FileLock(str(self.home / LOCK_FILE), timeout=LOCK_TIMEOUT_S)

    # -- the index ---------------------------------------------------------------------------

    @contextmanager
    def index(self) -> Iterator[TinyDB]:
        """The TinyDB index, opened under the file lock for one read-modify-write."""
        try:
            with self._lock:
                db = TinyDB(self.home / INDEX_FILE, storage=AtomicJSONStorage)
                try:
                    yield db
                finally:
                    db.close()
        except Timeout:
            raise CritUIError(
                f"The run index in {self.home} stayed locked for {LOCK_TIMEOUT_S:.0f} s. Another "
                f"critui process may be stuck; if none is running, delete {self.home / LOCK_FILE}."
            ) from None

    def run_dir(self, run_id: str) -> Path:
        return self.runs_dir / run_id

    def create(self, spec: RunSpec, plugins: dict[str, dict[str, str]], extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Make a run directory (complete before it appears) and its index entry, ``queued``."""
        run_id = new_run_id()
        while self.run_dir(run_id).exists():
            run_id = new_run_id()
        meta = {
            "id": run_id,
            "name": spec.name or spec.describe(),
            "created": time.time(),
            "host": socket.gethostname(),
            "manager_pid": os.getpid(),
            "plugins": plugins,
            "git_commit": git_commit(),
            "spec_hash": spec.spec_hash(),
            **(extra or {}),
        }
        staging = self.runs_dir / f".{run_id}.tmp"
        try:
            staging.mkdir()
            (staging / "spec.json").write_text(json.dumps(spec.to_json(), indent=2, sort_keys=True))
            (staging / "run.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)  # e.g. a full disk: leave nothing half-made
            raise
        doc = self._document(meta, spec, status="queued")
        # The directory appears under the index lock: otherwise another critui process could
        # reconcile in between, find a run directory missing from the index, and add it
        # before this insert adds it a second time.
        with self.index() as db:
            os.replace(staging, self.run_dir(run_id))
            db.insert(doc)
        return doc

    def claim(self, run_id: str, check: Callable[[dict[str, Any]], None], **fields: Any) -> dict[str, Any]:
        """Re-read a run under the index lock, let ``check`` refuse it (by raising), then set
        ``fields``: two processes resuming one run can never both pass the check."""
        with self.index() as db:
            doc = db.get(Query().id == run_id)
            if doc is None:
                raise CritUIError(f"Run {run_id} is no longer in {self.home} (deleted?).")
            check(dict(doc))
            db.update(fields, Query().id == run_id)
            return {**doc, **fields}

    def update(self, run_id: str, **fields: Any) -> None:
        with self.index() as db:
            db.update(fields, Query().id == run_id)

    def all(self) -> list[dict[str, Any]]:
        with self.index() as db:
            return sorted(db.all(), key=lambda d: d.get("created", 0))

    def get(self, ref: str) -> dict[str, Any]:
        """A run by id, unique id prefix, or ``last`` (the newest)."""
        docs = self.all()
        if ref in ("last", "latest"):
            if not docs:
                raise CritUIError(f"There are no runs in {self.home} yet. Start one with `critui run`.")
            return docs[-1]
        exact = [d for d in docs if d["id"] == ref]
        matches = exact or [d for d in docs if d["id"].startswith(ref) or d["id"].endswith(ref)]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            recent = ", ".join(d["id"] for d in docs[-3:]) or "none yet"
            raise CritUIError(
                f"No run {ref!r} in {self.home}. Use a run id from `critui runs` (most recent: "
                f"{recent}), a unique prefix or suffix of one, or `last`."
            )
        raise CritUIError(
            f"{ref!r} matches {len(matches)} runs ({', '.join(d['id'] for d in matches[:5])}). "
            "Give more of the id."
        )

    def delete(self, run_id: str) -> None:
        """Remove a run's index entry and directory. A run that forked runs inherit their
        first epochs from is refused: deleting it would silently lose theirs."""
        with self.index() as db:
            if forks := [d["id"] for d in db.all() if d.get("parent") == run_id]:
                raise CritUIError(forked_from_message(run_id, forks))
            db.remove(Query().id == run_id)
        shutil.rmtree(self.run_dir(run_id), ignore_errors=True)

    # -- keeping the index true to the run directories ---------------------------------------

    def reconcile(self) -> list[str]:
        """Bring the index up to date with the run directories; return the ids changed.

        Active runs whose worker and manager are gone are settled from their events;
        run directories missing from the index are added back.
        """
        changed = []
        with self.index() as db:
            known = {d["id"]: d for d in db.all()}
            for run_id, doc in known.items():
                if doc.get("status") not in ACTIVE:
                    continue
                fields = self._settle(doc)
                if fields:
                    db.update(fields, Query().id == run_id)
                    changed.append(run_id)
            for path in sorted(self.runs_dir.iterdir()):
                if path.name.startswith(".") or path.name in known or not (path / "spec.json").exists():
                    continue
                doc = self._rebuild(path)
                if doc:
                    db.insert(doc)
                    changed.append(path.name)
        return changed

    def _settle(self, doc: dict[str, Any]) -> dict[str, Any]:
        run_dir = self.run_dir(doc["id"])
        if not run_dir.exists():
            return {"status": "interrupted", "error": "the run directory was deleted", "ended": time.time()}
        events = read_events(run_dir)
        # The manager records the worker's pid before the worker has written any event.
        if doc.get("job"):  # a launcher's job, perhaps on another machine: only it can tell
            from critui.runs.launcher import job_alive

            alive = job_alive(doc, self.home)
            if alive is None and not any(e["event"] in TERMINAL for e in events):
                return {}  # cannot tell: leave it as it is rather than call a live run dead
            if alive:
                return {} if doc.get("status") == "running" else {"status": "running"}
        elif pid_alive(worker_pid(events), doc["id"]) or pid_alive(doc.get("pid"), doc["id"]):
            return {} if doc.get("status") == "running" else {"status": "running"}
        if doc.get("status") == "queued" and pid_alive(doc.get("manager_pid")) and not events:
            return {}  # its manager is still about to start it
        return self.summary_fields(events, ended_default="interrupted")

    def _rebuild(self, run_dir: Path) -> dict[str, Any] | None:
        try:
            spec = RunSpec.from_json(json.loads((run_dir / "spec.json").read_text()))
            meta = json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").exists() else {}
        except (ValueError, KeyError, TypeError):
            return None
        meta.setdefault("id", run_dir.name)
        meta.setdefault("created", run_dir.stat().st_mtime)
        events = read_events(run_dir)
        alive = pid_alive(worker_pid(events), run_dir.name)
        doc = self._document(meta, spec, status="running" if alive else "interrupted")
        if not alive:
            doc.update(self.summary_fields(events, ended_default="interrupted"))
        return doc

    @staticmethod
    def summary_fields(events: list[dict[str, Any]], ended_default: str | None = None) -> dict[str, Any]:
        """Index fields derived from a run's events: status, progress, accuracy, runtime facts."""
        rows = epoch_table(events)
        fields: dict[str, Any] = {
            "epochs_done": len(rows),
            "final_acc": final_accuracy(rows),
            "last_acc": rows[-1]["test_acc"] if rows else None,
        }
        starts = [e for e in events if e["event"] == "started"]
        if starts:
            first = starts[0]
            fields.update(
                device=starts[-1].get("device"),
                device_name=starts[-1].get("device_name"),
                threads=starts[-1].get("threads"),
                torch=first.get("torch"),
                started=first.get("time"),
                lr_at_removal=first.get("lr_at_removal"),
            )
        end = outcome(events)
        if end is not None:
            fields.update(status=end["event"], ended=end.get("time"))
            if end["event"] == "failed":
                fields.update(error=end.get("error"), failed_epoch=end.get("epoch"))
        elif ended_default:
            fields.update(status=ended_default, ended=time.time())
        return fields

    @staticmethod
    def _document(meta: dict[str, Any], spec: RunSpec, status: str) -> dict[str, Any]:
        window = spec.window()
        return {
            **{k: meta.get(k) for k in ("id", "name", "created", "host", "manager_pid", "plugins", "git_commit")},
            "spec_hash": spec.spec_hash(),
            "status": status,
            "dataset": spec.dataset.id,
            "model": spec.model.id,
            "deficit": spec.deficit.id if spec.deficit else None,
            "window": list(window) if window else None,
            "epochs": spec.epochs,
            "seed": spec.seed,
            "epochs_done": 0,
            "final_acc": None,
            "parent": meta.get("parent"),
            "fork_epoch": meta.get("fork_epoch"),
            "sweep": meta.get("sweep"),
            "axis": meta.get("axis"),
        }
