"""Every modal dialog, whole at any terminal size, and forking from an epoch with changes that
act only after it.

The dialogs (stop a run, delete it, quit while runs train, fork, pick a sweep) are checked
two ways: SVG snapshots at 80x24, and Pilot scenarios at 60x20, 80x24 and 120x35 that read
what the screen shows inside each dialog, line by line, and find the whole message there:
a Label that did not wrap once showed "Stop run ...? Every completed epoch i" and hid the
rest. Regenerate the snapshots after an intended change with
``pytest tests/test_tui_dialogs.py --snapshot-update`` and look at the SVGs first.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from critui.runs.store import RunStore
from tests.test_tui import T0, fake_home, steady_cursors, wait_for, write_run
from tests.test_tui_snapshots import loaded

RUNNING = "20260101-000000-aaaa"  # marked running in the feed, so that `x` asks
CHILDLESS = "20260101-000100-bbbb"  # no fork inherits from it, so that `del` asks
SWEEP = "removal-20261130-130308-ef2c0a"
SIZES = [(60, 20), (80, 24), (120, 35)]


@pytest.fixture
def utc(monkeypatch):
    """Sweep times are shown in local time: UTC here, so that the screens are the same anywhere."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture
def registry(monkeypatch):
    """The built-in plugins only: installed plugins vary by machine."""
    from critui.plugins import build_registry

    monkeypatch.setenv("CRITUI_LOAD_PLUGINS", "")
    return build_registry()


def make_app(home: Path, registry=None):
    from critui.tui.app import CritUIApp

    return CritUIApp(home, registry=registry, poll_interval=3600)  # one poll: nothing moves


def write_sweeps(home: Path) -> None:
    """Two sweep records, so that `w` asks which one to open."""
    from critui.runs.scheduler import SWEEP_FILE, sweeps_dir

    store = RunStore(home)
    for i, (sweep_id, name) in enumerate(((SWEEP, "removal"), ("onset-20261130-140000-abcd01", "onset"))):
        folder = sweeps_dir(store) / sweep_id
        folder.mkdir(parents=True)
        record = {"id": sweep_id, "name": name, "created": T0 + 3600 * i, "runs": []}
        (folder / SWEEP_FILE).write_text(json.dumps(record))


async def open_dialog(app, pilot, which: str):
    """Open one dialog the way a user does; returns the modal screen."""
    from textual.screen import ModalScreen

    from critui.tui.screens.fork import ForkModal
    from critui.tui.widgets.runs_table import RunsTable

    table = app.screen.query_one(RunsTable)
    if which == "cancel":
        app.feed.docs[RUNNING]["status"] = "running"
        table.move_cursor(row=table.shown.index(RUNNING))
        await pilot.press("x")
    elif which == "delete":
        table.move_cursor(row=table.shown.index(CHILDLESS))
        await pilot.press("delete")
    elif which == "quit":
        # a run and a sweep started here: one worker training, eleven runs waiting
        app.feed.monitors[RUNNING] = SimpleNamespace(run_id=RUNNING, done=False, poll=lambda: [])
        app.sweeps[SWEEP] = SimpleNamespace(running=[CHILDLESS], pending=list(range(11)))
        await pilot.press("q")
    elif which == "fork":
        app.push_screen(ForkModal(CHILDLESS, 16))
        await wait_for(pilot, lambda: isinstance(app.screen, ForkModal))
        await wait_for(pilot, lambda: app.screen.kept is not None, timeout=60)
        await pilot.press("4")
    elif which == "sweeps":
        await pilot.press("w")
    assert await wait_for(pilot, lambda: isinstance(app.screen, ModalScreen), timeout=20), which
    await pilot.pause(0.3)
    return app.screen


async def close_dialog(app, pilot, which: str) -> None:
    from textual.screen import ModalScreen

    await pilot.press("escape")
    assert await wait_for(pilot, lambda: not isinstance(app.screen, ModalScreen))
    app.feed.monitors.pop(RUNNING, None)
    app.sweeps.pop(SWEEP, None)
    if RUNNING in app.feed.docs:
        app.feed.docs[RUNNING]["status"] = "finished"


