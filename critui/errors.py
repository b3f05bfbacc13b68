"""The one exception type that reaches the person at the keyboard.

Anything raised as a ``CritUIError`` is printed by the CLI as a single paragraph
(what went wrong, the value, the fix) and ends the command with exit status 2,
never with a traceback. So is an OSError that the machine caused (a full disk, a folder
critui may not write), through :func:`environment_hint`. Everything else is a bug and keeps
its traceback.
"""

import errno


class CritUIError(Exception):
    """A problem with the user's input or environment, with a message that says how to fix it."""

    exit_code = 2


def environment_hint(exc: OSError) -> str | None:
    """The fix for an OSError the user's machine caused (a full disk, a read-only folder), or
    None for any other. critui writes files whole or not at all, so none is left half-written."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return ("The disk is full; nothing was half-written. Free some space, or use a critui home "
                "on another disk with --home DIR or CRITUI_HOME=DIR, and try again.")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return ("critui cannot write there; nothing was half-written. Choose a writable critui home "
                "with --home DIR or CRITUI_HOME=DIR, and try again.")
    return None


def describe_os_error(exc: OSError) -> str | None:
    """One paragraph for an OSError the machine caused, or None (then it is a bug)."""
    if (hint := environment_hint(exc)) is None:
        return None
    where = f" ({exc.filename})" if exc.filename else ""
    return f"{exc.strerror or exc}{where}. {hint}"
