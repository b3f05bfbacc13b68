"""The fork planner at scale: the same fork trees as the quadratic planner it replaced, on
grids that mix removal epochs, LR policies, deficits, baselines and seeds, and on random
sets of runs checked against a brute-force reference. Timings live in tests/bench/plan_scale.py."""

from __future__ import annotations

import copy
import json
import random

import pytest

from critui.config import build_spec
from critui.plugins import get_registry
from critui.runs.planner import plan_tree, shared_prefix, topological
from critui.sweeps import expand, parse_sweep
from critui.train.loop import lr_at

REMOVAL_GRID = """\
[train]
epochs = 12
[dataset]
id = "datasets.synthetic"
[deficit]
id = "deficits.blur"
[sweep]
seeds = 2
baseline = true
[sweep.removal]
values = [0, 2, 4, 6, 8]
after = 4
[sweep.set]
"optim.after_removal" = ["continue", "reset", "constant"]
"deficit.id" = ["deficits.blur", "deficits.noise"]
"""

ONSET_GRID = """\
[train]
epochs = 16
[dataset]
id = "datasets.synthetic"
[deficit]
id = "deficits.blur"
[sweep]
seeds = [0, 3]
baseline = true
[sweep.onset]
values = [0, 2, 4, 6]
width = 3
after = 2
[sweep.set]
"optim.after_removal" = ["continue", "constant"]
"""

# [parent, fork epoch, keep_checkpoints] of every run, as the old O(n² · epochs) planner
# made them (commit e45bfa6), in expansion order.
OLD_REMOVAL_PLAN = json.loads(
    "[[10,3,[]],[11,3,[]],[8,2,[3]],[9,2,[3]],[8,4,[5]],[9,4,[5]],[8,6,[7]],[9,6,[7]],[null,0,[2,4,6,8,9]"
    "],[null,0,[2,4,6,8,9]],[null,0,[1,3,11]],[null,0,[1,3,11]],[10,3,[]],[11,3,[]],[20,2,[3]],[21,2,[3]]"
    ",[20,4,[5]],[21,4,[5]],[20,6,[7]],[21,6,[7]],[null,0,[2,4,6,8,9]],[null,0,[2,4,6,8,9]],[10,11,[]],[1"
    "1,11,[]],[10,3,[]],[11,3,[]],[8,2,[]],[9,2,[]],[8,4,[]],[9,4,[]],[8,6,[]],[9,6,[]],[8,8,[]],[9,8,[]]"
    ",[10,11,[]],[11,11,[]],[10,3,[]],[11,3,[]],[20,2,[]],[21,2,[]],[20,4,[]],[21,4,[]],[20,6,[]],[21,6,["
    "]],[20,8,[]],[21,8,[]],[10,11,[]],[11,11,[]],[58,3,[]],[59,3,[]],[2,3,[]],[3,3,[]],[4,5,[]],[5,5,[]]"
    ",[6,7,[]],[7,7,[]],[8,9,[]],[9,9,[]],[10,1,[3,11]],[11,1,[3,11]],[58,3,[]],[59,3,[]],[14,3,[]],[15,3"
    ",[]],[16,5,[]],[17,5,[]],[18,7,[]],[19,7,[]],[20,9,[]],[21,9,[]],[58,11,[]],[59,11,[]]]"
)
OLD_ONSET_PLAN = json.loads(
    "[[null,0,[4]],[null,0,[4]],[8,2,[6]],[9,2,[6]],[8,4,[8]],[9,4,[8]],[8,6,[10]],[9,6,[10]],[null,0,[1,"
    "2,4,6]],[null,0,[1,2,4,6]],[0,4,[]],[1,4,[]],[2,6,[]],[3,6,[]],[4,8,[]],[5,8,[]],[6,10,[]],[7,10,[]]"
    ",[8,1,[]],[9,1,[]]]"
)


def plan_of(toml_text: str) -> list:
    import tomllib

    runs = expand(parse_sweep(tomllib.loads(toml_text)), get_registry())
    return plan_tree([run.spec for run in runs])