def shown_in(app, widget) -> str:
    """The text the screen shows inside ``widget`` (scrollbars aside), lines joined, spaces collapsed."""
    region = widget.scrollable_content_region
    strips = app.screen._compositor.render_strips()
    lines = [strip.crop(region.x, region.right).text for strip in strips[region.y : region.bottom]]
    return " ".join(" ".join(lines).split())


def collapsed(text: str) -> str:
    return " ".join(text.split())


def messages(app, modal, which: str) -> list[tuple[str, object]]:
    """(message, the widget it must be read whole in) for the dialog ``which``."""
    from textual.widgets import OptionList, Static

    if which in ("cancel", "delete", "quit"):
        return [(modal.question, modal.query_one("#question-box"))]
    if which == "fork":
        body = modal.query_one("#fork-body")
        return [(str(modal.query_one(f"#{name}", Static).render()), body) for name in ("fork-intro", "fork-source")]
    picker = modal.query_one(OptionList)
    title = str(modal.query_one("Static").render())
    return [(title, modal.query_one("Vertical"))] + [
        (str(picker.get_option_at_index(i).prompt), picker) for i in range(picker.option_count)
    ]


DIALOGS = ["cancel", "delete", "quit", "fork", "sweeps"]


@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
def test_every_dialog_shows_its_whole_message_on_screen(tmp_path, size, utc):
    home = fake_home(tmp_path)
    write_sweeps(home)

    async def scenario():
        app = make_app(home)
        async with app.run_test(size=size) as pilot:
            await loaded(app)(pilot)
            for which in DIALOGS:
                modal = await open_dialog(app, pilot, which)
                for message, widget in messages(app, modal, which):
                    assert collapsed(message) in shown_in(app, widget), (which, message, shown_in(app, widget))
                # and the buttons (the keys to answer) stay on screen
                for button in modal.query("Button"):
                    assert button.region.bottom <= size[1] and str(button.label) in shown_in(app, button)
                await close_dialog(app, pilot, which)

    asyncio.run(scenario())


def test_the_quit_question_names_the_resume_command_whole_at_60_columns(tmp_path):
    home = fake_home(tmp_path)

    async def scenario():
        app = make_app(home)
        async with app.run_test(size=(60, 20)) as pilot:
            await loaded(app)(pilot)
            modal = await open_dialog(app, pilot, "quit")
            shown = shown_in(app, modal.query_one("#question-box"))
            assert f"`critui sweep --resume {SWEEP}` continues it." in shown
            assert shown.endswith("Quit?")
            await pilot.press("n")
            assert await wait_for(pilot, lambda: app.is_running and app.return_code is None)

    asyncio.run(scenario())


def test_a_long_question_scrolls_above_buttons_that_stay_in_view(tmp_path):
    from critui.tui.widgets.confirm import ConfirmModal

    home = fake_home(tmp_path)
    question = " ".join(f"Sweep {i} has runs waiting; `critui sweep --resume {i}` continues it." for i in range(12))

    async def scenario():
        app = make_app(home)
        async with app.run_test(size=(60, 20)) as pilot:
            await loaded(app)(pilot)
            answers = []
            app.push_screen(ConfirmModal(question, yes="Quit"), answers.append)
            assert await wait_for(pilot, lambda: isinstance(app.screen, ConfirmModal))
            # taller than the screen: it scrolls
            assert await wait_for(pilot, lambda: any(box.max_scroll_y > 0 for box in app.screen.query("#question-box")))
            box = app.screen.query_one("#question-box")
            for button in app.screen.query("Button"):
                assert str(button.label) in shown_in(app, button)
            box.scroll_end(animate=False)
            assert await wait_for(
                pilot, lambda: shown_in(app, box).endswith("`critui sweep --resume 11` continues it.")
            ), shown_in(app, box)
            await pilot.press("y")
            assert await wait_for(pilot, lambda: answers == [True])

    asyncio.run(scenario())


# -- snapshots at 80x24 --------------------------------------------------------------------------


