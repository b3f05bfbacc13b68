"""The run store trusts nothing it reads: ids, damaged records, copies, the journal, forks."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from critui.files import TEMP_SUFFIX
from tests.conftest import index_docs
from tests.synthetic_home import T0, write_run

A = "20260101-000000-aaaa"
B = "20260101-000100-bbbb"
NEW = "20260101-000200-cccc"


def write_index(home: Path, entries: dict) -> None:
    (home / "history.json").write_text(json.dumps({"_default": entries}))


def entry(run_id, **fields) -> dict:
    return {"id": run_id, "status": "finished", "created": T0, "dataset": "datasets.synthetic",
            "model": "models.cnn", "epochs": 8, "epochs_done": 8, **fields}


# -- ids: never a path outside the home --------------------------------------------------------


def test_delete_of_an_index_entry_pointing_outside_the_home_touches_nothing(critui, home, tmp_path):
    write_run(home, A)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious").write_text("keep me")
    write_index(home, {"1": entry(A), "2": entry("../../victim", created=T0 + 99)})
    result = critui("delete", "-y", "../../victim")
    assert result.returncode == 2 and "not a critui run id" in result.stderr
    assert (victim / "precious").exists()
    # `last` never picks the bad entry either: it is skipped with a warning naming the index.
    listing = critui("runs")
    assert listing.returncode == 0 and A in listing.stdout and "victim" not in listing.stdout
    assert "history.json" in listing.stderr and "../../victim" in listing.stderr
    assert (victim / "precious").exists()


def test_an_absolute_id_in_the_index_never_becomes_a_path(critui, home, tmp_path):
    write_run(home, A)
    victim = tmp_path / "absolute-victim"
    victim.mkdir()
    write_index(home, {"1": entry(A), "2": entry(str(victim), created=T0 + 99)})
    result = critui("delete", "-y", "last")
    assert result.returncode == 0, result.stderr
    assert victim.exists() and not (home / "runs" / A).exists()


@pytest.mark.parametrize("ref", ["", "/etc", "..", "a/b", "../../victim"])
def test_delete_refuses_what_is_not_a_run_reference(critui, home, ref):
    write_run(home, A)
    result = critui("delete", "-y", ref)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert (home / "runs" / A).exists()


def test_run_json_id_is_not_trusted_on_a_rebuild(critui, home, tmp_path):
    run_dir = write_run(home, A)
    meta = json.loads((run_dir / "run.json").read_text())
    (run_dir / "run.json").write_text(json.dumps({**meta, "id": "../../victim"}))
    (tmp_path / "victim").mkdir()
    critui("runs", check=True)
    assert [d["id"] for d in index_docs(home)] == [A]
    assert json.loads((run_dir / "run.json").read_text())["id"] == A
    assert critui("delete", "-y", A).returncode == 0 and (tmp_path / "victim").exists()


# -- copied run folders --------------------------------------------------------------------------


def test_a_copied_run_folder_is_refused_never_duplicated(critui, home):
    write_run(home, A)
    critui("runs", check=True)
    shutil.copytree(home / "runs" / A, home / "runs" / f"{A}-copy")
    for _ in range(3):
        result = critui("runs", check=True)
    assert [d["id"] for d in index_docs(home)] == [A]
    assert f"{A}-copy" in result.stderr and "rename it to a fresh id" in result.stderr
    assert critui("show", A, "--no-fisher").returncode == 0


def test_a_run_copied_under_a_fresh_id_is_indexed_once_with_its_record_corrected(critui, home):
    write_run(home, A)
    critui("runs", check=True)
    shutil.copytree(home / "runs" / A, home / "runs" / NEW)
    for _ in range(3):
        critui("runs", check=True)
    assert sorted(d["id"] for d in index_docs(home)) == [A, NEW]
    assert json.loads((home / "runs" / NEW / "run.json").read_text())["id"] == NEW
    assert critui("show", A, "--no-fisher").returncode == 0


def test_an_index_full_of_duplicates_is_cleaned(critui, home):
    write_run(home, A)
    write_index(home, {str(i): entry(A) for i in range(1, 5)})
    result = critui("show", A, "--no-fisher")
    assert result.returncode == 0, result.stderr
    assert [d["id"] for d in index_docs(home)] == [A]


# -- damaged records: skipped, reported, never fatal ------------------------------------------------

DAMAGED_INDEXES = {
    "not UTF-8": b"\xff\xfe{\x00",
    "not JSON": b"{ not json",
    "a list": b"[]",
    "a table that is a list": b'{"_default": []}',
}


@pytest.mark.parametrize("content", DAMAGED_INDEXES.values(), ids=DAMAGED_INDEXES.keys())
def test_a_damaged_index_is_set_aside_and_rebuilt(critui, home, content):
    write_run(home, A)
    write_run(home, B, created=T0 + 60)
    (home / "history.json").write_bytes(content)
    result = critui("runs")
    assert result.returncode == 0 and "Traceback" not in result.stderr
    assert A in result.stdout and B in result.stdout
    assert "history.json" in result.stderr and "rebuilt" in result.stderr
    assert list(home.glob("history.json.damaged-*"))[0].read_bytes() == content  # kept for a look
    assert critui("runs").stderr == ""  # told once


BAD_ENTRIES = {
    "not an object": [1, 2],
    "no id": {"status": "finished"},
    "an id that is a number": entry(7),
    "an empty id": entry(""),
    "status of the wrong type": entry(B, status=5),
    "epochs as text": entry(B, epochs="eight"),
    "created as text": entry(B, created="yesterday"),
}


def test_the_fast_entry_check_refuses_exactly_what_the_field_by_field_one_refuses():
    """Entries are checked once per shape (keys and value types) and then by value: every field
    given every hostile value, twice (the second time from the shapes already seen), is judged
    as the plain field-by-field check judges it."""
    from critui.runs.journal import FIELD_CHECKS, _entry_problem_in_words, entry_problem

    values = [None, 0, -1, 1.5, True, "", "x", "../../victim", "/etc", "finished", "20260101-000000-aaaa",
              [], [0, 4], [0, "4"], [0, 4, 8], {}, {"a": 1}]
    base = entry(A, name="n", window=[0, 4], parent=B, fork_epoch=2, plugins={})
    for _ in range(2):
        for key in [*FIELD_CHECKS, "unknown"]:
            for value in values:
                doc = {**base, key: value}
                assert (entry_problem(doc) is None) == (_entry_problem_in_words(doc) is None), (key, value)
            missing = {k: v for k, v in base.items() if k != key}
            assert (entry_problem(missing) is None) == (_entry_problem_in_words(missing) is None), key
    assert entry_problem(base) is None and entry_problem([base]) is not None


@pytest.mark.parametrize("bad", BAD_ENTRIES.values(), ids=BAD_ENTRIES.keys())
def test_a_bad_index_entry_is_skipped_and_the_run_rebuilt_from_its_folder(critui, home, bad):
    write_run(home, A)
    write_run(home, B, created=T0 + 60)
    write_index(home, {"1": entry(A), "2": bad})
    result = critui("runs")
    assert result.returncode == 0 and "Traceback" not in result.stderr
    assert A in result.stdout and B in result.stdout  # B's folder is still a run
    assert "history.json" in result.stderr and "left out of the index" in result.stderr
    assert sorted(d["id"] for d in index_docs(home)) == [A, B]
    assert critui("runs").stderr == ""  # the entry was folded away: told once


def test_a_garbage_run_json_is_listed_with_a_warning(critui, home):
    write_run(home, A)
    (write_run(home, B, created=T0 + 60) / "run.json").write_text("[1, 2]")
    result = critui("runs")
    assert result.returncode == 0 and B in result.stdout
    assert f"{B}/run.json" in result.stderr and "not an object" in result.stderr


@pytest.mark.parametrize("spec", ['{"dataset": {"id": "datasets.synth', '[]', '{"dataset": 5}'],
                         ids=["truncated", "a list", "wrong shape"])
def test_a_damaged_spec_is_reported_and_other_runs_still_listed(critui, home, spec):
    write_run(home, A)
    (write_run(home, B, created=T0 + 60) / "spec.json").write_text(spec)
    result = critui("runs")
    assert result.returncode == 0 and A in result.stdout and "Traceback" not in result.stderr
    assert f"{B}/spec.json" in result.stderr and "not listed" in result.stderr
    assert critui("show", A, "--no-fisher").returncode == 0


# -- the journal ------------------------------------------------------------------------------------


def test_an_update_appends_to_the_journal_instead_of_rewriting_the_index(home):
    from critui.runs.store import RunStore

    for i in range(20):
        write_run(home, f"20260101-0001{i:02d}-{i:04x}", created=T0 + i)
    store = RunStore(home)
    store.reconcile()
    snapshot = (home / "history.json").stat()
    run_id = store.all()[5]["id"]
    store.update(run_id, error="a note")
    assert (home / "history.json").stat().st_mtime_ns == snapshot.st_mtime_ns
    lines = (home / "history.journal").read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["doc"]["error"] == "a note"
    assert {d["id"]: d for d in index_docs(home)}[run_id]["error"] == "a note"  # what others read


def test_a_journal_line_cut_short_costs_only_itself(home):
    from critui.runs.journal import forget_cached
    from critui.runs.store import RunStore

    write_run(home, A)
    write_run(home, B, created=T0 + 60)
    store = RunStore(home)
    store.reconcile()
    store.update(A, error="first")
    with open(home / "history.journal", "a") as f:
        f.write('{"key": "1", "doc": {"id": "2026')  # a writer killed mid-line
    forget_cached(home / "history.json")
    store = RunStore(home)
    store.update(B, error="second")  # starts on a fresh line
    docs = {d["id"]: d for d in index_docs(home)}
    assert docs[A]["error"] == "first" and docs[B]["error"] == "second"


def test_a_lost_index_is_rebuilt_in_one_write(home, monkeypatch):
    from critui.runs import journal
    from critui.runs.store import RunStore

    ids = [f"20260101-0002{i:02d}-{i:04x}" for i in range(10)]
    for i, run_id in enumerate(ids):
        write_run(home, run_id, created=T0 + i)
    writes = []
    original = journal.JournalStorage.commit
    monkeypatch.setattr(journal.JournalStorage, "commit", lambda self, *a: (writes.append(1), original(self, *a)))
    RunStore(home).reconcile()
    assert len(writes) == 1 and sorted(d["id"] for d in index_docs(home)) == ids


def test_processes_sharing_a_home_see_each_others_updates(home):
    import subprocess
    import sys

    from critui.runs.store import RunStore

    write_run(home, A)
    store = RunStore(home)
    store.reconcile()
    assert store.get(A)["status"] == "finished"
    code = f"from critui.runs.store import RunStore; RunStore({str(home)!r}).update({A!r}, error='from elsewhere')"
    subprocess.run([sys.executable, "-c", code], check=True)
    assert store.get(A)["error"] == "from elsewhere"


def _update_elsewhere(home: Path, run_id: str, **fields) -> None:
    """``store.update`` in another process, as a `critui run` in another terminal does it."""
    import subprocess
    import sys

    code = f"from critui.runs.store import RunStore; RunStore({str(home)!r}).update({run_id!r}, **{fields!r})"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_changes_gives_only_what_another_process_changed(home):
    from critui.runs.store import RunStore

    for run_id, created in ((A, T0), (B, T0 + 60)):
        write_run(home, run_id, created=created)
    store = RunStore(home)
    store.reconcile()
    first = store.changes()
    assert [d["id"] for d in first.everything] == [A, B]  # at first: every entry, oldest first
    assert store.changes(first.cursor).changed == {}  # nothing since
    _update_elsewhere(home, B, error="from elsewhere")
    news = store.changes(first.cursor)
    assert news.everything is None and list(news.changed) == [B] and news.removed == []
    assert news.changed[B]["error"] == "from elsewhere"
    news.changed[B]["error"] = "changed by the reader"  # a copy: the store keeps its own
    store.delete(A)
    gone = store.changes(news.cursor)
    assert gone.removed == [A] and gone.changed == {}
    assert store.get(B)["error"] == "from elsewhere"


def test_changes_skip_a_damaged_journal_line_and_drop_an_entry_made_invalid(home):
    from critui.runs.store import RunStore

    for run_id, created in ((A, T0), (B, T0 + 60)):
        write_run(home, run_id, created=created)
    store = RunStore(home)
    store.reconcile()
    cursor = store.changes().cursor
    key_of_b = next(k for k, d in json.loads((home / "history.json").read_text())["_default"].items()
                    if d["id"] == B)
    with open(home / "history.journal", "a") as f:  # a hostile line, then one cut short
        f.write(json.dumps({"key": key_of_b, "doc": entry(B, status=["not", "a", "status"])}) + "\n")
        f.write('{"key": "1", "doc": {"id": "2026\n')
    news = store.changes(cursor)
    assert news.removed == [B] and news.changed == {}  # left out, as a full read leaves it out
    assert any("history.journal" in p and B in p for p in store.take_problems())
    assert [d["id"] for d in store.all()] == [A]


def test_changes_after_the_index_was_rebuilt_give_everything(home):
    from critui.runs.store import RunStore

    write_run(home, A)
    store = RunStore(home)
    store.reconcile()
    cursor = store.changes().cursor
    (home / "history.json").write_text("{ damaged")
    (home / "history.journal").unlink()
    news = store.changes(cursor)
    assert news.everything is not None and [d["id"] for d in news.everything] == [A]


def test_the_tui_feed_takes_one_changed_run_from_the_journal(home, monkeypatch):
    from critui.runs.store import RunStore
    from critui.tui.feed import RunsFeed

    for i in range(30):
        write_run(home, f"20260101-0003{i:02d}-{i:04x}", created=T0 + i)
    feed = RunsFeed(RunStore(home))
    assert len(feed.poll()) == 30 and len(feed.docs) == 30
    target = list(feed.docs)[7]
    _update_elsewhere(home, target, status="failed", error="from elsewhere")
    answers = []
    original = feed.store.changes
    monkeypatch.setattr(feed.store, "changes", lambda since: answers.append(original(since)) or answers[-1])
    assert feed.poll() == {target}
    # Not every entry read and compared: only the journal's new line.
    assert [(a.everything, list(a.changed)) for a in answers] == [(None, [target])]
    assert feed.docs[target]["status"] == "failed" and list(feed.docs)[7] == target
    late = "20260101-000000-0fff"  # a run folder indexed later, though made before all others
    write_run(home, late, created=T0 - 1)
    feed.store.reconcile()
    assert late in feed.poll() and list(feed.docs)[0] == late
    feed.store.delete(target)
    assert feed.poll() == {target} and target not in feed.docs and len(feed.docs) == 30


# -- stale temporaries and staging folders -----------------------------------------------------------


def test_reconcile_removes_stale_temporaries(home):
    from critui.runs.store import RunStore

    write_run(home, A)
    index_tmp = home / f".history.json.x1y2{TEMP_SUFFIX}"
    index_tmp.write_text("{")
    old_staging = home / "runs" / f".{B}{TEMP_SUFFIX}"
    young_staging = home / "runs" / f".{NEW}{TEMP_SUFFIX}"
    for folder in (old_staging, young_staging):
        folder.mkdir()
        (folder / "spec.json").write_text("{}")
    an_hour_ago = time.time() - 3700
    os.utime(old_staging, (an_hour_ago, an_hour_ago))
    RunStore(home).reconcile()
    assert not index_tmp.exists() and not old_staging.exists() and young_staging.exists()


def test_create_stages_under_a_temporary_name_and_uses_a_run_id(home, monkeypatch):
    from critui.config import build_spec
    from critui.plugins import get_registry
    from critui.runs.ids import is_run_id
    from critui.runs.store import RunStore

    staged = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (staged.append(Path(src).name), real_replace(src, dst))[1])
    doc = RunStore(home).create(build_spec(get_registry(), sets=["dataset.n_train=300"]), {})
    assert is_run_id(doc["id"]) and f".{doc['id']}{TEMP_SUFFIX}" in staged
    assert [p.name for p in (home / "runs").iterdir()] == [doc["id"]]


# -- a fork is settled from its joined history -------------------------------------------------------


def test_a_fork_that_finished_unwatched_counts_its_inherited_epochs(critui, home):
    from critui.events import final_accuracy
    from critui.runs.lineage import full_rows
    from critui.runs.store import RunStore

    write_run(home, A, epochs=8)
    write_run(home, B, epochs=8, created=T0 + 60, parent=A, fork_epoch=4)
    write_index(home, {"1": entry(A), "2": entry(B, created=T0 + 60, status="running", epochs_done=0,
                                                  parent=A, fork_epoch=4, pid=2_000_000_000)})
    critui("runs", check=True)
    store = RunStore(home)
    fork = store.get(B)
    rows = full_rows(store, fork)
    assert fork["status"] == "finished" and fork["epochs_done"] == len(rows) == 8
    assert fork["final_acc"] == pytest.approx(final_accuracy(rows))


def test_a_fork_rebuilt_from_its_folder_counts_its_inherited_epochs(critui, home):
    write_run(home, A, epochs=8)
    write_run(home, B, epochs=8, created=T0 + 60, parent=A, fork_epoch=4)
    critui("runs", check=True)
    fork = {d["id"]: d for d in index_docs(home)}[B]
    assert fork["epochs_done"] == 8 and fork["parent"] == A


# -- the TUI says what the store skipped -------------------------------------------------------------


def test_the_tui_lists_the_good_runs_and_tells_what_it_skipped(tmp_path):
    import asyncio

    from critui.tui.app import CritUIApp
    from critui.tui.widgets.runs_table import RunsTable

    home = tmp_path / "home"
    write_run(home, A)
    shutil.copytree(home / "runs" / A, home / "runs" / f"{A}-copy")
    (write_run(home, B, created=T0 + 60) / "spec.json").write_text("{ cut")

    async def scenario():
        app = CritUIApp(home, registry=object(), poll_interval=0.2)
        async with app.run_test(size=(120, 40)) as pilot:
            for _ in range(100):
                messages = " ".join(n.message for n in app._notifications)
                if app.polls_done and "rename it" in messages and "spec.json" in messages:
                    break
                await pilot.pause(0.1)
            assert "rename it" in messages and f"{B}/spec.json" in messages
            assert app.screen.query_one(RunsTable).shown == [A]
            history = app.feed.histories.get(A)  # a finished run's events, read when asked for
            assert history is not None and len(history.rows) == 8

    asyncio.run(scenario())


def test_critui_runs_loads_no_plugins_torch_or_tui(home):
    """The listing's start-up is most of its time: `critui runs` imports neither the plugins
    (pluggy, critui.builtin), torch, Textual, nor importlib.metadata (the version, looked up
    only for --version)."""
    import subprocess
    import sys

    write_run(home, A)
    code = ("import runpy, sys\nsys.argv = ['critui', 'runs', '--home', sys.argv[1]]\n"
            "try:\n    runpy.run_module('critui', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "print(' '.join(sorted(sys.modules)), file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", code, str(home)], capture_output=True, text=True, check=True)
    assert A in result.stdout
    loaded = set(result.stderr.split())
    assert not loaded & {"pluggy", "torch", "textual", "critui.plugins", "critui.builtin", "importlib.metadata"}
