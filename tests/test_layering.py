"""The layers of critui, read from its source: who may import whom.

Every ``import`` counts, at any depth (a function's lazy import runs as surely as a module's
first line). The built-in plugins use only the contract a third-party plugin uses, the worker
side never reaches the managing side or the TUI, and no module imports itself round a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import critui

PACKAGE_DIR = Path(critui.__file__).parent

# What a built-in plugin may not reach: the managing side, the worker it is started as, the
# TUI and the CLI. A third-party plugin has nothing else either.
BUILTIN_MAY_NOT_IMPORT = ("critui.runs", "critui.train.worker", "critui.tui", "critui.cli")
# The worker side (critui.train) runs in the worker process, which has no manager and no TUI.
TRAIN_MAY_NOT_IMPORT = ("critui.runs", "critui.tui", "critui.cli")
# The TUI is on the managing side; what it shows of training comes through critui.runs.
TUI_MAY_NOT_IMPORT = ("critui.train", "critui.cli")
# Import edges (importer, imported) allowed to close a cycle, each with the reason. Empty: the
# goal is that none is needed.
KNOWN_CYCLE_EDGES: dict[tuple[str, str], str] = {}


def module_files() -> dict[str, Path]:
    """Every module of the critui package, by dotted name (a package by its ``__init__``)."""
    modules = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = ("critui", *path.relative_to(PACKAGE_DIR).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def imported_names(module: str, path: Path) -> set[str]:
    """The dotted names ``module`` imports anywhere in its source, relative imports resolved;
    ``from A import B`` gives ``A.B`` (which may be a module or a name in ``A``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def resolve(name: str, modules: dict[str, Path]) -> set[str]:
    """The critui modules that importing ``name`` runs: the longest prefix that is a module,
    and every package above it (whose ``__init__`` runs first)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in modules:
            return {".".join(parts[:i]) for i in range(1, end + 1)}
    return set()


def import_graph() -> dict[str, set[str]]:
    """Each critui module and the critui modules it imports (not counting itself)."""
    modules = module_files()
    graph = {}
    for module, path in modules.items():
        targets = set()
        for name in imported_names(module, path):
            if name == "critui" or name.startswith("critui."):
                targets |= resolve(name, modules)
        graph[module] = targets - {module}
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles a depth-first search meets, one per back edge, each as the list of
    modules round it (the first repeated at the end)."""
    cycles, state, stack = [], {}, []

    def visit(module: str) -> None:
        state[module] = "open"
        stack.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                cycles.append([*stack[stack.index(target):], target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module)
    return cycles


def offending_imports(prefix: str, forbidden: tuple[str, ...]) -> list[str]:
    graph = import_graph()
    return [
        f"{module} imports {target}"
        for module, targets in sorted(graph.items())
        if module == prefix or module.startswith(prefix + ".")
        for target in sorted(targets)
        if any(target == f or target.startswith(f + ".") for f in forbidden)
    ]


def test_the_graph_sees_lazy_and_relative_imports(tmp_path):
    """The reader itself: an import inside a function, a relative one and a ``from PACKAGE
    import MODULE`` are all found, or the checks below would pass on anything."""
    source = tmp_path / "mod.py"
    source.write_text("def f():\n    from critui.train import worker\n    from . import kinds\n")
    assert imported_names("critui.mod", source) == {"critui.train", "critui.train.worker", "critui", "critui.kinds"}
    modules = module_files()
    assert resolve("critui.train.worker", modules) == {"critui", "critui.train", "critui.train.worker"}
    assert resolve("critui.train.worker.main", modules) == {"critui", "critui.train", "critui.train.worker"}
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_builtin_plugins_use_only_the_plugin_contract():
    offending = offending_imports("critui.builtin", BUILTIN_MAY_NOT_IMPORT)
    assert not offending, (
        "The built-in plugins must depend only on the plugin contract (critui.hookspecs, kinds, "
        "params, errors, files, launching), as third-party plugins do:\n" + "\n".join(offending)
    )


def test_the_worker_side_imports_nothing_of_the_managing_side():
    offending = offending_imports("critui.train", TRAIN_MAY_NOT_IMPORT)
    assert not offending, "critui.train runs in the worker process:\n" + "\n".join(offending)


def test_the_tui_imports_nothing_of_the_worker_side():
    offending = offending_imports("critui.tui", TUI_MAY_NOT_IMPORT)
    assert not offending, "critui.tui lives on the managing side:\n" + "\n".join(offending)


def test_no_import_cycle():
    graph = import_graph()
    for importer, imported in KNOWN_CYCLE_EDGES:
        graph[importer].discard(imported)
    cycles = find_cycles(graph)
    assert not cycles, "Import cycles among critui's modules:\n" + "\n".join(" -> ".join(c) for c in cycles)
