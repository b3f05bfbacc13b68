"""Keys typed while a screen rebuilds its fields reach the field they were typed into.

A screen that mounts or replaces its fields (the new-experiment form, after its plugins
load or a plugin is picked) awaits between mounts, and Textual handles queued keys in
between: a key typed into ``every`` could land in ``probe`` once ``every`` was removed
and focus moved on. A screen with :class:`HoldsKeys` calls :meth:`HoldsKeys.hold_keys`
before such a rebuild and :meth:`HoldsKeys.release_keys` after it; the app (see
:meth:`critui.tui.app.CritUIApp.on_event`) holds every key typed meanwhile, and the
release puts focus back on the field that had it (found again by its id) and replays the
keys in order, so each goes where it would have gone on an idle machine.
"""

from __future__ import annotations

from textual import events
from textual.css.query import NoMatches
from textual.timer import Timer


class HoldsKeys:
    """Mixin for a :class:`textual.screen.Screen` that rebuilds its fields."""

    held_keys: list[events.Key] | None = None  # None: keys go through as usual
    _held_focus: str | None = None
    _held_widget = None
    _holds = 0
    _valve: Timer | None = None
    HOLD_LIMIT_S = 30.0  # should a rebuild fail half-way, the keys flow again after this

    def hold_keys(self) -> None:
        """From now until :meth:`release_keys`, keys typed are held (calls may nest)."""
        if not self._holds:
            self.held_keys = []
            # The focused widget, or (an Input inside a form field has no id) its nearest
            # ancestor with an id: what a rebuild mounts again under the same id.
            node = self._held_widget = self.focused
            while node is not None and node.id is None:
                node = node.parent
            self._held_focus = node.id if node is not None and node is not self else None
            self._valve = self.set_timer(self.HOLD_LIMIT_S, self._release_all)
        self._holds += 1

    def _release_all(self) -> None:
        self._holds = 1
        self.release_keys()

    def release_keys(self) -> None:
        """Focus the field that had focus when holding began (by id), then replay the keys."""
        self._holds = max(self._holds - 1, 0)
        if self._holds:
            return
        held, self.held_keys = self.held_keys or [], None
        if self._valve is not None:
            self._valve.stop()
            self._valve = None
        widget, self._held_widget = self._held_widget, None
        # Focus is put back only where the rebuild took it away: the focused field was removed
        # (a click elsewhere meanwhile is left alone).
        if self._held_focus and (widget is None or not widget.is_attached):
            try:
                node = self.query_one(f"#{self._held_focus}")
            except NoMatches:
                node = None  # the field is gone for good: the keys go wherever focus is now
            target = node if node is None or node.focusable else next(
                (w for w in node.query("*") if w.focusable), None)
            if target is not None:  # at once (widget.focus() would wait its turn behind the keys)
                self.set_focus(target, scroll_visible=False)
        for key in held:  # as the terminal driver sends them
            replay = events.Key(key.key, key.character)
            replay.set_sender(self.app)
            self.app.post_message(replay)
