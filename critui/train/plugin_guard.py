"""What the worker does when a plugin misbehaves at run time: name the plugin, keep the run.

A metric is a measurement on the side of training: when one returns a non-finite value, or
something that is not a number, that value is recorded as null and a ``warning`` event names
the plugin, the key and the epoch; when one raises, the same warning says so and the metric
is switched off for the rest of the run. Training goes on either way. A dataset's tensors
are checked right after ``load``, before any epoch, so that out-of-range labels or a wrong
shape fail the run with a message naming the dataset plugin, not inside the loss.
"""

from __future__ import annotations

import math
import numbers
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from critui.errors import CritUIError


def _origin(info: Any) -> str:
    """``metrics.x (dist 1.0)`` for a PluginInfo, or just the id."""
    if info is None:
        return "?"
    return f"{info.id} ({info.distribution} {info.version})"


class MetricRunner:
    """The run's metrics, computed at the end of each epoch without ever ending the run."""

    def __init__(self, metrics: list[tuple[Any, Any]], log, bookkeeping: Callable[[], AbstractContextManager] = nullcontext):
        """``metrics`` pairs each plugin's ``PluginInfo`` with its instance."""
        self.metrics = list(metrics)
        self.log = log
        self.bookkeeping = bookkeeping
        self.off: set[str] = set()

    def measure(self, context) -> None:
        """Compute every metric due this epoch and write its ``metric`` event."""
        for info, metric in self.metrics:
            if info.id in self.off:
                continue
            started = time.perf_counter()
            try:
                if not metric.when(context.epoch, context.epochs):
                    continue
                values = metric.compute(context)
                if values is None:
                    values = {}
                if not isinstance(values, dict):
                    raise TypeError(f"compute returned {type(values).__name__}, not a dict of floats")
            except Exception as exc:  # noqa: BLE001 - a metric never ends a run; Cancelled is no Exception
                self.off.add(info.id)
                self._warn(info, context.epoch, f"{_origin(info)} raised {type(exc).__name__}: {exc} in epoch "
                           f"{context.epoch}; it is switched off for the rest of the run. Fix the metric "
                           f"(`critui_contract.check_metric`) or report it to the authors of {info.distribution}.")
                continue
            clean = self._clean(info, context.epoch, values)
            if clean:
                with self.bookkeeping():
                    self.log.write("metric", epoch=context.epoch, metric=info.id, values=clean,
                                   seconds=round(time.perf_counter() - started, 4))

    def record_references(self, context) -> None:
        """Each metric's optional reference curves (``Metric.reference``), as one ``reference``
        event per metric that supplies any; a curve that is not a list of finite (epoch,
        value) pairs is dropped with a warning, and a metric whose ``reference`` raises keeps
        measuring (only its reference is lost)."""
        for info, metric in self.metrics:
            if info.id in self.off or not callable(getattr(metric, "reference", None)):
                continue
            try:
                series = clean_reference(metric.reference(context))
            except Exception as exc:  # noqa: BLE001 - a reference is an extra, never the run's end
                self._warn(info, context.epoch, f"{_origin(info)}'s reference raised {type(exc).__name__}: {exc}; "
                           "the run goes on without its reference curve.")
                continue
            if series:
                with self.bookkeeping():
                    self.log.write("reference", epoch=context.epoch, metric=info.id, series=series)

    def _clean(self, info, epoch: int, values: dict) -> dict[str, float | None]:
        """Values as JSON floats; null (with a warning) for anything non-finite or not a number."""
        clean: dict[str, float | None] = {}
        for key, value in values.items():
            number = _as_float(value)
            clean[str(key)] = number
            if number is None:
                self._warn(info, epoch, f"{_origin(info)} returned {key}={_short(value)} in epoch {epoch}, which "
                           f"is not a finite number; it is recorded as null and the run goes on.", key=str(key))
        return clean

    def _warn(self, info, epoch: int, message: str, **fields: Any) -> None:
        print(f"warning: {message}", file=sys.stderr)
        with self.bookkeeping():
            self.log.write("warning", message=message, plugin=info.id, distribution=info.distribution,
                           version=info.version, epoch=epoch, **fields)


def _as_float(value: Any) -> float | None:
    """A finite Python float for a real number (int, numpy scalar, one-element tensor); else None."""
    if isinstance(value, bool):
        return None
    try:
        if not isinstance(value, numbers.Real):
            if getattr(value, "numel", None) is None or value.numel() != 1:
                return None
            value = value.item()
        number = float(value)
    except (TypeError, ValueError, RuntimeError):
        return None
    return number if math.isfinite(number) else None


MAX_REFERENCE_SERIES = 64
MAX_REFERENCE_POINTS = 5000


