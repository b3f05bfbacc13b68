"""Sweep configs: a base experiment, one or more axes and seeds, expanded into run specs.

A sweep file is an ordinary run config (``[train]``, ``[dataset]``, ``[model]``,
``[deficit]``, ``[optim]``, ``[metrics.*]``) plus a ``[sweep]`` table::

    [sweep]
    seeds = [0, 1, 2]          # default: the base's train.seed; or a count: seeds = 3
    baseline = true            # also train the no-deficit run (the reference of the report)
    max_runs = 5000            # refuse a bigger grid (the default; --max-runs N overrides)

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
    # one plugin per run, each with its own settings (a bare id: the plugin's defaults)
    "deficit" = [{id = "deficits.blur", size = 8}, {id = "deficits.noise", std = 0.5}, "deficits.flip"]

A plugin swapped in by an axis (``"deficit.id"`` or ``"deficit"``) keeps every setting the
base gives its section (``[deficit] size = 3``) and every ``--set deficit.size=3``: a setting
the swapped-in plugin does not declare is an error naming it and the plugin, never dropped.

Every axis is crossed with every other one and with the seeds (a grid). Each expanded run
is validated like ``critui run --config``; an error names the key and its line. The size
of the grid is computed from the lengths of its axes before anything is expanded, so a grid
above ``max_runs`` is refused at once, however large.
"""

from __future__ import annotations

import copy
import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from critui.config import (
    SINGLE_KINDS,
    RunSpec,
    SpecError,
    build_spec,
    check_name,
    check_shape,
    line_of,
    load_toml,
)
from critui.errors import CritUIError
from critui.params import short_repr
from critui.plugins import Registry

SWEEP_KEYS = ("seeds", "baseline", "removal", "onset", "set", "name", "max_runs")
PRIMARY = ("removal", "onset")
# A grid bigger than this is refused before it is expanded (sweep.max_runs, --max-runs).
MAX_RUNS = 5000


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
    """``deficit.id=deficits.flip`` reads as ``deficit=flip`` (and a per-plugin axis value
    ``deficits.blur(size=8)`` as ``deficit=blur(size=8)``); other axes as ``key=value``."""
    section, _, param = key.partition(".")
    if param in ("id", "") and section in SINGLE_KINDS and isinstance(value, str):
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
    max_runs: int = MAX_RUNS

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

    def size(self) -> int:
        """The number of runs :func:`expand` makes, from the axes' lengths alone."""
        return grid_size(self.removal or self.onset, self.sets, len(self.seeds), self.baseline)


def grid_size(window_axis: dict[str, Any] | None, sets: dict[str, list[Any]], seeds: int, baseline: bool) -> int:
    """Runs in a grid: every sweep.set combination, each window value and seed (plus one
    baseline per seed with ``baseline``). Exact, whatever the size; nothing is built."""
    combinations = math.prod(len(values) for values in sets.values())
    per_combination = len(window_axis["values"]) if window_axis else 1
    return combinations * seeds * (per_combination + bool(baseline))


def check_size(removal: dict[str, Any] | None, onset: dict[str, Any] | None, sets: dict[str, list[Any]],
               seeds: int, baseline: bool, limit: int, source: tuple[str, str] | None = None) -> None:
    """Refuse a grid above ``limit`` runs, naming its factors, before it is expanded."""
    size = grid_size(removal or onset, sets, seeds, baseline)
    if size <= limit:
        return
    window = [f"{len(table['values']):,} {axis} values" for axis, table in (("removal", removal), ("onset", onset))
              if table]
    factors = window + [f"{len(values):,} {key} values" for key, values in sets.items()]
    factors.append(f"{seeds:,} seed{'s' if seeds != 1 else ''}")
    what = " x ".join(factors) + (", plus a baseline per seed" if baseline else "")
    raise _error(source, "sweep", f"this sweep has {size:,} runs ({what}), more than the limit of {limit:,} runs "
                 "per sweep. Shrink an axis or split the sweep; to plan it anyway, raise the limit with "
                 "--max-runs N or max_runs = N in the sweep table.")


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


def load_sweep(path: str | Path, max_runs: int | None = None) -> SweepSpec:
    """Read and check a sweep file (its shape only; the runs are checked by :func:`expand`).

    ``max_runs`` (``--max-runs``) overrides the file's ``sweep.max_runs``."""
    data, text = load_toml(path)
    source = (str(path), text)
    return parse_sweep(data, source, max_runs)


