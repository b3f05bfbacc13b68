"""Finding plugins: the built-ins and every entry point of group ``critui``, by id.

Built-ins go through the same hooks as third-party plugins. Each entry point is loaded,
and each of its hooks called, inside its own try/except: a broken plugin is recorded in
``Registry.failures`` (shown by ``critui plugins``) and the rest keep working.

Environment:

- ``CRITUI_LOAD_PLUGINS``: comma-separated allow-list of entry-point or distribution
  names to load. Unset loads all; set but empty loads built-ins only.
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

# Every deficit is active in a window of epochs, start <= epoch < end.
WINDOW_PARAMS = (
    Param("start", "int", 0, "first epoch with the deficit (inclusive)", min=0),
    Param("end", "int", 8, "epoch the deficit is removed at (exclusive): active while start <= epoch < end", min=0),
)


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
class Registry:
    """All plugins that loaded, by id, and the ones that failed."""

    plugins: dict[str, PluginInfo] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    failures: list[LoadFailure] = field(default_factory=list)

    def of_kind(self, kind: str) -> list[PluginInfo]:
        return [p for p in self.plugins.values() if p.kind == kind]

    def get(self, plugin_id: str, kind: str | None = None) -> PluginInfo:
        """Look a plugin up by ``KIND.NAME`` (or an alias); a clear error if unknown."""
        plugin_id = plugin_id.strip()
        plugin_id = self.aliases.get(plugin_id, plugin_id)
        if plugin_id in self.plugins and (kind is None or self.plugins[plugin_id].kind == kind):
            return self.plugins[plugin_id]
        raise CritUIError(self.unknown_message(plugin_id, kind))

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
        failed = [f for f in self.failures if plugin_id.split(".")[-1] in f.source]
        broken = (
            f" A plugin named like it failed to load: {failed[0].error} (see `critui plugins`)."
            if failed
            else ""
        )
        return (
            f"Unknown {what} {plugin_id!r}.{hint}{form} Known: {', '.join(candidates) or 'none'}."
            f"{broken} Run `critui plugins` to list every plugin and its parameters."
        )


def _allow_list() -> set[str] | None:
    raw = os.environ.get("CRITUI_LOAD_PLUGINS")
    if raw is None:
        return None
    return {name.strip() for name in raw.split(",") if name.strip()}


def _strict() -> bool:
    return os.environ.get("CRITUI_STRICT_PLUGINS", "") not in ("", "0", "false", "no")


def build_registry() -> Registry:
    """Load the built-ins and every allowed entry point, isolating each one's failures."""
    from critui.builtin import datasets, deficits, launchers, metrics, models, ray_launcher

    registry = Registry()
    manager = pluggy.PluginManager("critui")
    manager.add_hookspecs(hookspecs)
    sources: dict[str, tuple[str, str]] = {}
    for module in (deficits, models, datasets, metrics, launchers, ray_launcher):
        manager.register(module, name=f"critui.builtin.{module.__name__.rsplit('.', 1)[1]}")
        sources[manager.get_name(module)] = ("critui", __version__)

    allowed = _allow_list()
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist_name = ep.dist.name if ep.dist else "?"
        dist_version = ep.dist.version if ep.dist else "?"
        if allowed is not None and ep.name not in allowed and dist_name not in allowed:
            continue
        try:
            module = ep.load()
            if not isinstance(module, ModuleType):
                raise TypeError(f"entry point {ep.value!r} is not a module")
            manager.register(module, name=ep.name)
        except Exception as exc:  # noqa: BLE001 - a broken plugin must never break critui
            _fail(registry, ep.name, dist_name, dist_version, exc)
            continue
        sources[ep.name] = (dist_name, dist_version)

    for kind in KINDS:
        hook = getattr(manager.hook, f"critui_register_{kind}")
        for impl in hook.get_hookimpls():
            dist_name, dist_version = sources.get(impl.plugin_name, ("?", "?"))

            def register(cls: type, _impl=impl, _kind=kind, _dist=(dist_name, dist_version)) -> None:
                _add(registry, cls, _kind, _impl.plugin_name, *_dist)

            try:
                impl.function(register=register)
            except Exception as exc:  # noqa: BLE001
                _fail(registry, impl.plugin_name, dist_name, dist_version, exc)
    return registry


def _add(registry: Registry, cls: type, kind: str, source: str, dist: str, version: str) -> None:
    base = BASES[kind]
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise TypeError(f"{cls!r} registered as one of the {kind} is not a subclass of {base.__name__}")
    if not cls.name or "." in cls.name:
        raise ValueError(f"{cls.__name__} needs a `name` without dots")
    for p in cls.params:
        if not isinstance(p, Param):
            raise TypeError(f"{cls.__name__}.params must hold critui.params.Param, got {p!r}")
        p.parse(p.default, f"{kind}.{cls.name}.{p.name} (its default)")
    plugin_id = f"{kind}.{cls.name}"
    if plugin_id in registry.plugins:
        raise ValueError(f"{plugin_id} is already registered by {registry.plugins[plugin_id].distribution}")
    registry.plugins[plugin_id] = PluginInfo(plugin_id, kind, cls.name, cls, dist, version)
    for alias in cls.aliases:
        registry.aliases[f"{kind}.{alias}"] = plugin_id


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
