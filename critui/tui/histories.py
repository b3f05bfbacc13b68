"""Each run's joined history as the TUI's screens draw it: from the feed's live tails.

A fork's rows start at its fork epoch in its own ``events.jsonl``; every screen (the
dashboard's charts and table, the run detail, compare) draws the history joined with its
parents' epochs by :func:`critui.runs.lineage.join_rows`, the same join ``critui show``,
``export`` and ``report`` use, so a fork shows the same epochs and final accuracy
everywhere. Joins are cached until a run of the chain changes.
"""

from __future__ import annotations

import weakref
from typing import Any

from critui.runs.lineage import JoinedHistory, fork_point, join_rows

_CACHE: weakref.WeakKeyDictionary[Any, dict[str, tuple[Any, JoinedHistory]]] = weakref.WeakKeyDictionary()


def joined_history(feed, run_id: str) -> JoinedHistory:
    """``run_id``'s joined history from ``feed`` (a :class:`critui.tui.feed.RunsFeed`)."""
    docs, histories = feed.docs, feed.histories
    doc = docs.get(run_id)
    own = histories.get(run_id)
    if doc is None or not fork_point(doc):  # no parent: its own rows, as they are
        return JoinedHistory(run_id, own.rows if own else [], (run_id,), version=own.version if own else 0)
    key = _chain_key(doc, docs, histories)
    cache = _CACHE.setdefault(feed, {})
    if run_id in cache and cache[run_id][0] == key:
        return cache[run_id][1]

    def own_rows(chain_id: str) -> list[dict[str, Any]]:
        tail = histories.get(chain_id)
        return tail.rows if tail else []

    rows, chain = join_rows(doc, docs, own_rows)
    joined = JoinedHistory(run_id, rows, chain, version=key)
    cache[run_id] = (key, joined)
    return joined


def _chain_key(doc: dict[str, Any], docs: dict[str, dict[str, Any]], histories: dict[str, Any]) -> tuple:
    """The runs of a fork's chain with their fork epochs and history versions."""
    key, seen = [], set()
    while doc is not None and doc["id"] not in seen:
        seen.add(doc["id"])
        tail = histories.get(doc["id"])
        key.append((doc["id"], fork_point(doc), tail.version if tail else 0))
        doc = docs.get(doc["parent"]) if fork_point(doc) else None
    return tuple(key)


class JoinedHistories:
    """``feed.histories`` read through the join: ``get(run_id)`` gives a joined history."""

    def __init__(self, feed):
        self.feed = feed

    def get(self, run_id: str, default: Any = None) -> JoinedHistory | Any:
        if run_id not in self.feed.docs:
            return default
        return joined_history(self.feed, run_id)
