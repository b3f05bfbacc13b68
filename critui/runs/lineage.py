"""A forked run's whole history: its ancestors' epochs before the fork, then its own.

A forked run's ``events.jsonl`` starts at its fork epoch; the epochs before it were trained
once, by its parent (or the parent's parent). :func:`full_rows` stitches them back together,
marking the inherited rows, so that reports and ``critui show`` see the same per-epoch curve
the run would have written had it been trained from scratch.
"""

from __future__ import annotations

from typing import Any

from critui.events import epoch_table, read_events


def full_rows(store, doc: dict[str, Any], docs_by_id: dict[str, dict[str, Any]] | None = None,
              limit: int | None = None) -> list[dict[str, Any]]:
    """Per-epoch rows of ``doc`` including inherited ones (``inherited: True``), up to ``limit``."""
    own = [r for r in epoch_table(read_events(store.run_dir(doc["id"])))
           if limit is None or r["epoch"] < limit]
    parent_id, fork = doc.get("parent"), doc.get("fork_epoch")
    if not parent_id or not fork:
        return own
    if docs_by_id is None:
        docs_by_id = {d["id"]: d for d in store.all()}
    parent = docs_by_id.get(parent_id)
    if parent is None:
        return own
    cut = fork if limit is None else min(fork, limit)
    inherited = [{**r, "inherited": True} for r in full_rows(store, parent, docs_by_id, cut)]
    return inherited + [r for r in own if r["epoch"] >= fork]


def ancestry(doc: dict[str, Any], docs_by_id: dict[str, dict[str, Any]]) -> list[tuple[str, int]]:
    """``[(parent id, fork epoch), ...]`` from the nearest ancestor up to the root."""
    chain: list[tuple[str, int]] = []
    seen = {doc["id"]}
    while doc.get("parent") and doc["parent"] not in seen:
        chain.append((doc["parent"], int(doc.get("fork_epoch") or 0)))
        seen.add(doc["parent"])
        doc = docs_by_id.get(doc["parent"], {})
        if not doc:
            break
    return chain
