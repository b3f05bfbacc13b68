"""Typed parameter declarations, shared by the CLI, the TOML configs, the TUI forms and errors.

A plugin declares its parameters once, as a tuple of :class:`Param`. Everything that takes
a value from a person goes through :meth:`Param.parse`, so ``--set deficit.size=3``, a
TOML value and a TUI form field give the same validation and the same messages.
"""

from __future__ import annotations

import math
import reprlib
from dataclasses import dataclass, field
from typing import Any

from critui.errors import CritUIError

PARAM_TYPES = ("int", "float", "str", "bool", "choice")

# The largest int any parameter takes, declared maximum or not: what torch and numpy hold.
INT64_MAX = 2**63 - 1

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class ParamError(CritUIError):
    """A value that does not fit its parameter declaration."""


@dataclass(frozen=True)
class Param:
    """One typed, documented, bounded parameter of a plugin or of the training setup.

    ``type`` is one of ``int``, ``float``, ``str``, ``bool`` or ``choice`` (a string from
    ``choices``). ``min``/``max`` bound numbers, inclusively; ``min_open=True`` (``max_open``)
    excludes the bound itself: ``Param("p", "float", 0.5, "...", min=0, max=1, min_open=True)``
    accepts (0, 1]. ``default`` must itself be valid.
    """

    name: str
    type: str
    default: Any
    help: str
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] = field(default_factory=tuple)
    min_open: bool = False
    max_open: bool = False

    def __post_init__(self) -> None:
        if self.type not in PARAM_TYPES:
            raise ValueError(f"parameter {self.name!r}: type must be one of {PARAM_TYPES}")
        if self.type == "choice" and not self.choices:
            raise ValueError(f"parameter {self.name!r}: a choice parameter needs choices")

    def parse(self, raw: Any, where: str = "") -> Any:
        """Turn ``raw`` (a string from the command line or a TOML value) into a checked value.

        ``where`` names the setting in error messages, e.g. ``deficit.size``.
        """
        label = where or self.name
        value = self._convert(raw, label)
        self._check(value, label)
        return value

    def describe(self) -> str:
        """A short human description of the accepted values: ``int, 1..32``."""
        if self.type == "choice":
            return "one of " + ", ".join(self.choices)
        bounds = ""
        if self.min is not None or self.max is not None:
            lo = "" if self.min is None else _fmt(self.min)
            hi = "" if self.max is None else _fmt(self.max)
            bounds = f", {lo}..{hi}"
            if self.min_open or self.max_open:  # interval notation only where a bound is excluded
                bounds = f", {'(' if self.min_open else '['}{lo or '-inf'}, {hi or 'inf'}{')' if self.max_open else ']'}"
        return f"{self.type}{bounds}"

    def accepted(self) -> str:
        """The accepted values in words, for errors: ``an int from 1 to 32``."""
        if self.type == "choice":
            return "one of " + ", ".join(self.choices)
        kind = f"{_article(self.type)} {self.type}"
        if self.min_open or self.max_open:
            low = None if self.min is None else f"{'above' if self.min_open else 'at least'} {_fmt(self.min)}"
            high = None if self.max is None else f"{'below' if self.max_open else 'at most'} {_fmt(self.max)}"
            return f"{kind} " + " and ".join(b for b in (low, high) if b)
        if self.min is not None and self.max is not None:
            return f"{kind} from {_fmt(self.min)} to {_fmt(self.max)}"
        if self.min is not None:
            return f"{kind} of at least {_fmt(self.min)}"
        if self.max is not None:
            return f"{kind} of at most {_fmt(self.max)}"
        return kind

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "type": self.type,
            "default": self.default,
            "help": self.help,
        }
        if self.min is not None:
            out["min"] = self.min
        if self.max is not None:
            out["max"] = self.max
        if self.choices:
            out["choices"] = list(self.choices)
        if self.min_open:
            out["min_open"] = True
        if self.max_open:
            out["max_open"] = True
        return out

    def _convert(self, raw: Any, label: str) -> Any:
        try:
            if self.type == "bool":
                if isinstance(raw, bool):
                    return raw
                text = str(raw).strip().lower()
                if text in _TRUE:
                    return True
                if text in _FALSE:
                    return False
                raise ValueError
            if self.type == "int":
                if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
                    raise ValueError
                return int(str(raw).strip()) if isinstance(raw, str) else int(raw)
            if self.type == "float":
                if isinstance(raw, bool):
                    raise ValueError
                value = float(raw)
                if not math.isfinite(value):
                    raise ValueError
                return value
            if isinstance(raw, (dict, list)):
                raise ValueError
            return str(raw)
        except (TypeError, ValueError):
            raise ParamError(
                f"{label} must be {self.accepted()}, got {short_repr(raw)}. {_about(self.help)}"
            ) from None

    def _check(self, value: Any, label: str) -> None:
        if self.type == "choice" and value not in self.choices:
            raise ParamError(
                f"{label} must be one of {', '.join(self.choices)}; got {short_repr(value)}. {self.help}"
            )
        if self.type in ("int", "float"):
            if self.min is not None and (value < self.min or (self.min_open and value == self.min)):
                where = "is below its minimum" if value < self.min else "equals its excluded minimum"
                raise ParamError(
                    f"{label}={short_repr(value)} {where} of {_fmt(self.min)}: use {self.accepted()}. "
                    f"{_about(self.help)}"
                )
            if self.max is not None and (value > self.max or (self.max_open and value == self.max)):
                where = "is above its maximum" if value > self.max else "equals its excluded maximum"
                raise ParamError(
                    f"{label}={short_repr(value)} {where} of {_fmt(self.max)}: use "
                    f"{self.accepted()}. {_about(self.help)}"
                )
        if self.type == "int" and not -INT64_MAX - 1 <= value <= INT64_MAX:
            # Past 64 bits torch and numpy overflow, deep inside a worker: refuse it here.
            raise ParamError(
                f"{label}={short_repr(value)} does not fit in 64 bits: use {self.accepted()}, "
                f"and at most {INT64_MAX} in any case. {_about(self.help)}"
            )


