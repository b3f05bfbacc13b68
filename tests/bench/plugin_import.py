"""A worker imports only the plugin distributions its run uses: an unused slow one costs nothing.

Run: ``python tests/bench/plugin_import.py [--rounds 3]``

It installs (into a temporary folder, as ``pip install --target`` would) a distribution whose
module sleeps 3 s at import and registers ``deficits.sleepy``, then times a real worker
(``python -m critui.train.worker RUN_DIR``) on a one-epoch run of built-ins only
(``datasets.synthetic``, small), alternately with that folder on ``PYTHONPATH`` and without,
from launch to the worker's ``started`` event (the event's time stamp).
A third side runs with ``deficits.sleepy`` as the run's deficit, where the 3 s must show.
It also times the plugin-loading step alone, in-process (free of the start-up noise of a
busy machine). It prints the median start time of each side and the difference; the target is that the
worker with the slow distribution installed but unused is no slower than without it (within
machine noise, well under the 3 s the import costs).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.plugin_catalogue import install  # noqa: E402

SLEEPY = '''
import time
time.sleep(3)
from critui.hookspecs import hookimpl
from critui.kinds import Deficit


class Sleepy(Deficit):
    name = "sleepy"
    description = "Does nothing, after a 3 s import."

    def apply(self, x, y, epoch, generator):
        return x, y


@hookimpl
def critui_register_deficits(register):
    register(Sleepy)
'''

SETS = ["train.epochs=1", "dataset.n_train=200", "dataset.n_test=100", "train.threads=1"]


def make_run(home: Path, site: str | None, plugins: list[str]) -> Path:
    """A queued run directory made the way `critui run` makes one (in a subprocess that sees ``site``)."""
    code = (
        "import sys; from critui.config import build_spec; from critui.plugins import get_registry; "
        "from critui.runs.store import RunStore; r = get_registry(); "
        f"spec = build_spec(r, plugins={plugins!r}, sets={SETS!r}); "
        "used = [spec.dataset, spec.model] + ([spec.deficit] if spec.deficit else []) + spec.metrics; "
        "v = {p.id: {'distribution': r.get(p.id).distribution, 'version': r.get(p.id).version} for p in used}; "
        f"print(RunStore({str(home)!r}).create(spec, v)['id'])"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [site, os.environ.get("PYTHONPATH")]))}
    run_id = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True,
                            text=True).stdout.split()[-1]
    return home / "runs" / run_id


def time_worker(run_dir: Path, site: str | None) -> float:
    """Seconds from launching the worker to its ``started`` event: imports, plugin loading,
    data and model set-up; the training after it is the same on every side."""
    from critui.events import read_events

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [site, os.environ.get("PYTHONPATH")]))}
    start = time.time()
    subprocess.run([sys.executable, "-m", "critui.train.worker", str(run_dir)], env=env, check=True,
                   capture_output=True)
    started = next(e for e in read_events(run_dir) if e["event"] == "started")
    return started["time"] - start


def loading(site: str, run_dir: Path) -> None:
    """The plugin-loading step alone, in this process: what the worker does now
    (``registry_for_run``) against loading every installed distribution (``build_registry``)."""
    from critui.plugins import build_registry, registry_for_run

    build_registry(set())  # warm-up: torch and the built-ins are imported once, by both alike
    sys.path.insert(0, site)
    try:
        start = time.perf_counter()
        registry_for_run(run_dir)  # first: the slow module is not imported yet
        worker = time.perf_counter() - start
        start = time.perf_counter()
        build_registry()
        everything = time.perf_counter() - start
    finally:
        sys.path.remove(site)
    print(f"plugin loading for a run that does not use it: {worker:.2f} s (registry_for_run); "
          f"loading every distribution: {everything:.2f} s (build_registry)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        site = str(install(root / "site", "critui-plugin-sleepy", "1.0", {"critui_sleepy": SLEEPY},
                           {"sleepy": "critui_sleepy"}))
        home = root / "home"
        times: dict[str, list[float]] = {"without": [], "installed, unused": [], "installed, used": []}
        for _ in range(args.rounds):
            for side, path, plugins in (("without", None, []), ("installed, unused", site, []),
                                        ("installed, used", site, ["deficits.sleepy"])):
                times[side].append(time_worker(make_run(home, path, plugins), path))
        loading(site, make_run(home, site, []))
        medians = {side: statistics.median(values) for side, values in times.items()}
        for side, values in times.items():
            print(f"{side:>18}: median {medians[side]:.2f} s  ({', '.join(f'{v:.2f}' for v in values)})")
        print(f"installed but unused - without: {medians['installed, unused'] - medians['without']:+.2f} s "
              f"(the import alone costs 3 s: see 'installed, used' - without = "
              f"{medians['installed, used'] - medians['without']:+.2f} s)")


if __name__ == "__main__":
    main()
