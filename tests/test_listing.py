"""`critui runs` reads the listing kept beside the index (history.listing): it lists what the
index gives, whatever happened to the listing, and whatever another process wrote since."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from critui.runs import journal, listing
from critui.runs.store import INDEX_FILE, RunStore
from tests.conftest import REPO, critui_here
from tests.synthetic_home import T0, write_run

A, B, C, D = "20260101-000000-aaaa", "20260101-000100-bbbb", "20260101-000200-cccc", "20260101-000300-dddd"
NEW = "20260101-000400-eeee"
FILTERS = {
    "all": [],
    "status": ["--status", "failed", "--status", "interrupted"],
    "tag": ["--tag", "baseline"],
    "no deficit": ["--deficit", "none"],
    "deficit": ["--deficit", "flip"],
    "model": ["--model", "cnn"],
    "dataset": ["--dataset", "datasets.synthetic"],
    "limit": ["--limit", "2"],
}


@pytest.fixture
def runs_home(home: Path) -> Path:
    """Four runs: finished, failed, a fork, one without a deficit and tagged; indexed."""
    write_run(home, A, created=T0)
    write_run(home, B, created=T0 + 60, seed=1, done=3, end="failed")
    write_run(home, C, created=T0 + 120, seed=2, parent=A, fork_epoch=4)
    write_run(home, D, created=T0 + 180, seed=3, deficit=False)
    store = RunStore(home)
    store.reconcile()
    store.annotate(D, add=["baseline"])
    return home


def runs(home: Path, *args: str) -> str:
    result = critui_here(home, "runs", *args)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    return result.stdout


def from_index(home: Path, *args: str) -> str:
    """What `critui runs` lists with no listing kept: read from the index, as it always was."""
    listing.listing_path(home / INDEX_FILE).unlink(missing_ok=True)
    return runs(home, *args)


def kept(home: Path) -> listing.Listing | None:
    """The kept listing if a reader can use it as it is."""
    found, _why = listing.load(home / INDEX_FILE, home / "history.journal")
    return found


@pytest.fixture
def index_unread(monkeypatch, runs_home):
    """Fails the test if the index is read afresh (as it is when the listing cannot be used)."""
    journal.forget_cached(runs_home / INDEX_FILE)

    def refuse(self, key):
        raise AssertionError("the index was read: the kept listing was not used")

    monkeypatch.setattr(journal.JournalStorage, "_reload", refuse)


def test_the_listing_lists_what_the_index_does_with_every_filter(runs_home):
    expected = {name: from_index(runs_home, *args) for name, args in FILTERS.items()}
    assert all(expected.values()) and A in expected["all"] and D in expected["tag"] and A not in expected["tag"]
    assert kept(runs_home) is not None  # the first listing wrote it
    with pytest.MonkeyPatch.context() as patch:
        journal.forget_cached(runs_home / INDEX_FILE)
        patch.setattr(journal.JournalStorage, "_reload", lambda *_: pytest.fail("the index was read"))
        for name, args in FILTERS.items():
            assert runs(runs_home, *args) == expected[name], name
    # --json prints whole index entries, as before
    docs = json.loads(runs(runs_home, "--json"))
    assert [d["id"] for d in docs] == [A, B, C, D] and docs[0]["plugins"]


def test_the_listing_is_written_when_the_index_is_compacted(runs_home, index_unread):
    assert kept(runs_home) is not None
    assert A in runs(runs_home)


def _forge(home: Path, change) -> None:
    """Rewrite the kept listing's body with ``change`` applied and a checksum that fits it."""
    path = listing.listing_path(home / INDEX_FILE)
    head, _, body = path.read_bytes().partition(b"\n")
    header, parsed = json.loads(head), json.loads(body)
    change(parsed)
    body = json.dumps(parsed).encode()
    header["body_sha256"] = listing.digest(body)
    path.write_bytes(json.dumps(header).encode() + b"\n" + body)


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-2] ^= 0x01
    path.write_bytes(bytes(data))


