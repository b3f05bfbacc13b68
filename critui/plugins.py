"""Finding plugins: the built-ins and every entry point of group ``critui``, by id.

Built-ins go through the same hooks as third-party plugins. Each entry point is loaded,
and each of its hooks called, inside its own try/except: a broken plugin is recorded in
``Registry.failures`` (shown by ``critui plugins``) and the rest keep working. Each class a
hook registers is checked on its own, so one bad declaration costs that class only.

Which plugin owns an id does not depend on the order distributions are found in:

- a built-in id (and alias) always stays the built-in's; a third-party class registering it
  is refused, and the refusal is listed as a conflict;
- an id registered by two third-party distributions is refused in both, and listed with
  both, until ``CRITUI_LOAD_PLUGINS`` picks one (``deficits.contrast=DIST``) or leaves one
  distribution out. Every other class of both distributions still loads.

Environment:

- ``CRITUI_LOAD_PLUGINS``: comma-separated allow-list of entry-point or distribution
  names to load. Unset loads all; set but empty loads built-ins only. An entry
  ``KIND.NAME=DISTRIBUTION`` does not restrict loading: it gives that id to that
  distribution when several register it.
- ``CRITUI_STRICT_PLUGINS=1``: a plugin that fails to load is an error, not a warning.
"""

from __future__ import annotations

import difflib
import os
import traceback
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from types import ModuleType

import pluggy

from critui import __version__, hookspecs
from critui.errors import CritUIError
from critui.kinds import BASES, KINDS, Deficit, Plugin
from critui.params import Param

ENTRY_POINT_GROUP = "critui"
BUILTIN_DISTRIBUTION = "critui"

# Every deficit is active in a window of epochs, start <= epoch < end.
WINDOW_PARAMS = (
    Param("start", "int", 0, "first epoch with the deficit (inclusive)", min=0),
    Param("end", "int", 8, "epoch the deficit is removed at (exclusive): active while start <= epoch < end", min=0),
)
# Keys a config table uses itself: a parameter with one of these names could never be set.
RESERVED_PARAM_NAMES = ("id",)
HOOK_NAMES = tuple(f"critui_register_{kind}" for kind in KINDS)


@dataclass
class PluginInfo:
    """A registered plugin: its class plus where it came from."""

    id: str
    kind: str
    name: str
    cls: type[Plugin]
    distribution: str
    version: str

    @property
    def description(self) -> str:
        return self.cls.description

    @property
    def params(self) -> tuple[Param, ...]:
        """The full parameter schema, including the deficit window every deficit has."""
        own = tuple(self.cls.params)
        return own + WINDOW_PARAMS if issubclass(self.cls, Deficit) else own

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "kind": self.kind,
            "distribution": self.distribution,
            "version": self.version,
            "description": self.description,
            "aliases": [f"{self.kind}.{a}" for a in self.cls.aliases],
            "params": [p.to_json() for p in self.params],
        }


@dataclass
class LoadFailure:
    """A plugin that could not be loaded or registered, and why."""

    source: str
    distribution: str
    version: str
    error: str
    traceback: str = ""

    def to_json(self) -> dict:
        return {
            "source": self.source,
            "distribution": self.distribution,
            "version": self.version,
            "error": self.error,
        }


@dataclass
class Conflict:
    """An id (or alias) registered by more than one distribution.

    ``owner`` is the distribution that keeps it: critui for a built-in id, the one
    ``CRITUI_LOAD_PLUGINS`` picks, or None when the id is refused in all of them.
    """

    id: str
    claimants: list[tuple[str, str]]  # (distribution, version), sorted
    owner: str | None = None

    def distributions(self) -> list[str]:
        return [dist for dist, _ in self.claimants]

    def describe(self) -> str:
        """One sentence: who registers the id and what critui did about it."""
        who = " and ".join(f"{dist} {version}" for dist, version in self.claimants)
        if self.owner == BUILTIN_DISTRIBUTION:
            others = ", ".join(d for d in self.distributions() if d != BUILTIN_DISTRIBUTION)
            return (f"{self.id} is a built-in id; {others} also registers it and is refused there "
                    f"(rename the plugin in {others}).")
        if self.owner is not None:
            return f"{self.id} is registered by {who}; CRITUI_LOAD_PLUGINS gives it to {self.owner}."
        first = self.distributions()[0]
        return (f"{self.id} is registered by {who}, so it is refused in all of them. Pick one with "
                f"CRITUI_LOAD_PLUGINS={self.id}={first} (or uninstall one of them).")

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "distributions": [{"distribution": d, "version": v} for d, v in self.claimants],
            "owner": self.owner,
            "message": self.describe(),
        }


