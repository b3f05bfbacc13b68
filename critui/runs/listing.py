"""The runs listing kept beside the index: what ``critui runs`` prints, without the whole index.

At 10,000 runs the index snapshot (``history.json``) is 6 MB of JSON, and parsing it and
checking every entry was most of a ``critui runs``. ``history.listing`` holds only the fields
the listing shows and filters on (:data:`FIELDS`), a column per field, plus the whole entry of
each queued or running run (reconcile needs those to tell whether the run is still alive). It
is a cache of the index, never a source of truth:

- It names the index it was made from by content: the SHA-256 of the snapshot and of the
  journal's first N bytes. The journal lines appended after those N bytes are replayed over it,
  so a run another process added or changed meanwhile shows. A listing made from any other
  snapshot or journal is not used.
- Its body carries its own SHA-256, and every column is checked (types, run ids, statuses,
  one value per run) before anything in it is used. Anything that fails, and any journal line
  the index itself would leave out, sends the reader back to the index, which is read as every
  other command reads it and a fresh listing is written.
- It is written whole (:func:`critui.files.atomic_write`), under the index lock: when the index
  is compacted, and when a reader found it missing, stale, damaged or far behind the journal.
  It is not synced to disk: after a power cut a listing that is not whole fails its checks.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any

from critui.errors import CritUIError
from critui.files import atomic_write
from critui.runs.ids import RUN_ID
from critui.runs.journal import (
    FIELD_CHECKS,
    REQUIRED,
    STATUSES,
    TABLE,
    JournalStorage,
    entry_problem,
)

LISTING_SUFFIX = ".listing"  # history.json -> history.listing
FORMAT = "critui-listing"
VERSION = 1
ACTIVE = ("queued", "running")
MAX_BYTES = 512 << 20  # no listing is bigger (130 MB at a million runs): anything bigger is not one
REFRESH_BYTES = 64 * 1024  # a reader replaying more of the journal than this writes a fresh listing
# What `critui runs` shows and filters on, as :func:`row_of` takes it from an index entry.
FIELDS = ("id", "status", "created", "dataset", "model", "deficit", "window", "epochs", "epochs_done",
          "final_acc", "parent", "fork_epoch", "tags")
_NONE = type(None)
# The types each column may hold: the index's own (FIELD_CHECKS), None where the index allows it.
_TYPES = {key: {*FIELD_CHECKS[key][0], *(() if key in REQUIRED else (_NONE,))} for key in FIELDS if key != "tags"}
_TYPES["tags"] = {list}
_IDS = re.compile(f"(?:{RUN_ID.pattern}\n)*")  # run ids, one a line: one regex call for 10,000 ids


def listing_path(index_path: Path) -> Path:
    """Where the listing of the index at ``index_path`` is kept."""
    return index_path.with_name(index_path.name.removesuffix(".json") + LISTING_SUFFIX)


def entry_tags(doc: dict[str, Any]) -> list[str]:
    """A run's tags as its index entry holds them; anything but a list of text counts as none."""
    tags = doc.get("tags")
    return [t for t in tags if isinstance(t, str)] if isinstance(tags, list) else []


def row_of(doc: dict[str, Any]) -> dict[str, Any]:
    """The listing's row of a (checked) index entry: :data:`FIELDS`, missing ones as None
    (``epochs_done`` as 0, as the listing has always read it)."""
    return {"id": doc["id"], "status": doc["status"], "created": doc["created"], "dataset": doc["dataset"],
            "model": doc["model"], "deficit": doc.get("deficit"), "window": doc.get("window"),
            "epochs": doc["epochs"], "epochs_done": doc.get("epochs_done", 0), "final_acc": doc.get("final_acc"),
            "parent": doc.get("parent"), "fork_epoch": doc.get("fork_epoch"), "tags": entry_tags(doc)}


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Listing:
    """The index's rows as the listing gives them, and what they were made from."""

    rows: dict[str, dict[str, Any]]  # doc id -> row, in the index's order
    full: dict[str, dict[str, Any]]  # doc id -> whole entry, for every queued or running run
    snapshot_sha256: str
    journal_bytes: int  # how much of the journal the rows include
    journal: bytes = b""  # the journal as read (when a fresh listing may be written from it)
    replayed: int = 0  # bytes of journal lines replayed over the kept listing

    @property
    def journal_sha256(self) -> str:
        return digest(self.journal[: self.journal_bytes])


