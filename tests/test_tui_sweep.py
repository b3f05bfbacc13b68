"""The sweep view: a sweep's final accuracy against its removal epoch, filling in as runs finish.

The fake home is written by hand: a ``sweep.json`` as the scheduler writes it and one run
directory per entry (the helpers of tests/test_tui.py), some finished and one still training.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from critui.events import read_events
from critui.runs.store import RunStore
from tests.test_tui import T0, make_app, wait_for, write_run

SWEEP_ID = "flip-vs-blur-20260101-000000"
REMOVALS = (2, 4, 8)
AFTER = 4
UNFINISHED = "20260101-000006-ba08"  # blur removed at 8: 5 of its 12 epochs so far


def write_sweep(home: Path, sweep_id: str = SWEEP_ID, created: float = T0, seeds=(0,)) -> dict:
    """Two deficits × three removal epochs (+ a no-deficit baseline each), for each seed
    (one by default); all runs finished except blur removed at 8 with seed 0."""
    entries = []
    minute = 0
    for deficit, tag, seed in (
        (d, t, s) for s in seeds for d, t in (("deficits.flip", "fa0"), ("deficits.blur", "ba0"))
    ):
        for removal in (*REMOVALS, None):
            baseline = removal is None
            epochs = (max(REMOVALS) if baseline else removal) + AFTER
            run_id = f"20260101-000{minute:03d}-{tag}{removal or 0}"
            if sweep_id != SWEEP_ID:
                run_id = f"20260102-000{minute:03d}-{tag}{removal or 0}"
            unfinished = run_id == UNFINISHED
            write_run(
                home,
                run_id,
                deficit=None if baseline else deficit,
                window=(0, removal or 0),
                epochs=epochs,
                done=5 if unfinished else None,
                end=None if unfinished else "finished",
                created=created + minute,
                seed=(0 if tag == "fa0" else 3) + seed,  # a different curve per deficit and seed
            )
            axis = {"deficit.id": deficit, "seed": seed} | ({} if baseline else {"removal": removal})
            spec_path = home / "runs" / run_id / "spec.json"  # resolved, as the CLI writes it
            spec = json.loads(spec_path.read_text())
            spec["optim"] |= {
                "momentum": 0.9,
                "weight_decay": 5e-4,
                "batch_size": 128,
                "after_removal": "continue",
            }
            spec_path.write_text(json.dumps(spec))
            meta_path = home / "runs" / run_id / "run.json"
            meta = json.loads(meta_path.read_text())
            meta.update(sweep=sweep_id, axis=axis)
            meta_path.write_text(json.dumps(meta))
            entries.append(
                {
                    "index": len(entries),
                    "run_id": run_id,
                    "axis": axis,
                    "baseline": baseline,
                    "label": run_id,
                    "parent": None,
                    "fork_epoch": 0,
                    "epochs": epochs,
                    "window": None if baseline else [0, removal],
                }
            )
            minute += 1
    record = {
        "id": sweep_id,
        "name": "flip-vs-blur",
        "config": "flip-vs-blur.toml",
        "created": created,
        "primary": "removal",
        "axes": ["removal", "deficit.id", "seed"],
        "runs": entries,
    }
    folder = home / "sweeps" / sweep_id
    folder.mkdir(parents=True)
    (folder / "sweep.json").write_text(json.dumps(record, indent=1))
    RunStore(home).reconcile()
    return record


def finish_unfinished(home: Path) -> None:
    """What the sweep's worker and manager do: the remaining epochs, `finished`, the index."""
    run_dir = home / "runs" / UNFINISHED
    lines = []
    for epoch in range(5, max(REMOVALS) + AFTER):
        acc = round(0.5 + 0.01 * epoch, 4)
        lines.append(
            {
                "event": "epoch",
                "time": T0 + 100 + epoch,
                "epoch": epoch,
                "lr": 0.01,
                "deficit_active": epoch < 8,
                "train_loss": 1.0,
                "train_acc": acc,
                "test_loss": 1.0,
                "test_acc": acc,
                "seconds": 1.0,
            }
        )
    lines.append(
        {"event": "finished", "time": T0 + 200, "epochs": 12, "final_acc": 0.6, "seconds": 12.0}
    )
    with open(run_dir / "events.jsonl", "a") as f:
        f.write("".join(json.dumps(e) + "\n" for e in lines))
    store = RunStore(home)
    store.update(UNFINISHED, **RunStore.summary_fields(read_events(run_dir)))


