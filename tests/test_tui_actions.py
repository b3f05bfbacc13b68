"""The TUI's run actions, driven through Pilot: a sweep from the new-experiment form, resume
and fork from run detail, and cancel asking first. The runs are real and tiny (a few hundred
synthetic images, a 4-channel CNN, 1-3 epochs), so that what the screens show is what the
workers did.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from critui.runs.store import RunStore
from tests.test_tui import T0, ask, fake_home, make_app, wait_for, write_run

TINY = {
    "train.threads": "1",
    "dataset.n_train": "300",
    "dataset.n_test": "200",
    "model.width": "4",
}


@pytest.fixture
def registry(monkeypatch):
    """The built-in plugins only: installed plugins vary by machine."""
    from critui.plugins import build_registry

    monkeypatch.setenv("CRITUI_LOAD_PLUGINS", "")
    return build_registry()


def events_of(home: Path, run_id: str) -> list[dict]:
    from critui.events import read_events

    return read_events(home / "runs" / run_id)


def trained_run(home: Path, registry, epochs: int = 2, keep: tuple[int, ...] = (1,)) -> str:
    """A finished flip run of ``epochs`` tiny epochs, trained by a real worker, keeping the
    checkpoints of ``keep`` (as a sweep's parent does)."""
    from critui.config import build_spec
    from critui.runs.launcher import start_worker

    sets = [f"{k}={v}" for k, v in TINY.items()] + [f"train.epochs={epochs}", "deficit.end=2"]
    spec = build_spec(registry, {}, ["deficits.flip"], sets)
    spec.keep_checkpoints = list(keep)
    store = RunStore(home)
    doc = store.create(spec, {})
    run_dir = store.run_dir(doc["id"])
    assert start_worker(run_dir).wait(timeout=120) == 0, (run_dir / "log.txt").read_text()
    store.update(doc["id"], status="running")
    store.reconcile()
    assert store.get(doc["id"])["status"] == "finished"
    return doc["id"]


def interrupt_after(home: Path, run_id: str, epoch: int) -> None:
    """Leave the run as a worker killed right after its checkpoint of ``epoch`` would."""
    run_dir = home / "runs" / run_id
    shutil.copyfile(run_dir / "ckpt" / f"epoch-{epoch:04d}.pt", run_dir / "ckpt" / "latest.pt")
    kept = []
    for event in events_of(home, run_id):
        kept.append(event)
        if event["event"] == "checkpoint" and event["epoch"] == epoch:
            break
    (run_dir / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in kept))
    store = RunStore(home)
    store.update(run_id, status="running")
    store.reconcile()
    assert store.get(run_id)["status"] == "interrupted"


# -- a sweep from the new-experiment form ----------------------------------------------------------


async def open_form(app, pilot):
    from textual.widgets import Checkbox, Select

    from critui.tui.widgets.param_form import ParamField

    await pilot.press("n")
    screen = app.screen
    assert await wait_for(
        pilot, lambda: screen.ready and screen.query(ParamField), timeout=30
    )
    screen.query_one("#pick-deficit", Select).value = "deficits.flip"
    screen.query_one("#pick-metrics-fisher", Checkbox).value = False
    assert await wait_for(
        pilot,
        # Both picks rebuild the fields; between a rebuild's two groups some are missing.
        lambda: screen.ready
        and screen.query("#f-deficit-end")
        and not screen.query("#f-metrics-fisher-every"),
    )
    for key, value in {**TINY, "train.epochs": "2"}.items():
        screen.field(key).set_value(value)
    await pilot.pause()
    return screen


def test_new_experiment_launches_a_sweep_over_an_axis_and_opens_its_view(tmp_path, registry):
    home = tmp_path / "home"

    async def scenario():
        from textual.widgets import Input

        from critui.runs.scheduler import load_record
        from critui.tui.screens.new_experiment import SweepPlanModal
        from critui.tui.screens.sweep import SweepScreen
        from critui.tui.widgets.runs_table import RunsTable

        app = make_app(home, registry=registry, poll_interval=0.2)
        async with app.run_test(size=(120, 40)) as pilot:
            screen = await open_form(app, pilot)
            screen.choose_axis("deficit.end")
            screen.query_one("#axis-values", Input).value = "1,2"
            await pilot.press("ctrl+l")
            assert await wait_for(pilot, lambda: isinstance(app.screen, SweepPlanModal))
            await pilot.press("y")  # the plan shown, then launched
            assert await wait_for(pilot, lambda: screen.launched_sweep is not None, timeout=30)
            assert await wait_for(pilot, lambda: isinstance(app.screen, SweepScreen))
            view = app.screen
            assert view.sweep_id == screen.launched_sweep

            # the planner's fork tree: both windows start at 0, so the end=2 run shares epoch 0
            record = load_record(app.store, screen.launched_sweep)
            assert [e["axis"] for e in record["runs"]] == [
                {"deficit.end": 1, "seed": 0},
                {"deficit.end": 2, "seed": 0},
            ]
            assert sorted(e["fork_epoch"] for e in record["runs"]) == [0, 1]
            ids = [e["run_id"] for e in record["runs"]]

            def finished() -> int:
                return sum(r["finished"] for r in (view.report or {}).get("rows", []))

            assert await wait_for(pilot, lambda: finished() == 2, timeout=120), [
                (home / "runs" / r / "log.txt").read_text() for r in ids
            ]
            assert "2/2 runs finished" in str(view.query_one("#sweep-title").render())
            await pilot.press("escape")
            table = app.screen.query_one(RunsTable)
            assert await wait_for(pilot, lambda: set(ids) <= set(table.shown))
            assert [table.cell(r, "status") for r in ids] == ["finished", "finished"]
            assert [table.cell(r, "deficit") for r in ids] == ["flip [0,1)", "flip [0,2)"]
            assert not app.sweeps  # the scheduler is done

    asyncio.run(scenario())


