"""What a run id and a sweep id may look like: critui's own forms, and nothing else.

An id names a folder under the critui home (``runs/<run-id>/``, ``sweeps/<sweep-id>/``), so an
id read from an index, a ``run.json``, a ``sweep.json`` or the command line is checked against
these forms before it ever becomes part of a path: ``..``, ``/``, an absolute path or an empty
string can never reach a delete or a write outside the home.
"""

from __future__ import annotations

import re
import secrets
import time

from critui.errors import CritUIError

# 20261130-142452-89f4: creation time, then random hex (4 digits; more are accepted)
RUN_ID = re.compile(r"\d{8}-\d{6}-[0-9a-f]{4,16}")
# demo-removal-20261130-142452-3fa9c1: a slug of the sweep's name, the time, random hex.
# Sweeps made before the random part was added end at the time; they stay readable.
SWEEP_ID = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,60}[a-z0-9])?-\d{8}-\d{6}(?:-[0-9a-f]{4,16})?")


def is_run_id(text: object) -> bool:
    return isinstance(text, str) and RUN_ID.fullmatch(text) is not None


def is_sweep_id(text: object) -> bool:
    return isinstance(text, str) and SWEEP_ID.fullmatch(text) is not None


def new_run_id() -> str:
    """Sortable and unique across processes: time, then random hex."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


def new_sweep_id(name: str) -> str:
    """A slug of the sweep's name, the time, and random hex, so that two sweeps started in the
    same second never share an id (the caller still creates the folder exclusively)."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40].strip("-") or "sweep"
    return f"{slug}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def check_run_id(text: object, where: str = "") -> str:
    """``text`` if it is a run id of critui's form; else a CritUIError naming ``where`` it came from."""
    if is_run_id(text):
        return text  # type: ignore[return-value]
    source = f" in {where}" if where else ""
    raise CritUIError(
        f"{text!r}{source} is not a critui run id. Run ids look like 20261130-142452-89f4 (the "
        "time the run was made, then random hex) and name the run's folder under runs/; use one "
        "from `critui runs`, a unique part of one, or `last`."
    )


def check_sweep_id(text: object, where: str = "") -> str:
    """``text`` if it is a sweep id of critui's form; else a CritUIError naming ``where``."""
    if is_sweep_id(text):
        return text  # type: ignore[return-value]
    source = f" in {where}" if where else ""
    raise CritUIError(
        f"{text!r}{source} is not a critui sweep id. Sweep ids look like "
        "demo-removal-20261130-142452-3fa9c1 and name the sweep's folder under sweeps/; use one "
        "from the list `critui report` prints, a unique prefix of one, or `last`."
    )
