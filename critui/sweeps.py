"""Sweep configs: a base experiment, one or more axes and seeds, expanded into run specs.

A sweep file is an ordinary run config (``[train]``, ``[dataset]``, ``[model]``,
``[deficit]``, ``[optim]``, ``[metrics.*]``) plus a ``[sweep]`` table::

    [sweep]
    seeds = [0, 1, 2]          # default: the base's train.seed
    baseline = true            # also train the no-deficit run (the reference of the report)

    [sweep.removal]            # the deficit is removed at t0: window [start, t0)
    values = [0, 20, 40]
    after = 160                # train.epochs = t0 + after: a fixed number of epochs after removal

    [sweep.onset]              # a fixed-width window [t, t + width)
    values = [0, 20, 40]
    width = 40
    after = 160                # optional: train.epochs = t + width + after (default: the base's)

    [sweep.set]                # any parameter, like --set; a plugin id swaps the plugin
    "model.depth" = [4, 6]
    "optim.after_removal" = ["continue", "reset"]

Every axis is crossed with every other one and with the seeds (a grid). Each expanded run
is validated like ``critui run --config``; an error names the key and its line.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from critui.config import SINGLE_KINDS, RunSpec, build_spec, line_of, load_toml
from critui.errors import CritUIError
from critui.plugins import Registry

SWEEP_KEYS = ("seeds", "baseline", "removal", "onset", "set", "name")
PRIMARY = ("removal", "onset")


@dataclass
class PlannedRun:
    """One run of a sweep: its complete spec and the axis values that produced it."""

    spec: RunSpec
    axis: dict[str, Any]
    baseline: bool = False

    def label(self) -> str:
        if self.baseline:
            parts = ["no deficit"] + [axis_text(k, v) for k, v in self.axis.items() if k not in PRIMARY]
            return " ".join(parts)
        return " ".join(axis_text(k, v) for k, v in self.axis.items())


def axis_text(key: str, value: Any) -> str:
    """``deficit.id=deficits.flip`` reads as ``deficit=flip``; other axes as ``key=value``."""
    section, _, param = key.partition(".")
    if param == "id" and section in SINGLE_KINDS and isinstance(value, str):
        return f"{section}={value.split('.', 1)[-1]}"
    return f"{key}={value}"


@dataclass
class SweepSpec:
    """A parsed sweep config: the base experiment and its axes, before expansion."""

    name: str
    base: dict[str, Any]
    seeds: list[int]
    removal: dict[str, Any] | None = None
    onset: dict[str, Any] | None = None
    sets: dict[str, list[Any]] = field(default_factory=dict)
    baseline: bool = False
    source: tuple[str, str] | None = None

    @property
    def primary(self) -> str | None:
        """The axis the paper's figure is drawn against."""
        if self.removal:
            return "removal"
        if self.onset:
            return "onset"
        return next(iter(self.sets), None)

    def axis_names(self) -> list[str]:
        names = [a for a in PRIMARY if getattr(self, a)]
        return names + list(self.sets) + ["seed"]


def _where(source: tuple[str, str] | None, key: str) -> str:
    """``FILE, line N`` for a dotted key (``sweep.set.model.depth`` finds its quoted name)."""
    if source is None:
        return "the sweep"
    path, text = source
    line = None
    if key.startswith("sweep.set."):
        name = key[len("sweep.set."):]
        section = ""
        for number, row in enumerate(text.splitlines(), start=1):
            stripped = row.strip()
            if stripped.startswith("["):
                section = stripped.strip("[] ")
            elif section == "sweep.set" and stripped.startswith((f'"{name}"', f"'{name}'")):
                line = number
                break
    line = line or line_of(text, key)
    return f"{path}, line {line}" if line else str(path)


def _error(source: tuple[str, str] | None, key: str, message: str) -> CritUIError:
    return CritUIError(f"{_where(source, key)}: {message}")


def load_sweep(path: str | Path) -> SweepSpec:
    """Read and check a sweep file (its shape only; the runs are checked by :func:`expand`)."""
    data, text = load_toml(path)
    source = (str(path), text)
    return parse_sweep(data, source)