def test_a_bad_sweep_axis_is_shown_inline_and_launches_nothing(tmp_path, registry):
    home = tmp_path / "home"

    async def scenario():
        from textual.widgets import Input, Static

        from critui.tui.screens.new_experiment import NewExperimentScreen

        app = make_app(home, registry=registry, poll_interval=0.2)
        async with app.run_test(size=(120, 40)) as pilot:
            screen = await open_form(app, pilot)
            axis_error = screen.query_one("#axis-error", Static)
            screen.choose_axis("deficit.end")
            for values, message in [
                ("1,x", "deficit.end"),  # Param.parse's message names the setting
                ("1,,2", "separated by commas"),
                ("1,1", "repeats a value"),
                ("1,5", "before its deficit window [0, 5) closes"),  # 2 epochs only
            ]:
                screen.query_one("#axis-values", Input).value = values
                await pilot.press("ctrl+l")
                await pilot.pause()
                assert message in str(axis_error.render()), values
                assert isinstance(app.screen, NewExperimentScreen) and screen.launched_sweep is None
            assert not (home / "sweeps").exists() and not app.store.all()

    asyncio.run(scenario())


# -- resume and fork from run detail -------------------------------------------------------------


def test_resume_continues_an_interrupted_run_from_its_checkpoint(tmp_path, registry):
    home = tmp_path / "home"
    run_id = trained_run(home, registry)
    interrupt_after(home, run_id, 1)

    async def scenario():
        from critui.tui.screens.run_detail import RunDetailScreen

        app = make_app(home, registry=registry, poll_interval=0.2)
        async with app.run_test(size=(120, 40)) as pilot:
            assert await wait_for(pilot, lambda: run_id in app.feed.docs)
            app.push_screen(RunDetailScreen(run_id))
            await pilot.pause()
            palette = {c.title for c in app.get_system_commands(app.screen)}
            assert {"Resume", "Fork", "Cancel run"} <= palette
            await pilot.press("r")
            assert await wait_for(
                pilot, lambda: app.feed.docs[run_id]["status"] == "finished", timeout=90
            ), (home / "runs" / run_id / "log.txt").read_text()
            assert app.feed.docs[run_id]["epochs_done"] == 2
            started = [e for e in events_of(home, run_id) if e["event"] == "started"]
            assert started[-1]["resumed"] and started[-1]["epoch"] == 1
            # a finished run has nothing to resume: a warning, no new worker
            await pilot.press("r")
            await pilot.pause()
            assert len([e for e in events_of(home, run_id) if e["event"] == "started"]) == 2

    asyncio.run(scenario())


def test_fork_from_an_epoch_creates_a_child_that_records_its_parent(tmp_path, registry):
    home = tmp_path / "home"
    parent = trained_run(home, registry)
    # As if the parent had run as a Slurm job: the child is started where its parent ran.
    RunStore(home).update(parent, launcher="launchers.slurm", launcher_settings={"cluster": "local"})

    async def scenario():
        from rich.console import Console
        from textual.widgets import Input, Static

        from critui.tui.screens.fork import ForkModal
        from critui.tui.screens.run_detail import RunDetailScreen

        app = make_app(home, registry=registry, poll_interval=0.2)
        async with app.run_test(size=(120, 40)) as pilot:
            assert await wait_for(pilot, lambda: parent in app.feed.histories)
            app.push_screen(RunDetailScreen(parent))
            assert await wait_for(pilot, lambda: len(app.feed.histories[parent].rows) == 2)
            await pilot.press("f")
            assert await wait_for(pilot, lambda: isinstance(app.screen, ForkModal))
            modal = app.screen
            error = modal.query_one("#fork-error", Static)
            # an epoch the parent never reached, then a change that rewrites the shared epoch
            await pilot.press("5", "enter")
            assert await wait_for(pilot, lambda: "between 1 and 2" in str(error.render()))
            modal.query_one("#fork-epoch", Input).value = "1"
            modal.query_one("#fork-sets", Input).value = "deficit.start=1 train.epochs=3"
            await pilot.press("enter")
            assert await wait_for(
                pilot, lambda: "alter training from epoch 0" in str(error.render())
            )
            modal.query_one("#fork-sets", Input).value = "deficit.end=1 train.epochs=3"
            await pilot.press("enter")
            # the child opens in its own detail, trains epochs 1 and 2 from the parent's state
            assert await wait_for(
                pilot,
                lambda: isinstance(app.screen, RunDetailScreen) and app.screen.run_id != parent,
                timeout=30,
            )
            child = app.screen.run_id
            doc = app.store.get(child)
            assert doc["parent"] == parent and doc["fork_epoch"] == 1
            assert await wait_for(
                pilot, lambda: app.feed.docs[child]["status"] == "finished", timeout=90
            ), (home / "runs" / child / "log.txt").read_text()
            own = [e["epoch"] for e in events_of(home, child) if e["event"] == "epoch"]
            assert own == [1, 2]
            assert app.feed.docs[child]["epochs_done"] == 3  # counting the inherited epoch
            child_doc = app.store.get(child)
            assert child_doc["launcher"] == "launchers.slurm" and child_doc["job"].startswith("local:")
            console = Console(width=160, color_system=None)
            with console.capture() as shown:
                console.print(app.screen.query_one("#config-text", Static).content)
            assert f"forked from {parent} at epoch 1" in " ".join(shown.get().split())
            assert f"launchers.slurm, job {child_doc['job']} (cluster=local" in " ".join(shown.get().split())

    asyncio.run(scenario())


