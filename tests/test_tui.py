"""The TUI, driven through Textual's Pilot the way a user drives it: keys, forms, screens.

The async scenarios run under ``asyncio.run`` (no pytest-asyncio needed). Fake homes are
written by hand (spec.json, run.json, events.jsonl with fixed timestamps) so that what the
screens show is deterministic; one test launches a real run on tiny data.
"""

from __future__ import annotations

import asyncio
import io
import json
import math
import os
import shutil
import signal
from pathlib import Path

import pytest
from rich.style import Style

from critui.plugins import LoadFailure, Registry
from critui.runs.store import RunStore

T0 = 1_767_225_600.0  # 2026-01-01 00:00 UTC: fixed timestamps keep snapshots stable
LAYERS = ("conv1", "conv2", "conv3", "fc")


def spec_json(deficit: str | None, window: tuple[int, int], epochs: int, seed: int = 0) -> dict:
    return {
        "dataset": {"id": "datasets.synthetic", "params": {"n_train": 3000, "n_test": 2000}},
        "model": {"id": "models.cnn", "params": {"depth": 4, "width": 8}},
        "deficit": {"id": deficit, "params": {"start": window[0], "end": window[1]}}
        if deficit
        else None,
        "metrics": [{"id": "metrics.fisher", "params": {"every": 1}}],
        "optim": {"name": "sgd", "lr": 0.05, "decay": 0.85},
        "train": {"epochs": epochs, "seed": seed, "device": "cpu"},
        "name": "",
        "keep_checkpoints": [],
    }


def accuracy_curve(epoch: int, window: tuple[int, int] | None, seed: int) -> float:
    """A plausible critical-period curve: learning slows while the deficit is on."""
    base = 0.1 + 0.75 * (1 - math.exp(-epoch / 4))
    if window and window[0] <= epoch < window[1]:
        base *= 0.6
    elif window and epoch >= window[1]:
        base -= 0.1 * min(window[1] - window[0], 6) / 6
    return round(base + 0.01 * ((epoch * 7 + seed * 3) % 5 - 2) / 2, 4)


def write_run(
    home: Path,
    run_id: str,
    *,
    deficit: str | None = "deficits.flip",
    window=(0, 4),
    epochs: int = 12,
    done: int | None = None,
    seed: int = 0,
    end: str | None = "finished",
    created: float = T0,
    parent: str | None = None,
) -> Path:
    """A run directory as the worker leaves it; ``end=None`` leaves it without a final event."""
    done = epochs if done is None else done
    run_dir = home / "runs" / run_id
    run_dir.mkdir(parents=True)
    (run_dir / "spec.json").write_text(json.dumps(spec_json(deficit, window, epochs, seed)))
    plugins = {
        pid: {"distribution": "critui", "version": "0.1.0"}
        for pid in ("datasets.synthetic", "models.cnn", "metrics.fisher")
        + ((deficit,) if deficit else ())
    }
    meta = {
        "id": run_id,
        "name": "",
        "created": created,
        "host": "lab",
        "plugins": plugins,
        "git_commit": None,
        "parent": parent,
        "fork_epoch": 2 if parent else None,
    }
    (run_dir / "run.json").write_text(json.dumps(meta))
    t = created + 1
    lines = [
        {
            "event": "started",
            "time": t,
            "epoch": 0,
            "device": "cpu",
            "torch": "2.13.0",
            "resumed": False,
            "lr_at_removal": 0.05 * 0.85 ** window[1] if deficit else None,
        }
    ]
    win = window if deficit else None
    accs = []
    for epoch in range(done):
        acc = accuracy_curve(epoch, win, seed)
        accs.append(acc)
        t += 1
        lines.append(
            {
                "event": "epoch",
                "time": t,
                "epoch": epoch,
                "lr": round(0.05 * 0.85**epoch, 6),
                "deficit_active": bool(win and win[0] <= epoch < win[1]),
                "train_loss": round(2.3 - 2 * acc, 4),
                "train_acc": acc,
                "test_loss": round(2.4 - 2 * acc, 4),
                "test_acc": acc,
                "seconds": 1.0,
            }
        )
        peak = 1 + 4 * math.exp(-((epoch - (win[1] if win else 2)) ** 2) / 8)
        values = {
            layer: round(peak * (i + 1) * 10 ** (-i / 2), 5) for i, layer in enumerate(LAYERS)
        }
        values["total"] = round(sum(values.values()), 5)
        lines.append(
            {
                "event": "metric",
                "time": t,
                "epoch": epoch,
                "metric": "metrics.fisher",
                "values": values,
            }
        )
    if end == "finished":
        final = round(sum(accs[-5:]) / len(accs[-5:]), 6)
        lines.append(
            {
                "event": "finished",
                "time": t + 1,
                "epochs": done,
                "final_acc": final,
                "seconds": done * 1.0,
            }
        )
    elif end == "failed":
        lines.append(
            {
                "event": "failed",
                "time": t + 1,
                "epoch": done,
                "reason": "nan",
                "error": f"the loss became NaN in epoch {done}; lower optim.lr",
            }
        )
    (run_dir / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in lines))
    (run_dir / "log.txt").write_text(f"critui worker for {run_id}\ntraining on cpu\n")
    return run_dir