def test_sweep_view_opens_from_the_dashboard_and_fills_in_as_runs_finish(tmp_path):
    home = tmp_path / "home"
    write_sweep(home)

    async def scenario():
        app = make_app(home, poll_interval=0.2)
        async with app.run_test(size=(120, 40)) as pilot:
            from textual.widgets import DataTable

            from critui.tui.screens.sweep import SweepScreen
            from critui.tui.widgets.charts import Chart

            assert await wait_for(pilot, lambda: app.polls_done >= 1)
            titles = {c.title for c in app.get_system_commands(app.screen)}
            assert "Sweeps" in titles
            await pilot.press("w")
            assert await wait_for(pilot, lambda: isinstance(app.screen, SweepScreen))
            screen = app.screen
            table = screen.query_one(DataTable)
            chart = screen.query_one(Chart)
            assert await wait_for(pilot, lambda: screen.refreshes >= 1 and table.row_count == 8)
            # 3 flip points + 2 blur points (blur removed at 8 still trains)
            assert await wait_for(pilot, lambda: chart.points == 5 and not chart.busy)
            report = screen.report
            pending = next(
                r for r in report["rows"] if r["series"] == "deficit=blur" and r["value"] == 8
            )
            assert pending["final_acc_mean"] is None and pending["finished"] == 0
            cells = [str(c) for c in table.get_row_at(report["rows"].index(pending))]
            assert cells[1:5] == ["8", "0/1", "-", "-"]
            baseline = next(r for r in report["rows"] if r["baseline"])
            assert str(table.get_row_at(report["rows"].index(baseline))[1]) == "no deficit"
            assert "5/8 runs" not in str(screen.query_one("#sweep-title").render())
            assert "7/8 runs finished" in str(screen.query_one("#sweep-title").render())

            finish_unfinished(home)
            assert await wait_for(pilot, lambda: chart.points == 6 and not chart.busy, timeout=5)
            row = next(
                r
                for r in screen.report["rows"]
                if r["series"] == "deficit=blur" and r["value"] == 8
            )
            cells = [str(c) for c in table.get_row_at(screen.report["rows"].index(row))]
            # One seed per row: the mean alone, as `critui report` prints it.
            assert cells[2] == "1/1" and cells[3].startswith("0.") and "±" not in cells[3]
            assert [str(c.label) for c in table.columns.values()][3] == "final acc"
            assert cells[4].endswith("pts")
            assert "8/8 runs finished" in str(screen.query_one("#sweep-title").render())

            # s: each seed's accuracy and its drop, as `critui report --per-seed`; s again: back
            await pilot.press("s")
            assert await wait_for(pilot, lambda: "seed 0" in [str(c.label) for c in table.columns.values()])
            cells = [str(c) for c in table.get_row_at(screen.report["rows"].index(row))]
            (item,) = row["per_seed"]
            assert cells[2] == f"{item['final_acc']:.4f} ({item['drop'] * 100:+.1f})"
            assert "drop in points from each seed's" in str(screen.query_one("#sweep-caption").render())
            await pilot.press("s")
            assert await wait_for(pilot, lambda: "final acc" in [str(c.label) for c in table.columns.values()])

            await pilot.resize_terminal(60, 20)
            await pilot.pause(0.5)
            assert isinstance(app.screen, SweepScreen)
            await pilot.press("escape")
            assert await wait_for(pilot, lambda: not isinstance(app.screen, SweepScreen))

    asyncio.run(scenario())