@dataclass
class Registry:
    """All plugins that loaded, by id, the ones that failed, and the ids in conflict."""

    plugins: dict[str, PluginInfo] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    failures: list[LoadFailure] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)
    loaded: dict[str, str] = field(default_factory=dict)  # distribution -> version, every one loaded

    def of_kind(self, kind: str) -> list[PluginInfo]:
        return [p for p in self.plugins.values() if p.kind == kind]

    def get(self, plugin_id: str, kind: str | None = None) -> PluginInfo:
        """Look a plugin up by ``KIND.NAME`` (or an alias); a clear error if unknown."""
        plugin_id = plugin_id.strip()
        plugin_id = self.aliases.get(plugin_id, plugin_id)
        if plugin_id in self.plugins and (kind is None or self.plugins[plugin_id].kind == kind):
            return self.plugins[plugin_id]
        conflict = self.conflict(plugin_id)
        if conflict is not None:
            raise CritUIError(f"Plugin {plugin_id} cannot be used: {conflict.describe()} "
                              "`critui plugins` lists every conflict.")
        raise CritUIError(self.unknown_message(plugin_id, kind))

    def conflict(self, plugin_id: str) -> Conflict | None:
        """The unresolved conflict over ``plugin_id``, if any."""
        return next((c for c in self.conflicts if c.id == plugin_id and c.owner is None), None)

    def distribution_status(self) -> list[dict]:
        """Each third-party distribution: loaded, loaded with N conflicts, or failed."""
        rows: dict[str, dict] = {}
        for dist, version in sorted(self.loaded.items()):
            if dist != BUILTIN_DISTRIBUTION:
                rows[dist] = {"distribution": dist, "version": version, "conflicts": 0, "failures": 0}
        for conflict in self.conflicts:
            for dist, version in conflict.claimants:
                if dist != BUILTIN_DISTRIBUTION and dist != conflict.owner:
                    rows.setdefault(dist, {"distribution": dist, "version": version, "conflicts": 0, "failures": 0})
                    rows[dist]["conflicts"] += 1
        for failure in self.failures:
            rows.setdefault(failure.distribution, {"distribution": failure.distribution, "version": failure.version,
                                                   "conflicts": 0, "failures": 0})
            rows[failure.distribution]["failures"] += 1
        for dist, row in rows.items():
            loaded = dist in self.loaded
            problems = [f"{row['conflicts']} conflict(s)"] * bool(row["conflicts"]) + \
                [f"{row['failures']} failure(s)"] * bool(row["failures"])
            row["status"] = ("loaded" if loaded else "failed") + (f" with {', '.join(problems)}" if problems and loaded else "")
        return [rows[d] for d in sorted(rows)]

    def unknown_message(self, plugin_id: str, kind: str | None) -> str:
        given_kind = plugin_id.split(".", 1)[0] if "." in plugin_id else None
        kind = kind or (given_kind if given_kind in KINDS else None)
        candidates = sorted(p.id for p in self.plugins.values() if kind is None or p.kind == kind)
        names = candidates + sorted(a for a, target in self.aliases.items() if target in candidates)
        close = difflib.get_close_matches(plugin_id, names, n=1, cutoff=0.5)
        if not close and "." not in plugin_id:
            close = [n for n in names if n.split(".", 1)[1] == plugin_id][:1]
        hint = f" Did you mean {close[0]}?" if close else ""
        if "." not in plugin_id or (given_kind not in KINDS):
            form = f" Plugin ids are KIND.NAME, with KIND one of {', '.join(KINDS)}."
        else:
            form = ""
        what = f"{kind} plugin" if kind else "plugin"
        return (
            f"Unknown {what} {plugin_id!r}.{hint}{form} Known: {', '.join(candidates) or 'none'}."
            f"{self._failed_note(plugin_id)} Run `critui plugins` to list every plugin and its parameters."
        )

    def _failed_note(self, plugin_id: str) -> str:
        """The plugins that failed to load, the one named like ``plugin_id`` first: it may be one."""
        if not self.failures:
            return ""
        name = plugin_id.split(".")[-1]
        ordered = sorted(self.failures, key=lambda f: name not in f.source and name not in f.error)
        shown = "; ".join(f"{f.source} from {f.distribution} {f.version}: {_first_line(f.error)}" for f in ordered[:3])
        more = f" and {len(ordered) - 3} more" if len(ordered) > 3 else ""
        return f" {len(ordered)} plugin(s) failed to load, and it may be one of them: {shown}{more}."


