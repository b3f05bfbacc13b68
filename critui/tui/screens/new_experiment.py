"""New experiment: plugin pickers and parameter forms generated from the registry.

Each chosen plugin's declared parameters become fields (plus the train and optim settings),
validated as they are typed with the messages ``--set`` gives. Launch builds the spec with
the same :func:`~critui.config.build_spec` as ``critui run`` and starts the run's worker.

An optional sweep axis (any field, with a list of values, and seeds) turns the launch into a
sweep: the form becomes a sweep config for :func:`~critui.sweeps.expand`, planned into a fork
tree and trained by the same scheduler as ``critui sweep``, and the sweep view opens.
"""

from __future__ import annotations

import asyncio
from typing import Any

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

from critui.config import DEFAULT_IDS, OPTIM_PARAMS, TRAIN_PARAMS, build_spec, preflight
from critui.errors import CritUIError, describe_os_error
from critui.params import Param, ParamError
from critui.runs.launcher import (
    DEFAULT_LAUNCHER,
    SETTING_PREFIX,
    make_launcher,
    split_launcher_sets,
)
from critui.tui.held_keys import HoldsKeys
from critui.tui.widgets.param_form import ParamField

NONE = "none"
PICKS = (("dataset", "datasets"), ("model", "models"), ("deficit", "deficits"))
SEED = "train.seed"


def parse_values(text: str, param: Param, key: str) -> list[Any]:
    """Comma-separated values of one setting, each checked by its Param like ``--set``."""
    items = [item.strip() for item in text.split(",")]
    if not text.strip() or not all(items):
        raise ParamError(
            f"{key}: give its values separated by commas, e.g. 0,4,8,12 (got {text!r})."
        )
    values = [param.parse(item, key) for item in items]
    if len({str(v) for v in values}) != len(values):
        raise ParamError(f"{key}: {text!r} repeats a value; list each once.")
    return values