def test_several_sweeps_give_a_picker_newest_first_and_none_a_notice(tmp_path):
    home = tmp_path / "home"
    write_sweep(home)
    write_sweep(home, "flip-vs-blur-20260102-000000", created=T0 + 86400)
    empty = tmp_path / "empty"
    write_run(empty, "20260101-000000-aaaa")
    RunStore(empty).reconcile()

    async def scenario():
        from textual.widgets import OptionList

        from critui.tui.screens.sweep import NO_SWEEPS, SweepPicker, SweepScreen

        app = make_app(home, poll_interval=0.2)
        async with app.run_test(size=(120, 40)) as pilot:
            assert await wait_for(pilot, lambda: app.polls_done >= 1)
            await pilot.press("w")
            assert await wait_for(pilot, lambda: isinstance(app.screen, SweepPicker))
            options = app.screen.query_one(OptionList)
            assert options.get_option_at_index(0).id == "flip-vs-blur-20260102-000000"
            await pilot.press("down", "enter")
            assert await wait_for(pilot, lambda: isinstance(app.screen, SweepScreen))
            assert app.screen.sweep_id == SWEEP_ID

        app = make_app(empty, poll_interval=0.2)
        async with app.run_test(size=(120, 40)) as pilot:
            assert await wait_for(pilot, lambda: app.polls_done >= 1)
            await pilot.press("w")
            assert await wait_for(
                pilot, lambda: any(n.message == NO_SWEEPS for n in app._notifications)
            )

    asyncio.run(scenario())


def test_report_per_seed_measures_each_seed_from_its_own_baseline(tmp_path, critui, home):
    """`critui report --per-seed`: the seeds' baselines differ by several points on the demo,
    so each seed's drop is taken from its own reference run."""
    import csv
    import io

    from critui.events import final_accuracy
    from critui.runs.lineage import full_rows

    record = write_sweep(home, seeds=(0, 1))
    # Seed 1's flip baseline ends 5 points lower, as a low draw does on the demo.
    low = next(e["run_id"] for e in record["runs"] if e["baseline"] and e["axis"]["seed"] == 1
               and e["axis"]["deficit.id"] == "deficits.flip")
    events = home / "runs" / low / "events.jsonl"
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    for line in lines:
        if line["event"] == "epoch":
            line["test_acc"] -= 0.05
    events.write_text("".join(json.dumps(line) + "\n" for line in lines))
    store = RunStore(home)
    docs = {d["id"]: d for d in store.all()}
    final = {}
    for entry in record["runs"]:
        axis = entry["axis"]
        key = (axis["deficit.id"].partition(".")[2], axis.get("removal", "baseline"), axis["seed"])
        finished = entry["run_id"] != UNFINISHED
        final[key] = final_accuracy(full_rows(store, docs[entry["run_id"]])) if finished else None

    rows = list(csv.DictReader(io.StringIO(
        critui("report", SWEEP_ID, "--per-seed", "--csv", check=True).stdout)))
    assert len(rows) == len(record["runs"])  # one line per run
    for row in rows:
        deficit = row["series"].partition("=")[2]
        value = row["value"] if row["value"] == "baseline" else int(row["value"])
        acc = final[(deficit, value, int(row["seed"]))]
        if acc is None:  # blur removed at 8, seed 0: still training
            assert row["final_acc"] == row["drop"] == "" and (deficit, value) == ("blur", 8)
            continue
        own_baseline = final[(deficit, "baseline", int(row["seed"]))]
        assert float(row["final_acc"]) == pytest.approx(acc)
        assert float(row["drop"]) == pytest.approx(own_baseline - acc)

    table = critui("report", SWEEP_ID, "--per-seed", env={"COLUMNS": "80"}, check=True).stdout
    lines = table.splitlines()
    assert max(len(line.rstrip()) for line in lines) <= 80
    assert "seed 0" in table and "seed 1" in table and "each seed's no-deficit baseline" in " ".join(table.split())
    flip_two = next(line.split() for line in lines if line.split()[:2] == ["flip", "2"])
    drop = (final[("flip", "baseline", 1)] - final[("flip", 2, 1)]) * 100
    assert flip_two[-2:] == [f"{final[('flip', 2, 1)]:.4f}", f"({drop:+.1f})"]
    blur_eight = next(line.split() for line in lines if line.split()[:2] == ["blur", "8"])
    assert blur_eight[2] == "-"
    data = json.loads(critui("report", SWEEP_ID, "--json", check=True).stdout)
    assert all(len(row["per_seed"]) == 2 for row in data["rows"])