@pytest.mark.parametrize("which", DIALOGS)
def test_dialog_snapshot(snap_compare, tmp_path, utc, which):
    home = fake_home(tmp_path)
    write_sweeps(home)
    app = make_app(home)

    async def open_it(pilot) -> None:
        await loaded(app)(pilot)
        await open_dialog(app, pilot, which)
        steady_cursors(app)
        await pilot.pause(0.2)

    assert snap_compare(app, terminal_size=(80, 24), run_before=open_it)


# -- fork from an epoch: what may change after it ------------------------------------------------


def spec_of(registry, *sets: str):
    from critui.config import build_spec

    return build_spec(registry, {}, ["deficits.flip"], ["train.epochs=12", "deficit.end=4", *sets])


@pytest.mark.parametrize(
    ("sets", "expected"),
    [
        (["metrics.fisher.every=1"], (12, [])),  # a metric observes, it does not train
        (["train.epochs=20"], (12, [])),  # epochs added after the last
        (["train.eval_batch_size=10"], (12, [])),
        (["deficit.end=6"], (4, ["deficit.end"])),  # a window kept open longer
        (["deficit.end=2"], (2, ["deficit.end"])),  # closed sooner
        (["optim.after_removal=reset"], (4, ["optim.after_removal"])),
        (["deficit.start=1"], (0, ["deficit.start"])),
        (["train.seed=3", "metrics.fisher.every=1"], (0, ["train.seed"])),
        (["deficit.id=deficits.blur"], (0, ["deficit"])),
        (["deficit.start=1", "optim.lr=0.1"], (0, ["deficit.start", "optim.lr"])),
    ],
)
def test_the_first_training_change_names_the_setting_and_its_epoch(registry, sets, expected):
    from critui.runs.lineage import first_training_change

    assert first_training_change(spec_of(registry), spec_of(registry, *sets)) == expected


def test_a_deficit_added_to_a_clean_run_acts_from_its_onset(registry):
    from critui.config import build_spec
    from critui.runs.lineage import first_training_change

    clean = build_spec(registry, {}, [], ["train.epochs=12"])
    late = build_spec(registry, {}, ["deficits.blur"], ["train.epochs=12", "deficit.start=6", "deficit.end=9"])
    assert first_training_change(clean, late) == (6, ["deficit"])


def parent_run(home: Path, registry, *, epochs: int = 12, done: int = 8, kept: tuple[int, ...] = ()) -> str:
    """A finished-looking flip [0,4) run whose spec.json is a real resolved spec; ``kept``
    epochs have a checkpoint file (a fork only looks for it; it is never loaded here)."""
    run_id = "20260101-000500-ffff"
    run_dir = write_run(home, run_id, window=(0, 4), epochs=epochs, done=done,
                        end="finished" if done == epochs else None, created=T0 + 300)
    spec = spec_of(registry, f"train.epochs={epochs}")
    (run_dir / "spec.json").write_text(json.dumps(spec.to_json()))
    for epoch in kept:
        (run_dir / "ckpt").mkdir(exist_ok=True)
        (run_dir / "ckpt" / f"epoch-{epoch:04d}.pt").write_bytes(b"state")
    RunStore(home).reconcile()
    return run_id


def test_fork_accepts_changes_that_act_after_the_fork(tmp_path, registry):
    from critui.runs.lineage import fork_run

    home = tmp_path / "home"
    parent = parent_run(home, registry, kept=(6,))
    store = RunStore(home)
    doc, from_checkpoint = fork_run(store, registry, parent, 6, ["metrics.fisher.every=1", "train.epochs=20"])
    assert doc["parent"] == parent and doc["fork_epoch"] == 6 and from_checkpoint
    child = json.loads((store.run_dir(doc["id"]) / "spec.json").read_text())
    assert child["train"]["epochs"] == 20
    assert [(m["id"], m["params"]["every"]) for m in child["metrics"]] == [("metrics.fisher", 1)]
    assert (store.run_dir(doc["id"]) / "ckpt" / "latest.pt").read_bytes() == b"state"
    # a window kept open longer acts from epoch 4: a fork at 4 may have it, and retrains
    doc, from_checkpoint = fork_run(store, registry, parent, 4, ["deficit.end=6"])
    assert doc["fork_epoch"] == 4 and not from_checkpoint


