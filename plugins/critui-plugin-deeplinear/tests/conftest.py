"""Let the tests run from a source checkout as well as after ``pip install``.

When critui_deeplinear is not installed, it is imported from this folder's parent; the tests
that need the installed distribution (its entry point) install it themselves into a
scratch environment, or say why they skip.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[1]

if importlib.util.find_spec("critui_deeplinear") is None:
    sys.path.insert(0, str(PACKAGE_ROOT))
