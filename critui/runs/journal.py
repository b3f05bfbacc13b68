"""The run index on disk: a TinyDB snapshot plus an append-only journal of changed entries.

TinyDB's storage interface reads and writes the whole database; a JSON file rewritten and
fsynced on every state change cost ~65 µs per indexed run (162 ms per update at 3,000 runs).
:class:`JournalStorage` keeps TinyDB's query API and its ``history.json`` file (the snapshot),
but a write appends only the entries that changed to ``history.journal``, one JSON line each
(after optuna's ``JournalFileBackend``). Reading replays the journal over the snapshot; when the
journal has grown past half the snapshot, the two are folded into a new snapshot, atomically.

Each process keeps what it last read, keyed on the files' identity, so that opening the index
(always under the store's file lock) reads only the journal lines appended since. A line cut
short by a kill costs only itself: the next writer starts on a fresh line, and readers skip it.

Nothing read is trusted: an entry that is not an object, has no valid run id, repeats another
entry's id, or has a field of the wrong type is left out and named in :attr:`problems`; a
snapshot that cannot be read at all raises :class:`IndexDamaged`, and the store rebuilds.
"""

from __future__ import annotations

import itertools
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tinydb.storages import Storage

from critui.errors import CritUIError
from critui.files import atomic_write
from critui.runs.ids import is_run_id

JOURNAL_SUFFIX = ".journal"
MIN_JOURNAL_BYTES = 256 * 1024  # below this a journal is never folded into the snapshot
MAX_CHANGELOG = 4096  # changes kept for pollers, at least (see IndexState.changelog)
TABLE = "_default"
STATUSES = ("queued", "running", "finished", "failed", "cancelled", "interrupted")


class IndexDamaged(Exception):
    """The snapshot cannot be read as an index (not UTF-8, not JSON, not a table of entries)."""


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


NUMBER = (int, float)
INTEGER = (int,)
TEXT = (str,)
# What each field an index entry relies on must be: its JSON types, then (where the type is not
# enough) a check and what it expects in words. None is allowed unless the field is REQUIRED.
FIELD_CHECKS: dict[str, tuple[tuple[type, ...], Any, str]] = {
    "id": (TEXT, is_run_id, "a critui run id"),
    "status": (TEXT, STATUSES.__contains__, "one of " + ", ".join(STATUSES)),
    "created": (NUMBER, None, "a time"),
    "dataset": (TEXT, None, "a plugin id"),
    "model": (TEXT, None, "a plugin id"),
    "epochs": (INTEGER, None, "a whole number"),
    "name": (TEXT, None, "text"),
    "deficit": (TEXT, None, "a plugin id"),
    "window": ((list,), lambda v: len(v) == 2 and all(is_number(x) for x in v), "a [start, end] pair"),
    "seed": (INTEGER, None, "a whole number"),
    "epochs_done": (INTEGER, None, "a whole number"),
    "final_acc": (NUMBER, None, "a number"),
    "last_acc": (NUMBER, None, "a number"),
    "parent": (TEXT, is_run_id, "a critui run id"),
    "fork_epoch": (INTEGER, None, "a whole number"),
    "sweep": (TEXT, None, "text"),
    "pid": (INTEGER, None, "a process id"),
    "manager_pid": (INTEGER, None, "a process id"),
    "job": (TEXT, None, "text"),
    "launcher": (TEXT, None, "text"),
    "launcher_settings": ((dict,), None, "a table"),
    "plugins": ((dict,), None, "a table"),
    "host": (TEXT, None, "text"),
    "error": (TEXT, None, "text"),
    "failed_epoch": (INTEGER, None, "a whole number"),
    "started": (NUMBER, None, "a time"),
    "ended": (NUMBER, None, "a time"),
    "threads": (INTEGER, None, "a whole number"),
    "device": (TEXT, None, "text"),
    "device_name": (TEXT, None, "text"),
}
REQUIRED = ("id", "status", "created", "dataset", "model", "epochs")