def _first_line(text: str) -> str:
    return (text.strip().splitlines() or [""])[0]


def _allow_list() -> set[str] | None:
    """The names ``CRITUI_LOAD_PLUGINS`` allows; None: everything. Picks (``ID=DIST``) are not names."""
    raw = os.environ.get("CRITUI_LOAD_PLUGINS")
    if raw is None:
        return None
    entries = [name.strip() for name in raw.split(",") if name.strip()]
    names = {name for name in entries if "=" not in name}
    if not names and entries:  # only picks: everything loads
        return None
    return names


def _picks() -> dict[str, str]:
    """``KIND.NAME=DISTRIBUTION`` entries of ``CRITUI_LOAD_PLUGINS``: who wins a conflict."""
    raw = os.environ.get("CRITUI_LOAD_PLUGINS") or ""
    picks = {}
    for entry in raw.split(","):
        plugin_id, sep, dist = entry.partition("=")
        if sep and plugin_id.strip() and dist.strip():
            picks[plugin_id.strip()] = _normalise(dist)
    return picks


def _normalise(dist: str) -> str:
    """A distribution name as pip compares them: case and -_. do not matter."""
    import re

    return re.sub(r"[-_.]+", "-", dist.strip()).lower()


def _strict() -> bool:
    return os.environ.get("CRITUI_STRICT_PLUGINS", "") not in ("", "0", "false", "no")


@dataclass
class _Claim:
    """One class a hook registered, before conflicts are settled."""

    cls: type[Plugin]
    kind: str
    source: str
    distribution: str
    version: str

    @property
    def id(self) -> str:
        return f"{self.kind}.{self.cls.name}"

    def names(self) -> list[str]:
        return [self.id] + [f"{self.kind}.{a}" for a in self.cls.aliases]


def build_registry(distributions: set[str] | None = None) -> Registry:
    """Load the built-ins and every allowed entry point, isolating each one's failures.

    ``distributions``, when given, loads only the entry points of those distributions (a
    worker needs only the ones that provide its run's plugins).
    """
    from critui.builtin import datasets, deficits, launchers, metrics, models, ray_launcher

    registry = Registry()
    manager = pluggy.PluginManager("critui")
    manager.add_hookspecs(hookspecs)
    sources: dict[str, tuple[str, str]] = {}
    for module in (deficits, models, datasets, metrics, launchers, ray_launcher):
        manager.register(module, name=f"critui.builtin.{module.__name__.rsplit('.', 1)[1]}")
        sources[manager.get_name(module)] = (BUILTIN_DISTRIBUTION, __version__)
    registry.loaded[BUILTIN_DISTRIBUTION] = __version__

    for ep in _entry_points(distributions):
        dist_name = ep.dist.name if ep.dist else "?"
        dist_version = ep.dist.version if ep.dist else "?"
        try:
            module = ep.load()
            if not isinstance(module, ModuleType):
                raise TypeError(f"entry point {ep.value!r} is not a module")
            _check_hooks(module, ep.value)
            manager.register(module, name=ep.name)
        except Exception as exc:  # noqa: BLE001 - a broken plugin must never break critui
            _fail(registry, ep.name, dist_name, dist_version, exc)
            continue
        sources[ep.name] = (dist_name, dist_version)
        registry.loaded.setdefault(dist_name, dist_version)

    claims: list[_Claim] = []
    for kind in KINDS:
        hook = getattr(manager.hook, f"critui_register_{kind}")
        for impl in hook.get_hookimpls():
            dist_name, dist_version = sources.get(impl.plugin_name, ("?", "?"))

            def register(cls: type, _impl=impl, _kind=kind, _dist=(dist_name, dist_version)) -> None:
                try:
                    _check_registered_class(cls, _kind)
                except Exception as exc:  # noqa: BLE001 - this class is refused, the hook goes on
                    _fail(registry, _impl.plugin_name, *_dist, exc)
                    return
                claims.append(_Claim(cls, _kind, _impl.plugin_name, *_dist))

            try:
                impl.function(register=register)
            except Exception as exc:  # noqa: BLE001
                _fail(registry, impl.plugin_name, dist_name, dist_version, exc)
    _settle(registry, claims)
    registry.failures.sort(key=lambda f: (f.distribution, f.source, f.error))
    return registry