# -- cancel asks first -----------------------------------------------------------------------------


def test_cancel_asks_first_and_signals_a_worker_started_elsewhere(tmp_path):
    home = fake_home(tmp_path)
    run_id = "20260101-000400-eeee"
    # stands in for a worker another `critui run` started: its command line names the run
    worker = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", str(home / "runs" / run_id)]
    )
    try:
        cmdline = Path(f"/proc/{worker.pid}/cmdline")
        for _ in range(100):  # until it has exec'd: before that its command line is pytest's
            if cmdline.exists() and run_id.encode() in cmdline.read_bytes():
                break
            time.sleep(0.05)
        run_dir = write_run(home, run_id, epochs=16, done=2, end=None, created=T0 + 240)
        with open(run_dir / "events.jsonl", "a") as f:
            f.write(
                json.dumps(
                    {"event": "started", "time": T0, "epoch": 2, "pid": worker.pid, "device": "cpu"}
                )
                + "\n"
            )
        RunStore(home).reconcile()

        async def scenario():
            from critui.tui.screens.run_detail import RunDetailScreen
            from critui.tui.widgets.confirm import ConfirmModal
            from critui.tui.widgets.runs_table import RunsTable

            app = make_app(home, poll_interval=0.2)
            async with app.run_test(size=(120, 40)) as pilot:
                table = app.screen.query_one(RunsTable)
                assert await wait_for(pilot, lambda: run_id in table.shown)
                assert table.cell(run_id, "status") == "running"
                table.move_cursor(row=table.shown.index(run_id))
                await pilot.press("x")
                assert await wait_for(pilot, lambda: isinstance(app.screen, ConfirmModal))
                assert run_id in app.screen.question
                await pilot.press("n")
                await pilot.pause(0.5)
                assert worker.poll() is None and table.cell(run_id, "status") == "running"

                await pilot.press("enter")
                assert await wait_for(pilot, lambda: isinstance(app.screen, RunDetailScreen))
                await pilot.press("x")
                assert await wait_for(pilot, lambda: isinstance(app.screen, ConfirmModal))
                await pilot.press("escape")
                await pilot.pause(0.5)
                assert isinstance(app.screen, RunDetailScreen) and worker.poll() is None
                await ask(pilot, app, "x")
                await pilot.press("y")
                assert await wait_for(pilot, lambda: worker.poll() is not None, timeout=60)

        asyncio.run(scenario())
    finally:
        worker.kill()
        worker.wait()


def test_the_form_starts_the_run_through_the_chosen_launcher(tmp_path, registry):
    home = tmp_path / "home"

    async def scenario():
        from textual.widgets import Select, Static

        app = make_app(home, registry=registry, poll_interval=0.2)
        async with app.run_test(size=(120, 40)) as pilot:
            screen = await open_form(app, pilot)
            screen.query_one("#pick-launcher", Select).value = "launchers.slurm"
            assert await wait_for(pilot, lambda: screen.ready and screen.query("#f-launcher-cluster"))
            # No Slurm here: its default cluster cannot start, and the form says why.
            await pilot.press("ctrl+l")  # held until the launcher's fields are mounted, then acted on
            assert await wait_for(
                pilot, lambda: "needs Slurm's sbatch" in str(screen.query_one("#launch-error", Static).render()))
            assert not app.store.all()
            screen.field("launcher.cluster").set_value("local")  # submitit's local backend
            await pilot.pause()
            await pilot.press("ctrl+l")
            assert await wait_for(pilot, lambda: screen.launched is not None, timeout=30)
            run_id = screen.launched
            assert await wait_for(pilot, lambda: app.store.get(run_id)["status"] == "finished", timeout=120), (
                (home / "runs" / run_id / "log.txt").read_text())
            doc = app.store.get(run_id)
            assert doc["launcher"] == "launchers.slurm" and doc["job"].startswith("local:")
            assert doc["launcher_settings"]["cluster"] == "local"

    asyncio.run(scenario())
