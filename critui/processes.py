"""Which process ids are critui's own, and signalling only those.

A pid comes from a file anyone may have edited (an ``events.jsonl`` line, the index, a
launcher's job id), and ``os.kill`` reads some values in ways a reader does not expect:
``-1`` is every process the user may signal, ``0`` and other negatives are process groups,
and ``1`` is init. So a pid counts as a live worker only when it is an integer above 1, has a
``/proc`` entry, is no zombie, and its command line names what the caller expects (the run's
id or directory); every signal critui sends to a pid it read goes through
:func:`signal_process`, which checks the same and refuses otherwise.
"""

from __future__ import annotations

import os
from pathlib import Path

_PROC = Path("/proc")


def valid_pid(value: object) -> int | None:
    """``value`` as a pid critui may look at: an int (not a bool) above 1, else None."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 1:
        return None
    return value


def _have_proc() -> bool:
    return (_PROC / "self").exists()


def command_line(pid: int) -> str | None:
    """The process's arguments joined by spaces; None if it is gone or cannot be read."""
    if not _have_proc():  # macOS and the BSDs: ask ps
        import subprocess

        try:
            result = subprocess.run(["ps", "-o", "args=", "-p", str(pid)], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return (result.stdout.strip() or None) if result.returncode == 0 else None
    try:
        raw = (_PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return None
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def pid_alive(pid: object, marker: str | None = None) -> bool:
    """Whether ``pid`` is a live process, and (when ``marker`` is given) one whose command line
    names ``marker`` (a run id, a run directory): anything else is not one of critui's.

    On Linux a missing ``/proc`` entry means dead, and a zombie (finished, not yet reaped) is
    dead too. Without ``/proc`` (macOS) existence is asked of the kernel and the command line
    of ``ps``.
    """
    pid = valid_pid(pid)
    if pid is None:
        return False
    if not _have_proc():
        return _exists_by_signal(pid) and (not marker or marker in (command_line(pid) or ""))
    if not (_PROC / str(pid)).is_dir():
        return False
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    except (OSError, IndexError):
        return False  # it went away between the two reads
    if marker:
        text = command_line(pid)
        if text is None or marker not in text:
            return False  # gone, or the pid now belongs to another program
    return True


def _exists_by_signal(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # pid is > 1 here: this names one process, and sends nothing
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def signal_process(pid: object, signum: int, marker: str) -> bool:
    """Send ``signum`` to ``pid`` only if :func:`pid_alive` says it is the live process that
    ``marker`` names; True if it was sent."""
    if not marker or not pid_alive(pid, marker):
        return False
    try:
        os.kill(int(pid), signum)  # type: ignore[arg-type]
    except (ProcessLookupError, PermissionError):
        return False
    return True