def parse_sweep(data: dict[str, Any], source: tuple[str, str] | None = None,
                max_runs: int | None = None) -> SweepSpec:
    """Check a sweep config's shape, and its size against the limit, before any run is made."""
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
    try:
        check_shape(data)
        name = check_name(sweep.get("name") or data.get("name") or (Path(source[0]).stem if source else "sweep"),
                          "sweep.name" if sweep.get("name") else "name")
    except SpecError as exc:
        raise _error(source, "sweep.name" if sweep.get("name") else exc.key or "sweep", str(exc)) from None
    limit = _max_runs(sweep, max_runs, source)
    base_seed = (data.get("train") or {}).get("seed", 0)
    seeds = sweep.get("seeds", [base_seed])
    # A count stays a number until the grid's size is known: seeds = 10**18 is refused, not built.
    count = seeds if _is_int(seeds) and seeds > 0 else None
    if count is None and (not isinstance(seeds, list) or not seeds or not all(_is_int(s) and s >= 0 for s in seeds)):
        raise _error(source, "sweep.seeds", f"sweep.seeds = {short_repr(seeds)} must be a non-empty list of "
                     "seeds (integers >= 0), e.g. seeds = [0, 1, 2], or a count, e.g. seeds = 3.")
    if count is None and len(set(seeds)) != len(seeds):
        raise _error(source, "sweep.seeds", f"sweep.seeds = {short_repr(seeds)} repeats a seed; list each once.")
    baseline = sweep.get("baseline", False)
    if not isinstance(baseline, bool):
        raise _error(source, "sweep.baseline", f"sweep.baseline = {short_repr(baseline)} must be true or false.")
    removal = _window_axis(sweep, "removal", ("values", "after"), ("values", "after"), source)
    onset = _window_axis(sweep, "onset", ("values", "width", "after"), ("values", "width"), source)
    if removal and onset:
        raise _error(source, "sweep.onset", "a sweep varies either the removal epoch (sweep.removal) or "
                     "the onset of a window (sweep.onset), not both; split it into two sweeps.")
    swaps_deficit = isinstance(sweep.get("set"), dict) and ("deficit" in sweep["set"] or "deficit.id" in sweep["set"])
    if (removal or onset) and not (data.get("deficit") or {}).get("id") and not swaps_deficit:
        axis = "removal" if removal else "onset"
        raise _error(source, f"sweep.{axis}", f"sweep.{axis} moves the deficit window, but the base has "
                     "no deficit. Add a deficit table with id = \"deficits.blur\" (or another deficit).")
    sets = sweep.get("set", {})
    if not isinstance(sets, dict):
        raise _error(source, "sweep.set", "sweep.set must be a table of \"SECTION.PARAM\" = [values...].")
    sets = dict(sets)
    for key, values in sets.items():
        if not isinstance(values, list) or not values:
            raise _error(source, f"sweep.set.{key}", f"sweep.set \"{key}\" = {short_repr(values)} must be a non-empty "
                         "list of values, e.g. \"model.depth\" = [4, 6].")
        if key in SINGLE_KINDS:
            sets[key] = _plugin_choices(key, values, bool(removal or onset), f"{key}.id" in sets, source)
            continue
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
    check_size(removal, onset, sets, count if count is not None else len(seeds), baseline, limit, source)
    seeds = list(range(count)) if count is not None else [int(s) for s in seeds]
    return SweepSpec(name=name, base=data, seeds=seeds, removal=removal, onset=onset,
                     sets=sets, baseline=baseline, source=source, max_runs=limit)


PLUGIN_EXAMPLES = {
    "deficit": '[{id = "deficits.blur", size = 8}, {id = "deficits.noise", std = 0.5}, "deficits.flip"]',
    "model": '[{id = "models.cnn", depth = 4}, {id = "models.fc", depth = 2}]',
    "dataset": '[{id = "datasets.synthetic", classes = 4}, "datasets.cifar10"]',
}


def _plugin_choices(section: str, values: list[Any], window_axis: bool, has_id_axis: bool,
                    source) -> list[dict[str, Any]]:
    """The values of a per-plugin axis (``"deficit" = [{id = ..., size = 8}, "deficits.flip"]``)
    as tables, each with its ``id`` and the settings of that plugin alone."""
    key = f"sweep.set.{section}"
    form = f'each value is a plugin id or a table of its id and its own settings, e.g. "{section}" = ' \
           + PLUGIN_EXAMPLES[section]
    if has_id_axis:
        raise _error(source, key, f'sweep.set has both "{section}" and "{section}.id", which both choose the '
                     f"{section}; keep one (\"{section}\" gives each plugin its own settings).")
    choices: list[dict[str, Any]] = []
    for value in values:
        choice = {"id": value} if isinstance(value, str) else value
        if not isinstance(choice, dict) or not isinstance(choice.get("id"), str) or not choice["id"].strip():
            raise _error(source, key, f'sweep.set "{section}" = {short_repr(values)}: {short_repr(value)} is not a '
                         f"{section}: {form}.")
        moved = sorted({"start", "end"} & set(choice)) if section == "deficit" and window_axis else []
        if moved:
            raise _error(source, key, f'sweep.set "{section}" sets {", ".join(moved)} for {choice["id"]}, which '
                         "conflicts with the sweep's own axes: sweep.removal / sweep.onset place the window.")
        if choice in choices:
            raise _error(source, key, f'sweep.set "{section}" lists {short_repr(value)} twice; list each once.')
        choices.append(dict(choice))
    return choices