def add_epochs(home: Path, run_id: str, epochs: range) -> None:
    """What a live worker appends: more epochs, no end yet."""
    lines = [
        {"event": "epoch", "time": T0 + 100 + e, "epoch": e, "lr": 0.01, "deficit_active": e < 8,
         "train_loss": 1.0, "train_acc": 0.7, "test_loss": 1.0, "test_acc": 0.7, "seconds": 1.0}
        for e in epochs
    ]
    with open(home / "runs" / run_id / "events.jsonl", "a") as f:
        f.write("".join(json.dumps(e) + "\n" for e in lines))


def test_the_sweep_view_fills_in_live_flags_ended_runs_and_overlays_every_curve(tmp_path):
    """Blur removed at 8 trains (a live process stands in for its worker): its current
    accuracy is a point in progress, its row says training 5/12 and moves on as epochs land;
    flip removed at 4 was cancelled and is flagged; the x axis shows every planned removal
    epoch; `c` overlays the accuracy curve of every run; the hints are the view's keys."""
    import subprocess
    import sys

    home = tmp_path / "home"
    record = write_sweep(home)
    cancelled = next(e["run_id"] for e in record["runs"]
                     if e["axis"].get("removal") == 4 and e["axis"]["deficit.id"] == "deficits.flip")
    # a process whose command line names the run: the store takes it for the run's live worker
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", UNFINISHED])
    try:
        store = RunStore(home)
        store.update(UNFINISHED, status="running", pid=worker.pid)
        store.update(cancelled, status="cancelled")

        async def scenario():
            from textual.widgets import DataTable

            from critui.tui.screens.sweep import SweepScreen
            from critui.tui.widgets.charts import Chart

            app = make_app(home, poll_interval=0.2)
            async with app.run_test(size=(120, 40)) as pilot:
                assert await wait_for(pilot, lambda: app.polls_done >= 1)
                app.push_screen(SweepScreen(SWEEP_ID))
                assert await wait_for(pilot, lambda: isinstance(app.screen, SweepScreen))
                screen = app.screen
                assert await wait_for(pilot, lambda: screen.query("#sweep-runs"))
                runs = screen.query_one("#sweep-runs", DataTable)
                chart = screen.query_one(Chart)
                assert await wait_for(pilot, lambda: runs.row_count == 8 and not chart.busy)

                def row_of(run_id: str) -> list[str]:
                    index = next(e["index"] for e in record["runs"] if e["run_id"] == run_id)
                    return [str(c) for c in runs.get_row_at(index)]

                assert row_of(UNFINISHED)[2:] == ["▶ training", "5/12", f"{screen.states[6]['acc']:.4f}"]
                assert row_of(cancelled)[2] == "⊘ cancelled"
                title = str(screen.query_one("#sweep-title").render())
                assert "6/8 runs finished (1 training, 1 cancelled)" in title
                assert screen.partial == 1  # blur at 8: its current accuracy, in progress
                caption = str(screen.query_one("#sweep-caption").render())
                assert "○ in progress" in caption
                assert "--seeds" not in caption and "the seeds field" in caption  # the TUI's way
                assert await wait_for(pilot, lambda: chart.points and not chart.busy)
                ticks = chart.render().plain.splitlines()[-2]  # the x axis: every planned value
                assert ticks.split() == ["2", "4", "8"], chart.render().plain
                assert {"c", "s", "r"} <= set(screen.active_bindings)  # the view's own keys

                fills, reports = screen.table_fills, screen.report
                add_epochs(home, UNFINISHED, range(5, 8))  # the worker goes on
                assert await wait_for(pilot, lambda: row_of(UNFINISHED)[3] == "8/12", timeout=10)
                assert row_of(UNFINISHED)[4] == "0.7000"
                # new epochs of a training run: its cells updated in place, the report not rebuilt
                assert screen.table_fills == fills and screen.table_updates
                assert screen.report is reports

                await pilot.press("c")  # every run's curve, the one in training up to its last epoch
                assert await wait_for(pilot, lambda: "every run" in chart.title and not chart.busy)
                assert await wait_for(pilot, lambda: chart.points > 0 and not chart.busy)
                # on screen the curves are traced into cells; a saved figure has every run's curve whole
                plotted = [c for c in chart.figure().plt.calls if c["name"] == "plot"]
                assert sum(len(c["xs"]) for c in plotted) == sum(len(s["curve"]) for s in screen.states)
                assert sum(len(s["curve"]) for s in screen.states if s["run_id"] == UNFINISHED) == 8
                await pilot.press("c")
                assert await wait_for(pilot, lambda: "final test accuracy" in chart.title)

        asyncio.run(scenario())
    finally:
        worker.kill()
        worker.wait()


