"""A sweep's record: a unique id and folder per sweep, written atomically, and read back only
when it holds what every reader counts on (a damaged ``sweep.json`` is skipped, with a
warning naming it and what is wrong, never a traceback or a silent "no sweeps")."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from critui.plugins import get_registry
from critui.runs import scheduler as sched
from critui.runs.planner import plan_tree
from critui.runs.store import RunStore
from critui.sweeps import expand, parse_sweep
from tests.test_cli_errors import assert_clean_error

GOOD_ID = "demo-20260101-000000-abc123"


def record(sweep_id: str = GOOD_ID, **changes) -> dict:
    """A well-formed record of two runs (a trunk and its fork), neither of them in the index."""
    out = {
        "id": sweep_id, "name": "demo", "config": None, "created": 1.0, "primary": "removal",
        "axes": ["removal", "seed"], "launcher": None,
        "runs": [
            {"index": 0, "run_id": "20260101-000000-aaaa", "axis": {"removal": 4, "seed": 0}, "baseline": False,
             "label": "removal=4 seed=0", "parent": None, "fork_epoch": 0, "epochs": 8, "window": [0, 4]},
            {"index": 1, "run_id": "20260101-000000-bbbb", "axis": {"removal": 2, "seed": 0}, "baseline": False,
             "label": "removal=2 seed=0", "parent": 0, "fork_epoch": 2, "epochs": 6, "window": [0, 2]},
        ],
    }
    out.update(changes)
    return out


def write_record(home: Path, folder: str, content) -> Path:
    path = home / "sweeps" / folder / "sweep.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
    return path


def text_of(result) -> str:
    return " ".join((result.stdout + result.stderr).split())


# -- unique ids, exclusive folders, atomic writes -------------------------------------------


def planned_sweep():
    sweep = parse_sweep({"train": {"epochs": 2}, "sweep": {"seeds": [0, 1]}}, ("sw.toml", "[sweep]\nseeds = [0, 1]\n"))
    planned = expand(sweep, get_registry())
    return sweep, planned, plan_tree([run.spec for run in planned])


def test_two_sweeps_started_in_the_same_second_get_their_own_ids_and_runs(home, monkeypatch):
    monkeypatch.setattr(time, "strftime", lambda fmt, *args: "20260101-120000" if "%H" in fmt else "x")
    store = RunStore(home)
    made = []
    for _ in range(2):
        sweep, planned, nodes = planned_sweep()
        made.append(sched.create_sweep(store, sweep, planned, nodes, lambda spec: {}, "sw.toml"))
    assert made[0]["id"] != made[1]["id"]
    records = sched.all_records(store)
    assert sorted(r["id"] for r in records) == sorted(r["id"] for r in made)
    docs = {d["id"]: d for d in store.all()}
    assert len(docs) == 4
    for r in records:  # every run belongs to its own sweep
        assert all(docs[e["run_id"]]["sweep"] == r["id"] for e in r["runs"])


def test_a_taken_folder_is_never_shared(home, monkeypatch):
    store = RunStore(home)
    ids = iter([GOOD_ID, GOOD_ID, "demo-20260101-000000-def456"])
    monkeypatch.setattr(sched, "new_sweep_id", lambda name: next(ids))
    assert sched.make_sweep_folder(store, "demo") == GOOD_ID
    assert sched.make_sweep_folder(store, "demo") == "demo-20260101-000000-def456"


def test_the_record_is_written_atomically_past_a_planted_link(home, tmp_path):
    store = RunStore(home)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    folder = home / "sweeps" / GOOD_ID
    folder.mkdir(parents=True)
    # The old writer used this very name for its temporary file, and followed the link.
    (folder / f".sweep.json.{os.getpid()}.tmp").symlink_to(victim)
    sched.save_record(store, record())
    assert victim.read_text() == "keep me"
    assert json.loads((folder / "sweep.json").read_text())["id"] == GOOD_ID
    assert sched.all_records(store)[0]["id"] == GOOD_ID


def test_a_record_with_an_id_that_is_no_sweep_id_is_never_written(home):
    from critui.errors import CritUIError

    with pytest.raises(CritUIError, match="is not a critui sweep id"):
        sched.save_record(RunStore(home), record("../../outside"))
    assert not (home.parent / "outside").exists()


# -- reading records back ----------------------------------------------------------------------


def test_a_garbage_record_is_skipped_with_a_warning_naming_it(critui, home):
    write_record(home, GOOD_ID, record())
    garbage = write_record(home, "old-20250101-000000", b"\x00\xffnot json{")
    result = critui("report", "last", "--no-chart")
    assert result.returncode == 0, result.stderr
    assert "Warning:" in result.stderr and str(garbage) in text_of(result) and "could not be read" in text_of(result)
    assert GOOD_ID in result.stdout


def test_only_garbage_says_so_instead_of_there_being_no_sweeps(critui, home):
    garbage = write_record(home, GOOD_ID, b"{\"id\": ")
    result = critui("report", "last")
    assert_clean_error(result, "There are no sweeps")
    assert str(garbage) in text_of(result) and "could not be read" in text_of(result)


@pytest.mark.parametrize(("content", "problem"), [
    ({k: v for k, v in record().items() if k != "runs"}, "has no list of runs"),
    (record(runs={"0": 1}), "has no list of runs"),
    ([record()], "holds list instead of an object"),
    (record("other-20260101-000000-abc123"), "not its folder's name"),
    (record(name=["x"]), "has name = ['x'], which is not a string"),
    (record(created="yesterday"), "has created = 'yesterday'"),
    (record(runs=[1, 2]), "run entry 0 is int instead of an object"),
    (record(runs=[{**record()["runs"][0], "run_id": "../../victim"}]), "run entry 0 has the run id '../../victim'"),
    (record(runs=[{**record()["runs"][0], "index": 3}]), "run entry 0 has the index 3 instead of 0"),
    (record(runs=[record()["runs"][0], {**record()["runs"][1], "parent": 7}]), "run entry 1 has the parent 7"),
    (record(runs=[{**record()["runs"][0], "parent": 1}, record()["runs"][1]]), "has a loop of parents"),
    (record(runs=[{**record()["runs"][0], "epochs": "8"}]), "has epochs = '8'"),
    (record(runs=[{**record()["runs"][0], "axis": [4, 0]}]), "has the axis values [4, 0]"),
    (record(runs=[{**record()["runs"][0], "window": "0-4"}]), "has the window '0-4'"),
])
def test_a_record_of_the_wrong_shape_is_skipped_and_named(critui, home, content, problem):
    path = write_record(home, GOOD_ID, content)
    for args in (("report", "last"), ("sweep", "--resume", GOOD_ID)):
        result = critui(*args)
        assert_clean_error(result, "There are no sweeps", problem, "that sweep is left out")
        assert str(path) in text_of(result)


def test_the_tui_opens_the_good_sweep_and_warns_of_the_bad(home):
    import asyncio

    from critui.tui.screens.sweep import SweepScreen
    from tests.test_tui import make_app, wait_for

    write_record(home, GOOD_ID, record(name="[red]loud[/red]"))
    bad = write_record(home, "bad-20260101-000000", {"id": "bad-20260101-000000"})

    async def scenario():
        app = make_app(home, poll_interval=0.2)
        async with app.run_test(size=(120, 40)) as pilot:
            assert await wait_for(pilot, lambda: app.polls_done >= 1)
            await pilot.press("w")
            assert await wait_for(pilot, lambda: isinstance(app.screen, SweepScreen), timeout=60)
            assert await wait_for(pilot, lambda: app.screen.report is not None, timeout=60)
            notes = [str(n.message) for n in app._notifications]
            assert any(str(bad) in note and "has no list of runs" in note for note in notes), notes
            title = app.screen.query_one("#sweep-title").render()
            assert "[red]loud[/red]" in str(title)  # the name as written, not as markup

    asyncio.run(scenario())


@pytest.mark.parametrize("ref", ["", "../x", "/tmp", "a b"])
def test_a_sweep_reference_that_cannot_be_an_id_is_refused(critui, home, ref):
    write_record(home, GOOD_ID, record())
    assert_clean_error(critui("report", ref), "is not a critui sweep id")


def test_a_prefix_of_a_good_id_still_finds_it(critui, home):
    write_record(home, GOOD_ID, record())
    result = critui("report", "demo-2026", "--no-chart")
    assert result.returncode == 0, result.stderr
    assert GOOD_ID in result.stdout
