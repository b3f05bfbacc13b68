"""Plugin distributions made on the fly for tests, and a catalogue of broken plugins.

:func:`install` unpacks a real wheel (``tests.wheels``) into a folder, exactly what
``pip install --target`` leaves there: a module and its ``.dist-info`` with the entry
points. Put the folder on ``sys.path`` (the ``plugin_site`` fixture) or ``PYTHONPATH`` and
``importlib.metadata`` finds the distribution, with no pip and no network.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from tests.wheels import build_wheel


def install(folder: Path, name: str, version: str, modules: dict[str, str], entry_points: dict[str, str]) -> Path:
    """Install distribution ``name`` ``version`` into ``folder``; returns ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    wheels = folder.parent / f".wheels-{folder.name}"
    wheels.mkdir(exist_ok=True)
    with zipfile.ZipFile(build_wheel(wheels, name, version, modules, entry_points)) as wheel:
        wheel.extractall(folder)
    return folder


def deficit_source(*classes: tuple[str, str], hook: str = "critui_register_deficits", extra: str = "") -> str:
    """A plugin module registering one trivial deficit per (class name, plugin name)."""
    lines = ["from critui.hookspecs import hookimpl", "from critui.kinds import Deficit", "from critui.params import Param", ""]
    for cls, name in classes:
        lines += [
            f"class {cls}(Deficit):",
            f"    name = {name!r}",
            f"    description = 'The {name} deficit of ' + __name__",
            "    params = (Param('gain', 'float', 1.0, 'multiplier', min=0.0),)",
            "    def apply(self, x, y, epoch, generator):",
            "        return x * self.settings['gain'], y",
            "",
        ]
    lines += ["@hookimpl", f"def {hook}(register):"]
    lines += [f"    register({cls})" for cls, _ in classes] or ["    pass"]
    return "\n".join(lines) + "\n" + extra


class PluginSite:
    """Folders of installed test distributions on ``sys.path``, and a registry built from them."""

    def __init__(self, root: Path, monkeypatch):
        self.root = root
        self.monkeypatch = monkeypatch
        self.folders: list[Path] = []

    def install(self, name: str, version: str, modules: dict[str, str], entry_points: dict[str, str],
                folder: str | None = None) -> Path:
        path = install(self.root / (folder or name), name, version, modules, entry_points)
        if path not in self.folders:
            self.folders.append(path)
            self.monkeypatch.syspath_prepend(str(path))
        return path

    def pythonpath(self) -> str:
        """The folders for a subprocess's PYTHONPATH."""
        import os

        return os.pathsep.join([*map(str, self.folders), os.environ.get("PYTHONPATH", "")])

    def registry(self):
        from critui.plugins import build_registry

        return build_registry()


def plugin_site_fixture(tmp_path, monkeypatch):
    """A :class:`PluginSite`; the modules it imported and the cached registry are forgotten after."""
    import importlib
    import sys

    from critui.plugins import reset_registry

    before = set(sys.modules)
    site = PluginSite(tmp_path / "site", monkeypatch)
    reset_registry()
    yield site
    for name in set(sys.modules) - before:
        if name.startswith(("critui_", "tp_")):
            del sys.modules[name]
    importlib.invalidate_caches()
    reset_registry()
