"""How long planning a sweep takes as it grows: 100, 400, 2,000 and 5,000 runs side by side.

Run: ``python tests/bench/plan_scale.py [--sizes 100,400,2000,5000] [--old-up-to 400]``

Two grid shapes, both of the demo's kind (blur removed at t0, a fixed number of epochs after):

- ``seeds``: 10 removal epochs x 2 LR policies, and as many seeds as make the size: many small
  groups of runs that can share epochs (runs of different seeds share none).
- ``removal``: one seed, one removal epoch per run: a single group as large as the grid, the
  planner's hardest case (every run shares a prefix with every other).

"expand" is :func:`critui.sweeps.expand` (every run's spec built and validated), "plan" is
:func:`critui.runs.planner.plan_tree`. "old plan" is the quadratic planner this one replaced
(every run against every earlier one, epoch by epoch; kept in tests/test_plan_fork_tree.py as
the reference), timed up to ``--old-up-to`` runs only: at 400 runs of the seeds shape it took
39 s on the 2-core machine, and a 2,000-run grid did not finish in 300 s.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from critui.plugins import get_registry  # noqa: E402
from critui.runs.planner import plan_tree  # noqa: E402
from critui.sweeps import expand, parse_sweep  # noqa: E402


def grid(shape: str, size: int) -> dict:
    base = {"train": {"epochs": 24}, "deficit": {"id": "deficits.blur"}}
    if shape == "seeds":
        sweep = {"seeds": max(1, size // 20), "removal": {"values": list(range(0, 20, 2)), "after": 12},
                 "set": {"optim.after_removal": ["continue", "reset"]}}
    else:
        sweep = {"seeds": [0], "removal": {"values": list(range(size)), "after": 12}}
    return {**base, "sweep": {**sweep, "max_runs": 100_000}}


def timed(function, *args):
    start = time.perf_counter()
    out = function(*args)
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,400,2000,5000")
    parser.add_argument("--old-up-to", type=int, default=400, help="time the old planner up to this many runs")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    registry = get_registry()
    old_plan = None
    if args.old_up_to > 0:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from test_plan_fork_tree import reference_plan as old_plan

    print(f"{'shape':8} {'runs':>6} {'expand s':>9} {'plan s':>8} {'plan ms/run':>12} {'old plan s':>11}")
    for shape in ("seeds", "removal"):
        for size in sizes:
            runs, expanded = timed(expand, parse_sweep(grid(shape, size)), registry)
            specs = [run.spec for run in runs]
            _, planned = timed(plan_tree, copy.deepcopy(specs))
            old = "-"
            if old_plan is not None and len(specs) <= args.old_up_to:
                old = f"{timed(old_plan, specs)[1]:.2f}"
            print(f"{shape:8} {len(specs):>6} {expanded:>9.2f} {planned:>8.2f} {1000 * planned / len(specs):>12.3f} "
                  f"{old:>11}", flush=True)


if __name__ == "__main__":
    main()