def _entry_points(distributions: set[str] | None) -> list:
    """The allowed entry points of group ``critui``, in an order that does not depend on the
    file system's: by distribution, then entry-point name."""
    allowed = _allow_list()
    wanted = None if distributions is None else {_normalise(d) for d in distributions}
    chosen = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist_name = ep.dist.name if ep.dist else "?"
        if allowed is not None and ep.name not in allowed and dist_name not in allowed:
            continue
        if wanted is not None and _normalise(dist_name) not in wanted:
            continue
        chosen.append(ep)
    return sorted(chosen, key=lambda ep: (_normalise(ep.dist.name if ep.dist else "?"), ep.name, ep.value))


def _settle(registry: Registry, claims: list[_Claim]) -> None:
    """Register every claim whose names are its own; record a conflict for every shared name.

    Decided on the whole set of claims at once, so the outcome never depends on load order.
    """
    by_name: dict[str, list[_Claim]] = {}
    for claim in claims:
        for name in claim.names():
            by_name.setdefault(name, []).append(claim)
    picks = _picks()
    owner_of: dict[str, _Claim | None] = {}
    for name, claimants in sorted(by_name.items()):
        dists = sorted({(c.distribution, c.version) for c in claimants})
        if len({id(c.cls) for c in claimants}) == 1:  # one class, registered more than once
            owner_of[name] = claimants[0]
            continue
        builtin = [c for c in claimants if c.distribution == BUILTIN_DISTRIBUTION]
        picked = [c for c in claimants if _normalise(c.distribution) == picks.get(name)]
        owner = builtin[0] if len(builtin) == 1 else picked[0] if len(picked) == 1 else None
        owner_of[name] = owner
        registry.conflicts.append(Conflict(name, dists, owner.distribution if owner else None))
    for claim in claims:
        if owner_of[claim.id] is not claim:
            continue  # the id itself is refused to this class
        registry.plugins[claim.id] = PluginInfo(claim.id, claim.kind, claim.cls.name, claim.cls,
                                                claim.distribution, claim.version)
        for alias in claim.names()[1:]:
            if owner_of[alias] is claim:
                registry.aliases[alias] = claim.id


def _check_hooks(module: ModuleType, where: str) -> None:
    """Refuse a module with a ``critui_*`` function that is no hook, or a hook without @hookimpl:
    either would silently register nothing."""
    for attr in sorted(vars(module)):
        if not attr.startswith("critui_") or not callable(getattr(module, attr)):
            continue
        if attr not in HOOK_NAMES:
            close = difflib.get_close_matches(attr, HOOK_NAMES, n=1, cutoff=0.6)
            hint = f" Did you mean {close[0]}?" if close else ""
            raise ValueError(
                f"{where} defines {attr}, which is not a critui hook, so it would register nothing.{hint} "
                f"The hooks are {', '.join(HOOK_NAMES)}; rename the function, or rename it without "
                "the critui_ prefix if it is not meant to be one."
            )
        if not hasattr(getattr(module, attr), "critui_impl"):
            raise ValueError(
                f"{where} defines {attr} without the @hookimpl decorator, so critui would never call it. "
                "Decorate it with `@critui.hookspecs.hookimpl`."
            )