def parse_sweep(data: dict[str, Any], source: tuple[str, str] | None = None) -> SweepSpec:
    data = copy.deepcopy(data)
    sweep = data.pop("sweep", None)
    if not isinstance(sweep, dict):
        raise _error(source, "sweep", "a sweep config needs a sweep table with at least one axis "
                     "(a sweep.removal, sweep.onset or sweep.set table) or a list of seeds. "
                     "See configs/demo-removal.toml for an example.")
    for key in sweep:
        if key not in SWEEP_KEYS:
            raise _error(source, f"sweep.{key}", f"sweep.{key} is not a sweep setting. The settings are: "
                         + ", ".join(f"sweep.{k}" for k in SWEEP_KEYS) + ".")
    name = str(sweep.get("name") or data.get("name") or (Path(source[0]).stem if source else "sweep"))
    base_seed = int((data.get("train") or {}).get("seed", 0))
    seeds = sweep.get("seeds", [base_seed])
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = list(range(seeds))
    if not isinstance(seeds, list) or not seeds or not all(_is_int(s) and s >= 0 for s in seeds):
        raise _error(source, "sweep.seeds", f"sweep.seeds = {seeds!r} must be a non-empty list of seeds "
                     "(integers >= 0), e.g. seeds = [0, 1, 2], or a count, e.g. seeds = 3.")
    if len(set(seeds)) != len(seeds):
        raise _error(source, "sweep.seeds", f"sweep.seeds = {seeds!r} repeats a seed; list each once.")
    baseline = sweep.get("baseline", False)
    if not isinstance(baseline, bool):
        raise _error(source, "sweep.baseline", f"sweep.baseline = {baseline!r} must be true or false.")
    removal = _window_axis(sweep, "removal", ("values", "after"), ("values", "after"), source)
    onset = _window_axis(sweep, "onset", ("values", "width", "after"), ("values", "width"), source)
    if removal and onset:
        raise _error(source, "sweep.onset", "a sweep varies either the removal epoch (sweep.removal) or "
                     "the onset of a window (sweep.onset), not both; split it into two sweeps.")
    if (removal or onset) and not (data.get("deficit") or {}).get("id"):
        axis = "removal" if removal else "onset"
        raise _error(source, f"sweep.{axis}", f"sweep.{axis} moves the deficit window, but the base has "
                     "no deficit. Add a deficit table with id = \"deficits.blur\" (or another deficit).")
    sets = sweep.get("set", {})
    if not isinstance(sets, dict):
        raise _error(source, "sweep.set", "sweep.set must be a table of \"SECTION.PARAM\" = [values...].")
    for key, values in sets.items():
        if not isinstance(values, list) or not values:
            raise _error(source, f"sweep.set.{key}", f"sweep.set \"{key}\" = {values!r} must be a non-empty "
                         "list of values, e.g. \"model.depth\" = [4, 6].")
        parts = key.split(".")
        if len(parts) != 2 and not (parts[0] == "metrics" and len(parts) == 3):
            raise _error(source, f"sweep.set.{key}", f"sweep.set \"{key}\" is not a setting: use SECTION.PARAM "
                         "(e.g. \"model.depth\", \"optim.name\", \"deficit.id\").")
        if key in ("deficit.start", "deficit.end", "train.epochs", "train.seed") and (removal or onset or key == "train.seed"):
            raise _error(source, f"sweep.set.{key}", f"sweep.set \"{key}\" conflicts with the sweep's own axes; "
                         "use sweep.seeds for seeds and sweep.removal / sweep.onset for the window.")
    if baseline and not (removal or onset):
        raise _error(source, "sweep.baseline", "sweep.baseline adds a no-deficit reference to a removal "
                     "or onset axis; this sweep has neither.")
    return SweepSpec(name=name, base=data, seeds=[int(s) for s in seeds], removal=removal, onset=onset,
                     sets=dict(sets), baseline=baseline, source=source)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _window_axis(sweep, axis, allowed, required, source) -> dict[str, Any] | None:
    table = sweep.get(axis)
    if table is None:
        return None
    if isinstance(table, list):
        raise _error(source, f"sweep.{axis}", f"sweep.{axis} must be a table with "
                     + ", ".join(required) + ".")
    if not isinstance(table, dict):
        raise _error(source, f"sweep.{axis}", f"sweep.{axis} must be a table.")
    for key in table:
        if key not in allowed:
            raise _error(source, f"sweep.{axis}.{key}", f"sweep.{axis}.{key} is not a setting of "
                         f"sweep.{axis}; it takes " + ", ".join(allowed) + ".")
    for key in required:
        if key not in table:
            raise _error(source, f"sweep.{axis}", f"sweep.{axis} needs {key} (it takes " + ", ".join(allowed) + ").")
    values = table["values"]
    if not isinstance(values, list) or not values or not all(_is_int(v) and v >= 0 for v in values):
        raise _error(source, f"sweep.{axis}.values", f"sweep.{axis}.values = {values!r} must be a non-empty "
                     "list of epochs (integers >= 0), e.g. values = [0, 4, 8].")
    if len(set(values)) != len(values):
        raise _error(source, f"sweep.{axis}.values", f"sweep.{axis}.values = {values!r} repeats a value.")
    for key in ("after", "width"):
        if key in table and not (_is_int(table[key]) and table[key] >= (1 if key == "width" else 0)):
            raise _error(source, f"sweep.{axis}.{key}", f"sweep.{axis}.{key} = {table[key]!r} must be a whole "
                         f"number of epochs ({'at least 1' if key == 'width' else '0 or more'}).")
    if axis == "removal" and table["after"] < 1:
        raise _error(source, "sweep.removal.after", "sweep.removal.after must be at least 1: the runs are "
                     "scored on the epochs after removal.")
    return dict(table)


