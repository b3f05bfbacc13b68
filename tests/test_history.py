"""One history per run: a fork shows the same epochs and final accuracy in every view, and
damaged records are skipped with a warning that names the file, never a traceback.

The fork is made the way users make one: a tiny ``critui sweep`` whose early removal forks
from the late one's trunk. The damaged homes are written by hand (tests/test_tui.py's
helpers) so that each kind of damage is exact.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
from pathlib import Path

import pytest

from critui.events import EventLog, Problem, final_accuracy, read_events
from critui.runs.lineage import full_rows, read_spec_json, run_history
from critui.runs.store import RunStore
from tests.test_sweep import record_of, sweep_file
from tests.test_tui import make_app, plain_text, wait_for, write_run
from tests.test_tui_sweep import SWEEP_ID, write_sweep


def acc_text(value: float) -> str:
    return f"{value:.4f}"


# -- a real fork, through every view ---------------------------------------------------------


@pytest.fixture(scope="module")
def forked(tmp_path_factory):
    """A finished sweep (trunk removed at 3, fork removed at 1 from the trunk's epoch 1)."""
    import os
    import subprocess
    import sys

    tmp = tmp_path_factory.mktemp("forked")
    home = tmp / "home"
    home.mkdir()
    path = sweep_file(tmp, "removal", "\n[sweep.removal]\nvalues = [1, 3]\nafter = 2\n")
    env = {**os.environ, "CRITUI_HOME": str(home), "COLUMNS": "160"}
    done = subprocess.run([sys.executable, "-m", "critui", "sweep", str(path)], capture_output=True, text=True,
                          env=env, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    record = record_of(home)
    child = next(e for e in record["runs"] if e["axis"]["removal"] == 1)
    assert child["fork_epoch"] == 1
    store = RunStore(home)
    doc = store.get(child["run_id"])
    own = [r["epoch"] for r in full_rows(store, doc) if not r.get("inherited")]
    assert own[0] == 1  # the fork trained from its fork epoch on: epoch 0 is its parent's
    return home, child["run_id"], doc["epochs"]


def settled_unwatched(home: Path, run_id: str) -> None:
    """The fork's index entry as a manager killed mid-run leaves it: still ``running``, with
    no summary, while its worker went on and finished with nobody watching. The next command's
    reconcile settles it (it used to summarise it from the fork's own epochs only)."""
    RunStore(home).update(run_id, status="running", final_acc=None, last_acc=None)


def inherited_epoch_stands_out(home: Path, run_id: str) -> None:
    """Give the parent's epoch 0 (which the fork inherits) a test accuracy of 0.9: the tiny
    runs stay at chance, and a final accuracy over the fork's own epochs alone would then
    differ from one over its whole history."""
    store = RunStore(home)
    events = store.run_dir(store.get(run_id)["parent"]) / "events.jsonl"
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    for line in lines:
        if line["event"] == "epoch" and line["epoch"] == 0:
            line["test_acc"] = 0.9
    events.write_text("".join(json.dumps(line) + "\n" for line in lines))


def expected(home: Path, run_id: str) -> tuple[int, float]:
    """Epochs and final accuracy of the run trained from scratch: its joined history."""
    store = RunStore(home)
    history = run_history(store, store.get(run_id))
    assert history.inherited == 1 and [r["epoch"] for r in history.rows] == list(range(history.epochs_done))
    return history.epochs_done, history.final_acc


def assert_views_agree(critui, home: Path, run_id: str, epochs: int) -> None:
    done, final = expected(home, run_id)
    assert done == epochs
    shown = " ".join(critui("show", run_id, "--no-fisher", check=True).stdout.split())
    assert f"progress {done}/{epochs} epochs (1 inherited)" in shown
    assert f"final test acc {acc_text(final)}" in shown
    assert "0* " in shown  # the inherited epoch is in the table, marked

    rows = list(csv.DictReader(io.StringIO(critui("export", run_id, "--format", "csv", check=True).stdout)))
    assert [int(r["epoch"]) for r in rows] == list(range(epochs))
    assert [r["inherited"] for r in rows] == ["True"] + ["False"] * (epochs - 1)
    assert final_accuracy([{"test_acc": float(r["test_acc"])} for r in rows]) == pytest.approx(final)

    data = json.loads(critui("export", run_id, "--format", "json", check=True).stdout)["runs"][0]
    assert [r["epoch"] for r in data["epochs"]] == list(range(epochs))
    assert [r["inherited"] for r in data["epochs"]] == [True] + [False] * (epochs - 1)
    assert data["run"]["epochs_done"] == done and data["run"]["final_acc"] == pytest.approx(final)
    assert data["run"]["inherited_epochs"] == 1

    report = json.loads(critui("report", "last", "--json", check=True).stdout)
    row = next(r for r in report["rows"] if r["value"] == 1)
    assert row["finished"] == 1 and row["final_acc_mean"] == pytest.approx(final)

    assert_tui_agrees(home, run_id, done, epochs, final)


def assert_tui_agrees(home: Path, run_id: str, done: int, epochs: int, final: float) -> None:
    async def scenario():
        from textual.widgets import DataTable

        from critui.tui.screens.compare import CompareScreen
        from critui.tui.screens.run_detail import RunDetailScreen
        from critui.tui.widgets.charts import Chart, FisherHeatmap
        from critui.tui.widgets.runs_table import RunsTable

        app = make_app(home, poll_interval=0.2)
        async with app.run_test(size=(140, 40)) as pilot:
            table = app.screen.query_one(RunsTable)
            assert await wait_for(pilot, lambda: run_id in table.shown, timeout=30)
            table.move_cursor(row=table.shown.index(run_id))
            await pilot.pause()
            assert str(table.get_row(run_id)[3]) == f"{done}/{epochs}"
            assert str(table.get_row(run_id)[5]) == f"{final:.3f}"  # the TUI shows 3 digits
            acc = app.screen.query_one("#acc-chart", Chart)
            assert await wait_for(pilot, lambda: acc.points == done and not acc.busy, timeout=30)

            await pilot.press("enter")
            assert await wait_for(pilot, lambda: isinstance(app.screen, RunDetailScreen))
            header = app.screen.query_one("#detail-status")
            assert await wait_for(pilot, lambda: f"{done}/{epochs} epochs" in plain_text(header.content))
            assert f"final {final:.3f}" in plain_text(header.content)
            config = " ".join(plain_text(app.screen.query_one("#config-text").content).split())
            assert f"progress {done}/{epochs} epochs (1 inherited)" in config and f"final acc {final:.3f}" in config
            curve = app.screen.query_one("#acc", Chart)
            assert await wait_for(pilot, lambda: curve.points == done and not curve.busy, timeout=30)
            await pilot.press("3")
            raw = app.screen.query_one("#fisher-raw", Chart)
            layers = len(run_history(app.store, app.store.get(run_id)).layers)
            assert await wait_for(pilot, lambda: raw.points == done * layers and not raw.busy, timeout=30)
            await pilot.press("4")
            heatmap = app.screen.query_one(FisherHeatmap)
            assert [r["epoch"] for r in heatmap.rows] == list(range(done))
            await pilot.press("escape")
            assert await wait_for(pilot, lambda: not isinstance(app.screen, RunDetailScreen))

            table = app.screen.query_one(RunsTable)
            table.move_cursor(row=table.shown.index(run_id))
            await pilot.press("space", "c")
            assert await wait_for(pilot, lambda: isinstance(app.screen, CompareScreen))
            compare = app.screen.query_one(DataTable)
            row = compare.get_row(run_id)
            assert row[3] == f"{done}/{epochs}" and row[5] == f"{final:.3f}"

    asyncio.run(scenario())


def test_a_watched_fork_has_one_history_in_every_view(forked, critui):
    sweep_home, run_id, epochs = forked
    listing = critui("runs", env={"CRITUI_HOME": str(sweep_home)}, check=True).stdout
    done, final = expected(sweep_home, run_id)
    line = next(line for line in listing.splitlines() if line.startswith(run_id))
    assert f"{done}/{epochs}" in line and acc_text(final) in line
    assert_views_agree(lambda *a, **k: critui(*a, env={"CRITUI_HOME": str(sweep_home)}, **k),
                       sweep_home, run_id, epochs)


def test_a_fork_that_finished_unwatched_has_the_same_history_in_every_view(forked, critui, tmp_path):
    import shutil

    sweep_home, run_id, epochs = forked
    home = tmp_path / "copy"
    shutil.copytree(sweep_home, home)
    inherited_epoch_stands_out(home, run_id)
    settled_unwatched(home, run_id)
    assert_views_agree(lambda *a, **k: critui(*a, env={"CRITUI_HOME": str(home)}, **k), home, run_id, epochs)


def test_a_fork_settled_by_its_monitor_counts_its_inherited_epochs(forked, tmp_path):
    """What `critui resume` and the TUI's start do: the monitor settles the fork's summary
    from its joined history, not from its own events alone."""
    import shutil

    from critui.plugins import build_registry
    from critui.runs.lineage import fork_run
    from critui.runs.monitor import RunMonitor

    sweep_home, run_id, epochs = forked
    home = tmp_path / "copy"
    shutil.copytree(sweep_home, home)
    store = RunStore(home)
    child, from_checkpoint = fork_run(store, build_registry(), run_id, epochs, sets=[f"train.epochs={epochs + 1}"])
    assert from_checkpoint
    monitor = RunMonitor(store, child["id"])
    monitor.process.wait(timeout=240)
    while not monitor.done:
        monitor.poll()
    doc = store.get(child["id"])
    history = run_history(store, doc)
    assert doc["status"] == "finished" and history.inherited == epochs
    assert doc["epochs_done"] == history.epochs_done == epochs + 1
    assert doc["final_acc"] == pytest.approx(history.final_acc)


def test_critui_runs_counts_an_unwatched_forks_inherited_epochs(forked, critui, tmp_path):
    import shutil

    sweep_home, run_id, epochs = forked
    home = tmp_path / "copy"
    shutil.copytree(sweep_home, home)
    store = RunStore(home)
    store.update(run_id, status="running", pid=None, manager_pid=None)  # its manager died
    listing = critui("runs", env={"CRITUI_HOME": str(home)}, check=True).stdout
    done, final = expected(home, run_id)
    line = next(line for line in listing.splitlines() if line.startswith(run_id))
    assert f"{done}/{epochs}" in line and acc_text(final) in line


# -- damaged events lines -------------------------------------------------------------------------

DAMAGE = {  # what a line holds -> a word its warning must contain
    b'{"event": "epoch", "time": 1, "test_acc": 0.5}\n': "without `epoch`",
    b'{"event": "epoch", "time": 1, "epoch": 1, "test_acc": "0.5"}\n': "`test_acc`",
    b'{"event": "epoch", "time": 1, "epoch": 1.5, "test_acc": 0.5}\n': "`epoch`",
    b'{"event": "metric", "time": 1, "epoch": "3", "metric": "metrics.fisher", "values": {}}\n': "`epoch`",
    b'{"event": "started", "time": 1, "epoch": 0, "pid": "abc"}\n': "`pid`",
    b'[1, 2, 3]\n': "not an event object",
    b'"epoch"\n': "not an event object",
    b'{"event": "epoch", "epoch": 1, "test_acc": 0.5, "time": "noon"}\n': "`time`",
    b'{"event": "epoch", "epoch": true, "test_acc": 0.5}\n': "`epoch`",
    b'{"event": "epoch", "epoch": 2, "test_acc": NaN}\n': "`test_acc`",
    b'\xff\xfe{"event": "epoch"}\n': "not UTF-8",
    b'{"event": "epoch", "epo\n': "not valid JSON",
}


def test_each_kind_of_damaged_line_is_skipped_and_named(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    good = b'{"event": "epoch", "time": 1, "epoch": 0, "test_acc": 0.25}\n'
    (run_dir / "events.jsonl").write_bytes(good + b"".join(DAMAGE) + good.replace(b'"epoch": 0', b'"epoch": 1'))
    problems: list[Problem] = []
    events = read_events(run_dir, problems)
    assert [e["epoch"] for e in events] == [0, 1]
    assert len(problems) == len(DAMAGE)
    for number, (problem, word) in enumerate(zip(problems, DAMAGE.values(), strict=True), start=2):
        assert problem.line == number and word in problem.what, (problem, word)
        assert str(problem).startswith(f"{run_dir / 'events.jsonl'}, line {number}: ")


def test_the_live_tail_names_the_line_numbers_of_the_file(tmp_path):
    from critui.events import EventTail

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    path = run_dir / "events.jsonl"
    path.write_bytes(b'{"event": "started", "pid": "abc"}\n{"event": "epoch", "ep')
    tail = EventTail(run_dir)
    assert tail.read_new() == [] and [p.line for p in tail.problems] == [1]
    with open(path, "ab") as f:
        f.write(b'och": 0, "test_acc": 0.5}\n[1]\n{"event": "epoch", "epoch": 1, "test_acc": 0.5}\n')
    assert [e["epoch"] for e in tail.read_new()] == [0, 1]
    assert [p.line for p in tail.problems] == [1, 3]


def damaged_home(root: Path) -> tuple[Path, str, str, int]:
    """A sweep home where one indexed run and one run not yet indexed have every kind of
    damaged line, and another run's spec.json is cut short; and the first damaged line."""
    home = root / "home"
    write_sweep(home)
    runs = sorted(p.name for p in (home / "runs").iterdir())
    damaged, cut_spec = runs[0], runs[1]
    events = home / "runs" / damaged / "events.jsonl"
    first = len(events.read_bytes().splitlines()) + 1
    with open(events, "ab") as f:
        f.write(b"".join(DAMAGE))
    spec = home / "runs" / cut_spec / "spec.json"
    spec.write_text(spec.read_text()[:40])
    fresh = "20260103-000000-0f0f"  # made after the last reconcile: not in the index yet
    write_run(home, fresh, epochs=3)
    with open(home / "runs" / fresh / "events.jsonl", "ab") as f:
        f.write(b"".join(DAMAGE))
    return home, damaged, cut_spec, first


def warnings_of(stderr: str) -> str:
    return " ".join(stderr.split())


def test_commands_work_over_a_home_with_damaged_lines_and_warn_naming_file_and_line(tmp_path, critui):
    home, damaged, cut_spec, first = damaged_home(tmp_path)
    epochs = RunStore(home).get(damaged)["epochs"]
    env = {"CRITUI_HOME": str(home)}
    listing = critui("runs", env=env)
    assert listing.returncode == 0 and "Traceback" not in listing.stderr, listing.stderr
    assert damaged in listing.stdout and "20260103-000000-0f0f" in listing.stdout

    shown = critui("show", damaged, env=env)
    assert shown.returncode == 0 and "Traceback" not in shown.stderr, shown.stderr
    assert f"{epochs}/{epochs}" in " ".join(shown.stdout.split())  # the good epochs are all there
    events = str(home / "runs" / damaged / "events.jsonl")
    warned = warnings_of(shown.stderr)
    assert f"{events}, line {first}: an `epoch` event without `epoch`" in warned
    assert f"{events}, line {first + 1}: `test_acc`" in warned
    assert f"{len(DAMAGE) - 2} more unusable line(s) in {events}" in warned

    fresh = critui("show", "0f0f", env=env)
    assert fresh.returncode == 0 and "3/3" in " ".join(fresh.stdout.split()), fresh.stderr

    cut = critui("show", cut_spec, env=env)
    assert cut.returncode == 0 and "Traceback" not in cut.stderr, cut.stderr
    assert f"{home / 'runs' / cut_spec / 'spec.json'}: is not valid JSON" in warnings_of(cut.stderr)

    for fmt in ("csv", "json"):
        exported = critui("export", damaged, cut_spec, "0f0f", "--format", fmt, env=env)
        assert exported.returncode == 0 and "Traceback" not in exported.stderr, exported.stderr
        assert f"{events}, line {first}" in warnings_of(exported.stderr)
    rows = list(csv.DictReader(io.StringIO(critui("export", damaged, env=env).stdout)))
    assert [int(r["epoch"]) for r in rows] == list(range(epochs))

    report = critui("report", SWEEP_ID, "--json", env=env)
    assert report.returncode == 0 and "Traceback" not in report.stderr, report.stderr
    assert f"{home / 'runs' / cut_spec / 'spec.json'}: is not valid JSON" in warnings_of(report.stderr)
    assert f"{events}, line {first}" in warnings_of(report.stderr)
    data = json.loads(report.stdout)
    assert sum(r["finished"] for r in data["rows"]) == 6  # 8 runs: one unfinished, one without a spec


def test_the_tui_opens_a_damaged_run_and_its_spec_warning(tmp_path):
    home, damaged, cut_spec, _ = damaged_home(tmp_path)

    async def scenario():
        from critui.tui.screens.run_detail import RunDetailScreen
        from critui.tui.widgets.runs_table import RunsTable

        app = make_app(home, poll_interval=0.2)
        async with app.run_test(size=(120, 40)) as pilot:
            table = app.screen.query_one(RunsTable)
            assert await wait_for(pilot, lambda: len(table.shown) == 9)
            runs = home / "runs"
            warnings = {  # each warning is checked as it comes: notifications expire
                damaged: (f"{runs / damaged / 'events.jsonl'}, line", "more such line"),
                cut_spec: (f"{runs / cut_spec / 'spec.json'}: is not valid JSON",),
                "20260103-000000-0f0f": (f"{runs / '20260103-000000-0f0f' / 'events.jsonl'}, line",),
            }
            for run_id, words in warnings.items():
                table.move_cursor(row=table.shown.index(run_id))
                await pilot.press("enter")
                assert await wait_for(pilot, lambda: isinstance(app.screen, RunDetailScreen))
                assert await wait_for(pilot, lambda words=words: any(all(w in n.message for w in words)
                                                                     for n in app._notifications)), run_id
                for key in ("1", "2", "3", "4"):
                    await pilot.press(key)
                await pilot.press("escape")
                assert await wait_for(pilot, lambda: not isinstance(app.screen, RunDetailScreen))
                table = app.screen.query_one(RunsTable)
            assert app.is_running and app.return_code is None

    asyncio.run(scenario())


def test_a_spec_json_of_the_wrong_shape_is_named(tmp_path):
    for text, word in (("[]", "JSON list"), ('{"dataset": 5}', "`dataset`"),
                       ('{"dataset": {"id": "d"}, "model": {"id": "m"}, "optim": {}, "train": []}', "`train`"),
                       ('{"dataset": {"id": "d"}, "model": {"id": "m"}, "optim": {}, "train": {"epochs": "x"}}',
                        "wrong value")):
        (tmp_path / "spec.json").write_text(text)
        problems: list[Problem] = []
        assert read_spec_json(tmp_path, problems) is None
        assert word in problems[0].what and problems[0].path == tmp_path / "spec.json", (text, problems)


# -- the writer -----------------------------------------------------------------------------------


def test_a_writer_after_a_half_written_last_line_starts_a_fresh_line(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text('{"event": "epoch", "epoch": 0, "test_acc": 0.5}\n{"event": "epoch", "epoch": 1, "te')
    log = EventLog(tmp_path)  # the worker that resumes the run
    log.write("epoch", epoch=1, test_acc=0.75)
    log.close()
    problems: list[Problem] = []
    events = read_events(tmp_path, problems)
    assert [(e["epoch"], e["test_acc"]) for e in events] == [(0, 0.5), (1, 0.75)]
    assert [p.line for p in problems] == [2]  # only the torn line is lost
    lines = path.read_text().splitlines()
    assert len(lines) == 3 and json.loads(lines[2])["test_acc"] == 0.75

    fresh = tmp_path / "fresh"
    fresh.mkdir()
    log = EventLog(fresh)  # an empty or new file gets no blank first line
    log.write("started", epoch=0)
    log.close()
    assert re.fullmatch(r'\{"event": "started".*\}\n', (fresh / "events.jsonl").read_text())


# -- the join itself ------------------------------------------------------------------------------


def test_join_rows_takes_each_ancestor_up_to_the_earliest_fork_below_it():
    from critui.runs.lineage import join_rows

    def rows(first: int, last: int, tag: str) -> list[dict]:
        return [{"epoch": e, "test_acc": 0.0, "run": tag} for e in range(first, last)]

    own = {"root": rows(0, 10, "root"), "mid": rows(0, 8, "mid"), "leaf": rows(3, 6, "leaf")}
    docs = {
        "root": {"id": "root"},
        "mid": {"id": "mid", "parent": "root", "fork_epoch": 5},  # trained 5..7 itself
        "leaf": {"id": "leaf", "parent": "mid", "fork_epoch": 3},  # forked before mid's own fork
    }
    joined, chain = join_rows(docs["leaf"], docs, own.__getitem__)
    assert [(r["epoch"], r["run"], bool(r.get("inherited"))) for r in joined] == [
        (0, "root", True), (1, "root", True), (2, "root", True),
        (3, "leaf", False), (4, "leaf", False), (5, "leaf", False)]
    assert chain == ("leaf", "mid", "root")
    mid, _ = join_rows(docs["mid"], docs, own.__getitem__, limit=7)
    assert [(r["epoch"], r["run"]) for r in mid] == [(e, "root") for e in range(5)] + [(5, "mid"), (6, "mid")]

    # A damaged index: a loop of parents, a missing parent, a fork epoch of the wrong type.
    looped = {"a": {"id": "a", "parent": "b", "fork_epoch": 2}, "b": {"id": "b", "parent": "a", "fork_epoch": 2}}
    got, _ = join_rows(looped["a"], looped, lambda run_id: rows(0, 4, run_id))
    assert [(r["epoch"], r["run"]) for r in got] == [(0, "b"), (1, "b"), (2, "a"), (3, "a")]
    problems: list[Problem] = []
    orphan = {"id": "o", "parent": "gone", "fork_epoch": 2}
    got, _ = join_rows(orphan, {}, lambda run_id: rows(2, 4, run_id), problems=problems)
    assert [r["epoch"] for r in got] == [2, 3] and "gone is not in the index" in str(problems[0])
    for epoch in ("2", True, 0, None, 2.0):
        got, _ = join_rows({"id": "w", "parent": "root", "fork_epoch": epoch}, docs, lambda run_id: rows(0, 4, run_id))
        assert [(r["epoch"], r["run"]) for r in got] == [(e, "w") for e in range(4)], epoch  # its own rows only
