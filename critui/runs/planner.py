"""Sweep -> run tree: shared-prefix forking.

Two runs train identically up to epoch ``k`` when their specs agree on everything that
shapes training (dataset, model, optimiser, seed, metrics, ...) and, for every epoch
``e < k``, the deficit is active in both or in neither (the same deficit when active) and the
learning rate :func:`critui.train.schedule.lr_at` is the same. The worker derives all of its
randomness from (seed, epoch), so a run resumed from the other's checkpoint at ``k`` is
bit-identical on the CPU to the run trained from scratch.

The planner orders runs so that the longest ones come first, and gives each run the earlier
run it shares the longest prefix with as its parent (ties: the earliest, which keeps the
tree shallow, so children start as soon as their trunk reaches the fork). Forks at epoch 0
save nothing and are not made.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import json
from dataclasses import dataclass, field, fields
from typing import Any

from critui.config import PluginSpec, RunSpec

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


def _static_key(spec: RunSpec) -> str:
    """Everything but what :data:`PER_EPOCH`, the epochs and the LR policy say, as text: runs
    with different keys share no epoch. (Built by hand: ``asdict`` was most of a plan's time.)"""
    data: dict[str, Any] = {}
    for item in fields(spec):
        if item.name not in PER_EPOCH:
            data[item.name] = _plain(getattr(spec, item.name))
    data["train"].pop("epochs", None)
    data["optim"].pop("after_removal", None)
    return json.dumps(data, sort_keys=True, default=str)


def _plain(value: Any) -> Any:
    """A spec field as JSON-able data (plugin specs as id and parameters), copied."""
    if isinstance(value, PluginSpec):
        return {"id": value.id, "params": value.params}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return dict(value) if isinstance(value, dict) else value


def _deficit_identity(spec: RunSpec) -> Any:
    if spec.deficit is None:
        return None
    params = {k: v for k, v in spec.deficit.params.items() if k not in ("start", "end")}
    return spec.deficit.id, sorted(params.items())


class _Signature:
    """What a run does epoch by epoch, the deficit (or none) and the learning rate, kept as
    a few stretches of epochs that follow one rule each, so that two runs are compared a
    stretch at a time rather than an epoch at a time."""

    def __init__(self, spec: RunSpec):
        from critui.train.schedule import lr_at

        self.lr_at = lr_at
        self.spec = spec
        self.epochs = spec.epochs
        self.deficit = json.dumps(_deficit_identity(spec), default=str)
        optim = spec.optim
        window = spec.window()
        # A rule: ("decay", deficit or None), lr * decay^epoch; or (policy, removal epoch).
        clean = ("decay", None)
        if window is None:
            pieces = [(0, self.epochs, clean)]
        else:
            start, end = window
            after = clean if optim["after_removal"] == "continue" else (optim["after_removal"], end)
            if optim["decay"] == 1.0 or optim["lr"] == 0.0 or after == ("reset", 0):
                after = clean  # the policy gives the very same learning rates
            pieces = [(0, min(start, end), clean), (start, end, ("decay", self.deficit)), (end, self.epochs, after)]
        self.stretches = [(min(b, self.epochs), rule) for a, b, rule in pieces if a < min(b, self.epochs)]

    def symbol(self, epoch: int) -> tuple[bool, str, float]:
        """Epoch ``epoch`` as the worker trains it: deficit or none, and the learning rate."""
        active = self.spec.deficit_active(epoch)
        return active, self.deficit if active else "", self.lr_at(self.spec, epoch)

    def common(self, other: _Signature) -> int:
        """How many leading epochs the two train identically (the same static part assumed)."""
        epoch, limit = 0, min(self.epochs, other.epochs)
        mine, theirs = iter(self.stretches), iter(other.stretches)
        my_end, my_rule = next(mine, (0, None))
        their_end, their_rule = next(theirs, (0, None))
        while epoch < limit:
            while my_end <= epoch:
                my_end, my_rule = next(mine)
            while their_end <= epoch:
                their_end, their_rule = next(theirs)
            stop = min(my_end, their_end, limit)
            if my_rule == their_rule:
                epoch = stop
                continue
            # Different rules may still give equal epochs (a constant LR from the removal
            # equals the decayed one at that epoch): compare these epochs one by one.
            while epoch < stop:
                if self.symbol(epoch) != other.symbol(epoch):
                    return epoch
                epoch += 1
        return limit

    def compare(self, other: _Signature) -> int:
        """-1, 0 or 1: the two epoch sequences in lexicographic order."""
        shared = self.common(other)
        if shared >= min(self.epochs, other.epochs):
            return (self.epochs > other.epochs) - (self.epochs < other.epochs)
        mine, theirs = self.symbol(shared), other.symbol(shared)
        return (mine > theirs) - (mine < theirs)


def shared_prefix(a: RunSpec, b: RunSpec) -> int:
    """The number of leading epochs ``a`` and ``b`` train identically (0 if none)."""
    if _static_key(a) != _static_key(b):
        return 0
    return _Signature(a).common(_Signature(b))


def plan_tree(specs: list[RunSpec]) -> list[Node]:
    """Parents and fork epochs for ``specs``; also adds each fork epoch to its parent's
    ``keep_checkpoints``.

    Each run's parent is the run before it in plan order that it shares the longest prefix
    with (the earliest among equals). Runs that differ in more than their window, length and
    LR policy share nothing, so each group of the rest is planned on its own, in n log n:
    sorted by their epoch sequences, the runs that share at least k epochs with a run are
    one stretch of that order around it (found by binary search), and the earliest placed
    run of the stretch is its parent (a segment tree).
    """
    nodes = [Node(i, s) for i, s in enumerate(specs)]
    # Longest first; among equals, the fewest deficit epochs (a clean baseline is the best
    # trunk), then the latest window (a late onset shares the longest clean prefix).
    order = sorted(range(len(specs)), key=lambda i: (-specs[i].epochs, _deficit_epochs(specs[i]),
                                                      -_window_start(specs[i]), i))
    groups: dict[str, list[int]] = {}
    for i in order:
        groups.setdefault(_static_key(specs[i]), []).append(i)
    for members in groups.values():
        _plan_group(nodes, members)
    for node in nodes:
        if node.children:
            forks = {nodes[child].fork_epoch for child in node.children}
            node.spec.keep_checkpoints = sorted(set(node.spec.keep_checkpoints) | forks)
    return nodes


def _plan_group(nodes: list[Node], members: list[int]) -> None:
    """Parents within one group, ``members`` in plan order.

    Every run placed before a run is at least as long, so a fork's epoch is the shared
    prefix capped at the child's last epoch: the fork needs the parent's state at k, and
    leaves the child one epoch to train at least. Forks at epoch 0 save nothing.
    """
    signatures = {i: _Signature(nodes[i].spec) for i in members}
    ordered = sorted(members, key=functools.cmp_to_key(lambda a, b: signatures[a].compare(signatures[b])))
    position = {index: p for p, index in enumerate(ordered)}
    shared = _RangeMin([signatures[a].common(signatures[b]) for a, b in itertools.pairwise(ordered)])
    earliest = _EarliestPlaced(len(ordered))
    placed: list[int] = []  # positions (in ``ordered``) of the runs placed so far, sorted
    for turn, i in enumerate(members):
        p = position[i]
        spot = bisect.bisect_left(placed, p)
        best = max(shared.min(placed[spot - 1], p) if spot > 0 else 0,
                   shared.min(p, placed[spot]) if spot < len(placed) else 0)
        k = min(best, nodes[i].spec.epochs - 1)
        if k > 0:
            parent = earliest.first(*shared.stretch(p, k))
            nodes[i].parent, nodes[i].fork_epoch = parent, k
            nodes[parent].children.append(i)
        earliest.place(p, turn, i)
        bisect.insort(placed, p)


class _RangeMin:
    """The least of ``values[a:b]`` in constant time (a sparse table): with ``values`` the
    shared prefixes of neighbours in sorted order, the prefix two runs share."""

    def __init__(self, values: list[int]):
        self.levels = [values]
        width = 1
        while 2 * width <= len(values):
            below = self.levels[-1]
            self.levels.append([min(below[i], below[i + width]) for i in range(len(below) - width)])
            width *= 2

    def min(self, a: int, b: int) -> int:
        level = (b - a).bit_length() - 1
        row = self.levels[level]
        return min(row[a], row[b - (1 << level)])

    def stretch(self, p: int, k: int) -> tuple[int, int]:
        """The widest ``[lo, hi]`` around ``p`` whose runs all share at least ``k`` epochs with it."""
        low, high = 0, p  # the least lo with min(lo, p) >= k
        while low < high:
            middle = (low + high) // 2
            if self.min(middle, p) >= k:
                high = middle
            else:
                low = middle + 1
        lo = low
        low, high = p, len(self.levels[0])  # the greatest hi with min(p, hi) >= k
        while low < high:
            middle = (low + high + 1) // 2
            if self.min(p, middle) >= k:
                low = middle
            else:
                high = middle - 1
        return lo, low


class _EarliestPlaced:
    """Positions in sorted order, each holding the plan turn its run was placed at: the run
    placed first within a range of positions, in log time (a segment tree)."""

    NONE = (float("inf"), -1)

    def __init__(self, size: int):
        self.size = 1 << max(0, size - 1).bit_length()
        self.tree = [self.NONE] * (2 * self.size)

    def place(self, position: int, turn: int, index: int) -> None:
        at = position + self.size
        self.tree[at] = (turn, index)
        while at > 1:
            at //= 2
            self.tree[at] = min(self.tree[2 * at], self.tree[2 * at + 1])

    def first(self, lo: int, hi: int) -> int:
        """The index of the run placed first among positions ``lo..hi`` (inclusive)."""
        best = self.NONE
        lo, hi = lo + self.size, hi + self.size + 1
        while lo < hi:
            if lo & 1:
                best, lo = min(best, self.tree[lo]), lo + 1
            if hi & 1:
                hi -= 1
                best = min(best, self.tree[hi])
            lo, hi = lo // 2, hi // 2
        return int(best[1])


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
    stack = list(reversed(roots(nodes)))
    while stack:  # depth first, without recursion: a chain of forks may be thousands deep
        i = stack.pop()
        out.append(i)
        stack.extend(reversed(sorted(nodes[i].children, key=lambda c: nodes[c].fork_epoch)))
    return out
