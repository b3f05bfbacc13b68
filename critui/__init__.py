"""critui: a terminal experiment manager for critical learning periods in deep networks."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("critui")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