def field_ok(key: str, value: Any) -> bool:
    """Whether ``value`` may be the index field ``key`` (None always may, unless required)."""
    if value is None:
        return key not in REQUIRED
    types, check, _ = FIELD_CHECKS[key]
    return type(value) in types and (check is None or check(value))  # type(): a bool is no number


# The fields whose value, not only its type, is checked (run ids, the status, the window).
VALUE_CHECKS = tuple((key, check) for key, (_, check, _) in FIELD_CHECKS.items() if check is not None)
_NONE = type(None)
_SHAPES: dict[tuple, bool] = {}  # (keys, value types) -> whether an entry of that shape is typed right
MAX_SHAPES = 1024  # a hostile index of all-different shapes costs time, never memory


def _shape_ok(keys: tuple, types: tuple) -> bool:
    """Whether an entry with these keys and value types has every required field and a right type
    for every known one (unknown fields are kept as they are)."""
    present = {k for k, t in zip(keys, types, strict=True) if t is not _NONE}
    if not present.issuperset(REQUIRED):
        return False
    return all(t is _NONE or k not in FIELD_CHECKS or t in FIELD_CHECKS[k][0] for k, t in zip(keys, types, strict=True))


def entry_problem(doc: Any) -> str | None:
    """What is wrong with an index entry, in words, or None if it can be used.

    10,000 entries are checked on every fresh read of the index, so the types are checked once
    per shape of entry (the keys and their values' types, nearly always the same few), and only
    the values with a rule of their own (ids, status, window) one by one."""
    if type(doc) is dict:
        shape = (tuple(doc), tuple(map(type, doc.values())))
        ok = _SHAPES.get(shape)
        if ok is None:
            ok = _shape_ok(*shape)
            if len(_SHAPES) < MAX_SHAPES:
                _SHAPES[shape] = ok
        if ok:
            for key, check in VALUE_CHECKS:  # a loop, not all(genexpr): half the time at 10,000 runs
                value = doc.get(key)
                if value is not None and not check(value):
                    return _entry_problem_in_words(doc)
            return None
    return _entry_problem_in_words(doc)


def _entry_problem_in_words(doc: Any) -> str | None:
    if type(doc) is not dict:
        return f"is {type(doc).__name__}, not an object"
    for key in REQUIRED:
        if doc.get(key) is None:
            return f"has no {key}"
    for key, value in doc.items():
        rule = FIELD_CHECKS.get(key)
        if rule is None or value is None:
            continue
        types, check, what = rule
        if type(value) not in types or (check is not None and not check(value)):
            shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
            return f"has {key} {shown} (not {what})"
    return None


_GENERATIONS = itertools.count(1)  # every fresh copy of an index in this process gets a new number


@dataclass
class IndexState:
    """What one process last read of an index: the entries and where the files stood."""

    snapshot_key: tuple | None = None
    snapshot_size: int = 0
    journal_ino: int | None = None
    journal_offset: int = 0  # bytes of the journal replayed (complete lines only)
    journal_size: int = 0
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)  # doc id -> entry (never changed in place)
    by_run: dict[str, str] = field(default_factory=dict)  # run id -> doc id
    rejected: dict[str, str] = field(default_factory=dict)  # doc id -> why it was left out
    # Entries this process wrote that a fresh read would leave out (entry_problem): read entries
    # are all checked, and the runs listing is made from these without checking 10,000 again.
    invalid: set[str] = field(default_factory=set)
    generation: int = field(default_factory=lambda: next(_GENERATIONS))  # a new one for every full reload
    needs_compaction: bool = False  # something was left out: fold it away on the next write
    # The run ids whose entries changed (set, replaced or dropped) since the full reload, in
    # order, so that a reader polling the index (the TUI) takes only what changed:
    # changelog[i] is change number changelog_base + i.
    changelog: list[str] = field(default_factory=list)
    changelog_base: int = 0

    def logged(self, run_id: Any) -> None:
        """Note that ``run_id``'s entry changed; the log keeps the most recent changes only."""
        self.changelog.append(run_id)
        if len(self.changelog) > max(MAX_CHANGELOG, 2 * len(self.entries)):
            dropped = len(self.changelog) // 2  # a reader this far behind reads everything
            del self.changelog[:dropped]
            self.changelog_base += dropped

    @property
    def cursor(self) -> tuple[int, int]:
        """Where this copy of the index stands: its full reload and its count of changes."""
        return (self.generation, self.changelog_base + len(self.changelog))

    def changed_since(self, cursor: tuple[int, int] | None) -> list[str] | None:
        """The run ids changed after ``cursor`` (each once), or None if that is not known (a
        full reload happened since, or the changes were too many to keep)."""
        if cursor is None or cursor[0] != self.generation or cursor[1] < self.changelog_base:
            return None
        return list(dict.fromkeys(self.changelog[cursor[1] - self.changelog_base:]))


