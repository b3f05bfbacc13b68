"""The new-experiment form builds any sweep `critui sweep` can, and shows its plan first.

The form is driven through Pilot: a config loaded with ctrl+o (configs/demo-removal.toml, the
paper's Figure 1 demo), the searchable axis list, the jobs field and the thread split, the plan
(run count, fork tree, epochs from scratch and forked) checked against `critui sweep --dry-run`
on the same config, and the form saved with ctrl+s and read back as a sweep config. Nothing
is trained here: the plan is answered "n" (tests/test_tui_actions.py launches one for real).
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from tests.test_tui import make_app, steady_cursors, wait_for

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "configs" / "demo-removal.toml"


@pytest.fixture
def registry(monkeypatch):
    """The built-in plugins only: installed plugins vary by machine."""
    from critui.plugins import build_registry

    monkeypatch.setenv("CRITUI_LOAD_PLUGINS", "")
    return build_registry()


@pytest.fixture
def cores(monkeypatch):
    """Four usable cores and no GPU, whatever this machine has: the thread split is then known."""
    from critui.runs import scheduler as sched

    monkeypatch.setattr(sched, "usable_cores", lambda: 4)
    monkeypatch.setattr(sched, "detect_gpus", lambda: [])


async def form(app, pilot):
    from critui.tui.screens.new_experiment import NewExperimentScreen
    from critui.tui.widgets.param_form import ParamField

    await pilot.press("n")
    assert await wait_for(pilot, lambda: isinstance(app.screen, NewExperimentScreen))
    screen = app.screen
    assert await wait_for(pilot, lambda: screen.ready and screen.query(ParamField), timeout=30)
    return screen


async def load(pilot, app, screen, path: Path) -> None:
    """ctrl+o, the path typed, enter: as a user loads a config."""
    from textual.widgets import Input, Static

    from critui.tui.screens.new_experiment import PathModal

    await pilot.press("ctrl+o")
    assert await wait_for(pilot, lambda: isinstance(app.screen, PathModal))
    app.screen.query_one(Input).value = str(path)
    await pilot.press("enter")
    error = screen.query_one("#launch-error", Static)
    assert await wait_for(pilot, lambda: "Loaded" in str(error.render()) or "Could not" in str(error.render()))
    assert "Loaded" in str(error.render()), str(error.render())


def dry_run_epochs(critui, *args: str) -> tuple[int, int, int]:
    """(runs, epochs from scratch, epochs with forking) as `critui sweep --dry-run` prints them."""
    out = " ".join(critui("sweep", *args, "--dry-run", check=True).stdout.split())
    runs = int(re.search(r": (\d+) runs", out).group(1))
    scratch, forked = re.search(r"Epochs: (\d+) from scratch, (\d+) with shared-prefix forking", out).groups()
    return runs, int(scratch), int(forked)


def test_a_loaded_demo_sweep_plans_as_the_command_line_does_and_saves_back(tmp_path, registry, cores, critui, home):
    saved = tmp_path / "my-sweep.toml"

    async def scenario():
        from textual.widgets import Input, OptionList, Select, Static

        from critui.tui.screens.new_experiment import NewExperimentScreen, PathModal, SweepPlanModal
        from critui.tui.widgets.param_form import ParamField

        app = make_app(home, registry=registry, poll_interval=3600)
        async with app.run_test(size=(120, 40)) as pilot:
            screen = await form(app, pilot)
            # one worker per core, one thread each, by default
            assert screen.query_one("#sweep-jobs", Input).value == "4"

            await load(pilot, app, screen, DEMO)
            assert screen.query_one("#window-axis", Select).value == "removal"
            assert screen.query_one("#window-values", Input).value == "0,2,4,6,8,12,16"
            assert screen.query_one("#window-after", Input).value == "30"
            assert screen.set_axes == {"deficit.id": "deficits.blur,deficits.flip"}
            assert screen.field("model.depth").raw == "6" and screen.field("train.threads").raw == "1"
            # the deficit, its window and the Fisher settings come before train and optim
            keys = [f.key for f in screen.query(ParamField).results(ParamField)]
            assert keys.index("deficit.end") < keys.index("train.epochs")
            assert "metrics.fisher.every" not in keys  # the demo measures no Fisher: its box is unticked

            # the axis list is searchable: every shown key has the typed words
            options = screen.query_one("#axis-options", OptionList)
            everything = options.option_count
            screen.query_one("#axis-search", Input).focus()
            await pilot.press(*"dep")
            assert await wait_for(pilot, lambda: 0 < options.option_count < everything)
            shown = [options.get_option_at_index(i).id for i in range(options.option_count)]
            assert "model.depth" in shown and all("dep" in key for key in shown)
            await pilot.press("enter")  # picks the first match, its values box gets the focus
            assert await wait_for(pilot, lambda: screen.axis_key == shown[0])
            screen.query_one("#axis-search", Input).value = ""

            screen.query_one("#sweep-jobs", Input).value = "2"
            await pilot.press("ctrl+l")
            assert await wait_for(pilot, lambda: isinstance(app.screen, SweepPlanModal), timeout=30)
            plan = app.screen.plan
            summary = str(app.screen.query_one("#plan-summary", Static).render())
            tree = str(app.screen.query_one("#plan-tree-text", Static).render())
            await pilot.press("n")  # back to the form: nothing is created
            assert await wait_for(pilot, lambda: isinstance(app.screen, NewExperimentScreen))
            assert screen.launched_sweep is None and not (home / "sweeps").exists()

            await pilot.press("ctrl+s")
            assert await wait_for(pilot, lambda: isinstance(app.screen, PathModal))
            assert app.screen.query_one(Input).value == "demo-removal.toml"  # named after the sweep
            app.screen.query_one(Input).value = str(saved)
            await pilot.press("enter")
            assert await wait_for(pilot, lambda: saved.exists())
            return plan, summary, tree

    plan, summary, tree = asyncio.run(scenario())
    runs, scratch, forked = dry_run_epochs(critui, str(DEMO), "--jobs", "2")
    assert runs == 14 and (len(plan.planned), plan.scratch, plan.forked) == (runs, scratch, forked)
    assert f"{runs} runs, 2 at once (1 thread each)" in summary
    assert f"Epochs: {scratch} from scratch, {forked} with shared-prefix forking" in " ".join(summary.split())
    # the fork tree: a line per run, each fork with its epoch, as the plan has them
    lines = tree.splitlines()
    assert len(lines) == runs and {line.split()[1 if line.startswith(" ") else 0] for line in lines} == {
        f"#{i}" for i in range(runs)}
    forks = [node for node in plan.nodes if node.parent is not None]
    assert tree.count("fork at") == len(forks) > 0
    assert all(f"#{n.index} " in tree and f"fork at {n.fork_epoch}," in tree for n in forks)
    assert {run.spec.train["threads"] for run in plan.planned} == {1}  # the config pins one

    # the saved form is a sweep config the command line plans the same way
    assert dry_run_epochs(critui, str(saved), "--jobs", "2") == (runs, scratch, forked)


def test_the_form_builds_onset_seeds_baseline_and_splits_the_cores_between_its_jobs(tmp_path, registry, cores):
    async def scenario():
        from textual.widgets import Checkbox, Input, Select, Static

        from critui.tui.screens.new_experiment import SweepPlanModal
        from critui.tui.widgets.param_form import ParamField

        app = make_app(tmp_path / "home", registry=registry, poll_interval=3600)
        async with app.run_test(size=(120, 40)) as pilot:
            screen = await form(app, pilot)
            screen.query_one("#pick-deficit", Select).value = "deficits.flip"
            assert await wait_for(pilot, lambda: screen.ready and screen.query("#f-deficit-end"))
            # the deficit, its window and the Fisher settings come before train and optim
            keys = [f.key for f in screen.query(ParamField).results(ParamField)]
            assert keys.index("deficit.end") < keys.index("metrics.fisher.every") < keys.index("train.epochs")
            screen.query_one("#window-axis", Select).value = "onset"
            await pilot.pause()
            assert screen.query_one("#window-width-row").display  # width only for an onset
            screen.query_one("#window-values", Input).value = "0,2"
            screen.query_one("#window-after", Input).value = "1"
            error = screen.query_one("#axis-error", Static)
            await pilot.press("ctrl+l")
            assert await wait_for(pilot, lambda: "sweep.onset.width" in str(error.render()))
            screen.query_one("#window-width", Input).value = "2"
            screen.query_one("#axis-seeds", Input).value = "0,1"
            screen.query_one("#sweep-baseline", Checkbox).value = True
            screen.choose_axis("model.depth")
            screen.query_one("#axis-values", Input).value = "2,3"
            screen.query_one("#sweep-jobs", Input).value = "2"
            await pilot.press("ctrl+l")
            assert await wait_for(pilot, lambda: isinstance(app.screen, SweepPlanModal), timeout=30)
            plan = app.screen.plan
            await pilot.press("escape")
            return plan

    plan = asyncio.run(scenario())
    # 2 depths x (2 onsets + a baseline) x 2 seeds
    assert len(plan.planned) == 12
    windows = sorted({run.spec.window() for run in plan.planned if not run.baseline})
    assert windows == [(0, 2), (2, 4)]
    assert {run.spec.epochs for run in plan.planned if not run.baseline} == {3, 5}  # t + width + after
    # train.threads is auto (0): 4 cores between 2 workers, as `critui sweep --jobs 2` splits them
    assert {run.spec.train["threads"] for run in plan.planned} == {2}
    assert plan.jobs == 2


def test_sweep_preview_snapshot(snap_compare, tmp_path, registry, cores):
    """The plan of the demo sweep at 80x24: its count, epochs and the start of its fork tree."""
    app = make_app(tmp_path / "home", registry=registry, poll_interval=3600)

    async def open_it(pilot) -> None:
        from textual.widgets import Input

        from critui.config import load_toml
        from critui.tui.screens.new_experiment import SweepPlanModal

        screen = await form(app, pilot)
        await screen.fill(load_toml(DEMO)[0])
        screen.query_one("#sweep-jobs", Input).value = "2"
        await pilot.press("ctrl+l")
        assert await wait_for(pilot, lambda: isinstance(app.screen, SweepPlanModal), timeout=30)
        steady_cursors(app)
        await pilot.pause(0.3)

    assert snap_compare(app, terminal_size=(80, 24), run_before=open_it)


async def fill_removal_sweep(pilot, screen, seeds: str = "0,1") -> None:
    """A removal sweep typed into the form: t0 = 0, 4, 8 with 4 clean epochs after, seeds."""
    from textual.widgets import Input, Select

    from critui.tui.widgets.param_form import ParamField

    screen.query_one("#pick-deficit", Select).value = "deficits.blur"  # a removal axis needs a deficit
    assert await wait_for(pilot, lambda: screen.ready and any(
        f.key == "deficit.size" for f in screen.query(ParamField).results(ParamField)), timeout=30)
    screen.query_one("#window-axis", Select).value = "removal"
    screen.query_one("#window-values", Input).value = "0,4,8"
    screen.query_one("#window-after", Input).value = "4"
    screen.query_one("#axis-seeds", Input).value = seeds
    screen.query_one("#sweep-jobs", Input).value = "2"


def test_the_form_previews_the_plan_live_as_the_sweep_fields_change(tmp_path, registry, cores):
    """Without ctrl+l: the run count and the epochs from scratch and forked, under the sweep
    fields, planned again (once the typing pauses) when the seeds change; the same figures
    ctrl+l's plan gives."""
    from textual.widgets import Input

    async def scenario():
        from critui.tui.screens.new_experiment import NewExperimentScreen, SweepPlanModal

        app = make_app(tmp_path / "home", registry=registry, poll_interval=3600)
        async with app.run_test(size=(120, 40)) as pilot:
            screen = await form(app, pilot)
            assert "one run" in str(screen.query_one("#sweep-preview").render())
            await fill_removal_sweep(pilot, screen)
            assert await wait_for(pilot, lambda: screen.preview_text.startswith("plan: 6 runs"), timeout=30), screen.preview_text
            two_seeds = screen.preview_text
            screen.query_one("#axis-seeds", Input).value = "0,1,2"
            assert await wait_for(pilot, lambda: screen.preview_text.startswith("plan: 9 runs"), timeout=30)
            screen.query_one("#window-values", Input).value = "0,4,"  # half typed: said, not raised
            assert await wait_for(pilot, lambda: screen.preview_text.startswith("plan: not yet"), timeout=30)
            screen.query_one("#window-values", Input).value = "0,4,8"
            assert await wait_for(pilot, lambda: screen.preview_text.startswith("plan: 9 runs"), timeout=30)
            await pilot.press("ctrl+l")
            assert await wait_for(pilot, lambda: isinstance(app.screen, SweepPlanModal), timeout=30)
            plan = app.screen.plan
            await pilot.press("n")
            assert await wait_for(pilot, lambda: isinstance(app.screen, NewExperimentScreen))
            return two_seeds, screen.preview_text, plan

    two_seeds, three_seeds, plan = asyncio.run(scenario())
    assert len(plan.planned) == 9
    assert f"epochs {plan.scratch} from scratch, {plan.forked} forked" in three_seeds
    assert "2 at once" in two_seeds and "epochs" in two_seeds


def test_form_sweep_preview_snapshot(snap_compare, tmp_path, registry, cores):
    app = make_app(tmp_path / "home", registry=registry, poll_interval=3600)

    async def run_before(pilot) -> None:
        screen = await form(app, pilot)
        await fill_removal_sweep(pilot, screen, seeds="0,1,2")
        assert await wait_for(pilot, lambda: screen.preview_text.startswith("plan: 9 runs"), timeout=30)
        steady_cursors(app)
        await pilot.pause(0.3)
        await pilot.wait_for_scheduled_animations()

    assert snap_compare(app, terminal_size=(120, 35), run_before=run_before)