def declaration_problem(cls: type, kind: str | None = None) -> tuple[str, str, str] | None:
    """What is wrong with a plugin class's declaration, as (what, detail, fix); None if nothing.

    The loader refuses such a class and the contract kit fails it with the same words.
    """
    base = BASES.get(kind) if kind else next(
        (b for b in BASES.values() if isinstance(cls, type) and issubclass(cls, b)), None)
    if base is None or not (isinstance(cls, type) and issubclass(cls, base)):
        wanted = base.__name__ if base else " or ".join(b.__name__ for b in BASES.values())
        return ("is not a critui plugin class", f"{cls!r} is not a subclass of {wanted}.",
                f"subclass critui.kinds.{wanted if base else 'Deficit (or Model, Dataset, Metric, Launcher)'}.")
    kind = base.kind
    if not isinstance(cls.name, str) or not cls.name or "." in cls.name or cls.name != cls.name.strip() \
            or " " in cls.name:
        return ("has no usable `name`", f"name is {cls.name!r}.",
                "set a class attribute `name` without dots or spaces, e.g. name = \"blur\"; "
                f"the plugin's id is then {kind}.NAME.")
    if not isinstance(cls.description, str) or not cls.description.strip():
        return ("has no `description`", "`critui plugins` and the TUI show it in their lists.",
                "set a one-line class attribute `description`.")
    names: set[str] = set()
    for p in cls.params:
        if not isinstance(p, Param):
            return ("declares a parameter that is not a Param", f"params holds {p!r}.",
                    "declare parameters as critui.params.Param(name, type, default, help, ...).")
        if p.name in names:
            return ("declares a parameter twice", f"{p.name!r} appears more than once in params.",
                    "give each parameter a unique name.")
        names.add(p.name)
        try:
            p.parse(p.default, f"{kind}.{cls.name}.{p.name} (its default)")
        except CritUIError as exc:
            return ("has a parameter whose default is invalid", str(exc),
                    "make the default satisfy the parameter's own type and bounds.")
    reserved = names & set(RESERVED_PARAM_NAMES)
    if reserved:
        return ("declares a parameter with a reserved name", f"{sorted(reserved)} is the key a config table "
                "uses to choose the plugin.", "rename the parameter.")
    if issubclass(cls, Deficit):
        clash = names & {p.name for p in WINDOW_PARAMS}
        if clash:
            return ("declares a window parameter itself", f"{sorted(clash)} are added by critui to every deficit.",
                    "rename the parameter; read the window from self.settings['start'] / ['end'].")
    return None


def _check_registered_class(cls: type, kind: str) -> None:
    problem = declaration_problem(cls, kind)
    if problem is not None:
        what, detail, fix = problem
        label = f"{kind}.{getattr(cls, 'name', '') or '?'} ({getattr(cls, '__qualname__', cls)!s})"
        raise ValueError(f"{label} {what}: {detail} Fix: {fix}")


def _fail(registry: Registry, source: str, dist: str, version: str, exc: Exception) -> None:
    failure = LoadFailure(
        source=source,
        distribution=dist,
        version=version,
        error=f"{type(exc).__name__}: {exc}",
        traceback="".join(traceback.format_exception(exc)),
    )
    if _strict():
        raise CritUIError(
            f"Plugin {source!r} from {dist} {version} failed to load: {failure.error}. "
            "Unset CRITUI_STRICT_PLUGINS to skip broken plugins, or fix or uninstall it."
        )
    registry.failures.append(failure)


def registry_for_run(run_dir) -> Registry:
    """The registry a worker needs: the built-ins plus only the distributions its ``run.json``
    names as providers of its plugins, so that an unused distribution's import costs nothing.

    A run directory without that record (as the launcher check makes) loads everything.
    """
    import json
    from pathlib import Path

    try:
        recorded = json.loads((Path(run_dir) / "run.json").read_text()).get("plugins")
    except (OSError, ValueError):
        recorded = None
    if not isinstance(recorded, dict) or not recorded:
        return get_registry()
    wanted = {str(source.get("distribution")) for source in recorded.values() if isinstance(source, dict)}
    return build_registry(wanted - {BUILTIN_DISTRIBUTION})


_REGISTRY: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry, built on first use."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = build_registry()
    return _REGISTRY


def reset_registry() -> None:
    """Forget the cached registry (tests, and after installing a plugin in-process)."""
    global _REGISTRY
    _REGISTRY = None
