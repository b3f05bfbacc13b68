"""Exporting runs: per-epoch rows as CSV, or specs and rows as JSON."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from critui.errors import CritUIError
from critui.events import epoch_table, read_events


def run_rows(store, doc: dict[str, Any]) -> list[dict[str, Any]]:
    return epoch_table(read_events(store.run_dir(doc["id"])))


def export_csv(store, docs: list[dict[str, Any]]) -> str:
    """One row per (run, epoch); columns are the union of every run's metrics."""
    rows = [{"run": d["id"], **r} for d in docs for r in run_rows(store, d)]
    columns = ["run", "epoch"]
    for r in rows:
        columns += [k for k in r if k not in columns]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def export_json(store, docs: list[dict[str, Any]]) -> str:
    runs = []
    for d in docs:
        spec_path = store.run_dir(d["id"]) / "spec.json"
        spec = json.loads(spec_path.read_text()) if spec_path.exists() else None
        runs.append({"run": d, "spec": spec, "epochs": run_rows(store, d)})
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