_STATES: dict[str, IndexState] = {}


def _file_key(path: Path) -> tuple | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns)


class JournalStorage(Storage):
    """TinyDB storage over ``history.json`` (snapshot) and ``history.journal`` (changes).

    Only use it under the store's file lock: it assumes nobody writes between its read and write.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.journal = self.path.with_name(self.path.name.removesuffix(".json") + JOURNAL_SUFFIX)
        self.problems: list[str] = []
        self.writes = 0  # how many times this storage wrote (appended or folded)
        self.compactions = 0  # how many times it wrote a new snapshot
        key = str(self.path.resolve())
        self.state = _STATES.setdefault(key, IndexState())
        self._key = key

    # -- reading -------------------------------------------------------------------------

    def read(self) -> dict[str, Any] | None:
        """TinyDB's whole-database read: copies, as TinyDB changes what it reads in place."""
        self.refresh()
        return {TABLE: {k: dict(d) for k, d in self.state.entries.items()}}

    def refresh(self) -> IndexState:
        """Bring this process's copy up to date with the files; read only what is new."""
        state = self.state
        snapshot_key = _file_key(self.path)
        journal = _file_key(self.journal)
        if snapshot_key != state.snapshot_key or (journal and journal[0] != state.journal_ino) or (
            journal is None and state.journal_ino is not None
        ) or (journal and journal[2] < state.journal_offset):
            state = self._reload(snapshot_key)
            journal = _file_key(self.journal)
        if journal and journal[2] > state.journal_offset:
            self._replay(state)
        return state

    def _reload(self, snapshot_key: tuple | None) -> IndexState:
        state = IndexState()
        _STATES[self._key] = self.state = state  # a failure below leaves an empty, stale copy
        table = self._read_snapshot()
        state.snapshot_key = snapshot_key
        state.snapshot_size = snapshot_key[2] if snapshot_key else 0
        journal = _file_key(self.journal)
        state.journal_ino = journal[0] if journal else None
        entries, by_run = state.entries, state.by_run
        for doc_id, doc in table.items():
            if entry_problem(doc) is None and doc["id"] not in by_run:
                entries[doc_id] = doc  # the common case, without _accept's bookkeeping
                by_run[doc["id"]] = doc_id
            else:
                self._accept(state, doc_id, doc, self.path.name)  # says what is wrong
        state.snapshot_key = snapshot_key
        return state

    def _read_snapshot(self) -> dict[str, Any]:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as exc:  # e.g. a folder in its place: set it aside like any damaged index
            raise IndexDamaged(f"cannot be read ({exc.strerror or exc})") from None
        if not data.strip():
            return {}
        try:
            parsed = json.loads(data.decode("utf-8"))
        except UnicodeDecodeError:
            raise IndexDamaged("is not UTF-8 text") from None
        except ValueError:
            raise IndexDamaged("is corrupt (not valid JSON)") from None
        if not isinstance(parsed, dict):
            raise IndexDamaged(f"is corrupt (a JSON {type(parsed).__name__}, not a table of runs)")
        table = parsed.get(TABLE, {})
        if not isinstance(table, dict):
            raise IndexDamaged(f"is corrupt (its {TABLE} table is a {type(table).__name__}, not a table of runs)")
        return table

    def _replay(self, state: IndexState) -> None:
        with open(self.journal, "rb") as f:
            f.seek(state.journal_offset)
            chunk = f.read()
        complete, newline, _partial = chunk.rpartition(b"\n")
        if not newline:
            return  # nothing complete yet (a writer cut short, or one writing right now)
        state.journal_offset += len(complete) + 1
        state.journal_size = state.journal_offset
        for line in complete.split(b"\n"):
            if not line.strip():
                continue
            try:
                record = json.loads(line.decode("utf-8"))
                doc_id = record["key"]
                if not isinstance(doc_id, str) or record.get("table", TABLE) != TABLE:
                    raise ValueError
            except (ValueError, KeyError, TypeError):
                state.needs_compaction = True  # a line cut short by a kill: fold it away
                continue
            if record.get("removed"):
                self._drop(state, doc_id)
            else:
                self._accept(state, doc_id, record.get("doc"), self.journal.name)

    def _accept(self, state: IndexState, doc_id: str, doc: Any, source: str) -> None:
        self._drop(state, doc_id)
        problem = entry_problem(doc)
        if problem is None and state.by_run.get(doc["id"], doc_id) != doc_id:
            problem = f"repeats run {doc['id']}, which entry {state.by_run[doc['id']]} already has"
        if problem:
            name = doc.get("id") if isinstance(doc, dict) and is_run_id(doc.get("id")) else None
            what = f"the entry of run {name}" if name else f"entry {doc_id}"
            self.problems.append(f"{self.path.parent / source}: {what} {problem}; left out of the index.")
            state.rejected[doc_id] = problem
            state.needs_compaction = True
            return
        state.entries[doc_id] = doc
        state.by_run[doc["id"]] = doc_id
        state.logged(doc["id"])

    @staticmethod
    def _drop(state: IndexState, doc_id: str) -> None:
        old = state.entries.pop(doc_id, None)
        state.rejected.pop(doc_id, None)
        state.invalid.discard(doc_id)
        if old is not None and state.by_run.get(old.get("id")) == doc_id:
            del state.by_run[old["id"]]
            state.logged(old["id"])

    # -- writing -------------------------------------------------------------------------

    def write(self, data: dict[str, Any]) -> None:
        """TinyDB's whole-database write: only the entries that changed reach the disk."""
        table = data.get(TABLE, {})
        entries = self.state.entries
        changed = {k: dict(d) for k, d in table.items() if entries.get(k) != d}
        self.commit(changed, self.state.entries.keys() - table.keys())

    def set_fields(self, run_id: str, fields: dict[str, Any]) -> None:
        """Set fields of one run's entry without TinyDB's pass over every entry (the hot path:
        a run's every state change)."""
        doc_id = self.state.by_run[run_id]
        self.commit({doc_id: {**self.state.entries[doc_id], **fields}}, ())

    def insert(self, docs: list[dict[str, Any]]) -> None:
        """Add entries (new runs), in one write, as TinyDB's insert would number them."""
        state = self.state
        first = max(map(int, [*state.entries, *state.rejected]), default=0) + 1
        self.commit({str(first + i): dict(doc) for i, doc in enumerate(docs)}, ())

    def commit(self, changed: dict[str, dict[str, Any]], removed) -> None:
        """Record changed and removed entries: one journal append, or a new snapshot."""
        state = self.state
        if not changed and not removed and not state.needs_compaction:
            return
        # Keys sorted, as the index always was; and this process keeps what it wrote as any
        # other will read it back (lists, not tuples), so every reader sees the same entries.
        encoded = {k: json.dumps({"key": k, "doc": d}, sort_keys=True) for k, d in changed.items()}
        lines = b"".join(json.dumps({"key": k, "removed": True}).encode() + b"\n" for k in removed) + b"".join(
            line.encode() + b"\n" for line in encoded.values()
        )
        try:
            for doc_id in removed:
                self._drop(state, doc_id)
            for doc_id, line in encoded.items():
                doc = json.loads(line)["doc"]
                self._drop(state, doc_id)
                state.entries[doc_id] = doc
                state.by_run[doc["id"]] = doc_id
                state.logged(doc["id"])
                if entry_problem(doc) is not None:
                    state.invalid.add(doc_id)
            if (state.needs_compaction or state.snapshot_key is None
                    or state.journal_size + len(lines) > max(MIN_JOURNAL_BYTES, state.snapshot_size // 2)):
                self.compact()
            else:
                self._append(lines)
        except BaseException as exc:
            _STATES.pop(self._key, None)  # memory and disk may differ now: read afresh next time
            self.state = IndexState()
            if isinstance(exc, OSError) and not isinstance(exc, PermissionError):
                raise CritUIError(
                    f"Could not write the run index {self.path}: {exc.strerror or exc}. Free some disk "
                    "space or point --home / CRITUI_HOME at a writable folder; no run was lost."
                ) from None
            raise
        self.writes += 1

    def _append(self, lines: bytes) -> None:
        state = self.state
        fd = os.open(self.journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o666)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise OSError(f"{self.journal} is not a regular file")
            fresh = state.journal_ino is None and st.st_size == 0  # this write creates it
            same = fresh or (st.st_ino == state.journal_ino and st.st_size == state.journal_size)
            if not same:
                # Not the journal this process replayed (or a line cut short at its end): start
                # on a fresh line, so that the cut line costs only itself.
                lines = b"\n" + lines
            os.write(fd, lines)
            # No fsync: an appended line survives the process being killed (the page cache
            # keeps it); only a power cut can lose the last ones, and reconcile re-derives a
            # run's state from its folder. Compaction, which replaces the snapshot, does sync.
            end = os.fstat(fd)
        finally:
            os.close(fd)
        if same:
            state.journal_ino = end.st_ino
            state.journal_offset = state.journal_size = end.st_size
        else:  # re-read it from the start next time
            state.journal_ino, state.journal_offset, state.journal_size = end.st_ino, 0, 0
            state.entries.clear()
            state.by_run.clear()
            state.invalid.clear()
            state.snapshot_key = None

    def compact(self) -> None:
        """Fold the journal into a new snapshot; both are replaced atomically, snapshot first."""
        state = self.state
        snapshot = json.dumps({TABLE: state.entries}, separators=(",", ":"))
        atomic_write(self.path, snapshot)
        # A kill between the two replacements leaves the old journal over the new snapshot:
        # replaying it sets every entry to what the snapshot already holds, so nothing is lost.
        atomic_write(self.journal, b"")
        snapshot_key, journal = _file_key(self.path), _file_key(self.journal)
        state.snapshot_key, state.snapshot_size = snapshot_key, snapshot_key[2] if snapshot_key else 0
        state.journal_ino, state.journal_offset, state.journal_size = (journal[0] if journal else None), 0, 0
        state.rejected.clear()
        state.needs_compaction = False
        self.compactions += 1

    def is_current(self) -> bool:
        """Whether this process's copy is what a fresh read of the files gives (call it under
        the lock, after a refresh or a write): the snapshot it read or wrote, nothing left out."""
        state = self.state
        return not state.needs_compaction and not state.rejected and state.snapshot_key == _file_key(self.path)

    def close(self) -> None:
        pass


def read_index(path: str | Path) -> list[dict[str, Any]]:
    """Every usable entry of the index at ``path`` (snapshot and journal), read afresh."""
    forget_cached(path)
    try:
        return [dict(d) for d in JournalStorage(path).refresh().entries.values()]
    finally:
        forget_cached(path)


def forget_cached(path: str | Path) -> None:
    """Drop this process's copy of an index (after the files were moved aside)."""
    _STATES.pop(str(Path(path).resolve()), None)
