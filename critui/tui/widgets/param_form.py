"""Form fields generated from :class:`critui.params.Param` declarations, validated inline.

Every value goes through :meth:`Param.parse`, so the messages are the ones ``--set`` gives.
"""

from __future__ import annotations

import re
from typing import Any

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Checkbox, Input, Label, Select, Static

from critui.params import Param, ParamError


def field_id(key: str) -> str:
    """A DOM id for the setting ``key`` (``metrics.fisher.every`` -> ``f-metrics-fisher-every``)."""
    return "f-" + re.sub(r"[^A-Za-z0-9_-]", "-", key)


def as_text(value: Any) -> str:
    return "" if value is None else str(value)


class ParamField(Vertical):
    """One parameter: its name, an input fitting its type, its help, and an inline error."""

    DEFAULT_CSS = """
    ParamField {
        height: auto;
        margin-bottom: 0;
    }
    ParamField > Horizontal {
        height: auto;
    }
    ParamField .name {
        width: 18;
        padding: 0 1 0 0;
        text-style: bold;
    }
    ParamField Input, ParamField Select {
        width: 1fr;
    }
    ParamField .help {
        color: $text-muted;
        padding-left: 18;
    }
    ParamField .error {
        color: $error;
        padding-left: 18;
        display: none;
    }
    ParamField.-invalid .error {
        display: block;
    }
    """

    def __init__(self, param: Param, key: str, value: Any = None):
        super().__init__(id=field_id(key))
        self.param = param
        self.key = key
        self.initial = param.default if value is None else value

    def compose(self) -> ComposeResult:
        p = self.param
        with Horizontal():
            yield Label(p.name, classes="name")
            if p.type == "choice":
                yield Select(
                    [(c, c) for c in p.choices], value=self.initial, allow_blank=False, compact=True
                )
            elif p.type == "bool":
                yield Checkbox(p.name, value=bool(self.initial), compact=True)
            else:
                yield Input(as_text(self.initial), placeholder=p.describe(), compact=True)
        yield Static(f"{p.describe()}: {p.help}", classes="help", markup=False)
        yield Static("", classes="error", markup=False)

    @property
    def raw(self) -> Any:
        if self.param.type == "choice":
            return self.query_one(Select).value
        if self.param.type == "bool":
            return self.query_one(Checkbox).value
        return self.query_one(Input).value

    def set_value(self, value: Any) -> None:
        if self.param.type == "choice":
            self.query_one(Select).value = value
        elif self.param.type == "bool":
            self.query_one(Checkbox).value = bool(value)
        else:
            self.query_one(Input).value = as_text(value)

    def validate_value(self) -> Any:
        """The parsed value; shows the error inline and raises ParamError if it does not fit."""
        try:
            value = self.param.parse(self.raw, self.key)
        except ParamError as exc:
            self.error = str(exc)
            raise
        self.error = ""
        return value

    @property
    def error(self) -> str:
        return self._error if hasattr(self, "_error") else ""

    @error.setter
    def error(self, message: str) -> None:
        self._error = message
        self.set_class(bool(message), "-invalid")
        self.query_one(".error", Static).update(message)

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        try:
            self.validate_value()
        except ParamError:
            pass

    def as_setting(self) -> str:
        """``key=value`` for build_spec's ``sets``."""
        value = self.validate_value()
        return f"{self.key}={str(value).lower() if isinstance(value, bool) else value}"
