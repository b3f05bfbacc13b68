"""Where a run's plugins came from, checked again before it continues.

A run records, for each plugin it uses, the distribution and version that provided it
(``run.json`` and the index: ``"plugins": {id: {distribution, version}}``). Resuming it,
forking it or resuming its sweep continues that computation, so the same code must provide
each plugin now:

- a plugin that is no longer provided (uninstalled, failed to load, refused in a conflict)
  is refused before any worker starts, naming the distribution and version to install;
- a plugin now provided by another distribution or version is refused naming both, unless
  the user passes ``--allow-plugin-change``; then the change is written to the run's events
  as ``plugins_changed`` (``critui show`` prints it) and the run's record names the new
  provider.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from critui.errors import CritUIError
from critui.files import atomic_write

ALLOW_FLAG = "--allow-plugin-change"
RUN_META = "run.json"


@dataclass(frozen=True)
class PluginChange:
    """One plugin whose provider differs from the run's record; ``now`` None: not provided."""

    id: str
    recorded: tuple[str, str]  # (distribution, version)
    now: tuple[str, str] | None

    def describe(self) -> str:
        was = f"{self.recorded[0]} {self.recorded[1]}"
        if self.now is None:
            return f"{self.id} came from {was}, which does not provide it here"
        return f"{self.id} came from {was} and now comes from {self.now[0]} {self.now[1]}"

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "recorded": {"distribution": self.recorded[0], "version": self.recorded[1]},
                "now": None if self.now is None else {"distribution": self.now[0], "version": self.now[1]}}


def plugin_changes(recorded: dict[str, dict[str, str]], registry) -> list[PluginChange]:
    """Every recorded plugin whose provider differs now, in id order."""
    changes = []
    recorded = recorded if isinstance(recorded, dict) else {}  # an index is read from disk: untrusted
    for plugin_id, source in sorted(recorded.items()):
        source = source if isinstance(source, dict) else {}
        was = (str(source.get("distribution", "?")), str(source.get("version", "?")))
        info = registry.plugins.get(registry.aliases.get(plugin_id, plugin_id))
        now = None if info is None else (info.distribution, info.version)
        if now != was:
            changes.append(PluginChange(plugin_id, was, now))
    return changes


def check_provenance(doc: dict[str, Any], registry=None, allow_change: bool = False,
                     action: str = "resume", spec=None) -> list[PluginChange]:
    """Refuse to ``action`` run ``doc`` when its plugins' providers changed; the changes allowed.

    Raises ``CritUIError`` for a plugin provided by nothing now (always), and for one provided
    by another distribution or version unless ``allow_change``. With the run's ``spec``, an
    allowed change is refused too when the new provider declares other parameters than the
    run was given: its worker would otherwise fail inside the plugin (a raw ``KeyError``).
    """
    if registry is None:
        from critui.plugins import get_registry

        registry = get_registry()
    changes = plugin_changes(doc.get("plugins") or {}, registry)
    missing = [c for c in changes if c.now is None]
    if missing:
        why = "; ".join(_missing_reason(c, registry) for c in missing)
        install = " ".join(f"'{c.recorded[0]}=={c.recorded[1]}'" for c in missing)
        raise CritUIError(
            f"Cannot {action} run {doc['id']}: {why}. Install what it was trained with "
            f"(pip install {install}) and {action} it again; nothing was started and the run is unchanged."
        )
    if changes and not allow_change:
        raise CritUIError(
            f"Cannot {action} run {doc['id']}: {'; '.join(c.describe() for c in changes)}. Its remaining epochs "
            f"would be trained by other code than its record names. Install what it was trained with "
            f"(pip install {' '.join(repr(f'{c.recorded[0]}=={c.recorded[1]}') for c in changes)}), or pass "
            f"{ALLOW_FLAG} to {action} it anyway: the change is then recorded in its events and shown by "
            f"`critui show`."
        )
    if spec is not None:
        _check_params(doc["id"], changes, spec, registry, action)
    return changes


def _check_params(run_id: str, changes: list[PluginChange], spec, registry, action: str) -> None:
    """The run's recorded settings of each changed plugin must be exactly what its new provider takes."""
    used = {part.id: part.params for part in [spec.dataset, spec.model, spec.deficit, *spec.metrics] if part}
    problems = []
    for change in changes:
        if change.now is None or change.id not in used:
            continue
        declared = [p.name for p in registry.get(change.id).params]
        recorded = used[change.id]
        lacking = [name for name in declared if name not in recorded]
        unknown = [name for name in recorded if name not in declared]
        if lacking or unknown:
            parts = ([f"takes {', '.join(lacking)}, which the run's settings lack"] * bool(lacking)
                     + [f"does not take {', '.join(unknown)}, which they set"] * bool(unknown))
            problems.append(f"{change.id} from {change.now[0]} {change.now[1]} {' and '.join(parts)}")
    if problems:
        raise CritUIError(
            f"Cannot {action} run {run_id}, even with {ALLOW_FLAG}: {'; '.join(problems)}, so the new code "
            f"could not continue it with its settings. Install what it was trained with, or start a new run "
            f"with the new plugin; nothing was started and the run is unchanged."
        )


def _missing_reason(change: PluginChange, registry) -> str:
    conflict = registry.conflict(change.id) if hasattr(registry, "conflict") else None
    if conflict is not None:
        return f"{change.describe()} ({conflict.describe()})"
    failed = [f for f in getattr(registry, "failures", []) if f.distribution == change.recorded[0]]
    if failed:
        return f"{change.describe()} ({failed[0].distribution} {failed[0].version} failed to load: {failed[0].error})"
    return change.describe()


def record_changes(store, run_id: str, changes: list[PluginChange], action: str = "resume") -> None:
    """Write the allowed changes to the run's events and make its record name the new providers."""
    if not changes:
        return
    from critui.events import EventLog

    message = (f"Plugins changed at {action} ({ALLOW_FLAG}): " + "; ".join(c.describe() for c in changes)
               + ". Epochs from here on were trained with the new code.")
    log = EventLog(store.run_dir(run_id))
    try:
        log.write("plugins_changed", message=message, action=action, changes=[c.to_json() for c in changes])
    finally:
        log.close()
    doc = store.get(run_id)
    plugins = dict(doc.get("plugins") or {})
    for c in changes:
        if c.now is not None:
            plugins[c.id] = {"distribution": c.now[0], "version": c.now[1]}
    store.update(run_id, plugins=plugins)
    # The worker loads the distributions run.json names: it must name the new ones.
    meta_path = store.run_dir(run_id) / RUN_META
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        meta["plugins"] = plugins
        atomic_write(meta_path, json.dumps(meta, indent=2, sort_keys=True))
