"""Sweep -> run tree: shared-prefix forking.

Two runs train identically up to epoch ``k`` when their specs agree on everything that
shapes training (dataset, model, optimiser, seed, metrics, ...) and, for every epoch
``e < k``, the deficit is active in both or in neither (the same deficit when active) and the
learning rate :func:`critui.train.loop.lr_at` is the same. The worker derives all of its
randomness from (seed, epoch), so a run resumed from the other's checkpoint at ``k`` is
bit-identical on the CPU to the run trained from scratch.

The planner orders runs so that the longest ones come first, and gives each run the earlier
run it shares the longest prefix with as its parent (ties: the earliest, which keeps the
tree shallow, so children start as soon as their trunk reaches the fork). Forks at epoch 0
save nothing and are not made.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from critui.config import RunSpec

# Spec fields that do not change epochs before the window or LR policy acts: compared per epoch.
PER_EPOCH = {"name", "keep_checkpoints", "deficit"}


@dataclass
class Node:
    """A run in the plan: its parent (index into the plan) and fork epoch, or a root."""

    index: int
    spec: RunSpec
    parent: int | None = None
    fork_epoch: int = 0
    children: list[int] = field(default_factory=list)

    @property
    def epochs_to_train(self) -> int:
        return self.spec.epochs - self.fork_epoch


def _static_part(spec: RunSpec) -> dict[str, Any]:
    data = copy.deepcopy(spec.to_json())
    for key in PER_EPOCH:
        data.pop(key, None)
    data["train"].pop("epochs", None)
    data["optim"].pop("after_removal", None)
    return data


def _deficit_identity(spec: RunSpec) -> Any:
    if spec.deficit is None:
        return None
    params = {k: v for k, v in spec.deficit.params.items() if k not in ("start", "end")}
    return spec.deficit.id, sorted(params.items())


def shared_prefix(a: RunSpec, b: RunSpec) -> int:
    """The number of leading epochs ``a`` and ``b`` train identically (0 if none)."""
    from critui.train.loop import lr_at

    if _static_part(a) != _static_part(b):
        return 0
    same_deficit = _deficit_identity(a) == _deficit_identity(b)
    limit = min(a.epochs, b.epochs)
    for epoch in range(limit):
        active_a, active_b = a.deficit_active(epoch), b.deficit_active(epoch)
        if active_a != active_b or (active_a and not same_deficit):
            return epoch
        if lr_at(a, epoch) != lr_at(b, epoch):
            return epoch
    return limit


def plan_tree(specs: list[RunSpec]) -> list[Node]:
    """Parents and fork epochs for ``specs``; also sets each parent's ``keep_checkpoints``."""
    nodes = [Node(i, s) for i, s in enumerate(specs)]
    # Longest first; among equals, the fewest deficit epochs (a clean baseline is the best
    # trunk), then the latest window (a late onset shares the longest clean prefix).
    order = sorted(range(len(specs)), key=lambda i: (-specs[i].epochs, _deficit_epochs(specs[i]),
                                                      -_window_start(specs[i]), i))
    placed: list[int] = []
    for i in order:
        best, best_k = None, 0
        for j in placed:
            # A fork needs the parent's state at k (k <= its epochs - 1 keeps the parent's
            # last-epoch metrics out of the prefix) and leaves the child one epoch at least.
            k = min(shared_prefix(specs[i], specs[j]), specs[j].epochs - 1, specs[i].epochs - 1)
            if k > best_k:
                best, best_k = j, k
        if best is not None:
            nodes[i].parent, nodes[i].fork_epoch = best, best_k
            nodes[best].children.append(i)
            keep = set(nodes[best].spec.keep_checkpoints) | {best_k}
            nodes[best].spec.keep_checkpoints = sorted(keep)
        placed.append(i)
    return nodes


def _deficit_epochs(spec: RunSpec) -> int:
    window = spec.window()
    return 0 if window is None else max(0, min(window[1], spec.epochs) - window[0])


def _window_start(spec: RunSpec) -> int:
    window = spec.window()
    return spec.epochs if window is None or window[0] == window[1] else window[0]


def cost(nodes: list[Node]) -> tuple[int, int]:
    """(epochs trained from scratch, epochs trained with forking)."""
    scratch = sum(n.spec.epochs for n in nodes)
    forked = sum(n.epochs_to_train for n in nodes)
    return scratch, forked


def roots(nodes: list[Node]) -> list[int]:
    return [n.index for n in nodes if n.parent is None]


def topological(nodes: list[Node]) -> list[int]:
    """Indices with every parent before its children (roots in plan order)."""
    out: list[int] = []

    def visit(i: int) -> None:
        out.append(i)
        for c in sorted(nodes[i].children, key=lambda c: nodes[c].fork_epoch):
            visit(c)

    for r in roots(nodes):
        visit(r)
    return out
