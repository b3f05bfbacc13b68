"""Exporting runs: per-epoch rows as CSV, or specs and rows as JSON.

Both carry each run's joined history (:func:`critui.runs.lineage.run_history`): a fork's
epochs before its fork, trained by its parent, come first and are marked ``inherited``, so
an export has the same epochs and final accuracy as ``critui show`` and the TUI. A metric
with a reference curve (``Metric.reference``) gets a ``KEY ref`` column beside its values, as
in ``critui show``; the JSON carries the curves themselves too.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from critui.errors import CritUIError
from critui.events import Problem, read_events, reference_series, with_references
from critui.runs.lineage import JoinedHistory, read_spec_json, run_history


def histories(store, docs: list[dict[str, Any]], problems: list[Problem] | None = None) -> list[JoinedHistory]:
    """Each run's joined history; what was skipped reading them goes to ``problems``."""
    by_id = {d["id"]: d for d in store.all()} if any(d.get("parent") for d in docs) else {}
    joined = [run_history(store, d, {**by_id, d["id"]: d}) for d in docs]
    if problems is not None:
        problems += [p for h in joined for p in h.problems]
    return joined


def run_rows(store, doc: dict[str, Any]) -> list[dict[str, Any]]:
    """A run's per-epoch rows over its whole history, each with ``inherited`` true or false."""
    return _marked(run_history(store, doc).rows)


def _marked(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"epoch": r["epoch"], "inherited": bool(r.get("inherited")),
             **{k: v for k, v in r.items() if k not in ("epoch", "inherited")}} for r in rows]


RUN_COLUMNS = ("deficit", "window_start", "window_end", "seed")


def references(store, run_id: str, problems: list[Problem] | None = None):
    """The reference curves a run's metrics supplied (:func:`critui.events.reference_series`)."""
    return reference_series(read_events(store.run_dir(run_id), problems))


def run_columns(doc: dict[str, Any]) -> dict[str, Any]:
    """A run's deficit (plugin id, empty for none), window [start, end) and seed, for an
    export read without the index: each row says which experiment it belongs to."""
    window = doc.get("window")
    window = window if isinstance(window, (list, tuple)) and len(window) == 2 else (None, None)
    return {"deficit": doc.get("deficit") or "", "window_start": window[0], "window_end": window[1],
            "seed": doc.get("seed")}


def export_csv(store, docs: list[dict[str, Any]], problems: list[Problem] | None = None,
               with_run: bool = False) -> str:
    """One row per (run, epoch); columns are the union of every run's metrics, plugin
    metrics (``name.key``) included. ``with_run`` adds each run's deficit, window and seed
    after ``inherited`` (the TUI's exports)."""
    rows = [{"run": h.run_id, "epoch": r["epoch"], "inherited": r["inherited"],
             **(run_columns(d) if with_run else {}), **r}
            for d, h in zip(docs, histories(store, docs, problems), strict=True)
            for r in with_references(_marked(h.rows), references(store, h.run_id))]
    columns = ["run", "epoch", "inherited", *(RUN_COLUMNS if with_run else ())]
    for r in rows:
        columns += [k for k in r if k not in columns]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def export_json(store, docs: list[dict[str, Any]], problems: list[Problem] | None = None) -> str:
    """Each run's index entry (its summary counted over the joined history), spec and rows."""
    runs = []
    for d, history in zip(docs, histories(store, docs, problems), strict=True):
        spec = read_spec_json(store.run_dir(d["id"]), problems)
        curves = references(store, d["id"])
        runs.append({"run": {**d, **history.summary(), "inherited_epochs": history.inherited},
                     "spec": spec, "epochs": with_references(_marked(history.rows), curves),
                     "references": {key: {"epochs": xs, "values": ys} for key, (xs, ys) in curves.items()}})
    return json.dumps({"runs": runs}, indent=2) + "\n"


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that a failure never leaves a half-written file; a device
    (``-o /dev/null``) is written in place, and a symlink or folder there is refused."""
    from critui.files import atomic_write

    path = Path(path)
    try:
        atomic_write(path, text)
    except OSError as exc:
        raise CritUIError(f"Could not write {path}: {exc.strerror or exc}. Check the folder exists and is writable.") from None
