"""Writing files whole or not at all, without following anything planted in the way.

Every file critui writes for keeps (the index, a run's spec and record, a checkpoint, an
export, a sweep's record) goes through :func:`atomic_write` or :func:`atomic_file`: the data
goes to a temporary file made by :func:`tempfile.mkstemp` in the target's folder (an
unpredictable name, created exclusively, so a symlink planted under a guessable name is never
followed), is flushed to disk, and is renamed over the target. A kill at any moment leaves
either the old file or the new one, and at worst a stale temporary, which
:func:`remove_stale_temps` clears later (the next worker in a run directory, reconcile in the
home).

A target that exists but is not a regular file is never replaced by one: a character device
(``-o /dev/null``, ``-o /dev/stdout``) is written in place, and anything else (a symlink, a
folder, a FIFO, a socket) is refused with a message naming it.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from critui.errors import CritUIError

TEMP_SUFFIX = ".critui-tmp"  # every temporary critui makes ends so, and nothing else does
_UMASK = os.umask(0)
os.umask(_UMASK)


def temp_prefix(target: Path) -> str:
    return f".{target.name}."


def is_temp(name: str) -> bool:
    """Whether ``name`` is one of critui's temporary files (or staging folders)."""
    return name.startswith(".") and name.endswith(TEMP_SUFFIX)


def _existing_kind(path: Path) -> str | None:
    """None if ``path`` is absent or a regular file; else what it is, in words."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return None
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISCHR(mode):
        return "device"
    if stat.S_ISLNK(mode):
        return "symbolic link"
    if stat.S_ISDIR(mode):
        return "folder"
    if stat.S_ISFIFO(mode):
        return "named pipe"
    return "special file"


@contextmanager
def atomic_file(path: Path | str, *, fsync: bool = True) -> Iterator[IO[bytes]]:
    """A binary file to write ``path``'s new content to; it replaces ``path`` when the block
    ends without an exception, and vanishes otherwise.

    ``torch.save(state, f)`` and ``f.write(data)`` both work on it.
    """
    path = Path(path)
    kind = _existing_kind(path)
    if kind == "device":  # e.g. -o /dev/null: write to it, never replace it with a file
        with open(path, "wb") as f:
            yield f
        return
    if kind is not None:
        raise CritUIError(
            f"{path} is a {kind}, not a regular file, and critui will not replace it. Choose "
            "another path, or remove it first if it is yours to remove."
        )
    fd, tmp_name = tempfile.mkstemp(prefix=temp_prefix(path), suffix=TEMP_SUFFIX, dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; keep what open() would give
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        raise


def atomic_write(path: Path | str, data: str | bytes, *, fsync: bool = True) -> None:
    """Replace ``path`` with ``data`` (UTF-8 when it is text), whole or not at all."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_file(path, fsync=fsync) as f:
        f.write(payload)


def atomic_copy(source: Path | str, target: Path | str) -> None:
    """Copy ``source`` to ``target`` whole or not at all."""
    with open(source, "rb") as src, atomic_file(target) as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)


def remove_stale_temps(folder: Path | str, *, older_than_s: float = 0.0) -> list[Path]:
    """Remove critui's temporary files in ``folder`` (not below it) older than ``older_than_s``.

    Call it only where no other process may be writing right now (a worker holding its run's
    lock; a manager holding the index lock), or with an age no live write can reach.
    """
    removed = []
    now = time.time()
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return removed
    for entry in entries:
        if not is_temp(entry.name):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
            if now - st.st_mtime < older_than_s:
                continue
            if stat.S_ISDIR(st.st_mode):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                os.unlink(entry.path)
            removed.append(Path(entry.path))
        except OSError:
            continue
    return removed


