"""TUI responsiveness: chart redraw time and key-press-to-screen-update latency.

Eight runs stream metrics (a thread appends an epoch and its Fisher traces to each, every
0.1 s) on top of a 300-epoch history each; the dashboard polls them every second as usual.
Measured in one session, headless (Textual's Pilot) at 120×40:

- redraw: rebuilding the dashboard's accuracy chart (8 runs overlaid, 300+ epochs each,
  deficit windows marked) and the Fisher chart, which overlays the 8 runs' total traces
  (each the plotext build, after downsampling to the chart width); target ≤ 50 ms.
- key latency: from a key event posted as the terminal driver posts it to the first frame
  the app draws that shows its effect (every frame is recorded with what it showed): down/up
  moves the cursor at once and charts that run once its chart, built in a thread worker,
  lands; s re-sorts the table; target ≤ 100 ms.

    python tests/bench/tui_responsiveness.py
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from textual import events

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from critui.runs.store import RunStore  # noqa: E402
from tests.test_tui import LAYERS, T0, write_run  # noqa: E402

RUNS, HISTORY, ROUNDS = 8, 300, 30


def stream(home: Path, ids: list[str], stop: threading.Event) -> None:
    epoch = HISTORY
    while not stop.is_set():
        for run_id in ids:
            with open(home / "runs" / run_id / "events.jsonl", "a") as f:
                f.write(
                    json.dumps(
                        {
                            "event": "epoch",
                            "time": T0,
                            "epoch": epoch,
                            "lr": 0.001,
                            "deficit_active": False,
                            "train_loss": 0.5,
                            "train_acc": 0.8,
                            "test_loss": 0.6,
                            "test_acc": 0.79,
                        }
                    )
                    + "\n"
                )
                values = {layer: 1.0 / (i + 1) for i, layer in enumerate(LAYERS)}
                f.write(
                    json.dumps(
                        {
                            "event": "metric",
                            "time": T0,
                            "epoch": epoch,
                            "metric": "metrics.fisher",
                            "values": {**values, "total": sum(values.values())},
                        }
                    )
                    + "\n"
                )
        epoch += 1
        time.sleep(0.1)


def ms(values: list[float]) -> str:
    return f"median {statistics.median(values) * 1000:6.1f} ms  p90 {sorted(values)[int(len(values) * 0.9)] * 1000:6.1f} ms"


async def measure(home: Path, ids: list[str]) -> dict[str, list[float]]:
    from critui.tui.app import CritUIApp
    from critui.tui.widgets.charts import Chart
    from critui.tui.widgets.runs_table import RunsTable

    app = CritUIApp(home)
    results: dict[str, list[float]] = {
        "redraw_acc_8runs": [],
        "redraw_fisher": [],
        "key_cursor": [],
        "key_down": [],
        "key_sort": [],
    }
    async with app.run_test(size=(120, 40)) as pilot:
        table = app.screen.query_one(RunsTable)
        while len(table.shown) < RUNS:
            await pilot.pause(0.1)
        acc = app.screen.query_one("#acc-chart", Chart)
        fisher = app.screen.query_one("#fisher-chart", Chart)

        # every frame the app draws, with what it showed: (time, cursor row, sort, chart drawings)
        frames: list[tuple[float, int, str, int]] = []
        display = app._display

        def recording_display(screen, renderable) -> None:
            display(screen, renderable)
            if renderable is not None:
                frames.append((time.perf_counter(), table.cursor_row, app.screen.sort, acc.redraws))

        app._display = recording_display

        async def press(key: str, *shown) -> list[float]:
            """Post the key as the terminal driver would; for each ``shown(frame)`` test, the
            time from the key to the first frame that passes it."""
            start, seen = time.perf_counter(), len(frames)
            app.post_message(events.Key(key, None))
            found: list[float | None] = [None] * len(shown)
            while None in found and time.perf_counter() - start < 2:
                await asyncio.sleep(0.0005)
                for i, test in enumerate(shown):
                    if found[i] is None:
                        found[i] = next((f[0] - start for f in frames[seen:] if test(f)), None)
            return [float("inf") if f is None else f for f in found]

        step = "down"
        for _ in range(ROUNDS):
            if table.cursor_row in (0, RUNS - 1):
                step = "down" if table.cursor_row == 0 else "up"
            row, redraws = table.cursor_row, acc.redraws
            cursor, charted = await press(
                step, lambda f, row=row: f[1] != row, lambda f, redraws=redraws: f[3] > redraws
            )
            results["key_cursor"].append(cursor)
            results["key_down"].append(charted)
            sort = app.screen.sort
            (resorted,) = await press("s", lambda f, sort=sort: f[2] != sort)
            results["key_sort"].append(resorted)
            await pilot.pause(0.05)
        for run_id in ids:
            table.marked.add(run_id)
        app.screen.refresh_charts()
        await pilot.pause(0.2)
        for _ in range(ROUNDS):
            start = time.perf_counter()
            acc.build()  # the same build a worker thread runs, timed here on its own
            results["redraw_acc_8runs"].append(time.perf_counter() - start)
            start = time.perf_counter()
            fisher.build()
            results["redraw_fisher"].append(time.perf_counter() - start)
        results["points"] = [acc.points, fisher.points]
    return results


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        ids = [f"20260101-00{i:02d}00-{i:04x}" for i in range(RUNS)]
        for i, run_id in enumerate(ids):
            write_run(
                home,
                run_id,
                window=(0, 5 + 5 * i),
                epochs=HISTORY + 1000,
                done=HISTORY,
                seed=i,
                end=None,
                created=T0 + i,
            )
        RunStore(home).reconcile()
        stop = threading.Event()
        streamer = threading.Thread(target=stream, args=(home, ids, stop), daemon=True)
        streamer.start()
        try:
            results = asyncio.run(measure(home, ids))
        finally:
            stop.set()
    points = results.pop("points")
    print(
        f"TUI responsiveness, {RUNS} runs streaming, {HISTORY}-epoch history each, 120x40, {ROUNDS} rounds"
    )
    lines = [
        (f"chart redraw: accuracy of 8 runs ({points[0]} points)", "redraw_acc_8runs", 50),
        (f"chart redraw: Fisher totals of 8 runs ({points[1]} points)", "redraw_fisher", 50),
        ("key down/up -> cursor on the next run", "key_cursor", 100),
        ("key down/up -> that run charted", "key_down", 100),
        ("key s -> table re-sorted", "key_sort", 100),
    ]
    for label, key, target in lines:
        print(f"  {label:<46} {ms(results[key])}   target <= {target} ms")


# -- the sweep view: 36 runs, 12 of them training ---------------------------------------------

SWEEP_ID = "bench-20260101-000000-abcdef"
REMOVALS, SEEDS, AFTER = (0, 4, 8, 12, 16, 24), (0, 1, 2), 20


def write_bench_sweep(home: Path) -> tuple[list[str], dict]:
    """2 deficits x 6 removal epochs x 3 seeds: 36 runs; every seed-0 blur run and every
    seed-1 flip run still training (12), the rest finished. Returns the training runs' ids."""
    entries, training, minute = [], [], 0
    for deficit, tag in (("deficits.blur", "b"), ("deficits.flip", "f")):
        for removal in REMOVALS:
            for seed in SEEDS:
                run_id = f"20260101-{minute // 60:02d}{minute % 60:02d}00-{tag}{minute:03x}"
                live = (tag, seed) in (("b", 0), ("f", 1))
                epochs = removal + AFTER
                write_run(home, run_id, deficit=deficit, window=(0, removal), epochs=epochs,
                          done=max(1, epochs // 2) if live else None, end=None if live else "finished",
                          created=T0 + minute, seed=seed)
                axis = {"removal": removal, "deficit.id": deficit, "seed": seed}
                spec_path = home / "runs" / run_id / "spec.json"  # resolved, as the CLI writes it
                spec = json.loads(spec_path.read_text())
                spec["optim"] |= {"momentum": 0.9, "weight_decay": 5e-4, "batch_size": 128,
                                  "after_removal": "continue"}
                spec_path.write_text(json.dumps(spec))
                meta_path = home / "runs" / run_id / "run.json"
                meta = json.loads(meta_path.read_text())
                meta.update(sweep=SWEEP_ID, axis=axis)
                meta_path.write_text(json.dumps(meta))
                entries.append({"index": len(entries), "run_id": run_id, "axis": axis, "baseline": False,
                                "label": f"removal={removal} deficit={tag} seed={seed}", "parent": None,
                                "fork_epoch": 0, "epochs": epochs, "window": [0, removal]})
                if live:
                    training.append(run_id)
                minute += 1
    record = {"id": SWEEP_ID, "name": "bench", "config": None, "created": T0, "primary": "removal",
              "axes": ["removal", "deficit.id", "seed"], "runs": entries}
    folder = home / "sweeps" / SWEEP_ID
    folder.mkdir(parents=True)
    (folder / "sweep.json").write_text(json.dumps(record))
    RunStore(home).reconcile()
    return training, record


def stream_accuracy(home: Path, ids: list[str], stop: threading.Event, start: int = 10) -> None:
    """An epoch for each training run every 0.1 s (the run's folder, as a worker writes it)."""
    epoch = start
    while not stop.is_set():
        for run_id in ids:
            with open(home / "runs" / run_id / "events.jsonl", "a") as f:
                f.write(json.dumps({"event": "epoch", "time": T0, "epoch": epoch, "lr": 0.01,
                                    "deficit_active": False, "train_loss": 0.5, "train_acc": 0.8,
                                    "test_loss": 0.6, "test_acc": 0.7}) + "\n")
        epoch += 1
        time.sleep(0.1)


async def measure_sweep(home: Path, record: dict) -> dict[str, list[float]]:
    from critui.runs.report import build_report
    from critui.tui.app import CritUIApp
    from critui.tui.screens.sweep import SweepScreen, run_states
    from critui.tui.widgets.charts import Chart

    app = CritUIApp(home)
    results: dict[str, list[float]] = {"reload": [], "redraw_figure": [], "redraw_curves": [], "key_curves": [],
                                       "key_seeds": []}
    async with app.run_test(size=(120, 40)) as pilot:
        while app.polls_done < 1:
            await pilot.pause(0.1)
        app.push_screen(SweepScreen(SWEEP_ID))
        deadline = time.monotonic() + 60
        while not (isinstance(app.screen, SweepScreen) and app.screen.report is not None):
            if time.monotonic() > deadline:
                raise SystemExit("the sweep view did not load: " + str(app.screen.query_one("#sweep-caption").render()))
            await pilot.pause(0.1)
        screen = app.screen
        chart = screen.query_one(Chart)
        frames: list[tuple[float, int, bool]] = []
        display = app._display

        def recording_display(scr, renderable) -> None:
            display(scr, renderable)
            if renderable is not None:
                frames.append((time.perf_counter(), chart.redraws, screen.per_seed))

        app._display = recording_display

        async def press(key: str, shown) -> float:
            start, seen = time.perf_counter(), len(frames)
            app.post_message(events.Key(key, None))
            while time.perf_counter() - start < 2:
                await asyncio.sleep(0.0005)
                hit = next((f[0] - start for f in frames[seen:] if shown(f)), None)
                if hit is not None:
                    return hit
            return float("inf")

        cache: dict = {}
        for _ in range(ROUNDS):
            redraws = chart.redraws
            results["key_curves"].append(await press("c", lambda f, r=redraws: f[1] > r))
            per_seed = screen.per_seed
            results["key_seeds"].append(await press("s", lambda f, p=per_seed: f[2] != p))
            await pilot.pause(0.05)
            start = time.perf_counter()  # what the view's worker does on each poll that changed a run
            if hasattr(screen, "load_data"):
                screen.load_data()
            else:  # the view before it cached its report and read the feed's tails
                build_report(app.store, record)
                run_states(app.store, record, cache)
            results["reload"].append(time.perf_counter() - start)
        for curves, key in ((False, "redraw_figure"), (True, "redraw_curves")):
            if screen.curves != curves:
                screen.action_toggle_curves()
                await pilot.pause(0.3)
            for _ in range(ROUNDS):
                start = time.perf_counter()
                chart.build()
                results[key].append(time.perf_counter() - start)
        results["points"] = [chart.points, screen.partial, sum(s["status"] == "running" for s in screen.states)]
    return results


def sweep_main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        training, record = write_bench_sweep(home)
        # stand-ins for the 12 live workers: processes whose command line names their run
        # no pipe of ours held open: a leftover `sleep` would keep a caller's shell waiting 600 s
        workers = [subprocess.Popen(["sh", "-c", "sleep 600", run_id], stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
                   for run_id in training]
        store = RunStore(home)
        for run_id, worker in zip(training, workers, strict=True):
            store.update(run_id, status="running", pid=worker.pid)
        stop = threading.Event()
        streamer = threading.Thread(target=stream_accuracy, args=(home, training, stop), daemon=True)
        streamer.start()
        try:
            results = asyncio.run(measure_sweep(home, record))
        finally:
            stop.set()
            for worker in workers:
                os.killpg(worker.pid, signal.SIGKILL)  # the shell and its sleep
                worker.wait()
    points = results.pop("points")
    print(f"Sweep view, {len(record['runs'])} runs, {points[2]} training (streaming an epoch each every 0.1 s), "
          f"{points[1]} points in progress, 120x40, {ROUNDS} rounds")
    lines = [
        ("reload: the view's worker (report, run states)", "reload", None),
        ("chart redraw: the figure", "redraw_figure", 50),
        (f"chart redraw: every run's curve ({points[0]} points)", "redraw_curves", 50),
        ("key c -> chart redrawn (figure <-> curves)", "key_curves", 100),
        ("key s -> table per seed / mean", "key_seeds", 100),
    ]
    for label, key, target in lines:
        print(f"  {label:<46} {ms(results[key])}" + (f"   target <= {target} ms" if target else ""))


if __name__ == "__main__":
    main()
    sweep_main()
