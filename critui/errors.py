"""The one exception type that reaches the person at the keyboard.

Anything raised as a ``CritUIError`` is printed by the CLI as a single paragraph
(what went wrong, the value, the fix) and ends the command with exit status 2,
never with a traceback. Everything else is a bug and keeps its traceback.
"""


class CritUIError(Exception):
    """A problem with the user's input or environment, with a message that says how to fix it."""

    exit_code = 2