def defaults(params: tuple[Param, ...]) -> dict[str, Any]:
    """The default value of every declared parameter."""
    return {p.name: p.default for p in params}


def resolve(
    params: tuple[Param, ...], given: dict[str, Any], prefix: str
) -> dict[str, Any]:
    """Validate ``given`` against ``params`` and fill in defaults.

    An unknown name is an error that lists the known ones and the closest match.
    """
    by_name = {p.name: p for p in params}
    out = defaults(params)
    for name, raw in given.items():
        if name not in by_name:
            raise ParamError(unknown_name_message(f"{prefix}.{name}", name, list(by_name), prefix))
        out[name] = by_name[name].parse(raw, f"{prefix}.{name}")
    return out


def unknown_name_message(label: str, name: str, known: list[str], prefix: str) -> str:
    import difflib

    if not known:
        return f"{label} is not a setting: {prefix} takes no parameters."
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" Did you mean {prefix}.{close[0]}?" if close else ""
    listed = ", ".join(f"{prefix}.{k}" for k in sorted(known))
    return f"{label} is not a setting.{hint} The settings of {prefix} are: {listed}."


def _fmt(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else repr(number)


def _about(help_text: str) -> str:
    """A parameter's help, in parentheses after an error."""
    return f"({help_text.strip()})" if help_text.strip() else ""


def _article(type_name: str) -> str:
    return "an" if type_name[0] in "aeiou" else "a"


def short_repr(value: Any, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters: a message quotes a value, not a million of them."""
    if isinstance(value, int) and value.bit_length() > 200:
        return f"<an integer of {value.bit_length()} bits>"  # str() of it may even be refused
    short = reprlib.Repr()
    short.maxlist = short.maxdict = short.maxtuple = 8
    short.maxstring = short.maxother = limit
    text = short.repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."