def clean_reference(value: Any) -> dict[str, list[list[float]]]:
    """A metric's ``reference`` return value as JSON: ``{key: [[epoch, value], ...]}``, points
    in epoch order. Raises TypeError (the caller's warning names the plugin) for anything else."""
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > MAX_REFERENCE_SERIES:
        raise TypeError(f"reference returned {_short(value)}, not a dict of at most {MAX_REFERENCE_SERIES} series")
    series: dict[str, list[list[float]]] = {}
    for key, points in value.items():
        pairs = [tuple(p) for p in points] if isinstance(points, (list, tuple)) else None
        if not pairs or len(pairs) > MAX_REFERENCE_POINTS or any(len(p) != 2 for p in pairs):
            raise TypeError(f"reference series {key!r} is not a list of 1 to {MAX_REFERENCE_POINTS} (epoch, value) pairs")
        clean = [[_as_float(x), _as_float(y)] for x, y in pairs]
        if any(x is None or y is None for x, y in clean):
            raise TypeError(f"reference series {key!r} has a point that is not two finite numbers")
        series[str(key)] = sorted(clean)
    return series


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) < 60 else text[:57] + "..."


def check_dataset_tensors(info: Any, data: Any) -> None:
    """Raise ``CritUIError`` naming the dataset plugin if its tensors cannot be trained on."""
    import torch

    from critui.kinds import DatasetTensors

    def bad(problem: str) -> CritUIError:
        return CritUIError(f"The dataset {_origin(info)} returned {problem}. The run cannot train on it: fix the "
                           f"plugin's load (`critui_contract.check_dataset` finds this), or report it to the "
                           f"authors of {getattr(info, 'distribution', 'the plugin')}.")

    if not isinstance(data, DatasetTensors):
        raise bad(f"{type(data).__name__} from load, not a critui.kinds.DatasetTensors")
    if data.loss != "cross_entropy":
        check_regression_tensors(data, bad)
        return
    classes = data.classes
    if not isinstance(classes, (list, tuple)) or len(classes) < 2:
        raise bad(f"classes={_short(classes)}; it needs a list of at least two class names")
    shapes = {}
    for part in ("train", "test"):
        images, labels = getattr(data, f"{part}_x"), getattr(data, f"{part}_y")
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or len(images) == 0:
            got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise bad(f"{part}_x of shape {got}; it must be a non-empty N×C×H×W tensor")
        if images.dtype not in (torch.uint8, torch.float32):
            raise bad(f"{part}_x of dtype {images.dtype}; use uint8 (0..255) or float32 (0..1)")
        if not isinstance(labels, torch.Tensor) or labels.ndim != 1 or len(labels) != len(images):
            got = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
            raise bad(f"{part}_y of shape {got} for {len(images)} images; give one integer label per image")
        if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.is_complex():
            raise bad(f"{part}_y of dtype {labels.dtype}; labels are integer class indices")
        out = (labels < 0) | (labels >= len(classes))
        if bool(out.any()):
            raise bad(f"{part} label {int(labels[out][0])} with {len(classes)} classes (valid: 0..{len(classes) - 1}), "
                      f"in {int(out.sum())} of {len(labels)} labels")
        shapes[part] = tuple(images.shape[1:])
    if shapes["train"] != shapes["test"]:
        raise bad(f"train images of C×H×W {shapes['train']} and test images of {shapes['test']}")
    channels = shapes["train"][0]
    for stat in ("mean", "std"):
        values = getattr(data, stat)
        if not isinstance(values, (list, tuple)) or len(values) != channels or not all(
                isinstance(v, numbers.Real) and math.isfinite(v) for v in values):
            raise bad(f"{stat}={_short(values)} for {channels} channel(s); give one finite number per channel")
    if min(data.std) <= 0:
        raise bad(f"std={_short(data.std)}; every channel's std must be above 0")


REGRESSION_LOSSES = ("half_mse", "half_sse")


def check_regression_tensors(data: Any, bad: Any) -> None:
    """A regression's tensors: float inputs and finite float targets, one per input, alike in
    train and test; one mean and one std (the inputs need not be images)."""
    import torch

    if data.loss not in REGRESSION_LOSSES:
        raise bad(f"loss={_short(data.loss)}; it is one of cross_entropy, {', '.join(REGRESSION_LOSSES)}")
    shapes = {}
    for part in ("train", "test"):
        x, y = getattr(data, f"{part}_x"), getattr(data, f"{part}_y")
        if not isinstance(x, torch.Tensor) or x.ndim < 2 or len(x) == 0 or x.dtype != torch.float32:
            got = (tuple(x.shape), x.dtype) if isinstance(x, torch.Tensor) else type(x).__name__
            raise bad(f"{part}_x {got}; a regression needs a non-empty float32 N×... tensor")
        if not isinstance(y, torch.Tensor) or len(y) != len(x) or y.dtype != torch.float32:
            got = (tuple(y.shape), y.dtype) if isinstance(y, torch.Tensor) else type(y).__name__
            raise bad(f"{part}_y {got} for {len(x)} inputs; give one float32 target per input")
        if not bool(torch.isfinite(y).all()):
            raise bad(f"{part}_y with values that are not finite")
        shapes[part] = (tuple(x.shape[1:]), tuple(y.shape[1:]))
    if shapes["train"] != shapes["test"]:
        raise bad(f"train inputs/targets of shapes {shapes['train']} and test ones of {shapes['test']}")
    for stat in ("mean", "std"):
        values = getattr(data, stat)
        if not isinstance(values, (list, tuple)) or len(values) != 1 or not all(
                isinstance(v, numbers.Real) and math.isfinite(v) for v in values):
            raise bad(f"{stat}={_short(values)}; a regression gives one finite number")
    if data.std[0] <= 0:
        raise bad(f"std={_short(data.std)}; it must be above 0")
