"""The run store at scale: 100, 1,000 and 10,000 runs in one home, side by side.

Synthesises run folders as a worker leaves them (spec.json, run.json, an events.jsonl of 8
epochs with Fisher lines; one run in 20 a fork), indexes them, and measures:

- update: one index update (``store.update``) in a process that has the index open (median
  of 50); target ≤ 10 ms at 10,000 runs. "cold update" opens the index in a new store first.
- runs: ``critui runs`` as a subprocess (interpreter start included; median of 3); ≤ 0.5 s. It
  reads the listing kept beside the index (``history.listing``) and the journal lines since.
  "no listing kept": the same with the listing deleted before each, so read from the whole
  index (and the listing written again), as the first listing after an upgrade or a damage.
- TUI start: ``CritUIApp.run_test`` until the first poll has filled the dashboard; ≤ 1 s.
- TUI poll: one ``RunsFeed.poll`` with nothing changed (median of 20; every 5th reconciles); ≤ 20 ms.
  "index changed": a poll after one run's entry changed (median of 10), which reads only the
  journal's new line.
- rebuild: the index deleted, then one ``reconcile`` rebuilds it from the run folders; ≤ 10 s.

    python tests/bench/store_scale.py            # 100, 1000, 10000
    python tests/bench/store_scale.py 100 1000   # chosen sizes
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from critui.runs.journal import forget_cached  # noqa: E402
from critui.runs.listing import listing_path  # noqa: E402
from critui.runs.store import INDEX_FILE, RunStore  # noqa: E402
from tests.synthetic_home import T0, run_id, write_run  # noqa: E402


def synthesise(home: Path, count: int) -> list[str]:
    ids = []
    for i in range(count):
        fork = i % 20 == 19
        ids.append(run_id(i))
        write_run(home, ids[-1], created=T0 + i, seed=i, parent=ids[i - 1] if fork else None,
                  fork_epoch=4 if fork else None)
    return ids


def timed(action) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def rebuild_s(home: Path) -> float:
    for name in (INDEX_FILE, "history.journal"):
        (home / name).unlink(missing_ok=True)
    forget_cached(home / INDEX_FILE)
    return timed(lambda: RunStore(home).reconcile())


def update_s(home: Path, ids: list[str]) -> tuple[float, float]:
    forget_cached(home / INDEX_FILE)
    cold = timed(lambda: RunStore(home).update(ids[0], error=None))
    store = RunStore(home)
    store.all()
    warm = statistics.median(timed(lambda i=i: store.update(ids[i % len(ids)], error=f"e{i}")) for i in range(50))
    return warm, cold


def runs_s(home: Path, kept: bool = True) -> float:
    env = {**os.environ, "COLUMNS": "160"}

    def listing():
        if not kept:
            listing_path(home / INDEX_FILE).unlink(missing_ok=True)
        subprocess.run([sys.executable, "-m", "critui", "runs", "--home", str(home)], env=env, check=True,
                       capture_output=True)

    return statistics.median(timed(listing) for _ in range(3))


def tui_s(home: Path, count: int) -> dict[str, float]:
    from critui.tui.app import CritUIApp
    from critui.tui.feed import RECONCILE_EVERY
    from critui.tui.widgets.runs_table import RunsTable

    async def scenario() -> dict[str, float]:
        start = time.perf_counter()
        app = CritUIApp(home, registry=object(), poll_interval=3600)
        async with app.run_test(size=(160, 50)) as pilot:
            while not app.polls_done:
                await pilot.pause(0.005)
            polled = time.perf_counter() - start
            while len(app.screen.query_one(RunsTable).shown) != count:
                await pilot.pause(0.005)
            shown = time.perf_counter() - start
            quiet, reconciling = [], []
            for _ in range(4 * RECONCILE_EVERY):
                (reconciling if app.feed.polls % RECONCILE_EVERY == 0 else quiet).append(timed(app.feed.poll))
            changed = [0.0]
            if count:
                ids = list(app.feed.docs)
                changed = []
                for i in range(10):  # one run's entry changed (the same journal line another process appends)
                    app.store.update(ids[i * len(ids) // 10], error=f"changed {i} at {time.time()}")
                    changed.append(timed(app.feed.poll))
        return {"TUI first poll": polled, "TUI start": shown, "TUI poll": statistics.median(quiet) * 1e3,
                "TUI poll, reconciling": statistics.median(reconciling) * 1e3,
                "TUI poll, index changed": statistics.median(changed) * 1e3}

    return asyncio.run(scenario())


def baseline() -> dict[str, float]:
    """What any home costs: the interpreter and imports, and the TUI's start on an empty home."""
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        version = statistics.median(timed(lambda: subprocess.run(
            [sys.executable, "-m", "critui", "--version"], check=True, capture_output=True)) for _ in range(3))
        return {"critui --version": version, "TUI start, empty home": tui_s(home, 0)["TUI start"]}


def main(sizes: list[int]) -> None:
    base = baseline()
    print("  ".join(f"{name}: {value:.2f} s" for name, value in base.items()) + "  (the fixed costs)")
    rows = {}
    for count in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            home = Path(tmp) / "home"
            t = timed(lambda home=home, count=count: synthesise(home, count))
            ids = sorted(p.name for p in (home / "runs").iterdir())
            print(f"{count} runs synthesised in {t:.1f} s", file=sys.stderr)
            rebuild = rebuild_s(home)
            warm, cold = update_s(home, ids)
            cold_listing = runs_s(home, kept=False)
            listing = runs_s(home)
            rows[count] = {"update": warm * 1e3, "cold update": cold * 1e3, "critui runs": listing,
                           "critui runs, no listing kept": cold_listing,
                           **tui_s(home, count), "rebuild": rebuild}
    units = {"update": "ms", "cold update": "ms", "critui runs": "s", "critui runs, no listing kept": "s",
             "TUI first poll": "s", "TUI start": "s",
             "TUI poll": "ms", "TUI poll, reconciling": "ms", "TUI poll, index changed": "ms", "rebuild": "s"}
    targets = {"update": "≤ 10 ms", "critui runs": "≤ 0.5 s", "TUI start": "≤ 1 s", "TUI poll": "≤ 20 ms",
               "rebuild": "≤ 10 s"}
    print(f"{'runs':<30}" + "".join(f"{c:>10,}" for c in sizes) + "   target at 10,000")
    for name, unit in units.items():
        cells = "".join(f"{rows[c][name]:.{1 if unit == 'ms' else 2}f} {unit}".rjust(10) for c in sizes)
        print(f"{name:<30}{cells}   {targets.get(name, '')}")


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [100, 1000, 10000])