def test_the_overlay_traces_curves_into_cells_once_each():
    from critui.tui.screens.sweep import raster

    line = [(0.0, 0.0), (10.0, 1.0)]
    xs, ys = raster([line], 11, 11, (0.0, 10.0), (0.0, 1.0))
    assert len(xs) == 11  # a diagonal: one cell per column, none skipped
    assert sorted(round(x) for x in xs) == list(range(11))
    again, _ = raster([line, line, [(0.0, 0.0), (5.0, 0.5)]], 11, 11, (0.0, 10.0), (0.0, 1.0))
    assert len(again) == 11  # curves that overlap are drawn once
    _, steep = raster([[(0.0, 0.0), (1.0, 1.0)]], 11, 11, (0.0, 10.0), (0.0, 1.0))
    assert {round(y * 10) for y in steep} == set(range(11))  # a steep segment fills every row it crosses


def test_the_sweep_view_marks_drops_within_the_seeds_spread(tmp_path):
    """As `critui report`: a drop smaller than 2 std of the per-seed drops is marked ~ in a
    column of its own after the drop, and the caption says what ~ means."""
    from critui.runs.report import SPREAD_MARK, build_report

    home = tmp_path / "home"
    record = write_sweep(home, seeds=(0, 1, 2))
    # flip removed at 8: seeds 1 and 2 drift 30 points apart, the mean stays: noise, not a drop
    for seed, shift in ((1, 0.3), (2, -0.3)):
        run_id = next(e["run_id"] for e in record["runs"] if e["axis"].get("removal") == 8
                      and e["axis"]["seed"] == seed and e["axis"]["deficit.id"] == "deficits.flip")
        events = home / "runs" / run_id / "events.jsonl"
        lines = [json.loads(line) for line in events.read_text().splitlines()]
        for line in lines:
            if line["event"] == "epoch":
                line["test_acc"] += shift
        events.write_text("".join(json.dumps(line) + "\n" for line in lines))
    report = build_report(RunStore(home), record)
    marked = [(r["series"], str(r["value"])) for r in report["rows"] if r["within_spread"]]
    assert marked == [("deficit=flip", "8")]

    async def scenario():
        from textual.widgets import DataTable

        from critui.tui.screens.sweep import SweepScreen

        app = make_app(home, poll_interval=0.2)
        async with app.run_test(size=(120, 40)) as pilot:
            assert await wait_for(pilot, lambda: app.polls_done >= 1)
            app.push_screen(SweepScreen(SWEEP_ID))
            assert await wait_for(pilot, lambda: isinstance(app.screen, SweepScreen) and app.screen.report is not None)
            screen = app.screen
            table = screen.query_one("#sweep-table", DataTable)
            assert await wait_for(pilot, lambda: table.row_count == len(report["rows"]))
            labels = [str(c.label) for c in table.columns.values()]
            column = labels.index(SPREAD_MARK)
            assert labels[column - 1] == "drop"  # right after the drop
            shown = [(str(table.get_row_at(i)[0]).removeprefix("━━ "), str(table.get_row_at(i)[1]))
                     for i in range(table.row_count) if str(table.get_row_at(i)[column]) == SPREAD_MARK]
            assert shown == marked
            caption = str(screen.query_one("#sweep-caption").render())
            assert "~: within the seeds' spread" in caption
            await pilot.press("s")  # per seed: each seed's drop, no mark
            assert await wait_for(pilot, lambda: "seed 2" in [str(c.label) for c in table.columns.values()])
            assert SPREAD_MARK not in [str(c.label) for c in table.columns.values()]

    asyncio.run(scenario())
