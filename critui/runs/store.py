"""The run store: one directory per run, and a TinyDB index of all of them.

Each run directory (``HOME/runs/<run-id>/``) is self-describing: ``run.json`` (who made it,
with which plugins, on which commit), ``spec.json`` (the resolved config), ``events.jsonl``
(what happened), ``ckpt/`` and ``log.txt``. The index (``HOME/history.json`` and its journal,
see :mod:`critui.runs.journal`) is a summary for listing and filtering, written only under a
file lock, so a TUI and any number of ``critui run`` processes can share one home.

Because the run directories are the source of truth, :meth:`RunStore.reconcile` can always
bring the index up to date with them: a run whose worker died becomes ``interrupted``, a
run that finished while nobody watched becomes ``finished``, and a directory the index
lost is added back (a lost or unreadable index is rebuilt in one write).

Nothing read is trusted. A run id must have critui's form and be its folder's name before it
becomes a path (``..``, ``/``, an absolute path never reach a delete); an index entry, a
``run.json`` or a ``spec.json`` that cannot be used is skipped and described in
:attr:`RunStore.problems`, so one damaged run never breaks a command about another.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import operator
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from filelock import FileLock, Timeout
from tinydb import TinyDB

from critui.errors import CritUIError
from critui.events import (
    EVENTS_FILE,
    TERMINAL,
    epoch_table,
    epochs_covered,
    final_accuracy,
    outcome,
    parse_lines,
    pid_alive,
    score_of,
    worker_pid,
)
from critui.files import TEMP_SUFFIX, atomic_write, is_temp, remove_stale_temps
from critui.runs import listing as listing_file
from critui.runs.ids import check_run_id, is_run_id, new_run_id
from critui.runs.journal import (
    FIELD_CHECKS,
    JOURNAL_SUFFIX,
    STATUSES,  # noqa: F401 - part of this module's interface
    IndexDamaged,
    JournalStorage,
    entry_problem,
    field_ok,
    forget_cached,
    is_number,
)
from critui.runs.listing import ACTIVE, entry_tags  # noqa: F401 - part of this module's interface

if TYPE_CHECKING:
    from critui.config import RunSpec

INDEX_FILE = "history.json"
LOCK_FILE = "history.lock"
RUNS_DIR = "runs"
LOCK_TIMEOUT_S = 30.0
STAGING_MAX_AGE_S = 3600.0  # a staging folder younger than this may be a create() under way
SKIPPED_EVENTS = ('{"event": "metric"', '{"event": "checkpoint"')  # lines a summary never needs
TAGS_FILE = "tags.json"  # a run's tags and note: {"tags": [...], "note": "..."}
TAG_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,39}")
NOTE_MAX = 2000
RUN_REF = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,79}")  # what may name a run, or a typo of one


def default_home() -> Path:
    """``CRITUI_HOME`` if set, else the per-user data directory."""
    env = os.environ.get("CRITUI_HOME")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("critui", appauthor=False))


def git_commit() -> str | None:
    """The commit of the critui source tree, with ``-dirty`` if it has local changes."""
    import subprocess  # here: `critui runs` and the TUI's start never need it

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




def check_run_ref(ref: object) -> str:
    """``ref`` if it could name a run (``last``, an id, a part of one, or a typo of one); a
    CritUIError for anything path-like (empty, ``..``, a ``/``, a leading dot or ``~``), before
    the reference comes anywhere near a path."""
    if isinstance(ref, str) and RUN_REF.fullmatch(ref) and ".." not in ref:
        return ref
    return check_run_id(ref, "the command line")


@dataclasses.dataclass
class IndexChanges:
    """What :meth:`RunStore.changes` found: either every entry, or what changed since a cursor."""

    cursor: tuple[int, int]  # pass it to the next call
    everything: list[dict[str, Any]] | None = None  # every entry, oldest first, when the changes are not known
    changed: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)  # run id -> its entry now
    removed: list[str] = dataclasses.field(default_factory=list)  # run ids no longer indexed


_created = operator.itemgetter("created")


class RunStore:
    """The runs under one critui home.

    What the store reads and cannot use (a damaged index entry, a run folder with a broken
    ``spec.json``, a copied folder) is skipped, never trusted, and described in
    :attr:`problems`, which the CLI prints as warnings and the TUI as notifications.
    """

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
        self.problems: list[str] = []  # warnings not yet shown; see take_problems
        self._warned: set[str] = set()
        self._scanned: tuple | None = None  # the runs folder and index as of the last full scan

    # -- problems found while reading ----------------------------------------------------------

    def warn(self, message: str) -> None:
        """Note a problem with what was read (once per store, however often it is met)."""
        if message not in self._warned:
            self._warned.add(message)
            self.problems.append(message)

    def take_problems(self) -> list[str]:
        """The problems noted since the last call, oldest first."""
        taken, self.problems = self.problems, []
        return taken

    # -- the index ---------------------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """The index's file lock, held for the block."""
        try:
            with self._lock:
                yield
        except Timeout:
            raise CritUIError(
                f"The run index in {self.home} stayed locked for {LOCK_TIMEOUT_S:.0f} s. Another "
                f"critui process may be stuck; if none is running, delete {self.home / LOCK_FILE}."
            ) from None

    @contextmanager
    def index(self) -> Iterator[TinyDB]:
        """The TinyDB index, opened under the file lock for one read-modify-write."""
        with self._locked():
            db = self._open_index()
            try:
                yield db
                if db.storage.state.needs_compaction:
                    db.storage.compact()  # fold away what was left out, so it is told once
                if db.storage.compactions:  # a new snapshot: the runs listing of it, for `critui runs`
                    listing_file.save_index(db.storage)
            finally:
                for problem in db.storage.problems:
                    self.warn(problem)
                db.close()

    def _open_index(self) -> TinyDB:
        db = TinyDB(self.home / INDEX_FILE, storage=JournalStorage)
        try:
            db.storage.refresh()
        except IndexDamaged as exc:
            db = self._set_aside(db.storage, str(exc))
            self._add_missing(db)  # rebuilt from the run folders, in one write
        return db

    def _set_aside(self, storage: JournalStorage, problem: str) -> TinyDB:
        """Move an unreadable index out of the way (kept for inspection) and start a new one."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        kept = []
        for path in (storage.path, storage.journal):
            if path.exists():
                aside = path.with_name(f"{path.name}.damaged-{stamp}")
                os.replace(path, aside)
                kept.append(aside.name)
        forget_cached(storage.path)
        self._scanned = None  # every run folder must be read again
        self.warn(
            f"The run index {storage.path} {problem}. It was moved aside ({', '.join(kept)}) and "
            f"rebuilt from the run folders in {self.runs_dir}; no run was lost."
        )
        db = TinyDB(self.home / INDEX_FILE, storage=JournalStorage)
        db.storage.refresh()
        return db

    def index_key(self) -> tuple:
        """Changes whenever any process changes the index (cheap: two stats, no lock)."""
        keys = []
        for name in (INDEX_FILE, INDEX_FILE.removesuffix(".json") + JOURNAL_SUFFIX):
            try:
                st = os.stat(self.home / name)
                keys.append((st.st_ino, st.st_size, st.st_mtime_ns))
            except FileNotFoundError:
                keys.append(None)
        return tuple(keys)

    def run_dir(self, run_id: str) -> Path:
        """The folder of a run; refuses anything that is not a run id (it would be a path)."""
        return self.runs_dir / check_run_id(run_id)

    def create(self, spec: RunSpec, plugins: dict[str, dict[str, str]], extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Make a run directory (complete before it appears) and its index entry, ``queued``."""
        import socket  # here: `critui runs` and the TUI's start never need it

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
        staging = self.runs_dir / f".{run_id}{TEMP_SUFFIX}"  # reconcile clears one left by a kill
        try:
            staging.mkdir()
            atomic_write(staging / "spec.json", json.dumps(spec.to_json(), indent=2, sort_keys=True))
            atomic_write(staging / "run.json", json.dumps(meta, indent=2, sort_keys=True))
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)  # e.g. a full disk: leave nothing half-made
            raise
        # The directory appears under the index lock: otherwise another critui process could
        # reconcile in between, find a run directory missing from the index, and add it
        # before this insert adds it a second time.
        with self.index() as db:
            while self.run_dir(run_id).exists():  # the same second and the same random suffix
                run_id = meta["id"] = new_run_id()
                atomic_write(staging / "run.json", json.dumps(meta, indent=2, sort_keys=True))
            doc = self._document(meta, spec_fields(spec.to_json()), status="queued")
            os.replace(staging, self.run_dir(run_id))
            db.storage.insert([doc])
        return doc

    def claim(self, run_id: str, check: Callable[[dict[str, Any]], None], **fields: Any) -> dict[str, Any]:
        """Re-read a run under the index lock, let ``check`` refuse it (by raising), then set
        ``fields``: two processes resuming one run can never both pass the check."""
        with self.index() as db:
            doc_id = db.storage.state.by_run.get(run_id)
            if doc_id is None:
                raise CritUIError(f"Run {run_id} is no longer in {self.home} (deleted?).")
            doc = dict(db.storage.state.entries[doc_id])
            check(dict(doc))
            db.storage.set_fields(run_id, fields)
            return {**doc, **fields}

    def update(self, run_id: str, **fields: Any) -> None:
        """Set fields of a run's entry. A fork's progress and accuracy, whoever settles it, are
        counted from its joined history (inherited epochs too), as if trained from scratch."""
        with self.index() as db:
            state = db.storage.state
            doc_id = state.by_run.get(run_id)
            if doc_id is None:
                return
            doc = state.entries[doc_id]
            if "epochs_done" in fields and doc.get("parent"):
                fields.update(self._fork_progress({**doc, **fields}, self._docs_by_id(state)))
            db.storage.set_fields(run_id, fields)

    def all(self) -> list[dict[str, Any]]:
        """Every run's index entry (copies), oldest first."""
        with self.index() as db:
            docs = [dict(d) for d in db.storage.state.entries.values()]
        return sorted(docs, key=_created)

    def listing(self) -> list[dict[str, Any]]:
        """Every run's row of ``critui runs`` (:data:`critui.runs.listing.FIELDS`), oldest
        first, once the index is up to date with the run folders, as after :meth:`reconcile`.

        Read from the listing kept beside the index (``history.listing``) when it can be used:
        then the index is hashed (to know the listing is of it) but not parsed, and no run
        folder is read but those of queued and running runs, to see that they are still alive.
        When it is missing, stale or damaged, or reconcile has something to write, the index is
        read and reconciled as by any other command, and a fresh listing is written."""
        with self._locked():
            rows, rewrite = self._kept_listing()
        if rows is None:
            self.reconcile()
            with self.index() as db:
                state = db.storage.state
                rows = list(listing_file.from_entries(state.entries, state.invalid)[0].values())
                if rewrite:
                    listing_file.save_index(db.storage)
        return sorted(rows, key=_created)

    def _kept_listing(self) -> tuple[list[dict[str, Any]] | None, bool]:
        """The rows from the kept listing, if reconcile would change nothing (call it under the
        lock); else None, and whether the kept listing is no use (to be written afresh)."""
        remove_stale_temps(self.home)  # as reconcile does
        index_path = self.home / INDEX_FILE
        journal_path = index_path.with_name(index_path.name.removesuffix(".json") + JOURNAL_SUFFIX)
        found, _why = listing_file.load(index_path, journal_path)
        if found is None:
            return None, True
        for doc in found.full.values():  # queued and running runs: still so?
            try:
                if self._settle(dict(doc), progress=False):
                    return None, False  # one to settle: reconcile writes it
            except Exception:  # noqa: BLE001 - reconcile says what is wrong with the run
                return None, False
        missing, _waiting = self._unindexed({row["id"] for row in found.rows.values()})
        if missing:
            return None, False  # reconcile indexes them
        if found.replayed > listing_file.REFRESH_BYTES:
            listing_file.save(index_path, found)  # so the next reader replays less
        return list(found.rows.values()), False

    def changes(self, since: tuple[int, int] | None = None) -> IndexChanges:
        """What changed in the index since ``since`` (the ``cursor`` of an earlier call; None
        at first): the changed entries (copies) and the removed run ids, read from the journal
        lines appended since. When that is not known (another process folded the journal into a
        new snapshot, or the index was rebuilt), :attr:`IndexChanges.everything` holds every
        entry, oldest first, as :meth:`all` gives them."""
        with self.index() as db:
            state = db.storage.state
            run_ids = state.changed_since(since)
            if run_ids is None:
                docs = sorted((dict(d) for d in state.entries.values()), key=_created)
                return IndexChanges(state.cursor, everything=docs)
            entries, by_run = state.entries, state.by_run
            return IndexChanges(
                state.cursor,
                changed={r: dict(entries[by_run[r]]) for r in run_ids if r in by_run},
                removed=[r for r in run_ids if r not in by_run],
            )

    def get(self, ref: str) -> dict[str, Any]:
        """A run by id, unique id prefix or suffix, or ``last`` (the newest)."""
        check_run_ref(ref)
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
        path = self.run_dir(run_id)  # checked before anything is touched
        with self.index() as db:
            state = db.storage.state
            if forks := [d["id"] for d in state.entries.values() if d.get("parent") == run_id]:
                raise CritUIError(forked_from_message(run_id, forks))
            if (doc_id := state.by_run.get(run_id)) is not None:
                db.storage.commit({}, [doc_id])
        if path.is_symlink():
            path.unlink()  # never follow a link out of the home
        else:
            shutil.rmtree(path, ignore_errors=True)

    # -- tags and notes: the run folder's tags.json is the truth, the index a copy ------------

    def annotate(self, run_id: str, add: list[str] = (), remove: list[str] = (),
                 note: str | None = None) -> dict[str, Any]:
        """Add and remove tags of a run and/or set its note (``""`` clears it); return the
        run's ``{"tags": [...], "note": ...}``. Written to the run's ``tags.json`` (atomically)
        and then to its index entry, under the index lock."""
        for tag in [*add, *remove]:
            check_tag(tag)
        if note is not None:
            note = check_note(note)
        run_dir = self.run_dir(run_id)
        with self.index() as db:
            if run_id not in db.storage.state.by_run:
                raise CritUIError(f"Run {run_id} is no longer in {self.home} (deleted?).")
            current, problem = read_tags(run_dir)
            if problem:
                raise CritUIError(f"{problem} Fix or delete that file, then tag the run again.")
            if not add and not remove and note is None:
                return {"tags": current.get("tags", []), "note": current.get("note")}
            tags = [t for t in current.get("tags", []) if t not in remove]
            tags += [t for t in dict.fromkeys(add) if t not in tags]
            notes = {"tags": tags, "note": current.get("note") if note is None else (note or None)}
            atomic_write(run_dir / TAGS_FILE, json.dumps(notes, indent=2))
            db.storage.set_fields(run_id, notes)
        return notes

    # -- keeping the index true to the run directories ---------------------------------------

    def reconcile(self) -> list[str]:
        """Bring the index up to date with the run directories; return the ids changed.

        Active runs whose worker and manager are gone are settled from their events; run
        directories missing from the index are added back (all in one write); critui's stale
        temporary files are removed. A run that cannot be read is skipped with a warning.
        """
        with self.index() as db:
            remove_stale_temps(self.home)  # index temporaries: nobody writes them without the lock
            state = db.storage.state
            settled: dict[str, dict[str, Any]] = {}
            docs_by_id = None
            for doc in [d for d in state.entries.values() if d.get("status") in ACTIVE]:
                if doc.get("parent") and docs_by_id is None:
                    docs_by_id = self._docs_by_id(state)
                try:
                    fields = self._settle(dict(doc), docs_by_id)
                except Exception as exc:  # noqa: BLE001 - one damaged run must not stop the others
                    self.warn(f"{self.runs_dir / doc['id']}: could not read how it ended ({type(exc).__name__}: "
                              f"{exc}); it stays {doc['status']} in the index.")
                    continue
                if fields:
                    settled[doc["id"]] = fields
            if settled:  # in one write
                db.storage.commit({state.by_run[r]: {**state.entries[state.by_run[r]], **f} for r, f in settled.items()}, ())
            return list(settled) + self._add_missing(db)

    def _add_missing(self, db: TinyDB) -> list[str]:
        """Index the run folders the index lacks, in one write; refuse folders not named by an id."""
        state = db.storage.state
        scan = (self._folder_key(), state.generation)
        if scan == self._scanned and not state.rejected:
            return []
        missing, waiting = self._unindexed(state.by_run)
        docs = []
        for path in missing:
            try:
                doc = self._rebuild(path)
            except Exception as exc:  # noqa: BLE001 - one damaged run must not stop the others
                self.warn(f"{path}: could not be read ({type(exc).__name__}: {exc}); it is left out of the index.")
                continue
            if doc:
                docs.append(doc)
        if any(d.get("parent") for d in docs):
            by_id = {**self._docs_by_id(state), **{d["id"]: d for d in docs}}
            for doc in docs:
                if doc.get("parent") and doc["status"] not in ACTIVE:
                    doc.update(self._fork_progress(doc, by_id))
        if docs:
            db.storage.insert(docs)
        self._scanned = None if waiting else (self._folder_key(), db.storage.state.generation)
        return [d["id"] for d in docs]

    def _unindexed(self, known) -> tuple[list[Path], bool]:
        """The run folders whose ids ``known`` lacks, and whether a folder may be one still being
        copied in; a folder not named by a run id is warned about, not returned."""
        # Staging folders a killed create() left; only when the runs folder is read anyway (a
        # new process always reads it once), as 10,000 entries are not listed at every poll.
        unknown = [name for name in os.listdir(self.runs_dir) if name not in known]  # no run id is a temp
        if any(map(is_temp, unknown)):
            remove_stale_temps(self.runs_dir, older_than_s=STAGING_MAX_AGE_S)
        missing, waiting = [], False
        for name in [n for n in unknown if not n.startswith(".")]:
            path = self.runs_dir / name
            if not (path / "spec.json").exists() and not (path / "run.json").exists():
                waiting = True  # not a run, or one still being copied in: look again next time
                continue
            if not is_run_id(name):
                self.warn(self._foreign_folder_message(path))
                continue
            missing.append(path)
        return missing, waiting

    def _folder_key(self) -> tuple | None:
        try:
            st = os.stat(self.runs_dir)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns)

    def _foreign_folder_message(self, path: Path) -> str:
        meta, _ = read_json_object(path / "run.json")
        copied = f" (a copy of run {meta['id']}?)" if meta and is_run_id(meta.get("id")) else ""
        return (
            f"{path} is not named by a critui run id{copied}, so it is not listed. To keep it as a run "
            f"of its own, rename it to a fresh id (e.g. mv {path} {self.runs_dir / new_run_id()}); "
            "otherwise remove it."
        )

    @staticmethod
    def _docs_by_id(state) -> dict[str, dict[str, Any]]:
        return {d["id"]: d for d in state.entries.values()}

    def _fork_progress(self, doc: dict[str, Any], docs_by_id: dict[str, dict[str, Any]] | None) -> dict[str, Any]:
        """A fork's epochs and accuracy from its joined history (its parent's epochs before the fork)."""
        from critui.runs.lineage import full_rows

        rows = full_rows(self, doc, docs_by_id)
        return {"epochs_done": epochs_covered(rows), "final_acc": final_accuracy(rows),
                "last_acc": score_of(rows[-1]) if rows else None}

    def _settle(self, doc: dict[str, Any], docs_by_id: dict[str, dict[str, Any]] | None = None,
                progress: bool = True) -> dict[str, Any]:
        """The fields that settle an active run whose worker is gone ({} while it lives); a
        fork's progress from its joined history unless ``progress`` is False (only asking)."""
        run_dir = self.run_dir(doc["id"])
        if not run_dir.exists():
            return {"status": "interrupted", "error": "the run directory was deleted", "ended": time.time()}
        events = summary_events(run_dir)
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
        fields = self.summary_fields(events, ended_default="interrupted")
        if doc.get("parent") and progress:
            fields.update(self._fork_progress(doc, docs_by_id))
        return fields

    def _rebuild(self, run_dir: Path) -> dict[str, Any] | None:
        """An index entry for a run folder, from its files; the folder's name is its id."""
        run_id = run_dir.name
        meta = self._run_record(run_dir)
        spec_data, problem = read_json_object(run_dir / "spec.json")
        spec = None
        if spec_data is not None:
            try:  # run.json's hash is what the run was made with; spec.json can only agree
                spec = spec_fields(spec_data, meta["spec_hash"] if isinstance(meta.get("spec_hash"), str) else None)
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                problem = f"does not describe a run ({type(exc).__name__}: {exc})"
        if spec is None:
            self.warn(f"{run_dir / 'spec.json'} {problem}; the run is not listed until spec.json is "
                      f"repaired (or the folder removed).")
            return None
        events = summary_events(run_dir)
        alive = pid_alive(worker_pid(events), run_id)
        doc = self._document(meta, spec, status="running" if alive else "interrupted")
        if not alive:
            doc.update(self.summary_fields(events, ended_default="interrupted"))
        notes, tags_problem = read_tags(run_dir)
        if tags_problem:  # the run is listed all the same, without its tags
            self.warn(tags_problem)
        doc.update(notes)
        if problem := entry_problem(doc):
            self.warn(f"{run_dir / 'spec.json'}: the run's entry {problem}; the run is not listed.")
            return None
        return doc

    def _run_record(self, run_dir: Path) -> dict[str, Any]:
        """``run.json`` as far as it can be used; a copied run's record is corrected to its folder."""
        path = run_dir / "run.json"
        meta, problem = read_json_object(path)
        if meta is None:
            if problem != "is missing":
                self.warn(f"{path} {problem}; the run is listed from its spec.json and events alone.")
            meta = {}
        for key in ("name", "created", "host", "manager_pid", "plugins", "parent", "fork_epoch", "sweep"):
            value = meta.get(key)
            if value is not None and not field_ok(key, value):
                self.warn(f"{path}: {key} {value!r} is not {FIELD_CHECKS[key][2]}; ignored.")
                meta.pop(key)
        if "id" in meta and meta["id"] != run_dir.name:
            self.warn(f"{path} named the run {meta['id']!r}, not its folder's name; it is indexed as "
                      f"{run_dir.name} and run.json was corrected (a copied run keeps an id of its own).")
            meta["id"] = run_dir.name
            atomic_write(path, json.dumps(meta, indent=2, sort_keys=True))
        meta["id"] = run_dir.name
        if meta.get("created") is None:
            meta["created"] = run_dir.stat().st_mtime
        return meta

    @staticmethod
    def summary_fields(events: list[dict[str, Any]], ended_default: str | None = None) -> dict[str, Any]:
        """Index fields derived from a run's events: status, progress, accuracy, runtime facts.

        Values of the wrong type in an events line are left out rather than copied in."""
        rows = epoch_table(events)
        last = score_of(rows[-1]) if rows else None
        fields: dict[str, Any] = {
            "epochs_done": epochs_covered(rows),
            "final_acc": _checked("final_acc", final_accuracy(rows)),
            "last_acc": _checked("last_acc", last),
        }
        starts = [e for e in events if e["event"] == "started"]
        if starts:
            first = starts[0]
            fields.update(
                device=_checked("device", starts[-1].get("device")),
                device_name=_checked("device_name", starts[-1].get("device_name")),
                threads=_checked("threads", starts[-1].get("threads")),
                torch=first.get("torch") if isinstance(first.get("torch"), str) else None,
                started=_checked("started", first.get("time")),
                lr_at_removal=first.get("lr_at_removal") if is_number(first.get("lr_at_removal")) else None,
            )
        end = outcome(events)
        if end is not None:
            fields.update(status=end["event"], ended=_checked("ended", end.get("time")))
            if end["event"] == "failed":
                error = end.get("error")
                fields.update(error=None if error is None else str(error),
                              failed_epoch=_checked("failed_epoch", end.get("epoch")))
        elif ended_default:
            fields.update(status=ended_default, ended=time.time())
        return fields

    @staticmethod
    def _document(meta: dict[str, Any], spec: dict[str, Any], status: str) -> dict[str, Any]:
        """A new index entry from ``run.json``'s record and :func:`spec_fields`."""
        return {
            **{k: meta.get(k) for k in ("id", "name", "created", "host", "manager_pid", "plugins", "git_commit")},
            **spec,
            "status": status,
            "epochs_done": 0,
            "final_acc": None,
            "parent": meta.get("parent"),
            "fork_epoch": meta.get("fork_epoch"),
            "sweep": meta.get("sweep"),
            "axis": meta.get("axis"),
        }


