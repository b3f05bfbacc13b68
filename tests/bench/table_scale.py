"""The dashboard's runs table with many runs: start, and key presses to the frame that shows them.

Synthesises N finished runs (as tests/bench/store_scale.py does), opens the TUI headless at
120×40 and measures, in one session:

- start: from the app's creation to the table holding all N runs (the first poll included);
  target ≤ 1 s at 10,000 runs (issue 15).
- key latency: from a key event, posted as the terminal driver posts it, to the first frame
  that shows its effect: down/up moves the cursor and charts that run (the chart's build runs
  in a thread); s re-sorts all N runs; target ≤ 100 ms at the p90 with 1,000 runs (issue 16).

    python tests/bench/table_scale.py            # 1,000 runs
    python tests/bench/table_scale.py 1000 10000
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from textual import events

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from critui.runs.store import RunStore  # noqa: E402
from tests.bench.store_scale import synthesise  # noqa: E402

ROUNDS = 30


def p90(values: list[float]) -> float:
    return sorted(values)[int(len(values) * 0.9)]


async def measure(home: Path, count: int) -> dict[str, list[float]]:
    from critui.tui.app import CritUIApp
    from critui.tui.widgets.charts import Chart
    from critui.tui.widgets.runs_table import RunsTable

    start = time.perf_counter()
    app = CritUIApp(home, registry=object(), poll_interval=3600)
    results: dict[str, list[float]] = {"start": [], "key_cursor": [], "key_charted": [], "key_sort": []}
    async with app.run_test(size=(120, 40)) as pilot:
        table = app.screen.query_one(RunsTable)
        while len(table.shown) != count:
            await pilot.pause(0.005)
        results["start"].append(time.perf_counter() - start)
        acc = app.screen.query_one("#acc-chart", Chart)
        await pilot.pause(0.5)
        frames: list[tuple[float, int, str, int]] = []
        display = app._display

        def recording_display(screen, renderable) -> None:
            display(screen, renderable)
            if renderable is not None:
                frames.append((time.perf_counter(), table.cursor_row, app.screen.sort, acc.redraws))

        app._display = recording_display

        async def press(key: str, *shown) -> list[float]:
            begin, seen = time.perf_counter(), len(frames)
            app.post_message(events.Key(key, None))
            found: list[float | None] = [None] * len(shown)
            while None in found and time.perf_counter() - begin < 5:
                await asyncio.sleep(0.0005)
                for i, test in enumerate(shown):
                    if found[i] is None:
                        found[i] = next((f[0] - begin for f in frames[seen:] if test(f)), None)
            return [float("inf") if f is None else f for f in found]

        for i in range(ROUNDS):
            step = "down" if i % 10 < 5 else "up"
            row, redraws = table.cursor_row, acc.redraws
            cursor, charted = await press(step, lambda f, row=row: f[1] != row,
                                          lambda f, redraws=redraws: f[3] > redraws)
            results["key_cursor"].append(cursor)
            results["key_charted"].append(charted)
            sort = app.screen.sort
            (resorted,) = await press("s", lambda f, sort=sort: f[2] != sort)
            results["key_sort"].append(resorted)
            await pilot.pause(0.05)
    return results


def main(sizes: list[int]) -> None:
    print(f"runs table, 120x40, {ROUNDS} rounds of keys (median / p90)")
    for count in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            home = Path(tmp) / "home"
            synthesise(home, count)
            RunStore(home).reconcile()
            results = asyncio.run(measure(home, count))
        print(f"  {count:>6,} runs: start {results['start'][0]:.2f} s (target <= 1 s at 10,000)")
        for key, label in (("key_cursor", "down/up -> cursor moved"), ("key_charted", "down/up -> run charted"),
                           ("key_sort", "s -> all runs re-sorted")):
            values = results[key]
            print(f"         {label:<26} {statistics.median(values) * 1e3:7.1f} / {p90(values) * 1e3:7.1f} ms"
                  "   target p90 <= 100 ms")


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [1000])
