"""How long the README's main job takes: the default flip run, and the synthetic data it trains on.

Run: ``python tests/bench/default_run.py [--repeats 1]``

The time limits that used to sit in the tests live here, so that a loaded machine fails no
test: ``critui run --plugin deficits.flip`` with every default (target: under 90 s on this
2-core machine, when it is otherwise idle), and generating the default synthetic dataset
(target: under 5 s). It prints each time against its target, and the ratio.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

TARGETS = {"default flip run (24 epochs)": 90.0, "synthetic dataset, default size": 5.0}


def time_default_run() -> float:
    with tempfile.TemporaryDirectory(prefix="critui-bench-") as home:
        env = {**os.environ, "CRITUI_HOME": home}
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "critui", "run", "--plugin", "deficits.flip"], env=env, check=True,
                       capture_output=True)
        return time.perf_counter() - start


def time_synthetic() -> float:
    from critui.builtin.datasets import Synthetic
    from critui.params import resolve

    start = time.perf_counter()
    Synthetic().load(resolve(Synthetic.params, {}, "dataset"), 0)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    measures = {"default flip run (24 epochs)": time_default_run, "synthetic dataset, default size": time_synthetic}
    for name, measure in measures.items():
        for _ in range(args.repeats):
            seconds = measure()
            target = TARGETS[name]
            verdict = "met" if seconds <= target else "MISSED"
            print(f"{name}: {seconds:.1f} s, target {target:.0f} s, ratio {seconds / target:.2f} ({verdict})")


if __name__ == "__main__":
    main()