def fake_home(root: Path) -> Path:
    """Four runs: flip removed early and late, no deficit, and one that failed."""
    home = root / "home"
    write_run(home, "20260101-000000-aaaa", window=(0, 4), epochs=16, created=T0)
    write_run(home, "20260101-000100-bbbb", window=(0, 10), epochs=16, created=T0 + 60, seed=1)
    write_run(home, "20260101-000200-cccc", deficit=None, epochs=16, created=T0 + 120, seed=2)
    write_run(
        home,
        "20260101-000300-dddd",
        deficit="deficits.blur",
        window=(0, 8),
        epochs=16,
        done=5,
        end="failed",
        created=T0 + 180,
        parent="20260101-000000-aaaa",
    )
    RunStore(home).reconcile()
    return home


def builtin_registry_with_failure(monkeypatch) -> Registry:
    """The built-ins only (installed plugins vary by machine) plus one broken plugin."""
    from critui.plugins import build_registry

    monkeypatch.setenv("CRITUI_LOAD_PLUGINS", "")
    registry = build_registry()
    registry.failures.append(
        LoadFailure(
            source="critui_broken",
            distribution="critui-plugin-broken",
            version="0.0.1",
            error="ModuleNotFoundError: No module named 'critui_broken_dependency'",
        )
    )
    return registry


async def wait_for(pilot, condition, timeout: float = 10.0, step: float = 0.2) -> bool:
    """Pause the pilot until ``condition()`` holds; False if it never did within ``timeout``."""
    for _ in range(int(timeout / step)):
        if condition():
            return True
        await pilot.pause(step)
    return condition()


async def wait_steady(pilot, condition, checks: int = 10, timeout: float = 60.0, step: float = 0.05) -> bool:
    """Pause the pilot until ``condition()`` has held for ``checks`` checks in a row: nothing
    is left in flight (a poll's messages, a chart's build). False if it never did."""
    steady = 0
    for _ in range(int(timeout / step)):
        steady = steady + 1 if condition() else 0
        if steady >= checks:
            return True
        await pilot.pause(step)
    return False


def steady_cursors(app) -> None:
    """Stop the text cursors blinking, on every screen of the stack, before a snapshot. A
    focused Input turns its cursor on and off every half second, so a capture would catch it
    on or off by chance (a 0.5 s longer wait flips the save dialog's picture)."""
    from textual.widgets import Input

    for screen in app.screen_stack:
        for field in screen.query(Input).results(Input):
            field.cursor_blink = False  # the cursor then stays on


async def ask(pilot, app, key: str, about: str = "") -> None:
    """Press ``key`` and wait until the confirmation it opens is up (asking about ``about``),
    so that the answer pressed next reaches it: pressed before the modal opens, the answer
    goes to the screen below."""
    from critui.tui.widgets.confirm import ConfirmModal

    await pilot.press(key)
    assert await wait_for(pilot, lambda: isinstance(app.screen, ConfirmModal), timeout=60), key
    assert about in app.screen.question