@pytest.mark.parametrize(("grid", "expected"), [(REMOVAL_GRID, OLD_REMOVAL_PLAN), (ONSET_GRID, OLD_ONSET_PLAN)])
def test_a_mid_size_grid_gets_the_same_fork_tree_as_before(grid, expected):
    nodes = plan_of(grid)
    assert [[n.parent, n.fork_epoch, n.spec.keep_checkpoints] for n in nodes] == expected


def reference_prefix(a, b) -> int:
    """The shared prefix epoch by epoch, as the planner defines it (same static part assumed)."""
    same = a.deficit is not None and b.deficit is not None and a.deficit.id == b.deficit.id
    for epoch in range(min(a.epochs, b.epochs)):
        active = a.deficit_active(epoch), b.deficit_active(epoch)
        if active[0] != active[1] or (active[0] and not same) or lr_at(a, epoch) != lr_at(b, epoch):
            return epoch
    return min(a.epochs, b.epochs)


def reference_plan(specs) -> list[tuple]:
    """The old planner: every run against every earlier one, longest prefix, earliest on ties."""
    def static(spec):
        data = spec.to_json()
        for key in ("name", "keep_checkpoints", "deficit"):
            data.pop(key)
        data["train"].pop("epochs")
        data["optim"].pop("after_removal")
        return data

    def deficit_epochs(spec):
        w = spec.window()
        return 0 if w is None else max(0, min(w[1], spec.epochs) - w[0])

    def window_start(spec):
        w = spec.window()
        return spec.epochs if w is None or w[0] == w[1] else w[0]

    order = sorted(range(len(specs)), key=lambda i: (-specs[i].epochs, deficit_epochs(specs[i]),
                                                      -window_start(specs[i]), i))
    parents = [(None, 0)] * len(specs)
    placed = []
    for i in order:
        best, best_k = None, 0
        for j in placed:
            shared = reference_prefix(specs[i], specs[j]) if static(specs[i]) == static(specs[j]) else 0
            k = min(shared, specs[j].epochs - 1, specs[i].epochs - 1)
            if k > best_k:
                best, best_k = j, k
        parents[i] = (best, best_k)
        placed.append(i)
    return parents


def random_specs(rng: random.Random) -> list:
    registry = get_registry()
    decay, lr = rng.choice([0.85, 1.0, 0.0, 0.5]), rng.choice([0.05, 0.0])
    specs = []
    for _ in range(rng.randint(1, 30)):
        sets = [f"train.epochs={rng.randint(1, 14)}", f"train.seed={rng.randint(0, 1)}", f"optim.decay={decay}",
                f"optim.lr={lr}", f"optim.after_removal={rng.choice(['continue', 'reset', 'constant'])}"]
        deficit = rng.choice([None, "deficits.blur", "deficits.noise"])
        if deficit:
            start = rng.randint(0, 10)
            sets += [f"deficit.start={start}", f"deficit.end={rng.randint(start, 16)}"]
        specs.append(build_spec(registry, plugins=[deficit] if deficit else [], sets=sets))
    return specs


def test_random_runs_get_the_parents_of_the_brute_force_reference():
    rng = random.Random(15)
    for _ in range(60):
        specs = random_specs(rng)
        nodes = plan_tree(copy.deepcopy(specs))
        assert [(n.parent, n.fork_epoch) for n in nodes] == reference_plan(specs)
        order = topological(nodes)
        assert sorted(order) == list(range(len(specs)))
        seen = set()
        for i in order:  # parents first
            assert nodes[i].parent is None or nodes[i].parent in seen
            seen.add(i)
        for a in specs[:4]:
            for b in specs[:4]:
                if shared_prefix(a, b):
                    assert shared_prefix(a, b) == reference_prefix(a, b)


def test_a_long_chain_of_forks_is_walked_without_recursion():
    # Run k is clean until its deficit starts at epoch k, and is longer than run k + 1: each
    # run's longest shared prefix is with the run before it, a chain 1,500 deep.
    registry = get_registry()
    specs = [build_spec(registry, plugins=["deficits.blur"],
                        sets=[f"deficit.start={k}", f"deficit.end={k + 2}", f"train.epochs={3000 - k}"])
             for k in range(1500)]
    nodes = plan_tree(specs)
    assert [(n.parent, n.fork_epoch) for n in nodes[2:5]] == [(1, 1), (2, 2), (3, 3)]
    order = topological(nodes)
    assert order == list(range(len(specs)))
