"""critui: a terminal experiment manager for critical learning periods in deep networks."""

from __future__ import annotations


def __getattr__(name: str) -> str:
    # The version is looked up on first use: importlib.metadata costs every command ~50 ms
    # of start-up, and most (`critui runs`, `show`) never print it.
    if name != "__version__":
        raise AttributeError(f"module 'critui' has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        value = version("critui")
    except PackageNotFoundError:  # running from a source tree that was never installed
        value = "0.0.0"
    globals()["__version__"] = value
    return value
