"""The run protocol's record: ``events.jsonl``, one JSON object per line, appended and flushed.

The worker writes it (:class:`EventLog`); managers read it (:func:`read_events`,
:class:`EventTail`) and never hold a pipe to the worker. Every line is checked before it is
used (:func:`check_event`): a line that is not UTF-8, not a JSON object, or whose fields have
the wrong type (an ``epoch`` event without ``epoch``, a number written as a string, a pid of
``"abc"``) is skipped, and a :class:`Problem` naming the file, the line and what is wrong is
handed to the caller that asked for them. A kill mid-write costs at most that line: the
writer always starts on a fresh line.

Events, each with ``event`` and ``time``:

- ``started``: epoch (first epoch this process trains), pid, device, torch, resumed
- ``epoch``: epoch, lr, deficit_active, train_loss, train_acc, test_loss, test_acc, seconds; a
  regression has score, score_name, higher_is_better instead of train_acc and test_acc; with
  ``train.log_every`` > 1 only every N-th epoch (and the first, last and window edges) has one
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

import bisect
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from critui.processes import pid_alive, valid_pid  # noqa: F401 - pid_alive: readers import it from here

EVENTS_FILE = "events.jsonl"
TERMINAL = ("finished", "failed", "cancelled")
FINAL_WINDOW = 5  # the paper's final metric: the mean of the last 5 test errors


@dataclass(frozen=True)
class Problem:
    """Something unusable in a file of a run, skipped so that everything else still reads."""

    path: Path | str  # the file, or "run ID" for a problem of the run as a whole
    what: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.path}, line {self.line}" if self.line is not None else str(self.path)
        return f"{where}: {self.what}"


class EventLog:
    """Append-only writer; every event is one line, flushed before ``write`` returns.

    A file that does not end in a newline was cut mid-line (its writer was killed, or a disk
    filled): the next line starts on a fresh line, so the torn one costs only itself.
    """

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / EVENTS_FILE
        self._torn = _ends_mid_line(self.path)
        self._file = open(self.path, "a", encoding="utf-8")

    def write(self, event: str, **fields: Any) -> None:
        record = {"event": event, "time": round(time.time(), 3), **fields}
        line = json.dumps(record, allow_nan=False, default=_jsonable) + "\n"
        try:
            self._file.write(("\n" if self._torn else "") + line)
            self._file.flush()
        except OSError:
            self._torn = True  # part of the line may be on disk: the next one starts afresh
            raise
        self._torn = False

    def close(self) -> None:
        self._file.close()


def _ends_mid_line(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            if f.seek(0, os.SEEK_END) == 0:
                return False
            f.seek(-1, os.SEEK_END)
            return f.read(1) != b"\n"
    except (FileNotFoundError, NotADirectoryError):
        return False


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)


# -- checking a line: each event's fields and their types -------------------------------------


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _number(value: Any) -> bool:
    # JSON's NaN and Infinity parse, but a mean over them is meaningless; the writer never
    # writes them (it writes null instead).
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _maybe(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: value is None or check(value)


def _number_or_null(value: Any) -> bool:
    return value is None or (type(value) is float and math.isfinite(value)) or type(value) is int


def _values(value: Any) -> bool:
    if type(value) is not dict:
        return False
    for v in value.values():  # a loop, not all(map(...)): a metric line holds many values
        if not (v is None or type(v) is int or (type(v) is float and math.isfinite(v))):
            return False
    return True


_TEXT = (lambda v: isinstance(v, str), "a string")
_FLAG = (lambda v: isinstance(v, bool), "true or false")
_COUNT = (_count, "a whole number ≥ 0")
_NUMBER = (_number_or_null, "a finite number or null")
_EPOCH_OR_NULL = (_maybe(_count), "a whole number ≥ 0 or null")

# event -> {field: (check, what it should be, required)}; fields not named are not read as
# numbers anywhere, so they are left as they are. Unknown events pass (newer workers).
FIELDS: dict[str, dict[str, tuple[Callable[[Any], bool], str, bool]]] = {
    "started": {"epoch": (*_COUNT, False), "pid": (_count, "a process id (a whole number)", False),
                "resumed": (*_FLAG, False), "lr_at_removal": (*_NUMBER, False)},
    "epoch": {"epoch": (*_COUNT, True), "test_acc": (*_NUMBER, False), "score": (*_NUMBER, False),
              "score_name": (*_TEXT, False), "higher_is_better": (*_FLAG, False), "lr": (*_NUMBER, False),
              "train_loss": (*_NUMBER, False), "train_acc": (*_NUMBER, False),
              "test_loss": (*_NUMBER, False), "deficit_active": (*_FLAG, False),
              "seconds": (*_NUMBER, False)},
    "metric": {"epoch": (*_COUNT, True), "metric": (*_TEXT, True),
               "values": (_values, "an object of numbers", True)},
    "checkpoint": {"epoch": (*_COUNT, True), "path": (_maybe(_TEXT[0]), "a path or null", False)},
    "finished": {"epochs": (*_COUNT, False), "final_acc": (*_NUMBER, False), "seconds": (*_NUMBER, False)},
    "failed": {"epoch": (*_EPOCH_OR_NULL, False), "error": (_maybe(_TEXT[0]), "a string or null", False)},
    "cancelled": {"epoch": (*_EPOCH_OR_NULL, False)},
    "paused": {"epoch": (*_EPOCH_OR_NULL, False)},
}


def check_event(record: Any) -> str | None:
    """What is wrong with one parsed line, or None when every field it relies on is usable."""
    if type(record) is not dict:
        return f"a JSON {type(record).__name__ if record is not None else 'null'}, not an event object"
    kind = record.get("event")
    if type(kind) is not str:
        return "no `event` name" if kind is None else f"`event` should be a string, not {_shown(kind)}"
    if "time" in record and not _number(record["time"]):
        return f"`time` should be a number, not {_shown(record['time'])}"
    for field, (check, expected, required) in FIELDS.get(kind, _NO_FIELDS).items():
        value = record.get(field, _MISSING)
        if value is _MISSING:
            if required:
                return f"{_event_name(kind)} without `{field}`"
        elif not check(value):
            return f"`{field}` of {_event_name(kind)} should be {expected}, not {_shown(value)}"
    if kind == "epoch" and "test_acc" not in record and "score" not in record:
        return f"{_event_name(kind)} without `test_acc` (or a regression's `score`)"
    return None


_MISSING = object()
_NO_FIELDS: dict[str, tuple[Callable[[Any], bool], str, bool]] = {}


def _event_name(kind: str) -> str:
    return f"{'an' if kind[:1] in 'aeiou' else 'a'} `{kind}` event"


def _shown(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def parse_lines(text: str | bytes, path: Path | str = EVENTS_FILE, problems: list[Problem] | None = None,
                first_line: int = 1) -> list[dict[str, Any]]:
    """The usable events of ``text``; each skipped line is added to ``problems`` (if given)."""
    data = text.encode("utf-8", errors="surrogatepass") if isinstance(text, str) else text
    events = []
    for number, raw in enumerate(data.split(b"\n"), start=first_line):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            what = "not UTF-8 text"
        except ValueError:
            what = "not valid JSON (a line cut short, or edited by hand)"
        else:
            what = check_event(record)
            if what is None:
                events.append(record)
                continue
        if problems is not None:
            problems.append(Problem(Path(path), f"{what}; the line is skipped", number))
    return events


def read_events(run_dir: Path, problems: list[Problem] | None = None) -> list[dict[str, Any]]:
    """Every usable event of a run; [] if the file is missing. Skipped lines go to ``problems``."""
    path = Path(run_dir) / EVENTS_FILE
    try:
        data = path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as exc:
        if problems is not None:
            problems.append(Problem(path, f"cannot be read ({exc.strerror or exc})"))
        return []
    return parse_lines(data, path, problems)


class EventTail:
    """Reads only the complete lines appended since the last call; skipped lines are added to
    ``problems``, with their line numbers in the file."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / EVENTS_FILE
        self.offset = 0
        self.problems: list[Problem] = []
        self._partial = b""
        self._lines = 0  # complete lines read so far: the next one is line _lines + 1

    def read_new(self) -> list[dict[str, Any]]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as exc:
            self.problems.append(Problem(self.path, f"cannot be read ({exc.strerror or exc})"))
            return []
        self.offset += len(chunk)
        data = self._partial + chunk
        complete, newline, self._partial = data.rpartition(b"\n")
        if not newline:
            return []
        events = parse_lines(complete, self.path, self.problems, first_line=self._lines + 1)
        self._lines += complete.count(b"\n") + 1
        return events


