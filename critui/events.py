"""The run protocol's record: ``events.jsonl``, one JSON object per line, appended and flushed.

The worker writes it (:class:`EventLog`); managers read it (:func:`read_events`,
:class:`EventTail`) and never hold a pipe to the worker. Readers skip a malformed or
half-written last line, so a kill mid-write costs at most that line.

Events, each with ``event`` and ``time``:

- ``started``: epoch (first epoch this process trains), pid, device, torch, resumed
- ``epoch``: epoch, lr, deficit_active, train_loss, train_acc, test_loss, test_acc, seconds
- ``metric``: epoch, metric (plugin id), values {key: float}
- ``checkpoint``: epoch (the next epoch to train), path
- ``finished``: epochs, final_acc (mean of the last 5 test accuracies), seconds
- ``failed``: epoch, error, reason (``nan``, ``user`` or ``exception``), traceback
- ``cancelled``: epoch, signal
- ``paused``: epoch, signal, reason: not an end; a cluster job stopped to be requeued, and the
  requeued job resumes the run (its next ``started`` has resumed true)

A resumed run may repeat an epoch that ran but was not checkpointed; the last line wins.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from critui.processes import pid_alive, valid_pid  # noqa: F401 - pid_alive: readers import it from here

EVENTS_FILE = "events.jsonl"
TERMINAL = ("finished", "failed", "cancelled")
FINAL_WINDOW = 5  # the paper's final metric: the mean of the last 5 test errors


class EventLog:
    """Append-only writer; every event is one line, flushed before ``write`` returns."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / EVENTS_FILE
        self._file = open(self.path, "a", encoding="utf-8")

    def write(self, event: str, **fields: Any) -> None:
        record = {"event": event, "time": round(time.time(), 3), **fields}
        self._file.write(json.dumps(record, allow_nan=False, default=_jsonable) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)


def parse_lines(text: str) -> list[dict[str, Any]]:
    events = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and "event" in record:
            events.append(record)
    return events


def read_events(run_dir: Path) -> list[dict[str, Any]]:
    """Every well-formed event of a run; [] if the file is missing."""
    try:
        return parse_lines((Path(run_dir) / EVENTS_FILE).read_text(encoding="utf-8", errors="replace"))
    except (FileNotFoundError, NotADirectoryError):
        return []


class EventTail:
    """Reads only the complete lines appended since the last call."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / EVENTS_FILE
        self.offset = 0
        self._partial = b""

    def read_new(self) -> list[dict[str, Any]]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except (FileNotFoundError, NotADirectoryError):
            return []
        self.offset += len(chunk)
        data = self._partial + chunk
        complete, _, self._partial = data.rpartition(b"\n")
        return parse_lines(complete.decode("utf-8", errors="replace"))


def epoch_table(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per trained epoch, in order, with metric values merged in (last write wins)."""
    rows: dict[int, dict[str, Any]] = {}
    for e in events:
        if e["event"] == "epoch":
            rows[e["epoch"]] = {**rows.get(e["epoch"], {}), **{k: v for k, v in e.items() if k not in ("event", "time")}}
        elif e["event"] == "metric":
            row = rows.setdefault(e["epoch"], {"epoch": e["epoch"]})
            name = e["metric"].split(".", 1)[-1]
            for key, value in e.get("values", {}).items():
                row[f"{name}.{key}"] = value
    return [rows[k] for k in sorted(rows) if "test_acc" in rows[k]]


def final_accuracy(rows: list[dict[str, Any]]) -> float | None:
    """The paper's final metric, as an accuracy: mean test accuracy of the last 5 epochs."""
    accs = [r["test_acc"] for r in rows if r.get("test_acc") is not None]
    if not accs:
        return None
    tail = accs[-FINAL_WINDOW:]
    return sum(tail) / len(tail)


def outcome(events: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The last terminal event after the last start, or None if the run has not ended."""
    last = None
    for e in events:
        if e["event"] == "started":
            last = None
        elif e["event"] in TERMINAL:
            last = e
    return last


def worker_pid(events: list[dict[str, Any]]) -> int | None:
    """The pid the last ``started`` event names, if it is one critui may look at (an int above
    1: ``-1``, ``0``, ``"abc"`` or ``true`` in a damaged or planted line name no worker)."""
    starts = [e for e in events if e["event"] == "started"]
    return valid_pid(starts[-1].get("pid")) if starts else None