def from_entries(entries: dict[str, Any], invalid: set[str]) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Rows and whole active entries of an index's entries, as a fresh read of the index would
    keep them: an entry ``invalid`` names (one with a problem), or one repeating an earlier
    entry's run id, is left out."""
    rows, full, seen = {}, {}, set()
    for key, doc in entries.items():
        if key in invalid or doc["id"] in seen:
            continue
        seen.add(doc["id"])
        rows[key] = row_of(doc)
        if doc["status"] in ACTIVE:
            full[key] = doc
    return rows, full


def save_index(storage: JournalStorage) -> bool:
    """Write the listing of the index as ``storage`` holds it, when that is what a fresh read of
    its files gives (call it under the index lock, after a refresh or a write); False if not."""
    state = storage.state
    try:
        if not storage.is_current():
            return False
        snapshot = _read_if_there(storage.path)
        journal = _read_if_there(storage.journal, state.journal_offset)
    except OSError:  # the index's own readers say what is wrong with its files
        return False
    if len(journal) != state.journal_offset:
        return False
    rows, full = from_entries(state.entries, state.invalid)
    return save(storage.path, Listing(rows, full, digest(snapshot), len(journal), journal))


def encode(found: Listing) -> bytes:
    """The file's bytes: a header line (what it was made from, the body's SHA-256), then the body."""
    rows = list(found.rows.values())
    body = json.dumps({"keys": list(found.rows), "columns": {f: [r[f] for r in rows] for f in FIELDS},
                       "active": found.full}, separators=(",", ":")).encode()
    header = {"format": FORMAT, "version": VERSION, "snapshot_sha256": found.snapshot_sha256,
              "journal_bytes": found.journal_bytes, "journal_sha256": found.journal_sha256,
              "body_sha256": digest(body), "runs": len(rows)}
    return json.dumps(header).encode() + b"\n" + body


def save(index_path: Path, found: Listing) -> bool:
    """Write the listing beside the index (call it under the index lock); False if it could not
    be written. It is only a cache: a read-only or full home lists from the index instead."""
    try:
        atomic_write(listing_path(index_path), encode(found), fsync=False)
    except (OSError, CritUIError, TypeError, ValueError):  # TypeError, ValueError: not JSON-able (a cache never fails a command)
        return False
    return True


def decode(data: bytes) -> tuple[dict[str, Any], Listing]:
    """The header and the rows of a listing file; ValueError saying what is wrong."""
    head, newline, body = data.partition(b"\n")
    header = json.loads(head)
    if not (type(header) is dict and header.get("format") == FORMAT and header.get("version") == VERSION):
        raise ValueError("not a critui listing of this version")
    if header.get("body_sha256") != digest(body):
        raise ValueError("its body does not match its checksum")
    parsed = json.loads(body)
    keys, columns, active = parsed["keys"], parsed["columns"], parsed["active"]
    count = len(keys)
    if type(keys) is not list or set(map(type, keys)) - {str} or len(set(keys)) != count:
        raise ValueError("its keys are not distinct text")
    if type(columns) is not dict or set(columns) != set(FIELDS):
        raise ValueError("its columns are not the listing's")
    for field in FIELDS:
        column = columns[field]
        if type(column) is not list or len(column) != count or not set(map(type, column)) <= _TYPES[field]:
            raise ValueError(f"its {field} column does not hold one right-typed value per run")
    _check_values(columns)
    # A dict display per row (FIELDS, in order; the lengths are checked above) is faster than dict(zip()).
    rows = {key: {"id": i, "status": st, "created": cr, "dataset": ds, "model": mo, "deficit": de, "window": wi,
                  "epochs": ep, "epochs_done": ed, "final_acc": fa, "parent": pa, "fork_epoch": fe, "tags": ta}
            for key, i, st, cr, ds, mo, de, wi, ep, ed, fa, pa, fe, ta in zip(keys, *(columns[f] for f in FIELDS), strict=True)}
    if type(active) is not dict or set(active) != {k for k, r in rows.items() if r["status"] in ACTIVE}:
        raise ValueError("its queued and running runs are not the ones its rows name")
    for key, doc in active.items():
        if entry_problem(doc) is not None or row_of(doc) != rows[key]:
            raise ValueError(f"the entry of its queued or running run {key!r} does not match its row")
    journal_bytes = header.get("journal_bytes")
    if type(journal_bytes) is not int or journal_bytes < 0:
        raise ValueError("it names no journal length")
    return header, Listing(rows, active, str(header.get("snapshot_sha256")), journal_bytes)


