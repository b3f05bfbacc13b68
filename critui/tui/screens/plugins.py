"""Plugins: what loaded (id, distribution, version, parameters) and what failed, with its error."""

from __future__ import annotations

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Label, LoadingIndicator, Static

from critui.kinds import KINDS


def params_text(info) -> str:
    return ", ".join(f"{p.name}={p.default!r}" for p in info.params) or "-"


def failures_text(failures) -> Text:
    if not failures:
        return Text("None: every installed plugin loaded.", style="green")
    text = Text()
    for f in failures:
        text.append(f"{f.source}", style="bold red")
        text.append(f"  from {f.distribution} {f.version}\n", style="dim")
        text.append(f"  {f.error}\n")
    text.append(
        "Fix or uninstall it (pip uninstall DISTRIBUTION); everything else keeps working.",
        style="dim",
    )
    return text


class PluginsScreen(Screen):
    """The plugin registry as critui sees it."""

    BINDINGS = [Binding("escape", "app.pop_screen", "Back", tooltip="Back to the dashboard")]

    def __init__(self) -> None:
        super().__init__()
        self.registry = None

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll(id="plugins-view"):
            yield Label("Loaded", classes="section")
            yield LoadingIndicator()
            yield DataTable(id="loaded", cursor_type="row", zebra_stripes=True)
            yield Label("Failed to load", classes="section")
            yield Static("", id="failures")
        yield Footer()

    def on_mount(self) -> None:
        self.load()

    @work(thread=True, exit_on_error=False)
    def load(self) -> None:
        try:
            registry = self.app.registry
        except Exception as exc:  # noqa: BLE001 - CRITUI_STRICT_PLUGINS turns a broken plugin into an error
            self.app.call_from_thread(self.show_error, str(exc))
            return
        self.app.call_from_thread(self.show_registry, registry)

    def show_error(self, message: str) -> None:
        self.query(LoadingIndicator).remove()
        self.query_one("#failures", Static).update(Text(message, style="red"))

    def show_registry(self, registry) -> None:
        self.registry = registry
        self.query(LoadingIndicator).remove()
        table = self.query_one("#loaded", DataTable)
        table.add_columns("id", "distribution", "version", "parameters")
        for kind in KINDS:
            for p in sorted(registry.of_kind(kind), key=lambda p: p.id):
                table.add_row(p.id, p.distribution, p.version, params_text(p), key=p.id)
        self.query_one("#failures", Static).update(failures_text(registry.failures))