def expand(sweep: SweepSpec, registry: Registry, sets: list[str] | tuple[str, ...] = ()) -> list[PlannedRun]:
    """Every run of the grid, as complete, validated specs. ``sets`` apply to all (like --set)."""
    primary_values: list[tuple[str | None, Any]] = [(None, None)]
    if sweep.removal:
        primary_values = [("removal", v) for v in sweep.removal["values"]]
    elif sweep.onset:
        primary_values = [("onset", v) for v in sweep.onset["values"]]
    set_keys = list(sweep.sets)
    combos = list(itertools.product(*(sweep.sets[k] for k in set_keys))) if set_keys else [()]
    runs: list[PlannedRun] = []
    for combo in combos:
        for axis_name, value in primary_values:
            for seed in sweep.seeds:
                axis = {axis_name: value} if axis_name else {}
                axis.update(dict(zip(set_keys, combo, strict=True)))
                axis["seed"] = seed
                runs.append(_make_run(sweep, registry, sets, axis, baseline=False))
        if sweep.baseline:
            for seed in sweep.seeds:
                axis = dict(zip(set_keys, combo, strict=True))
                axis["seed"] = seed
                runs.append(_make_run(sweep, registry, sets, axis, baseline=True))
    return runs


def _make_run(sweep: SweepSpec, registry, sets, axis: dict[str, Any], baseline: bool) -> PlannedRun:
    raw = copy.deepcopy(sweep.base)
    raw.pop("name", None)
    for key, value in axis.items():
        if key in PRIMARY or key == "seed":
            continue
        parts = key.split(".")
        if parts[0] == "metrics":
            raw.setdefault("metrics", {}).setdefault(parts[1], {})[parts[2]] = value
            continue
        section, param = parts
        table = raw.setdefault(section, {})
        if param == "id" and section in SINGLE_KINDS and table.get("id") != value:
            # A different plugin: the base's parameters for the old one no longer apply.
            kept = {k: table[k] for k in ("start", "end") if k in table and section == "deficit"}
            table.clear()
            table.update(kept)
        table[param] = value
    train = raw.setdefault("train", {})
    train["seed"] = axis["seed"]
    deficit = raw.get("deficit")
    if sweep.removal:
        t0 = axis.get("removal")
        after = sweep.removal["after"]
        if baseline:
            t0 = 0
        deficit["end"] = t0
        deficit.setdefault("start", 0)
        if deficit["start"] > t0:
            deficit["start"] = t0
        train["epochs"] = t0 + after if not baseline else max(sweep.removal["values"]) + after
    elif sweep.onset:
        width = sweep.onset["width"]
        after = sweep.onset.get("after")
        onset = axis.get("onset")
        if baseline:
            deficit["start"] = deficit["end"] = 0
            if after is not None:
                train["epochs"] = max(sweep.onset["values"]) + width + after
        else:
            deficit["start"], deficit["end"] = onset, onset + width
            if after is not None:
                train["epochs"] = onset + width + after
    label = PlannedRun(None, axis, baseline).label()  # type: ignore[arg-type]
    raw["name"] = f"{sweep.name}: {label}"
    try:
        spec = build_spec(registry, raw, sets=sets)
    except CritUIError as exc:
        key = getattr(exc, "key", None)
        axis_key = _axis_key_for(key, axis)
        where = _where(sweep.source, axis_key or key or "sweep")
        raise CritUIError(f"{where}: the run {label} is not valid: {exc}") from None
    if spec.window() is not None and spec.epochs < spec.window()[1]:
        raise _error(sweep.source, "train.epochs", f"the run {label} ends at epoch {spec.epochs}, before its "
                     f"deficit window [{spec.window()[0]}, {spec.window()[1]}) closes; raise train.epochs or sweep.onset.after.")
    return PlannedRun(spec, axis, baseline)


def _axis_key_for(key: str | None, axis: dict[str, Any]) -> str | None:
    """Point an error about a swept parameter at the sweep.set line that sets it."""
    if key and key in axis:
        return f"sweep.set.{key}"
    return None