def spec_fields(spec: dict[str, Any], spec_hash: str | None = None) -> dict[str, Any]:
    """The index fields a resolved ``spec.json`` gives (as :class:`RunSpec` reads them), read
    straight from the JSON: a rebuild of 10,000 runs cannot afford building each RunSpec."""
    deficit = spec.get("deficit")
    params = deficit["params"] if deficit else None
    window = [int(params["start"]), int(params["end"])] if deficit else None
    if spec_hash is None:
        hashed = {k: v for k, v in spec.items() if k not in ("name", "keep_checkpoints")}
        if isinstance(hashed.get("train"), dict):
            # critui.config.drop_default_cadence, inline: the store imports no config (nor pluggy)
            hashed["train"] = {k: v for k, v in hashed["train"].items()
                               if not (k in ("log_every", "checkpoint_every") and v == 1)}
        blob = json.dumps(hashed, sort_keys=True, separators=(",", ":"))
        spec_hash = hashlib.sha256(blob.encode()).hexdigest()[:16]
    for section in ("dataset", "model") + (("deficit",) if deficit else ()):
        if not isinstance(spec[section]["id"], str):
            raise TypeError(f"{section}.id is not text")
    return {
        "spec_hash": spec_hash,
        "dataset": spec["dataset"]["id"],
        "model": spec["model"]["id"],
        "deficit": deficit["id"] if deficit else None,
        "window": window,
        "epochs": int(spec["train"]["epochs"]),
        "seed": int(spec["train"]["seed"]),
    }