class NewExperimentScreen(HoldsKeys, Screen):
    """Pick a dataset, model, deficit and metrics; set their parameters; launch."""

    BINDINGS = [
        Binding("ctrl+l", "launch", "Launch", tooltip="Validate the form and start the run"),
        Binding("escape", "app.pop_screen", "Back", tooltip="Back to the dashboard"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.registry = None
        self.launched: str | None = None
        self.launched_sweep: str | None = None
        self.launcher = None  # set by collect()
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
        self.hold_keys()  # until the fields exist: keys typed meanwhile reach them, in order
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
        launchers = [(p.id, p.id) for p in sorted(registry.of_kind("launchers"), key=lambda p: p.id)]
        await pickers.mount(Horizontal(
            Label("launcher", classes="name"),
            Select(launchers, value=DEFAULT_LAUNCHER, allow_blank=False, id="pick-launcher", compact=True),
        ))
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
        await form.mount(Label("sweep (optional)", classes="section"), sweep_rows())
        self.registry = registry
        await self.rebuild_plugin_fields()
        self.query_one("#launch", Button).disabled = False
        self.release_keys()

    @staticmethod
    def _fields(params, prefix: str) -> list[ParamField]:
        return [ParamField(p, f"{prefix}.{p.name}") for p in params]

    def chosen(self) -> tuple[list[str], list[str]]:
        """(plugin ids for dataset/model/deficit, checked metric ids)."""
        picks = [self.query_one(f"#pick-{section}", Select).value for section, _ in PICKS]
        metrics = [
            box.name for box in self.query("#metrics-picks Checkbox").results(Checkbox) if box.value
        ]
        return [str(p) for p in picks if p not in (NONE, Select.NULL)], metrics

    async def rebuild_plugin_fields(self) -> None:
        """One group of fields per chosen plugin, keeping values typed for plugins still chosen."""
        if self.registry is None or not self.query("#plugin-fields"):
            return
        async with self._rebuilding:
            self.hold_keys()  # a field removed and mounted again keeps the keys typed into it
            try:
                await self._rebuild_plugin_fields()
            finally:
                self.release_keys()

    async def _rebuild_plugin_fields(self) -> None:
        box = self.query_one("#plugin-fields", Vertical)
        kept = {f.key: f.raw for f in box.query(ParamField).results(ParamField)}
        await box.remove_children()
        picks, metrics = self.chosen()
        widgets = []
        for plugin_id in picks + metrics + [self.launcher_id()]:
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
        self._offer_axes()

    def launcher_id(self) -> str:
        value = self.query_one("#pick-launcher", Select).value
        return DEFAULT_LAUNCHER if value == Select.NULL else str(value)

    def _offer_axes(self) -> None:
        """Every field of the run can be the sweep axis (not the launcher's: where a run
        trains does not change it); keep the choice while it still exists."""
        select = self.query_one("#axis-key", Select)
        keys = [f.key for f in self.query(ParamField).results(ParamField) if not f.key.startswith(SETTING_PREFIX)]
        current = select.value
        select.set_options([(key, key) for key in keys])
        if current in keys:
            select.value = current

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
        """Validate every field; the RunSpec, or None with the problems shown inline. The
        launcher, its settings checked and its ``check()`` passed, is kept in ``self.launcher``."""
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
            sets, settings = split_launcher_sets(sets)
            spec = build_spec(
                self.registry, {"name": name} if name else {}, picks + metrics, sets, {}
            )
            self.launcher = make_launcher(self.registry, self.launcher_id(), settings, self.app.store.home)
        except CritUIError as exc:
            error.update(str(exc))
            return None
        error.update("")
        return spec

    def collect_axis(self) -> tuple[str | None, list[Any], list[int]] | None:
        """(axis key or None, its values, seeds), or None when the form trains one run.

        Raises ParamError, shown under the axis, when a value does not fit its setting.
        """
        select = self.query_one("#axis-key", Select)
        key = None if select.is_blank() else str(select.value)
        values_text = self.query_one("#axis-values", Input).value
        seeds_text = self.query_one("#axis-seeds", Input).value
        seed = self.field(SEED).param
        if key is None:
            if values_text.strip():
                raise ParamError("Choose the setting to sweep, or clear its values.")
            if not seeds_text.strip():
                return None
            return None, [], parse_values(seeds_text, seed, "seeds")
        values = parse_values(values_text, self.field(key).param, key)
        if key == SEED:
            if seeds_text.strip():
                raise ParamError("The axis already lists the seeds; clear the seeds field.")
            return None, [], values
        seeds = parse_values(seeds_text, seed, "seeds") if seeds_text.strip() else []
        return key, values, seeds or [self.field(SEED).validate_value()]

    def plan_sweep(self, axis: tuple[str | None, list[Any], list[int]]):
        """The form as a sweep config, expanded into validated runs (errors as CritUIError)."""
        from critui.sweeps import expand, parse_sweep

        key, values, seeds = axis
        picks, metrics = self.chosen()
        base: dict[str, Any] = {p.split(".")[0].rstrip("s"): {"id": p} for p in picks}
        base["metrics"] = {self.registry.get(m).name: {} for m in metrics}
        name = self.query_one("#run-name", Input).value.strip()
        table: dict[str, Any] = {"name": name or f"{key or 'seed'} sweep", "seeds": seeds}
        if key:
            table["set"] = {key: values}
        # The axis and the seeds come from the sweep table; every other field applies to all
        # runs, as `critui sweep --set` does (a set value would override the axis's).
        sets = [
            f.as_setting()
            for f in self.query(ParamField).results(ParamField)
            if f.key not in (key, SEED)
        ]
        sweep = parse_sweep({**base, "sweep": table})
        return sweep, expand(sweep, self.registry, sets)

    def action_launch(self) -> None:
        if self.registry is None:
            return
        spec = self.collect()
        if spec is None:
            return
        axis_error = self.query_one("#axis-error", Static)
        try:
            axis = self.collect_axis()
            planned = self.plan_sweep(axis) if axis else None
        except (ParamError, CritUIError) as exc:
            axis_error.update(str(exc))
            self.query_one("#launch-error", Static).update(f"The sweep axis needs fixing: {exc}")
            return
        axis_error.update("")
        self.query_one("#launch", Button).disabled = True
        if planned is None:
            self.start_run(spec)
        else:
            self.start_sweep(*planned)

    @work(thread=True, exit_on_error=False)
    def start_sweep(self, sweep, planned) -> None:
        """Plan the fork tree and create the sweep's runs, as ``critui sweep`` does; then train."""
        from critui.runs import scheduler as sched
        from critui.runs.planner import plan_tree

        launcher = self.launcher
        if launcher.local:  # elsewhere each worker has its own job's cores
            threads = sched.cpu_threads_per_worker(1)
            for run in planned:
                if not run.spec.train["threads"]:
                    run.spec.train["threads"] = threads
        try:
            nodes = plan_tree([run.spec for run in planned])
            devices = {run.spec.train["device"] for run in planned}
            preflight(self.registry, [run.spec for run in planned])
            record = sched.create_sweep(
                self.app.store, sweep, planned, nodes, self._versions, config_path=None,
                launcher={"id": launcher.id, "settings": launcher.settings},
            )
        except Exception as exc:  # noqa: BLE001
            self.app.call_from_thread(self._launch_failed, explained(exc))
            return
        gpus = sched.detect_gpus() if devices - {"cpu"} and launcher.local else []
        self.app.call_from_thread(self._sweep_launched, record, gpus)

    def _sweep_launched(self, record: dict[str, Any], gpus: list[str]) -> None:
        from critui.tui.screens.sweep import SweepScreen

        self.launched_sweep = record["id"]
        self.app.run_sweep(record, gpus, self.launcher)
        self.app.notify(f"Started sweep {record['id']}: {len(record['runs'])} runs")
        self.app.poll_runs()
        self.dismiss()
        self.app.push_screen(SweepScreen(record["id"], record))

    def _versions(self, spec) -> dict[str, dict[str, str]]:
        used = [spec.dataset, spec.model] + ([spec.deficit] if spec.deficit else []) + spec.metrics
        versions = {}
        for p in used:
            info = self.registry.get(p.id)
            versions[p.id] = {"distribution": info.distribution, "version": info.version}
        return versions

    @work(thread=True, exit_on_error=False)
    def start_run(self, spec) -> None:
        try:
            preflight(self.registry, [spec])
            doc = self.app.launch(spec, self._versions(spec), self.launcher)
        except Exception as exc:  # noqa: BLE001
            self.app.call_from_thread(self._launch_failed, explained(exc))
            return
        self.app.call_from_thread(self._launched, doc, spec.window_note())

    def _launch_failed(self, message: str) -> None:
        if self.registry is None:
            self.release_keys()  # the plugins could not load: no fields are coming
        self.query_one("#launch-error", Static).update(f"Could not start: {message}")
        self.query_one("#launch", Button).disabled = self.registry is None

    def _launched(self, doc, note: str | None = None) -> None:
        self.launched = doc["id"]
        self.app.notify(f"Started run {doc['id']}: {doc['name']}", markup=False)
        if note:
            self.app.notify(f"Note: {note}", severity="warning", timeout=10)
        self.app.poll_runs()
        self.dismiss()


def explained(exc: Exception) -> str:
    """What to show for a failed launch: a full disk or a read-only home gets its fix."""
    return (isinstance(exc, OSError) and describe_os_error(exc)) or str(exc)


def name_row() -> Horizontal:
    return Horizontal(
        Label("name", classes="name"),
        Input(placeholder="optional name for the history", id="run-name", compact=True),
    )


def sweep_rows() -> Vertical:
    return Vertical(
        Horizontal(
            Label("axis", classes="name"),
            Select([], prompt="none: launch one run", id="axis-key", compact=True),
        ),
        Horizontal(
            Label("values", classes="name"),
            Input(placeholder="comma-separated, e.g. 0,4,8,12", id="axis-values", compact=True),
        ),
        Horizontal(
            Label("seeds", classes="name"),
            Input(
                placeholder="optional, e.g. 0,1,2 (default: train.seed)",
                id="axis-seeds",
                compact=True,
            ),
        ),
        Static("", id="axis-error", markup=False),
        id="sweep-axis",
        classes="group",
    )
