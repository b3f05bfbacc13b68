"""A sweep launched from the TUI's form against the same sweep from `critui sweep`, side by side.

    python tests/bench/form_vs_cli.py                       # configs/demo-removal.toml, --jobs 2
    python tests/bench/form_vs_cli.py --quick               # a 6-run cut of it (about a minute)
    python tests/bench/form_vs_cli.py CONFIG --jobs 2 --rounds 2

Each round trains the sweep twice in fresh homes: once with `critui sweep CONFIG --jobs N`
(a subprocess, as a user types it) and once through the TUI, driven by Textual's Pilot as a
user would drive it: `n`, ctrl+o and the config's path, the jobs field set to N, ctrl+l, `y`,
then the sweep view until every run has finished. The order alternates between rounds, so a
machine that slows down over the bench does not favour one side. It prints both wall times and
their ratio (TUI / CLI); issue 16's target is 1 ± 0.1 with the demo config on an idle machine.
The runs are deterministic per seed, so it also checks that both sides reached the same final
accuracies.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

DEMO = ROOT / "configs" / "demo-removal.toml"


def quick_config(folder: Path) -> Path:
    """The demo cut to 6 runs and a few epochs, for a check that takes about a minute."""
    text = DEMO.read_text()
    text = text.replace("values = [0, 2, 4, 6, 8, 12, 16]", "values = [0, 2, 4]").replace("after = 30", "after = 3")
    text = text.replace('id = "datasets.synthetic"', 'id = "datasets.synthetic"\nn_train = 600\nn_test = 400')
    path = folder / "quick.toml"
    path.write_text(text)
    tomllib.loads(text)  # still a valid config
    return path


def finals(home: Path) -> dict[tuple, float]:
    """(deficit, window, seed) -> final accuracy, of every run in ``home``."""
    from critui.runs.store import RunStore

    out = {}
    for doc in RunStore(home).all():
        key = (doc.get("deficit"), str(doc.get("window")), doc.get("seed"))
        out[key] = doc.get("final_acc")
    return out


def cli_round(config: Path, jobs: int, home: Path) -> float:
    env = {**os.environ, "CRITUI_HOME": str(home)}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "critui", "sweep", str(config), "--jobs", str(jobs)],
                   env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def tui_round(config: Path, jobs: int, home: Path) -> float:
    async def scenario() -> float:
        from textual.widgets import Input, Static

        from critui.runs.scheduler import load_record
        from critui.runs.store import RunStore
        from critui.tui.app import CritUIApp
        from critui.tui.screens.new_experiment import NewExperimentScreen, PathModal, SweepPlanModal

        async def until(condition, timeout: float) -> None:
            deadline = time.monotonic() + timeout
            while not condition():
                if time.monotonic() > deadline:
                    raise SystemExit(f"the TUI side did not get there in {timeout:.0f} s")
                await pilot.pause(0.05)

        app = CritUIApp(home, poll_interval=0.5)
        async with app.run_test(size=(120, 40)) as pilot:
            start = time.perf_counter()  # from the keypress that opens the form
            await pilot.press("n")
            await until(lambda: isinstance(app.screen, NewExperimentScreen) and app.screen.ready, 120)
            form = app.screen
            await pilot.press("ctrl+o")
            await until(lambda: isinstance(app.screen, PathModal), 30)
            app.screen.query_one(Input).value = str(config)
            await pilot.press("enter")
            await until(lambda: app.screen is form and "Loaded" in str(form.query_one("#launch-error", Static).render()), 60)
            form.query_one("#sweep-jobs", Input).value = str(jobs)
            await pilot.press("ctrl+l")
            await until(lambda: isinstance(app.screen, SweepPlanModal), 120)
            await pilot.press("y")
            await until(lambda: form.launched_sweep is not None, 60)
            sweep_id = form.launched_sweep
            launched = time.perf_counter() - start
            store = RunStore(home)

            def done() -> bool:
                ids = [e["run_id"] for e in load_record(store, sweep_id)["runs"]]
                return all((store.get(i) or {}).get("status") in ("finished", "failed", "cancelled") for i in ids) \
                    and not app.sweeps

            await until(done, 3600)
            total = time.perf_counter() - start
            print(f"    TUI: form filled and the sweep launched after {launched:.1f} s, trained in {total - launched:.1f} s",
                  flush=True)
            return total

    return asyncio.run(scenario())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", nargs="?", type=Path, default=DEMO)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="a 6-run cut of the demo")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        config = quick_config(folder) if args.quick else args.config.resolve()
        print(f"{config.name}, --jobs {args.jobs}, {args.rounds} round(s), load {os.getloadavg()[0]:.2f}", flush=True)
        cli_times, tui_times = [], []
        for r in range(args.rounds):
            sides = [("cli", cli_round, cli_times), ("tui", tui_round, tui_times)]
            if r % 2:
                sides.reverse()
            results = {}
            for name, fn, times in sides:
                home = folder / f"{name}-{r}"
                times.append(fn(config, args.jobs, home))
                results[name] = finals(home)
                print(f"  round {r + 1} {name}: {times[-1]:7.1f} s  ({len(results[name])} runs)", flush=True)
            same = results["cli"] == results["tui"]
            print(f"  round {r + 1}: the same final accuracies on both sides: {same}", flush=True)
        cli, tui = sum(cli_times) / len(cli_times), sum(tui_times) / len(tui_times)
        print(f"critui sweep  {cli:7.1f} s   TUI form  {tui:7.1f} s   ratio TUI/CLI {tui / cli:.3f}"
              f"   (target 1 ± 0.1)   load now {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