def _check_values(columns: dict[str, list]) -> None:
    """The checks the index makes of a value, not only of its type, a column at a time."""
    ids = columns["id"]
    if len(set(ids)) != len(ids) or not _all_run_ids(ids):
        raise ValueError("its id column holds something other than distinct run ids")
    parents = [p for p in columns["parent"] if p is not None]
    if parents and not _all_run_ids(parents):
        raise ValueError("its parent column holds something other than run ids")
    if not set(columns["status"]) <= set(STATUSES):
        raise ValueError("its status column holds something other than a status")
    windows = [w for w in columns["window"] if w is not None]  # each a [start, end] pair of numbers
    if windows and (set(map(len, windows)) != {2} or not set(map(type, chain.from_iterable(windows))) <= {int, float}):
        raise ValueError("its window column holds something other than [start, end] pairs")
    if not set(map(type, chain.from_iterable(columns["tags"]))) <= {str}:
        raise ValueError("its tags column holds something other than lists of text")


def _all_run_ids(ids: list[str]) -> bool:
    text = "".join(f"{i}\n" for i in ids)
    return text.count("\n") == len(ids) and _IDS.fullmatch(text) is not None  # a "\n" in an id adds a line


def load(index_path: Path, journal_path: Path) -> tuple[Listing | None, str | None]:
    """The index's rows from the kept listing, with the journal lines appended since it was made
    replayed over it; or None and why they cannot be had so (the listing missing, stale or
    damaged, or a journal line the index would leave out). Call it under the index lock."""
    try:
        data = _read_regular(listing_path(index_path))
    except FileNotFoundError:
        return None, "missing"
    except OSError as exc:
        return None, f"unreadable ({exc.strerror or exc})"
    try:
        header, found = decode(data)
    except Exception as exc:  # noqa: BLE001 - whatever is wrong with a cache, the index has the answer
        return None, f"damaged ({exc})" if isinstance(exc, ValueError) else f"damaged ({type(exc).__name__})"
    try:
        snapshot, journal = _read_if_there(index_path), _read_if_there(journal_path)
    except OSError as exc:  # e.g. a folder in the index's place: the index's own reader says what
        return None, f"the index cannot be read ({exc.strerror or exc})"
    if digest(snapshot) != found.snapshot_sha256 or len(journal) < found.journal_bytes or (
            digest(journal[: found.journal_bytes]) != header.get("journal_sha256")):
        return None, "stale"
    found.journal = journal
    if not _replay(found, journal):
        return None, "the journal holds a line the index leaves out"
    return found, None


def _read_if_there(path: Path, size: int = -1) -> bytes:
    """A file's bytes (its first ``size``), or none if there is no file."""
    try:
        with open(path, "rb") as f:
            return f.read(size)
    except FileNotFoundError:
        return b""


def _read_regular(path: Path) -> bytes:
    """A regular file's bytes; OSError for anything else planted there (a link, a FIFO that
    would block, a device that never ends) or for a file too big to be a listing."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_BYTES:
            raise OSError(f"{path} is not a regular file of at most {MAX_BYTES >> 20} MiB")
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read(MAX_BYTES + 1)
    finally:
        os.close(fd)


def _replay(found: Listing, journal: bytes) -> bool:
    """Apply the journal's complete lines after the listing's end, as the index replays them;
    False at a line the index would leave out (then the index is read, and says what)."""
    complete, newline, _partial = journal[found.journal_bytes:].rpartition(b"\n")
    if not newline:
        return True
    rows, full = found.rows, found.full
    by_id = {row["id"]: key for key, row in rows.items()}
    for line in complete.split(b"\n"):
        if not line.strip():
            continue
        try:
            record = json.loads(line.decode("utf-8"))
            key = record["key"]
            if not isinstance(key, str) or record.get("table", TABLE) != TABLE:
                return False
        except (ValueError, KeyError, TypeError):
            return False
        old = rows.pop(key, None)  # as the index drops and re-adds an entry: it moves to the end
        full.pop(key, None)
        if old is not None and by_id.get(old["id"]) == key:
            del by_id[old["id"]]
        if record.get("removed"):
            continue
        doc = record.get("doc")
        if entry_problem(doc) is not None or by_id.get(doc["id"], key) != key:
            return False
        rows[key] = row_of(doc)
        by_id[doc["id"]] = key
        if doc["status"] in ACTIVE:
            full[key] = doc
    found.replayed = len(complete) + 1
    found.journal_bytes += found.replayed
    return True