def plain_text(renderable) -> str:
    """What a Rich renderable (a Table, Text) shows, as plain text."""
    from rich.console import Console

    console = Console(width=200, record=True, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


def make_app(home: Path, **kwargs):
    from critui.tui.app import CritUIApp

    return CritUIApp(home, **kwargs)


# -- the dashboard ---------------------------------------------------------------------------------


def test_dashboard_lists_filters_and_sorts_runs(tmp_path):
    home = fake_home(tmp_path)

    async def scenario():
        app = make_app(home, poll_interval=0.2)
        async with app.run_test(size=(120, 40)) as pilot:
            from critui.tui.widgets.charts import Chart
            from critui.tui.widgets.runs_table import COLUMNS, RunsTable

            table = app.screen.query_one(RunsTable)
            assert await wait_for(pilot, lambda: len(table.shown) == 4)
            # newest first: the run started last is on top
            assert table.shown == ["20260101-000300-dddd", "20260101-000200-cccc", "20260101-000100-bbbb",
                                   "20260101-000000-aaaa"]
            first = "20260101-000000-aaaa"
            assert table.cell(first, "status") == "finished" and table.cell(first, "deficit") == "flip [0,4)"
            assert table.cell(first, "progress") == "16/16" and table.cell(first, "final").startswith("0.")
            assert [table.cell(first, k) for k in ("dataset", "model", "seed")] == ["synthetic", "cnn", "0"]
            assert table.cell("20260101-000100-bbbb", "seed") == "1"
            failed = "20260101-000300-dddd"
            assert table.cell(failed, "status") == "failed" and table.cell(failed, "parent") == "20260101-000000-aaaa@2"
            assert table.cell(failed, "final") == "-"  # a failed run has no final accuracy
            assert table.cell(failed, "acc") != "-"  # only its last one
            # Every column is as wide as its widest cell (all runs, not only those on screen).
            widths = dict(zip((c.key for c in COLUMNS), table.widths, strict=True))
            for key, label in (("status", "status"), ("deficit", "deficit"), ("progress", "epochs")):
                assert widths[key] == max(len(label), *(len(table.cell(r, key)) for r in table.shown))
            assert widths["parent"] == len("20260101-000000-aaaa@2")
            # the highlighted run is charted, with the points it has
            await pilot.press("end")  # the oldest run, at the bottom
            assert table.current_id == first
            acc, fisher = (
                app.screen.query_one("#acc-chart", Chart),
                app.screen.query_one("#fisher-chart", Chart),
            )
            assert await wait_for(
                pilot, lambda: acc.points == 16 and fisher.points == 16 * len(LAYERS)
            )

            await pilot.press("slash", *"blur")
            await pilot.pause()
            assert table.shown == ["20260101-000300-dddd"]
            await pilot.press(*["backspace"] * 4, "enter")
            assert len(table.shown) == 4 and app.focused is table

            await pilot.press("s", "s", "s")  # newest -> status -> deficit -> acc (best first)
            await pilot.pause()
            assert app.screen.sort == "acc"
            accs = [float(table.cell(r, "acc")) for r in table.shown]
            assert accs == sorted(accs, reverse=True)

            await pilot.press("home", "space", "down", "space")
            await pilot.pause()
            assert len(table.marked) == 2
            chart = app.screen.query_one("#acc-chart", Chart)
            assert chart.data_key and len(chart.data_key) == 2  # both marked runs are overlaid
            # so are their total Fisher traces: one line per run, a point per epoch it has
            epochs = sum(len(app.feed.histories[r].rows) for r in table.marked)
            assert await wait_for(pilot, lambda: fisher.points == epochs)
            assert fisher.title == "total Fisher trace of 2 runs"

    asyncio.run(scenario())


def test_between_90_and_120_columns_ids_lose_their_date_and_the_accuracies_stay_on_screen(tmp_path):
    home = fake_home(tmp_path)

    async def scenario():
        from critui.tui.widgets.runs_table import RunsTable

        app = make_app(home, poll_interval=0.2)
        async with app.run_test(size=(100, 30)) as pilot:
            table = app.screen.query_one(RunsTable)
            assert await wait_for(pilot, lambda: len(table.shown) == 4)
            await pilot.press("space")  # a mark keeps its room in the narrower column
            await pilot.pause()
            assert table.compact and table.get_row_at(0)[0] == "● 000300-dddd"
            shown_to = sum(w + 2 for w in table.widths[:6])
            assert shown_to <= table.scrollable_content_region.width  # id to final, all on screen
            await pilot.resize_terminal(130, 30)
            assert await wait_for(pilot, lambda: not table.compact)
            assert table.get_row_at(0)[0] == "● 20260101-000300-dddd"

    asyncio.run(scenario())


def test_an_empty_home_says_how_to_start_and_the_first_run_replaces_the_hint(tmp_path):
    home = tmp_path / "home"

    async def scenario():
        from textual.widgets import Static

        app = make_app(home, poll_interval=0.2)
        async with app.run_test(size=(120, 40)) as pilot:
            selection = app.screen.query_one("#selection", Static)
            assert await wait_for(pilot, lambda: "press n for a new experiment" in str(selection.render()))
            write_run(home, "20260101-000400-eeee", epochs=16, done=3, end=None, created=T0)
            RunStore(home).reconcile()
            assert await wait_for(pilot, lambda: "1/1 runs" in str(selection.render()), timeout=2.0)

    asyncio.run(scenario())


def test_runs_started_elsewhere_appear_within_two_seconds(tmp_path):
    home = fake_home(tmp_path)

    async def scenario():
        app = make_app(home)  # the real 1 s poll
        async with app.run_test(size=(120, 40)) as pilot:
            from critui.tui.widgets.runs_table import RunsTable

            table = app.screen.query_one(RunsTable)
            assert await wait_for(pilot, lambda: len(table.shown) == 4)
            # another process (`critui run` elsewhere) adds a run and its first epochs
            write_run(home, "20260101-000400-eeee", epochs=16, done=3, end=None, created=T0 + 240)
            RunStore(home).reconcile()
            assert await wait_for(pilot, lambda: "20260101-000400-eeee" in table.shown, timeout=2.0)
            assert table.cell("20260101-000400-eeee", "progress") == "3/16"
            with open(home / "runs" / "20260101-000400-eeee" / "events.jsonl", "a") as f:
                f.write(
                    json.dumps(
                        {
                            "event": "epoch",
                            "time": T0,
                            "epoch": 3,
                            "lr": 0.01,
                            "deficit_active": True,
                            "train_loss": 1.0,
                            "train_acc": 0.5,
                            "test_loss": 1.0,
                            "test_acc": 0.555,
                        }
                    )
                    + "\n"
                )
            assert await wait_for(
                pilot, lambda: table.cell("20260101-000400-eeee", "progress") == "4/16", timeout=2.0
            )
            assert table.cell("20260101-000400-eeee", "acc") == "0.555"

    asyncio.run(scenario())


def test_every_binding_is_in_the_command_palette(tmp_path):
    home = fake_home(tmp_path)

    async def scenario():
        app = make_app(home, poll_interval=0.2)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause()
            titles = {c.title for c in app.get_system_commands(app.screen)}
            for binding in app.screen.BINDINGS:
                if binding.show:
                    assert binding.description in titles
            footer_keys = {
                b.binding.description for b in app.screen.active_bindings.values() if b.binding.show
            }
            assert {"New", "Detail", "Filter", "Sort", "Delete", "Export", "Plugins"} <= footer_keys

    asyncio.run(scenario())


def test_the_footer_fits_the_terminal_and_its_dropped_keys_still_work(tmp_path):
    """At 80 columns Textual's footer used to cut the dashboard's keys off mid-word."""
    home = fake_home(tmp_path)

    async def scenario():
        from textual.widgets._footer import FooterKey

        from critui.tui.widgets.footer import FittingFooter

        def shown() -> tuple[list[str], int]:
            """The footer's key labels, and the cells they take with the palette key."""
            keys = app.screen.query(FooterKey)
            used = sum(k.outer_size.width for k in keys)
            return [k.description for k in keys if "-command-palette" not in k.classes], used

        app = make_app(home, poll_interval=0.2)
        async with app.run_test(size=(130, 30)) as pilot:
            # Plugins is the first key left out (its key still works, see below), Save plot next
            wide = {"Sort", "Delete", "Export", "Save plot", "Quit"}
            assert await wait_for(pilot, lambda: wide <= set(shown()[0]), timeout=60), shown()
            assert shown()[1] <= 130
            for width in (80, 60):
                await pilot.resize_terminal(width, 24)
                # The footer is laid out again after the resize: wait for what fits `width`.
                assert await wait_for(pilot, lambda width=width: not set(shown()[0]) & {"Plugins", "Export", "Sort"}
                                      and shown()[1] <= width, timeout=60), (width, shown())
                descriptions, used = shown()
                footer = app.screen.query_one(FittingFooter)
                assert {"Detail", "New", "Mark", "Sweeps", "Quit"} <= set(descriptions)
                assert footer.hidden_actions
            # a key the footer dropped still acts
            await pilot.press("p")
            assert await wait_for(pilot, lambda: type(app.screen).__name__ == "PluginsScreen", timeout=60)

    asyncio.run(scenario())


# -- launching a real run from the form ------------------------------------------------------------


TINY_RUN = {
    "train.threads": "1",
    "dataset.n_train": "300",
    "dataset.n_test": "200",
    "model.width": "4",
}


async def open_new_experiment(pilot, deficit: str):
    """Press n, wait for the plugin pickers, and pick ``deficit``; returns the screen."""
    from textual.widgets import Select

    from critui.tui.screens.new_experiment import NewExperimentScreen
    from critui.tui.widgets.param_form import ParamField

    await pilot.press("n")
    screen = pilot.app.screen
    assert isinstance(screen, NewExperimentScreen)
    assert await wait_for(
        pilot, lambda: screen.ready and screen.query(ParamField), timeout=30
    )
    screen.query_one("#pick-deficit", Select).value = deficit
    assert await wait_for(pilot, lambda: screen.ready and screen.query("#f-deficit-end"))
    return screen


async def launch(pilot, screen, values: dict[str, str]) -> str:
    """Fill the form with ``values``, press ctrl+l, and return the launched run's id."""
    for key, value in values.items():
        screen.field(key).set_value(value)
    await pilot.pause()
    await pilot.press("ctrl+l")
    assert await wait_for(pilot, lambda: screen.launched is not None, timeout=30)
    return screen.launched


def test_new_experiment_refuses_bad_settings_then_launches_a_run_that_finishes_and_shows_its_charts(
    tmp_path, monkeypatch
):
    home = tmp_path / "home"
    monkeypatch.chdir(tmp_path)

    async def scenario():
        from textual.widgets import Static

        from critui.tui.screens.new_experiment import NewExperimentScreen
        from critui.tui.screens.run_detail import RunDetailScreen
        from critui.tui.widgets.charts import Chart, FisherHeatmap
        from critui.tui.widgets.runs_table import RunsTable

        app = make_app(home, poll_interval=0.2)
        async with app.run_test(size=(120, 40)) as pilot:
            screen = await open_new_experiment(pilot, "deficits.flip")
            # a bad value is caught inline with Param.parse's message, and blocks the launch
            screen.field("train.epochs").set_value("0")
            await pilot.pause()
            assert "below its minimum of 1" in screen.field("train.epochs").error
            await pilot.press("ctrl+l")
            await pilot.pause()
            assert isinstance(app.screen, NewExperimentScreen)
            error = screen.query_one("#launch-error", Static)
            assert "need fixing" in str(error.render())
            # a value within its bounds that only the worker could reject (the synthetic
            # dataset draws sizes that are multiples of 4) is refused too, creating no run
            screen.field("train.epochs").set_value("3")
            screen.field("dataset.size").set_value("18")
            await pilot.pause()
            await pilot.press("ctrl+l")
            assert await wait_for(pilot, lambda: "not a multiple of 4" in str(error.render()))
            assert isinstance(app.screen, NewExperimentScreen) and screen.launched is None
            assert not (home / "runs").exists() or not any((home / "runs").iterdir())
            run_id = await launch(pilot, screen, {
                **TINY_RUN,
                "dataset.size": "16",
                "train.epochs": "3",
                "deficit.end": "2",
                "metrics.fisher.every": "1",
                "metrics.fisher.probe": "100",
            })
            table = app.screen.query_one(RunsTable)
            assert await wait_for(pilot, lambda: run_id in table.shown, timeout=10)
            assert table.current_id == run_id  # the run just launched is highlighted (and charted)
            assert await wait_for(
                pilot, lambda: table.cell(run_id, "status") == "finished", timeout=90
            ), (home / "runs" / run_id / "log.txt").read_text()
            row = table.get_row(run_id)
            assert str(row[3]) == "3/3" and 0.0 <= float(str(row[5])) <= 1.0
            assert row[2] == "flip [0,2)"
            spec = json.loads((home / "runs" / run_id / "spec.json").read_text())
            assert (
                spec["dataset"]["params"]["n_train"] == 300
                and spec["deficit"]["params"]["end"] == 2
            )

            # (b) its detail: accuracy, loss and Fisher charts with data, heatmap, config
            table.move_cursor(row=table.shown.index(run_id))
            await pilot.press("enter")
            assert isinstance(app.screen, RunDetailScreen)
            detail = app.screen
            assert await wait_for(pilot, lambda: detail.query_one("#acc", Chart).points == 3)
            await pilot.press("3")
            raw, norm = (
                detail.query_one("#fisher-raw", Chart),
                detail.query_one("#fisher-norm", Chart),
            )
            assert await wait_for(pilot, lambda: raw.points >= 3 and norm.points == raw.points)
            await pilot.press("4")
            await pilot.pause(0.3)
            heatmap = detail.query_one(FisherHeatmap)
            assert len(heatmap.layer_names) >= 2 and "deficit" in str(heatmap.render())
            # export asks where, offering a CSV in the current folder
            await pilot.press("e")
            assert await wait_for(pilot, lambda: type(app.screen).__name__ == "SaveModal")
            await pilot.press("enter")
            assert await wait_for(pilot, lambda: (tmp_path / f"{run_id}.csv").exists())
            assert (tmp_path / f"{run_id}.csv").read_text().startswith("run,epoch")

    asyncio.run(scenario())


def test_a_window_that_outlasts_the_run_launches_with_a_warning(tmp_path):
    """A deficit kept to the end is a legitimate control, so it launches; the researcher
    is told that it will never be removed."""

    async def scenario():
        app = make_app(tmp_path / "home", poll_interval=0.2)
        async with app.run_test(size=(120, 40)) as pilot:
            screen = await open_new_experiment(pilot, "deficits.blur")
            await launch(pilot, screen, {**TINY_RUN, "train.epochs": "1"})  # the window is [0,8)
            assert await wait_for(pilot, lambda: any(
                "never removed" in n.message and n.severity == "warning" for n in app._notifications
            ))
            # The run's overview says so too, for as long as the run is kept.
            from critui.tui.screens.run_detail import config_table

            spec = json.loads((app.store.run_dir(screen.launched) / "spec.json").read_text())
            overview = config_table(app.store.get(screen.launched), spec)
            assert "note" in list(overview.columns[0].cells) and any(
                "never removed" in str(cell) for cell in overview.columns[1].cells
            )

    asyncio.run(scenario())


# -- the plugins screen ----------------------------------------------------------------------------


def test_plugins_screen_lists_loaded_plugins_and_a_broken_one_with_its_error(tmp_path, monkeypatch):
    registry = builtin_registry_with_failure(monkeypatch)

    async def scenario():
        from textual.widgets import DataTable, Static

        app = make_app(tmp_path / "home", registry=registry, poll_interval=0.2)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.press("p")
            screen = app.screen
            assert await wait_for(pilot, lambda: screen.registry is not None)
            table = screen.query_one("#loaded", DataTable)
            ids = [table.get_row_at(i)[0] for i in range(table.row_count)]
            assert "deficits.flip" in ids and "models.cnn" in ids and "metrics.fisher" in ids
            failures = str(screen.query_one("#failures", Static).render())
            assert (
                "critui_broken" in failures
                and "No module named 'critui_broken_dependency'" in failures
            )
            assert "critui-plugin-broken 0.0.1" in failures
            await pilot.press("escape")
            assert app.screen.id == "dashboard-screen"

    asyncio.run(scenario())


# -- delete and cancel -----------------------------------------------------------------------------


def test_delete_asks_first_and_removes_the_run(tmp_path):
    home = fake_home(tmp_path)

    async def scenario():
        from critui.tui.widgets.confirm import ConfirmModal
        from critui.tui.widgets.runs_table import RunsTable

        app = make_app(home, poll_interval=0.2)
        async with app.run_test(size=(120, 40)) as pilot:
            table = app.screen.query_one(RunsTable)
            assert await wait_for(pilot, lambda: len(table.shown) == 4)
            parent, fork = "20260101-000000-aaaa", "20260101-000300-dddd"  # forked at epoch 2
            # The fork inherits the parent's first epochs: the parent cannot go first, and
            # the app says so before asking anything.
            table.move_cursor(row=table.shown.index(parent))
            await pilot.press("D")
            assert await wait_for(pilot, lambda: any(
                "cannot be deleted" in n.message and fork in n.message for n in app._notifications
            ))
            assert not isinstance(app.screen, ConfirmModal) and (home / "runs" / parent).exists()

            async def answer(run_id: str, key: str) -> None:
                """Press D on ``run_id``'s row, then ``key`` to the question about it."""
                table.move_cursor(row=table.shown.index(run_id))
                await ask(pilot, app, "D", about=run_id)
                await pilot.press(key)
                assert await wait_for(pilot, lambda: not isinstance(app.screen, ConfirmModal), timeout=60)

            await answer(fork, "n")
            assert (home / "runs" / fork).exists() and fork in table.shown
            await answer(fork, "y")
            assert await wait_for(pilot, lambda: fork not in table.shown, timeout=60)
            assert not (home / "runs" / fork).exists()
            await answer(parent, "y")
            assert await wait_for(pilot, lambda: parent not in table.shown, timeout=60)
            assert not (home / "runs" / parent).exists()

    asyncio.run(scenario())


# -- robustness ------------------------------------------------------------------------------------


def test_malformed_events_a_deleted_run_and_a_small_terminal_do_not_crash(tmp_path):
    home = fake_home(tmp_path)

    async def scenario():
        from critui.tui.screens.run_detail import RunDetailScreen
        from critui.tui.widgets.runs_table import RunsTable

        app = make_app(home, poll_interval=0.2)
        async with app.run_test(size=(120, 40)) as pilot:
            table = app.screen.query_one(RunsTable)
            assert await wait_for(pilot, lambda: len(table.shown) == 4)
            events = home / "runs" / "20260101-000100-bbbb" / "events.jsonl"
            with open(events, "a") as f:
                f.write("{not json\n")
                f.write(json.dumps({"event": "epoch", "epoch": "sixteen"}) + "\n")
                f.write(json.dumps({"event": "metric", "epoch": 16, "metric": 3}) + "\n")
                f.write(json.dumps([1, 2, 3]) + "\n")
                f.write('{"event": "epoch", "epoch": 16, "test_acc": 0.9')  # half-written last line
            await pilot.pause(0.6)
            # open a run's detail, then delete its directory under it
            await pilot.press("enter")
            assert isinstance(app.screen, RunDetailScreen)
            shutil.rmtree(home / "runs" / app.screen.run_id)
            await pilot.pause(0.6)
            for key in ("1", "2", "3", "4"):
                await pilot.press(key)
                await pilot.resize_terminal(60, 20)
                await pilot.pause(0.2)
            await pilot.press("escape")
            await pilot.resize_terminal(60, 20)
            await pilot.pause(0.6)
            await pilot.press("down", "s", "space", "p")
            await pilot.pause(0.5)
            await pilot.press("escape", "n")
            await pilot.pause(0.5)
            await pilot.press("escape")
            await pilot.pause(0.3)
            assert app.is_running and app.return_code is None
            assert len(app.screen.query_one(RunsTable).shown) == 4

    asyncio.run(scenario())


def test_a_worker_killed_mid_run_shows_as_failed_with_the_reason_and_the_app_carries_on(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)

    async def scenario():
        from critui.tui.screens.run_detail import RunDetailScreen
        from critui.tui.widgets.runs_table import RunsTable

        app = make_app(tmp_path / "home", poll_interval=0.2)
        async with app.run_test(size=(120, 40)) as pilot:
            screen = await open_new_experiment(pilot, "deficits.blur")
            run_id = await launch(pilot, screen, {**TINY_RUN, "train.epochs": "500"})
            table = app.screen.query_one(RunsTable)
            assert await wait_for(pilot, lambda: run_id in table.shown, timeout=10)
            assert await wait_for(
                pilot, lambda: table.cell(run_id, "progress").split("/")[0] not in ("", "0"), timeout=60
            )
            os.kill(app.store.get(run_id)["pid"], signal.SIGKILL)
            assert await wait_for(
                pilot, lambda: table.cell(run_id, "status") == "failed", timeout=30
            )
            table.move_cursor(row=table.shown.index(run_id))
            await pilot.press("enter")
            assert isinstance(app.screen, RunDetailScreen)
            config = app.screen.query_one("#config-text")
            assert await wait_for(
                pilot, lambda: "exited with code -9" in plain_text(config.content) and "out of memory" in plain_text(config.content)
            )
            await pilot.press("escape", "n")
            await pilot.pause(0.3)
            assert app.is_running and app.return_code is None

    asyncio.run(scenario())


def test_a_corrupt_index_is_reported_not_fatal(tmp_path):
    home = fake_home(tmp_path)

    async def scenario():
        app = make_app(home, poll_interval=0.2)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause(0.5)
            (home / "history.json").write_text("{ corrupt")
            assert await wait_for(
                pilot, lambda: any("corrupt" in n.message for n in app._notifications)
            )
            assert app.is_running

    asyncio.run(scenario())


def test_bare_critui_opens_the_app_on_the_chosen_home(tmp_path, monkeypatch):
    from critui import cli

    opened = []
    monkeypatch.setattr("critui.tui.app.run_app", lambda home: opened.append(home))
    cli.main(["--home", str(tmp_path / "h1")])
    monkeypatch.setenv("CRITUI_HOME", str(tmp_path / "h2"))
    cli.main([])
    assert opened == [tmp_path / "h1", tmp_path / "h2"]


@pytest.mark.parametrize("n", [3, 300])
def test_downsample_keeps_the_last_point_and_the_width(n):
    from critui.tui.widgets.charts import downsample

    xs = list(range(n))
    dx, dy = downsample(xs, xs, 100)
    assert len(dx) <= 101 and dx[-1] == n - 1 and dx[0] == 0


@pytest.mark.parametrize("width", [24, 40, 120])
def test_a_title_wider_than_its_chart_is_cut_not_dropped(width):
    # plotext silently drops a title that does not fit, which left empty frames with no word
    # of what was missing (a run without Fisher data, in a narrow dashboard column).
    from critui.tui.widgets.charts import Chart, fisher_draw

    chart = Chart("Fisher trace per layer, 573e")
    text, points = chart.build_text(width, 8, "default", fisher_draw([], ["conv1"], None))
    title = text.plain.splitlines()[0].strip()
    assert points == 0 and title.startswith("no Fisher data") and len(title) <= width


@pytest.mark.parametrize("width", [40, 100])
def test_the_legend_goes_under_the_plot_in_the_colours_of_its_lines(width):
    # plotext's own legend sat in the top-left corner, over the early epochs where the
    # Fisher trace rises and peaks; "yellow", which plotext does not know, drew a second
    # blue line; and "magenta" was drawn in the deficit window's red.
    from critui.tui.widgets.charts import (
        SERIES_COLOURS,
        WINDOW_COLOUR,
        Chart,
        fisher_draw,
        rich_colour,
    )

    layers = [f"conv{i}" for i in range(1, 7)] + ["fc"]
    rows = [{"epoch": e, **{f"fisher.{k}": (e + 1.0) * (i + 1) for i, k in enumerate(layers)}} for e in range(6)]
    text, points = Chart("Fisher").build_text(width, 20, "dark", fisher_draw(rows, layers, (0, 3)))
    lines = text.plain.split("\n")
    assert points and len(lines) == 20  # the legend takes rows from the plot, not more
    legend_at = next(i for i, line in enumerate(lines) if "━━ conv1" in line)
    assert all(f"━━ {k}" in " ".join(lines[legend_at:]) for k in layers)
    assert not any(k in line for k in layers for line in lines[:legend_at])

    def colour_at(offset):
        (span,) = [span for span in text.spans if span.start <= offset < span.end]
        return Style.parse(str(span.style)).color

    keys = [colour_at(text.plain.index(f"━━ {k}")) for k in layers]
    assert keys == [Style.parse(rich_colour(c)).color for c in SERIES_COLOURS[:7]]
    assert len(set(SERIES_COLOURS)) == len(SERIES_COLOURS) and WINDOW_COLOUR not in SERIES_COLOURS
    # Not the 16 ANSI colours, which Textual maps through its theme (magenta and red alike).
    assert min(SERIES_COLOURS + (WINDOW_COLOUR,)) >= 16


def test_compare_overlays_the_marked_runs(tmp_path):
    home = fake_home(tmp_path)

    async def scenario():
        from textual.widgets import DataTable

        from critui.tui.screens.compare import CompareScreen
        from critui.tui.widgets.charts import Chart
        from critui.tui.widgets.runs_table import RunsTable

        app = make_app(home, poll_interval=0.2)
        async with app.run_test(size=(120, 40)) as pilot:
            table = app.screen.query_one(RunsTable)
            assert await wait_for(pilot, lambda: len(table.shown) == 4)
            await pilot.press("end", "space", "up", "up", "space", "c")  # newest first: from the bottom
            assert await wait_for(pilot, lambda: isinstance(app.screen, CompareScreen))
            rows = app.screen.query_one(DataTable)
            assert [rows.get_row_at(i)[1] for i in range(rows.row_count)] == [
                "20260101-000200-cccc",
                "20260101-000000-aaaa",
            ]
            chart = app.screen.query_one(Chart)
            assert await wait_for(pilot, lambda: chart.points == 32)  # 16 epochs of each

    asyncio.run(scenario())


def test_quit_asks_first_while_runs_started_here_still_train(tmp_path):
    from types import SimpleNamespace

    async def scenario():
        from critui.tui.widgets.confirm import ConfirmModal

        app = make_app(tmp_path / "home", poll_interval=0.2)
        async with app.run_test(size=(120, 40)) as pilot:
            monitor = SimpleNamespace(run_id="20260101-000000-aaaa", done=False, poll=lambda: [])
            app.feed.monitors[monitor.run_id] = monitor
            await ask(pilot, app, "q", about="still training")
            await pilot.press("n")
            assert await wait_for(pilot, lambda: not isinstance(app.screen, ConfirmModal), timeout=60)
            assert app.is_running and app.return_code is None
            await ask(pilot, app, "q")
            await pilot.press("y")
            await pilot.pause()
            assert app.return_code == 0  # exited

    asyncio.run(scenario())