DAMAGE = {
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]),
    "empty": lambda p: p.write_bytes(b""),
    "not UTF-8": lambda p: p.write_bytes(b"\xff\xfe" * 64),
    "not JSON": lambda p: p.write_bytes(b"{ not json\n[1, 2"),
    "a list": lambda p: p.write_bytes(b"[]\n[]"),
    "a flipped byte": _flip_last_byte,
    "a folder": lambda p: (p.unlink(), p.mkdir()),
}
FORGED = {
    "an id that is a path": lambda b: b["columns"]["id"].__setitem__(0, "../../victim"),
    "a repeated id": lambda b: b["columns"]["id"].__setitem__(1, A),
    "an unknown status": lambda b: b["columns"]["status"].__setitem__(0, "bogus"),
    "a finished run said running": lambda b: b["columns"]["status"].__setitem__(0, "running"),
    "epochs as text": lambda b: b["columns"]["epochs"].__setitem__(0, "8"),
    "a bool for a number": lambda b: b["columns"]["final_acc"].__setitem__(0, True),
    "a short column": lambda b: b["columns"]["model"].pop(),
    "a missing column": lambda b: b["columns"].pop("status"),
    "a window of one": lambda b: b["columns"]["window"].__setitem__(0, [0]),
    "a parent that is a path": lambda b: b["columns"]["parent"].__setitem__(2, "/etc"),
    "tags that are numbers": lambda b: b["columns"]["tags"].__setitem__(0, [1]),
    "an id with a newline": lambda b: b["columns"]["id"].__setitem__(0, f"{A}\n{NEW}"),
    "keys repeated": lambda b: b.__setitem__("keys", [b["keys"][0]] * len(b["keys"])),
    "no keys": lambda b: b.pop("keys"),
}


@pytest.mark.parametrize("damage", [*DAMAGE.values(), *FORGED.values()], ids=[*DAMAGE, *FORGED])
def test_a_damaged_listing_is_not_used_and_is_written_afresh(runs_home, damage):
    expected = from_index(runs_home)
    path = listing.listing_path(runs_home / INDEX_FILE)
    if damage in FORGED.values():
        _forge(runs_home, damage)
    else:
        damage(path)
    assert kept(runs_home) is None
    assert runs(runs_home) == expected
    assert "victim" not in runs(runs_home, "--status", "running")
    if path.is_file():  # a folder in the way is left alone, and the listing read from the index
        assert kept(runs_home) is not None
    assert runs(runs_home) == expected


def _compact(home: Path) -> None:
    with RunStore(home).index() as db:  # a new snapshot, an empty journal, and a listing of them
        db.storage.compact()


def test_a_listing_made_from_another_snapshot_is_not_used(runs_home):
    path = listing.listing_path(runs_home / INDEX_FILE)
    _compact(runs_home)
    old = path.read_bytes()  # of the snapshot before, and the same (empty) journal
    RunStore(runs_home).annotate(A, add=["later"])
    _compact(runs_home)
    path.write_bytes(old)
    assert kept(runs_home) is None
    assert A in runs(runs_home, "--tag", "later")
    assert kept(runs_home) is not None


def test_a_listing_made_from_another_journal_is_not_used(runs_home):
    _compact(runs_home)
    RunStore(runs_home).annotate(B, add=["first"])
    from_index(runs_home)  # a listing of the snapshot and the journal's one line
    journal_path = runs_home / "history.journal"
    line = journal_path.read_bytes()
    assert kept(runs_home).journal_bytes == len(line) and b'"first"' in line
    journal_path.write_bytes(line.replace(b'"first"', b'"other"'))  # the same length, not the same line
    journal.forget_cached(runs_home / INDEX_FILE)
    assert kept(runs_home) is None
    assert B in runs(runs_home, "--tag", "other") and "No runs match" in runs(runs_home, "--tag", "first")


def _another_process(home: Path, code: str) -> None:
    """Python ``code`` in a process of its own (``store`` is a RunStore of ``home``)."""
    subprocess.run([sys.executable, "-c", f"from critui.runs.store import RunStore\nstore = RunStore({str(home)!r})\n{code}"],
                   check=True, cwd=REPO, timeout=120)


def test_what_another_process_writes_since_shows(runs_home, index_unread):
    assert kept(runs_home) is not None
    _another_process(runs_home, f"store.annotate({A!r}, add=['later'])\nstore.update({B!r}, final_acc=0.4321)")
    listed = runs(runs_home)  # read from the kept listing and the journal lines after it
    assert "0.4321" in listed and A in runs(runs_home, "--tag", "later")
    _another_process(runs_home, f"store.delete({D!r})")
    assert D not in runs(runs_home) and A in runs(runs_home)


def test_a_run_folder_added_or_a_run_whose_worker_died_is_reconciled(runs_home):
    from_index(runs_home)
    write_run(runs_home, NEW, created=T0 + 240, seed=9, done=2, end=None)  # copied in, not yet indexed
    listed = runs(runs_home)
    assert NEW in listed and listed.splitlines()[-1].split()[:2] == [NEW, "interrupted"]
    _another_process(runs_home, f"store.update({NEW!r}, status='running')")  # its worker is long gone
    listed = runs(runs_home)
    assert listed.splitlines()[-1].split()[:2] == [NEW, "interrupted"]
    assert runs(runs_home) == from_index(runs_home)


