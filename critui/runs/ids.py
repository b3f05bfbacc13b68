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
from dataclasses import dataclass

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


@dataclass(frozen=True)
class IdForm:
    """One kind of id: its pattern, and how a refusal describes it to the person who typed it."""

    kind: str  # "run" or "sweep"
    pattern: re.Pattern[str]
    looks_like: str  # an example, and what its parts are
    folder: str  # where its folders live under the home
    instead: str  # what to give instead

    def check(self, text: object, where: str = "") -> str:
        """``text`` if it has this form; else a CritUIError naming ``where`` it came from."""
        if isinstance(text, str) and self.pattern.fullmatch(text) is not None:
            return text
        source = f" in {where}" if where else ""
        raise CritUIError(
            f"{text!r}{source} is not a critui {self.kind} id. {self.kind.capitalize()} ids look like "
            f"{self.looks_like} and name the {self.kind}'s folder under {self.folder}; {self.instead}."
        )


RUN_FORM = IdForm("run", RUN_ID, "20261130-142452-89f4 (the time the run was made, then random hex)", "runs/",
                  "use one from `critui runs`, a unique part of one, or `last`")
SWEEP_FORM = IdForm("sweep", SWEEP_ID, "demo-removal-20261130-142452-3fa9c1", "sweeps/",
                    "use one from the list `critui report` prints, a unique prefix of one, or `last`")
check_run_id = RUN_FORM.check
check_sweep_id = SWEEP_FORM.check
