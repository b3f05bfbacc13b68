"""A worker imports only the plugin distributions its run uses: an unused slow one costs nothing.

Run: ``python tests/bench/plugin_import.py [--rounds 3]``

It installs (into a temporary folder, as ``pip install --target`` would) a distribution whose
module sleeps 3 s at import and registers ``deficits.sleepy``, then times a real worker
(``python -m critui.train.worker RUN_DIR``) training a one-epoch run of built-ins only
(``datasets.synthetic``, small), alternately with that folder on ``PYTHONPATH`` and without.
A third side runs with ``deficits.sleepy`` as the run's deficit, where the 3 s must show.
It prints the median wall time of each side and the difference; the target is that the
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
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [site, os.environ.get("PYTHONPATH")]))}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "critui.train.worker", str(run_dir)], env=env, check=True,
                   capture_output=True)
    return time.perf_counter() - start


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
        medians = {side: statistics.median(values) for side, values in times.items()}
        for side, values in times.items():
            print(f"{side:>18}: median {medians[side]:.2f} s  ({', '.join(f'{v:.2f}' for v in values)})")
        print(f"installed but unused - without: {medians['installed, unused'] - medians['without']:+.2f} s "
              f"(the import alone costs 3 s: see 'installed, used' - without = "
              f"{medians['installed, used'] - medians['without']:+.2f} s)")


if __name__ == "__main__":
    main()
