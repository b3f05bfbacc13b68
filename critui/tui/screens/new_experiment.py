"""New experiment: plugin pickers and parameter forms generated from the registry.

Each chosen plugin's declared parameters become fields (plus the train and optim settings),
validated as they are typed with the messages ``--set`` gives. Launch builds the spec with
the same :func:`~critui.config.build_spec` as ``critui run`` and starts the run's worker.
"""

from __future__ import annotations

import asyncio

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import (
    Button,
    Checkbox,
    Footer,
    Header,
    Input,
    Label,
    LoadingIndicator,
    Select,
    Static,
)

from critui.config import DEFAULT_IDS, OPTIM_PARAMS, TRAIN_PARAMS, build_spec
from critui.errors import CritUIError
from critui.params import ParamError
from critui.tui.widgets.param_form import ParamField

NONE = "none"
PICKS = (("dataset", "datasets"), ("model", "models"), ("deficit", "deficits"))


class NewExperimentScreen(Screen):
    """Pick a dataset, model, deficit and metrics; set their parameters; launch."""

    BINDINGS = [
        Binding("ctrl+l", "launch", "Launch", tooltip="Validate the form and start the run"),
        Binding("escape", "app.pop_screen", "Back", tooltip="Back to the dashboard"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.registry = None
        self.launched: str | None = None
        self._rebuilding = asyncio.Lock()

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll(id="new-form"):
            yield LoadingIndicator()
        with Horizontal(id="launch-bar"):
            yield Static("", id="launch-error", markup=False)
            yield Button(
                "Launch (ctrl+l)", id="launch", variant="success", disabled=True, compact=True
            )
        yield Footer()

    def on_mount(self) -> None:
        self.load_registry()

    @work(thread=True, exit_on_error=False)
    def load_registry(self) -> None:
        try:
            registry = self.app.registry  # imports the plugins (and torch) off the UI thread
        except Exception as exc:  # noqa: BLE001 - e.g. CRITUI_STRICT_PLUGINS and a broken plugin
            self.app.call_from_thread(
                self._launch_failed, f"the plugins could not be loaded: {exc}"
            )
            return
        self.app.call_from_thread(self.build_form, registry)

    async def build_form(self, registry) -> None:
        form = self.query_one("#new-form", VerticalScroll)
        await form.remove_children()
        pickers = Vertical(id="pickers", classes="group")
        await form.mount(Label("Plugins", classes="section"), pickers)
        for section, kind in PICKS:
            options = [(p.id, p.id) for p in sorted(registry.of_kind(kind), key=lambda p: p.id)]
            if section == "deficit":
                options.insert(0, (NONE, NONE))
            value = DEFAULT_IDS.get(section, NONE)
            row = Horizontal(
                Label(section, classes="name"),
                Select(options, value=value, allow_blank=False, id=f"pick-{section}", compact=True),
            )
            await pickers.mount(row)
        await pickers.mount(name_row())
        metrics = Horizontal(id="metrics-picks")
        await pickers.mount(Horizontal(Label("metrics", classes="name"), metrics))
        for p in sorted(registry.of_kind("metrics"), key=lambda p: p.id):
            await metrics.mount(
                Checkbox(
                    p.id,
                    value=p.id == "metrics.fisher",
                    id=f"pick-{p.id.replace('.', '-')}",
                    name=p.id,
                )
            )
        await form.mount(
            Label("train", classes="section"),
            Vertical(*self._fields(TRAIN_PARAMS, "train"), classes="group"),
            Label("optim", classes="section"),
            Vertical(*self._fields(OPTIM_PARAMS, "optim"), classes="group"),
        )
        await form.mount(Vertical(id="plugin-fields", classes="group"))
        self.registry = registry
        await self.rebuild_plugin_fields()
        self.query_one("#launch", Button).disabled = False

    @staticmethod
    def _fields(params, prefix: str) -> list[ParamField]:
        return [ParamField(p, f"{prefix}.{p.name}") for p in params]

    def chosen(self) -> tuple[list[str], list[str]]:
        """(plugin ids for dataset/model/deficit, checked metric ids)."""
        picks = [self.query_one(f"#pick-{section}", Select).value for section, _ in PICKS]
        metrics = [
            box.name for box in self.query("#metrics-picks Checkbox").results(Checkbox) if box.value
        ]
        return [str(p) for p in picks if p not in (NONE, Select.BLANK)], metrics

    async def rebuild_plugin_fields(self) -> None:
        """One group of fields per chosen plugin, keeping values typed for plugins still chosen."""
        if self.registry is None or not self.query("#plugin-fields"):
            return
        async with self._rebuilding:
            await self._rebuild_plugin_fields()

    async def _rebuild_plugin_fields(self) -> None:
        box = self.query_one("#plugin-fields", Vertical)
        kept = {f.key: f.raw for f in box.query(ParamField).results(ParamField)}
        await box.remove_children()
        picks, metrics = self.chosen()
        widgets = []
        for plugin_id in picks + metrics:
            info = self.registry.get(plugin_id)
            prefix = (
                f"metrics.{info.name}"
                if info.kind == "metrics"
                else plugin_id.split(".")[0].rstrip("s")
            )
            if not info.params:
                continue
            widgets.append(Label(f"{prefix}: {info.id}", classes="section"))
            widgets += [
                ParamField(p, f"{prefix}.{p.name}", kept.get(f"{prefix}.{p.name}"))
                for p in info.params
            ]
        await box.mount_all(widgets)

    @on(Select.Changed, "#pickers Select")
    async def _picked(self, event: Select.Changed) -> None:
        await self.rebuild_plugin_fields()

    @on(Checkbox.Changed, "#metrics-picks Checkbox")
    async def _metric_toggled(self, event: Checkbox.Changed) -> None:
        await self.rebuild_plugin_fields()

    @on(Button.Pressed, "#launch")
    def _launch_pressed(self) -> None:
        self.action_launch()

    def field(self, key: str) -> ParamField:
        """The form field of setting ``key`` (e.g. ``train.epochs``, ``deficit.end``)."""
        from critui.tui.widgets.param_form import field_id

        return self.query_one(f"#{field_id(key)}", ParamField)

    def collect(self):
        """Validate every field; the RunSpec, or None with the problems shown inline."""
        sets, problems = [], []
        for f in self.query(ParamField).results(ParamField):
            if f.key == "name":
                continue
            try:
                sets.append(f.as_setting())
            except ParamError as exc:
                problems.append(str(exc))
        error = self.query_one("#launch-error", Static)
        if problems:
            error.update(f"{len(problems)} setting(s) need fixing: {problems[0]}")
            return None
        picks, metrics = self.chosen()
        name = self.query_one("#run-name", Input).value.strip()
        try:
            spec = build_spec(
                self.registry, {"name": name} if name else {}, picks + metrics, sets, {}
            )
        except CritUIError as exc:
            error.update(str(exc))
            return None
        error.update("")
        return spec

    def action_launch(self) -> None:
        if self.registry is None:
            return
        spec = self.collect()
        if spec is not None:
            self.query_one("#launch", Button).disabled = True
            self.start_run(spec)

    @work(thread=True, exit_on_error=False)
    def start_run(self, spec) -> None:
        used = [spec.dataset, spec.model] + ([spec.deficit] if spec.deficit else []) + spec.metrics
        versions = {}
        for p in used:
            info = self.registry.get(p.id)
            versions[p.id] = {"distribution": info.distribution, "version": info.version}
        try:
            doc = self.app.launch(spec, versions)
        except Exception as exc:  # noqa: BLE001
            self.app.call_from_thread(self._launch_failed, str(exc))
            return
        self.app.call_from_thread(self._launched, doc)

    def _launch_failed(self, message: str) -> None:
        self.query_one("#launch-error", Static).update(f"Could not start the run: {message}")
        self.query_one("#launch", Button).disabled = self.registry is None

    def _launched(self, doc) -> None:
        self.launched = doc["id"]
        self.app.notify(f"Started run {doc['id']}: {doc['name']}")
        self.app.poll_runs()
        self.dismiss()


def name_row() -> Horizontal:
    return Horizontal(
        Label("name", classes="name"),
        Input(placeholder="optional name for the history", id="run-name", compact=True),
    )