def choice_text(choice: dict[str, Any]) -> str:
    """A per-plugin axis value as the plain text a sweep record keeps: ``deficits.blur(size=8)``."""
    settings = ", ".join(f"{k}={v}" for k, v in choice.items() if k != "id")
    return f"{choice['id']}({settings})" if settings else str(choice["id"])


def _max_runs(sweep: dict[str, Any], given: int | None, source) -> int:
    """The limit on the grid's size: --max-runs, else sweep.max_runs, else :data:`MAX_RUNS`."""
    value = sweep.get("max_runs", MAX_RUNS)
    if not (_is_int(value) and value >= 1):
        raise _error(source, "sweep.max_runs", f"sweep.max_runs = {short_repr(value)} must be a whole number "
                     f"of runs, at least 1 (the default is {MAX_RUNS:,}).")
    return given if given is not None else value


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
        raise _error(source, f"sweep.{axis}.values", f"sweep.{axis}.values = {short_repr(values)} must be a non-empty "
                     "list of epochs (integers >= 0), e.g. values = [0, 4, 8].")
    if len(set(values)) != len(values):
        raise _error(source, f"sweep.{axis}.values", f"sweep.{axis}.values = {short_repr(values)} repeats a value.")
    for key in ("after", "width"):
        if key in table and not (_is_int(table[key]) and table[key] >= (1 if key == "width" else 0)):
            raise _error(source, f"sweep.{axis}.{key}", f"sweep.{axis}.{key} = {short_repr(table[key])} must be a whole "
                         f"number of epochs ({'at least 1' if key == 'width' else '0 or more'}).")
    if axis == "removal" and table["after"] < 1:
        raise _error(source, "sweep.removal.after", "sweep.removal.after must be at least 1: the runs are "
                     "scored on the epochs after removal.")
    return dict(table)


def expand(sweep: SweepSpec, registry: Registry, sets: list[str] | tuple[str, ...] = ()) -> list[PlannedRun]:
    """Every run of the grid, as complete, validated specs. ``sets`` apply to all (like --set).

    A grid above ``sweep.max_runs`` (its seeds replaced by ``--seeds``, say) is refused first."""
    check_size(sweep.removal, sweep.onset, sweep.sets, len(sweep.seeds), sweep.baseline, sweep.max_runs, sweep.source)
    primary_values: list[tuple[str | None, Any]] = [(None, None)]
    if sweep.removal:
        primary_values = [("removal", v) for v in sweep.removal["values"]]
    elif sweep.onset:
        primary_values = [("onset", v) for v in sweep.onset["values"]]
    set_keys = list(sweep.sets)
    combos = list(itertools.product(*(sweep.sets[k] for k in set_keys))) if set_keys else [()]
    runs: list[PlannedRun] = []
    for combo in combos:
        choice = dict(zip(set_keys, combo, strict=True))
        # A record keeps plain values: a per-plugin axis value is kept as its text.
        plain = {k: choice_text(v) if isinstance(v, dict) else v for k, v in choice.items()}
        for axis_name, value in primary_values:
            for seed in sweep.seeds:
                axis = {axis_name: value} if axis_name else {}
                axis.update(plain)
                axis["seed"] = seed
                runs.append(_make_run(sweep, registry, sets, axis, baseline=False, choice=choice))
        if sweep.baseline:
            for seed in sweep.seeds:
                axis = dict(plain)
                axis["seed"] = seed
                runs.append(_make_run(sweep, registry, sets, axis, baseline=True, choice=choice))
    return runs