_NOT_ROW = ("event", "time", "inherited")  # `inherited` is the join's mark, never a worker's


def epoch_table(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per trained epoch, in order, with metric values merged in (last write wins)."""
    rows: dict[int, dict[str, Any]] = {}
    for e in events:
        if e["event"] == "epoch":
            rows[e["epoch"]] = {**rows.get(e["epoch"], {}), **{k: v for k, v in e.items() if k not in _NOT_ROW}}
        elif e["event"] == "metric":
            row = rows.setdefault(e["epoch"], {"epoch": e["epoch"]})
            name = e["metric"].split(".", 1)[-1]
            for key, value in e.get("values", {}).items():
                row[f"{name}.{key}"] = value
    return [rows[k] for k in sorted(rows) if "test_acc" in rows[k] or "score" in rows[k]]


def reference_series(events: list[dict[str, Any]]) -> dict[str, tuple[list[float], list[float]]]:
    """The reference curves metrics supplied (``Metric.reference``), keyed like the rows'
    metric values (``singular-values.s1``): ``(epochs, values)`` each. A worker writes them
    when it starts; the last event of each metric wins. Points that are not two finite
    numbers are skipped, so a damaged event costs only itself."""
    found: dict[str, tuple[list[float], list[float]]] = {}
    for e in events:
        if e.get("event") != "reference" or not isinstance(e.get("metric"), str) or not isinstance(e.get("series"), dict):
            continue
        name = e["metric"].split(".", 1)[-1]
        for key, points in e["series"].items():
            xs, ys = [], []
            for point in points if isinstance(points, list) else ():
                if (isinstance(point, list) and len(point) == 2
                        and all(type(v) in (int, float) and math.isfinite(v) for v in point)):
                    xs.append(float(point[0]))
                    ys.append(float(point[1]))
            if xs:
                found[f"{name}.{key}"] = (xs, ys)
    return found


REFERENCE_SUFFIX = " ref"  # a reference curve's column in a table or an export: the metric's key and this


def with_references(rows: list[dict[str, Any]], references: dict[str, tuple[list[float], list[float]]]) -> list[dict[str, Any]]:
    """``rows`` with, after each metric key that has a reference curve, ``KEY ref``: the
    curve's value at that row's epoch (None outside the curve), where the row measured KEY."""
    if not references:
        return rows
    out = []
    for r in rows:
        row = {}
        for key, value in r.items():
            row[key] = value
            if key in references:
                row[key + REFERENCE_SUFFIX] = reference_at(references[key], r["epoch"])
        out.append(row)
    return out


def reference_at(curve: tuple[list[float], list[float]], epoch: float) -> float | None:
    """A reference curve's value at ``epoch``, linearly interpolated; None outside its range."""
    xs, ys = curve
    if not xs or epoch < xs[0] or epoch > xs[-1]:
        return None
    i = bisect.bisect_left(xs, epoch)
    if xs[i] == epoch or i == 0:
        return ys[i]
    x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
    return y0 + (y1 - y0) * (epoch - x0) / (x1 - x0)


def epochs_covered(rows: list[dict[str, Any]]) -> int:
    """How many epochs the rows account for: their count, or the last epoch + 1 when they
    are spaced (``train.log_every`` > 1 logs every N-th epoch only)."""
    if not rows:
        return 0
    spaced = any(b["epoch"] - a["epoch"] > 1 for a, b in zip(rows, rows[1:], strict=False))
    return rows[-1]["epoch"] + 1 if spaced else len(rows)


def score_of(row: dict[str, Any]) -> float | None:
    """A row's primary test score: its ``score`` (a regression's test MSE), else ``test_acc``."""
    return row["score"] if "score" in row else row.get("test_acc")


def score_kind(rows: list[dict[str, Any]]) -> tuple[str, bool]:
    """The rows' score name and whether higher is better: ``("test_acc", True)`` unless the
    last row says otherwise (a regression: ``("test_mse", False)``)."""
    last = rows[-1] if rows else {}
    if "score" in last:
        return str(last.get("score_name") or "score"), last.get("higher_is_better") is not False
    return "test_acc", True


def score_text(event: dict[str, Any], digits: int = 3) -> str:
    """An epoch event's score as a progress line shows it: ``test acc 0.812`` or ``test_mse 0.0123``."""
    if "score" in event:
        value = event["score"]
        return f"{event.get('score_name') or 'score'} " + ("-" if value is None else f"{value:.{digits + 1}g}")
    value = event.get("test_acc")
    return "test acc " + ("-" if value is None else f"{value:.{digits}f}")


def score_label(rows: list[dict[str, Any]]) -> str:
    """The final score's name as tables head it: ``test acc``, or a regression's (``test_mse``,
    lower is better)."""
    name, higher = score_kind(rows)
    return "test acc" if name == "test_acc" else f"{name} ({'higher' if higher else 'lower'} is better)"


def final_accuracy(rows: list[dict[str, Any]]) -> float | None:
    """The paper's final metric: the mean primary score (:func:`score_of`; test accuracy for
    a classification) of the last 5 logged epochs."""
    accs = [v for r in rows if (v := score_of(r)) is not None]
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