def entry_note(doc: dict[str, Any]) -> str:
    """A run's note as its index entry holds it ("" when none or not text)."""
    return doc["note"] if isinstance(doc.get("note"), str) else ""


def check_tag(tag: str) -> str:
    """A tag name as given, or a CritUIError saying what a tag may be."""
    if not isinstance(tag, str) or not TAG_NAME.fullmatch(tag):
        raise CritUIError(
            f"{tag!r} is not a tag name. A tag is 1 to 40 letters, digits, '_', '-' or '.', starting "
            "with a letter or digit (e.g. baseline, cifar-rerun, v2.1); use `critui note` for free text."
        )
    return tag


def check_note(note: str) -> str:
    """A note as it is kept (stripped), or a CritUIError: one line of printable text, bounded."""
    note = note.strip()
    if len(note) > NOTE_MAX or any(not ch.isprintable() for ch in note):
        raise CritUIError(
            f"The note {note[:40]!r}{'...' if len(note) > 40 else ''} is "
            + (f"{len(note)} characters long" if len(note) > NOTE_MAX else "not one line of printable text")
            + f". A note is one line of at most {NOTE_MAX} printable characters; an empty note clears it."
        )
    return note


def read_tags(run_dir: Path) -> tuple[dict[str, Any], str | None]:
    """A run's ``{"tags": [...], "note": ...}`` from its ``tags.json`` ({} when it has none),
    and what is wrong with the file, in words, when it cannot be used (then {})."""
    path = run_dir / TAGS_FILE
    data, problem = read_json_object(path)
    if data is None:
        return {}, None if problem == "is missing" else f"{path} {problem}; the run's tags and note are not shown."
    tags, note = data.get("tags", []), data.get("note")
    if not isinstance(tags, list) or not all(isinstance(t, str) and TAG_NAME.fullmatch(t) for t in tags):
        return {}, f"{path}: tags is not a list of tag names; the run's tags and note are not shown."
    if note is not None and (not isinstance(note, str) or len(note) > NOTE_MAX):
        return {}, f"{path}: note is not text of at most {NOTE_MAX} characters; the run's tags and note are not shown."
    return {"tags": list(dict.fromkeys(tags)), "note": note}, None


def summary_events(run_dir: Path) -> list[dict[str, Any]]:
    """A run's events as far as its index entry needs them: metric and checkpoint lines (most
    of a long run's file) are passed over unparsed, which makes a rebuild of 10,000 runs fast."""
    try:
        text = (run_dir / EVENTS_FILE).read_text(encoding="utf-8", errors="replace")
    except (FileNotFoundError, NotADirectoryError):
        return []
    # The worker writes "event" first, so the kind of a line shows in its first characters.
    kept = [line for line in text.splitlines() if not line.startswith(SKIPPED_EVENTS)]
    return parse_lines("\n".join(kept))


def _checked(key: str, value: Any) -> Any:
    """``value`` if it has the type the index expects for ``key``, else None."""
    return value if field_ok(key, value) else None


def read_json_object(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """A JSON object read from ``path``, or None and what is wrong with the file, in words."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None, "is missing"
    except OSError as exc:
        return None, f"cannot be read ({exc.strerror or exc})"
    try:
        value = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        return None, "is not UTF-8 text"
    except ValueError:
        return None, "is not valid JSON (cut short?)"
    if not isinstance(value, dict):
        return None, f"holds a JSON {type(value).__name__}, not an object"
    return value, None