def _make_run(sweep: SweepSpec, registry, sets, axis: dict[str, Any], baseline: bool,
              choice: dict[str, Any] | None = None) -> PlannedRun:
    """One run's spec: the base, this combination's sweep.set values (``choice``; by default
    the axis values), the window axis and the seed."""
    raw = copy.deepcopy(sweep.base)
    raw.pop("name", None)
    if choice is None:
        choice = {k: v for k, v in axis.items() if k not in PRIMARY and k != "seed"}
    swapped: dict[str, str] = {}  # section -> the sweep.set key that chose its plugin
    for key, value in choice.items():
        parts = key.split(".")
        if parts[0] == "metrics":
            raw.setdefault("metrics", {}).setdefault(parts[1], {})[parts[2]] = value
            continue
        if key in SINGLE_KINDS:  # "deficit" = [{id = ..., size = 8}, ...]: the id and its own settings
            raw.setdefault(key, {}).update(value)
            swapped[key] = key
            continue
        section, param = parts
        raw.setdefault(section, {})[param] = value
        if param == "id" and section in SINGLE_KINDS:
            swapped[section] = key
    label = PlannedRun(None, axis, baseline).label()  # type: ignore[arg-type]
    for section, key in swapped.items():
        _check_kept_settings(sweep, registry, sets, raw, section, key, label)
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
    raw["name"] = f"{sweep.name}: {label}"
    try:
        spec = build_spec(registry, raw, sets=sets)
    except CritUIError as exc:
        key = getattr(exc, "key", None)
        axis_key = _axis_key_for(key, choice)
        where = _where(sweep.source, axis_key or key or "sweep")
        raise CritUIError(f"{where}: the run {label} is not valid: {exc}") from None
    if spec.window() is not None and spec.epochs < spec.window()[1]:
        raise _error(sweep.source, "train.epochs", f"the run {label} ends at epoch {spec.epochs}, before its "
                     f"deficit window [{spec.window()[0]}, {spec.window()[1]}) closes; raise train.epochs or sweep.onset.after.")
    return PlannedRun(spec, axis, baseline)


def _check_kept_settings(sweep: SweepSpec, registry, sets, raw: dict[str, Any], section: str, key: str,
                         label: str) -> None:
    """A plugin swapped in by sweep.set ``key`` must declare every setting its section is given
    (by the base, another axis or --set): none is dropped without a word."""
    table = raw[section]
    try:
        info = registry.get(str(table.get("id")), SINGLE_KINDS[section])
    except CritUIError:
        return  # an unknown id: build_spec names it, with the closest match
    declared = {p.name for p in info.params}
    given = {name: ("base", value) for name, value in table.items() if name != "id"}
    for item in sets:
        name, _, value = item.partition("=")
        param = name.strip()[len(section) + 1:] if name.strip().startswith(f"{section}.") else "id"
        if param != "id":  # --set deficit.id=... picks the plugin itself; build_spec applies it
            given[param] = ("--set", value)
    unknown = {name: how for name, how in given.items() if name not in declared}
    if not unknown:
        return
    base_table = sweep.base.get(section) or {}
    origins = []
    for name, (how, value) in unknown.items():
        if how == "--set":
            origins.append(f"--set {section}.{name}={value}")
        elif name in base_table and base_table[name] == value:
            origins.append(f"{name} = {short_repr(value)} in [{section}]")
        else:
            origins.append(f'{name} = {short_repr(value)} from sweep.set "{section}.{name}"')
    names = ", ".join(unknown)
    takes = ", ".join(p.name for p in info.params) or "no settings"
    places = [f"[{section}]"] * any(how == "base" for how, _ in unknown.values()) \
        + ["--set"] * any(how == "--set" for how, _ in unknown.values())
    first = next(iter(unknown))
    where = f"sweep.set.{key}" if unknown[first][0] == "--set" or first not in base_table else f"{section}.{first}"
    raise _error(sweep.source, where, (
        f"the run {label} swaps in {info.id} (sweep.set \"{key}\"), which has no setting {names}, "
        f"given by {'; '.join(origins)}. A swapped-in plugin never drops a setting silently. Give each plugin "
        f"its own settings in one axis, e.g. \"{section}\" = {_example(section, base_table, unknown, info.id)}, "
        f"and remove {names} from {' and '.join(places) or 'the other axes'}. {info.id} takes: {takes}."))


def _example(section: str, base_table: dict[str, Any], unknown: dict[str, Any], swapped_in: str) -> str:
    """The per-plugin form of this very sweep: the base's plugin with the settings, the other without."""
    owner = base_table.get("id")
    if not owner or owner == swapped_in:
        return PLUGIN_EXAMPLES[section]
    settings = "".join(f", {name} = {_toml(value)}" for name, (_, value) in unknown.items())
    return f'[{{id = "{owner}"{settings}}}, "{swapped_in}"]'


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return short_repr(value)


def _axis_key_for(key: str | None, choice: dict[str, Any]) -> str | None:
    """Point an error about a swept parameter at the sweep.set line that sets it (for a
    per-plugin axis, ``"deficit"``, when its entry gives the id or the parameter)."""
    if key and key in choice:
        return f"sweep.set.{key}"
    section, _, param = (key or "").partition(".")
    if isinstance(choice.get(section), dict) and param in choice[section]:
        return f"sweep.set.{section}"
    return None