@pytest.mark.parametrize(
    ("epoch", "sets", "named", "fix"),
    [
        (3, ["deficit.start=1"], "deficit.start=1 (run 20260101-000500-ffff has deficit.start=0) would alter "
         "training from epoch 0 on, before the fork at epoch 3", "Leave deficit.start as the run has it"),
        (6, ["deficit.end=5", "metrics.fisher.every=1"], "deficit.end=5 (run 20260101-000500-ffff has deficit.end=4) "
         "would alter training from epoch 4 on, before the fork at epoch 6", "Fork from epoch 4 or earlier"),
        (2, ["optim.lr=0.2"], "optim.lr=0.2", "Leave optim.lr as the run has it"),
    ],
)
def test_fork_refusal_names_the_setting_and_the_epoch_it_acts_from(tmp_path, registry, epoch, sets, named, fix):
    from critui.errors import CritUIError
    from critui.runs.lineage import fork_run

    home = tmp_path / "home"
    parent = parent_run(home, registry)
    with pytest.raises(CritUIError) as refused:
        fork_run(RunStore(home), registry, parent, epoch, sets)
    assert named in str(refused.value) and fix in str(refused.value)
    assert "Fork from epoch 0" not in str(refused.value)  # an epoch the dialog cannot take
    assert [d["id"] for d in RunStore(home).all() if d.get("parent")] == []  # nothing created


def test_the_fork_dialog_says_reused_or_retrained_names_a_refused_setting_and_forks(tmp_path, registry):
    from textual.widgets import Input, Static

    from critui.tui.screens.fork import ForkModal
    from critui.tui.screens.run_detail import RunDetailScreen

    home = tmp_path / "home"
    parent = parent_run(home, registry, kept=(2, 6))

    async def scenario():
        app = make_app(home, registry=registry)
        started = []
        app.start_worker = lambda run_id, launcher=None: started.append(run_id)  # trains nothing here
        async with app.run_test(size=(80, 24)) as pilot:
            assert await wait_for(pilot, lambda: parent in app.feed.docs)
            app.push_screen(RunDetailScreen(parent))
            assert await wait_for(pilot, lambda: len(getattr(app.feed.histories.get(parent), "rows", [])) == 8)
            await pilot.press("f")
            assert await wait_for(pilot, lambda: isinstance(app.screen, ForkModal))
            modal = app.screen
            source, error = modal.query_one("#fork-source", Static), modal.query_one("#fork-error", Static)
            assert await wait_for(pilot, lambda: modal.kept == [2, 6], timeout=60)
            assert "kept checkpoints after epoch 2, 6" in str(source.render())
            await pilot.press("6")
            assert await wait_for(pilot, lambda: "first 6 epochs will be reused from the checkpoint" in str(source.render()))
            await pilot.press("backspace", "5")
            assert await wait_for(pilot, lambda: "will retrain its first 5 epochs" in str(source.render()))
            modal.query_one("#fork-sets", Input).value = "deficit.end=5 train.epochs=20"
            await pilot.press("enter")
            assert await wait_for(pilot, lambda: "deficit.end=5" in str(error.render()), timeout=30)
            assert "from epoch 4 on" in str(error.render()) and "Fork from epoch 4 or earlier" in str(error.render())
            assert collapsed(str(error.render())) in shown_in(app, modal.query_one("#fork-body"))
            modal.query_one("#fork-epoch", Input).value = "6"
            modal.query_one("#fork-sets", Input).value = "metrics.fisher.every=1 train.epochs=20"
            await pilot.press("enter")
            assert await wait_for(
                pilot, lambda: isinstance(app.screen, RunDetailScreen) and app.screen.run_id != parent, timeout=30
            )
            child = app.store.get(app.screen.run_id)
            assert child["parent"] == parent and child["fork_epoch"] == 6 and started == [child["id"]]

    asyncio.run(scenario())