def test_a_folder_that_is_not_a_run_is_warned_about_and_the_listing_still_used(runs_home, index_unread):
    shutil.copytree(runs_home / "runs" / A, runs_home / "runs" / f"{A}-copy")
    result = critui_here(runs_home, "runs")
    assert result.returncode == 0 and f"{A}-copy" in result.stderr and "rename it" in result.stderr
    assert f"{A}-copy" not in result.stdout


def test_a_journal_line_the_index_would_leave_out_sends_the_reader_to_the_index(runs_home):
    expected = from_index(runs_home)
    bad = {"id": "../../victim", "status": "finished", "created": T0, "dataset": "d", "model": "m", "epochs": 8}
    with open(runs_home / "history.journal", "ab") as f:
        f.write(json.dumps({"key": "9", "doc": bad}).encode() + b'\n{"key": \n')
    assert kept(runs_home) is None
    result = critui_here(runs_home, "runs")
    assert result.stdout == expected and "victim" in result.stderr and "left out" in result.stderr
    again = critui_here(runs_home, "runs")
    assert again.stdout == expected and again.stderr == ""  # folded away: told once
    assert kept(runs_home) is not None


def test_a_long_journal_since_the_listing_is_folded_into_a_fresh_one(runs_home, monkeypatch):
    from_index(runs_home)
    before = kept(runs_home).journal_bytes
    RunStore(runs_home).update(A, final_acc=0.1234)
    monkeypatch.setattr(listing, "REFRESH_BYTES", 0)
    journal.forget_cached(runs_home / INDEX_FILE)
    assert "0.1234" in runs(runs_home)
    after = kept(runs_home)
    assert after.journal_bytes > before and after.replayed == 0  # nothing left to replay


def test_a_subprocess_lists_from_the_listing(critui, runs_home):
    expected = from_index(runs_home)
    result = critui("runs", check=True)
    assert result.stdout == expected and result.stderr == ""


def test_a_listing_holds_what_a_fresh_read_of_the_index_holds_not_what_its_writer_holds(runs_home):
    RunStore(runs_home).update(A, epochs="eight")  # this process holds it; a fresh read leaves it out
    _compact(runs_home)  # the snapshot and its listing, written by this process
    fresh = journal.read_index(runs_home / INDEX_FILE)
    assert sorted(d["id"] for d in fresh) == [B, C, D]
    assert sorted(row["id"] for row in kept(runs_home).rows.values()) == [B, C, D]
    assert [listing.row_of(d) for d in fresh] == list(kept(runs_home).rows.values())


@pytest.mark.parametrize("planted", ["a link to the snapshot", "a named pipe"])
def test_a_listing_that_is_not_a_file_is_never_followed_or_waited_on(runs_home, planted):
    expected = from_index(runs_home)
    path = listing.listing_path(runs_home / INDEX_FILE)
    path.unlink()
    if planted == "a named pipe":
        os.mkfifo(path)  # reading it would wait for a writer for ever
    else:
        path.symlink_to(runs_home / INDEX_FILE)
    assert runs(runs_home) == expected
    assert path.is_symlink() or stat.S_ISFIFO(path.lstat().st_mode)  # left as it is, never replaced


def test_a_narrow_terminal_gets_the_compact_table_from_the_listing_too(runs_home):
    narrow = {"COLUMNS": "80"}
    listing.listing_path(runs_home / INDEX_FILE).unlink()
    expected = critui_here(runs_home, "runs", env=narrow).stdout
    assert "all on synthetic" in expected and "created" not in expected
    assert all(len(line) <= 80 for line in expected.splitlines())
    assert critui_here(runs_home, "runs", env=narrow).stdout == expected


def test_a_folder_in_the_index_s_place_is_set_aside_and_the_index_rebuilt(runs_home):
    expected = from_index(runs_home)
    (runs_home / INDEX_FILE).unlink()
    (runs_home / INDEX_FILE).mkdir()
    journal.forget_cached(runs_home / INDEX_FILE)
    result = critui_here(runs_home, "runs")
    assert result.returncode == 0 and "Traceback" not in result.stderr
    assert "cannot be read" in result.stderr and "rebuilt" in result.stderr
    assert [line.split()[0] for line in result.stdout.splitlines()[3:]] == [A, B, C, D]
    assert list(runs_home.glob(f"{INDEX_FILE}.damaged-*"))[0].is_dir()  # kept for a look
    assert runs(runs_home) == result.stdout == expected
