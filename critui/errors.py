"""The one exception type that reaches the person at the keyboard.

Anything raised as a ``CritUIError`` is printed by the CLI as a single paragraph
(what went wrong, the value, the fix) and ends the command with exit status 2,
never with a traceback. So is an OSError that the machine caused (a full disk, a folder
critui may not write), through :func:`describe_os_error`. Everything else is a bug and keeps
its traceback.
"""

import errno


class CritUIError(Exception):
    """A problem with the user's input or environment, with a message that says how to fix it."""

    exit_code = 2


def describe_os_error(exc: OSError) -> str | None:
    """One paragraph with the fix for an OSError the user's machine caused (a full disk, a
    folder critui may not write), or None for any other, which is a bug. critui writes files
    whole or not at all, so none is left half-written."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        hint = ("The disk is full; nothing was half-written. Free some space, or use a critui home "
                "on another disk with --home DIR or CRITUI_HOME=DIR, and try again.")
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        hint = ("critui cannot write there; nothing was half-written. Choose a writable critui home "
                "with --home DIR or CRITUI_HOME=DIR, and try again.")
    else:
        return None
    where = f" ({exc.filename})" if exc.filename else ""
    return f"{exc.strerror or exc}{where}. {hint}"
