"""A footer that keeps to one terminal line.

Textual's footer cuts its keys off at the right edge, so on an 80-column terminal the
dashboard lost "Export", "Compare", "Sweeps", "Plugins" and "Quit" mid-word. A screen names
its spare keys in ``FOOTER_SPARE`` (actions, the first dropped first); this footer drops as
few of them as the width needs. Every action stays reachable by its key and listed in the
command palette (ctrl+p).
"""

from __future__ import annotations

from rich.cells import cell_len
from textual import events
from textual.app import ComposeResult
from textual.widgets import Footer
from textual.widgets._footer import FooterKey  # not re-exported by textual.widgets (8.2)

PALETTE_KEY_WIDTH = 12  # "▏^p palette" and its padding


class FittingFooter(Footer):
    """Footer that hides the screen's ``FOOTER_SPARE`` keys, in order, until the rest fit."""

    def __init__(self, *, compact: bool = True) -> None:
        super().__init__(compact=compact)
        self.hidden_actions: frozenset[str] = frozenset()

    def key_widths(self) -> dict[str, int]:
        """Cells each shown action's key takes, as FooterKey renders it (first binding wins)."""
        extra = 2 if self.compact else 3
        widths: dict[str, int] = {}
        for _node, binding, _enabled, _tooltip in self.screen.active_bindings.values():
            if binding.show and binding.action not in widths:
                key = self.app.get_key_display(binding)
                widths[binding.action] = cell_len(key) + cell_len(binding.description) + extra
        return widths

    def actions_to_hide(self, width: int) -> frozenset[str]:
        """The fewest spare actions to drop, in the screen's order, so the keys fit ``width``."""
        widths = self.key_widths()
        needed = sum(widths.values()) + (PALETTE_KEY_WIDTH if self.show_command_palette else 0)
        hidden: set[str] = set()
        for action in getattr(self.screen, "FOOTER_SPARE", ()):
            if needed <= width:
                break
            if action in widths:
                needed -= widths[action]
                hidden.add(action)
        return frozenset(hidden)

    def compose(self) -> ComposeResult:
        self.hidden_actions = self.actions_to_hide(self.app.size.width)
        for widget in super().compose():
            if isinstance(widget, FooterKey) and widget.action in self.hidden_actions:
                continue
            yield widget

    def on_resize(self, event: events.Resize) -> None:
        if self.actions_to_hide(event.size.width) != self.hidden_actions:
            self.call_after_refresh(self.recompose)
