"""New experiment: plugin pickers and parameter forms generated from the registry.

Each chosen plugin's declared parameters become fields (plus the train and optim settings),
validated as they are typed with the messages ``--set`` gives. Launch builds the spec with
the same :func:`~critui.config.build_spec` as ``critui run`` and starts the run's worker.

The deficit, its window and the metrics' settings (Fisher) come first. The sweep section
builds any sweep ``critui sweep`` can: a removal or onset axis (with ``after`` and ``width``),
any number of ``sweep.set`` axes picked from a searchable list, seeds, a baseline, and how many
workers train at once. The form becomes a sweep config (the same dict a sweep TOML file
parses to) for :func:`~critui.sweeps.parse_sweep` and :func:`~critui.sweeps.expand`; the
cores are split and the fork tree planned by :func:`~critui.runs.scheduler.plan_sweep`, as
``critui sweep --jobs N`` does; the plan (run count, fork tree, epochs from scratch and
forked) is shown for confirmation; the same scheduler then trains it and the sweep view opens.
ctrl+o loads a TOML config (run or sweep) into the form; ctrl+s saves the form as one.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import (
    Button,
    Checkbox,
    Footer,
    Header,
    Input,
    Label,
    LoadingIndicator,
    OptionList,
    Select,
    Static,
)
from textual.widgets.option_list import Option

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
        Binding("ctrl+l", "launch", "Launch", tooltip="Validate the form, show a sweep's plan, start"),
        Binding("ctrl+o", "load_config", "Load", tooltip="Fill the form from a TOML config (run or sweep)"),
        Binding("ctrl+s", "save_config", "Save", tooltip="Save the form as a TOML config"),
        Binding("escape", "app.pop_screen", "Back", tooltip="Back to the dashboard"),
    ]

    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (100, "-wide")]  # see #metrics-picks in critui.tcss

    def __init__(self) -> None:
        super().__init__()
        self.registry = None
        self.launched: str | None = None
        self.launched_sweep: str | None = None
        self.launcher = None  # set by collect()
        self._rebuilding = asyncio.Lock()
        self.axis_key: str | None = None  # the sweep.set axis being edited (picked from the list)
        self.set_axes: dict[str, str] = {}  # sweep.set axes: key -> its values as typed
        self.default_jobs = 1
        self.plan = None  # the last sweep plan shown (for tests)
        self.preview_text = ""  # the live plan preview under the sweep fields
        self.previews = 0  # plans previewed (for tests)
        self._preview_timer = None
        self._preview_token = 0

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll(id="new-form"):
            yield LoadingIndicator()
        # The live plan, under the form whatever its scroll: what ctrl+l would launch.
        yield Static(ONE_RUN, id="sweep-preview", markup=False)
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
        from critui.runs import scheduler as sched

        try:
            registry = self.app.registry  # imports the plugins (and torch) off the UI thread
        except Exception as exc:  # noqa: BLE001 - e.g. CRITUI_STRICT_PLUGINS and a broken plugin
            self.app.call_from_thread(
                self._launch_failed, f"the plugins could not be loaded: {exc}"
            )
            return
        # One worker per core, one thread each, on the CPU (the split `critui sweep --jobs N`
        # makes); one at a time on a GPU, where --per-gpu is the command line's business.
        self.default_jobs = 1 if sched.detect_gpus() else sched.cpu_threads_per_worker(1)
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
        # The deficit, its window and the metrics (Fisher) first: what a study varies most.
        await form.mount(Vertical(id="plugin-fields", classes="group"))
        await form.mount(
            Label("train", classes="section"),
            Vertical(*self._fields(TRAIN_PARAMS, "train"), classes="group"),
            Label("optim", classes="section"),
            Vertical(*self._fields(OPTIM_PARAMS, "optim"), classes="group"),
        )
        await form.mount(Vertical(id="plugin-fields-rest", classes="group"))
        await form.mount(Label("sweep (optional)", classes="section"), sweep_rows(self.default_jobs))
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

    @property
    def ready(self) -> bool:
        """The form is built and no rebuild is under way (during one, some fields are missing)."""
        return self.registry is not None and not self._rebuilding.locked() and self.held_keys is None

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
        picks, metrics = self.chosen()
        deficit = [p for p in picks if p.startswith("deficits.")]
        others = [p for p in picks if p not in deficit] + [self.launcher_id()]
        first = self.query_one("#plugin-fields", Vertical)
        rest = self.query_one("#plugin-fields-rest", Vertical)
        kept = {f.key: f.raw for box in (first, rest) for f in box.query(ParamField).results(ParamField)}
        await self._show_plugin_groups(first, deficit + metrics, kept)
        await self._show_plugin_groups(rest, others, kept)
        self._offer_axes()

    async def _show_plugin_groups(self, box: Vertical, plugin_ids: list[str], kept: dict[str, Any]) -> None:
        """One group of fields per plugin in ``plugin_ids`` (those with settings), in order.

        A group already shown stays as it is: its fields keep their values, their focus and any
        key already on its way to one of them (a removed Input drops the keys queued for it,
        which on a loaded machine lost a digit typed into ``metrics.fisher.every`` while a
        deficit was picked). Only the groups of plugins no longer chosen are removed, and the
        new ones mounted in place, with the values typed for a setting of the same name.
        """
        wanted = [p for p in plugin_ids if self.registry.get(p).params]
        shown = {group.name: group for group in box.query_children(".plugin-group")}
        gone = [group for name, group in shown.items() if name not in wanted]
        if gone:
            await box.remove_children(gone)
        for index, plugin_id in enumerate(wanted):
            if plugin_id in shown:
                continue
            group = Vertical(*self._plugin_widgets(plugin_id, kept), name=plugin_id, classes="plugin-group group")
            following = next((shown[p] for p in wanted[index + 1:] if p in shown), None)
            await box.mount(group, before=following)

    def _plugin_widgets(self, plugin_id: str, kept: dict[str, Any]) -> list:
        info = self.registry.get(plugin_id)
        prefix = f"metrics.{info.name}" if info.kind == "metrics" else plugin_id.split(".")[0].rstrip("s")
        return [Label(f"{prefix}: {info.id}", classes="section")] + [
            ParamField(p, f"{prefix}.{p.name}", kept.get(f"{prefix}.{p.name}")) for p in info.params
        ]

    def launcher_id(self) -> str:
        value = self.query_one("#pick-launcher", Select).value
        return DEFAULT_LAUNCHER if value == Select.NULL else str(value)

    def axis_keys(self) -> list[str]:
        """What a sweep.set axis may vary: every field of the run (not the launcher's: where a
        run trains does not change it) and the plugin of each kind (``deficit.id``...)."""
        ids = [f"{section}.id" for section, _ in PICKS]
        fields = [f.key for f in self.query(ParamField).results(ParamField)
                  if not f.key.startswith(SETTING_PREFIX)]
        return ids + fields

    def _offer_axes(self) -> None:
        """The axis list, filtered by the search box (every word must occur in the key)."""
        words = self.query_one("#axis-search", Input).value.lower().split()
        options = self.query_one("#axis-options", OptionList)
        keys = [k for k in self.axis_keys() if all(w in k.lower() for w in words)]
        options.clear_options()
        options.add_options([Option(k + (f"  = {self.set_axes[k]}" if k in self.set_axes else ""), id=k)
                             for k in keys])
        # Axes whose field went away (another plugin chosen) are dropped.
        known = set(self.axis_keys())
        for key in [k for k in self.set_axes if k not in known]:
            del self.set_axes[key]
        if self.axis_key is not None and self.axis_key not in known:
            self.choose_axis(None)
        self._show_set_axes()

    def choose_axis(self, key: str | None) -> None:
        """Edit the sweep.set axis ``key`` (its values go in the values box); None: none."""
        self.axis_key = key
        self.query_one("#axis-key", Static).update(key or "none: pick a setting above")
        values = self.query_one("#axis-values", Input)
        values.value = self.set_axes.get(key, "") if key else ""
        values.disabled = key is None

    def _show_set_axes(self) -> None:
        text = "; ".join(f"{k} = {v}" for k, v in self.set_axes.items())
        self.query_one("#set-axes", Static).update(f"sweep.set: {text}" if text else "")

    @on(Input.Changed, "#axis-search")
    def _search_changed(self) -> None:
        self._offer_axes()

    @on(Input.Submitted, "#axis-search")
    def _search_submitted(self) -> None:
        options = self.query_one("#axis-options", OptionList)
        if options.option_count:  # enter picks the first match
            self.choose_axis(options.get_option_at_index(options.highlighted or 0).id)
            self.query_one("#axis-values", Input).focus()

    @on(OptionList.OptionSelected, "#axis-options")
    def _axis_selected(self, event: OptionList.OptionSelected) -> None:
        self.choose_axis(event.option.id)
        self.query_one("#axis-values", Input).focus()

    @on(Input.Changed, "#axis-values")
    def _axis_values_changed(self, event: Input.Changed) -> None:
        if self.axis_key is None:
            return
        if event.value.strip():
            self.set_axes[self.axis_key] = event.value
        else:
            self.set_axes.pop(self.axis_key, None)
        self._show_set_axes()

    @on(Select.Changed, "#window-axis")
    def _window_axis_changed(self, event: Select.Changed) -> None:
        onset = event.value == "onset"
        self.query_one("#window-width-row").display = onset

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

    def sweep_table(self) -> dict[str, Any] | None:
        """The form's ``[sweep]`` table (as a sweep TOML holds it), or None: one run.

        Raises ParamError, shown under the sweep section, when a value does not fit."""
        table: dict[str, Any] = {}
        window = self.query_one("#window-axis", Select).value
        text = {name: self.query_one(f"#window-{name}", Input).value.strip()
                for name in ("values", "after", "width")}
        if window in ("removal", "onset"):
            table[str(window)] = {"values": parse_epochs(text["values"], f"sweep.{window}.values")}
            if text["after"] or window == "removal":
                table[str(window)]["after"] = parse_epoch(text["after"], f"sweep.{window}.after")
            if window == "onset":
                table["onset"]["width"] = parse_epoch(text["width"], "sweep.onset.width")
        elif text["values"]:
            raise ParamError("Choose the window axis (removal or onset) for the epochs, or clear them.")
        sets = {}
        for key, values in self.set_axes.items():
            sets[key] = self.parse_axis(key, values)
        seeds_text = self.query_one("#axis-seeds", Input).value
        if SEED in sets:
            if seeds_text.strip():
                raise ParamError("The axis train.seed already lists the seeds; clear the seeds field.")
            table["seeds"] = sets.pop(SEED)
        elif seeds_text.strip():
            table["seeds"] = parse_values(seeds_text, self.field(SEED).param, "seeds")
        if sets:
            table["set"] = sets
        if self.query_one("#sweep-baseline", Checkbox).value:
            table["baseline"] = True
        if not table:
            return None
        return table

    def parse_axis(self, key: str, text: str) -> list[Any]:
        """A sweep.set axis's values, each checked like ``--set`` (a plugin id: a known one)."""
        section, _, name = key.partition(".")
        if name == "id" and section in dict(PICKS):
            kind = dict(PICKS)[section]
            known = {p.id for p in self.registry.of_kind(kind)}
            values = parse_values(text, Param("id", "str", "", "a plugin id"), key)
            for value in values:
                if value not in known:
                    raise ParamError(f"{key}: {value!r} is not an installed {section} plugin; "
                                     f"choose from {', '.join(sorted(known))}.")
            return values
        return parse_values(text, self.field(key).param, key)

    def jobs(self) -> int:
        text = self.query_one("#sweep-jobs", Input).value.strip()
        if not (text.isascii() and text.isdigit() and int(text) >= 1):
            raise ParamError(f"jobs: {text!r} is not a number of workers; give a whole number, at least 1.")
        return int(text)

    def form_config(self, sweep: dict[str, Any] | None = None) -> dict[str, Any]:
        """The form as a run config (the dict a TOML config parses to), with ``sweep`` as its
        ``[sweep]`` table when given. Every field is validated; ParamError if one does not fit."""
        picks, metrics = self.chosen()
        config: dict[str, Any] = {}
        name = self.query_one("#run-name", Input).value.strip()
        if name:
            config["name"] = name
        for p in picks:
            config[p.split(".")[0].rstrip("s")] = {"id": p}
        config["metrics"] = {self.registry.get(m).name: {} for m in metrics}
        axes = (sweep or {}).get("set", {})
        swapped = {key.removesuffix(".id") for key in axes if key.count(".") <= 1 and key.split(".")[-1] in ("id", key)}
        for f in self.query(ParamField).results(ParamField):
            if f.key.startswith(SETTING_PREFIX):
                continue  # where a run trains is not part of it (`--launcher`, `--set launcher.X`)
            *path, last = f.key.split(".")
            value = f.validate_value()
            if path and path[0] in swapped and value == f.param.default:
                # A plugin a sweep axis swaps in gets the settings the user changed, not every
                # default of the form's plugin, which it may not take (critui sweep refuses those).
                continue
            table = config
            for part in path:
                table = table.setdefault(part, {})
            table[last] = value
        if sweep is not None:
            config["sweep"] = sweep
        return config

    def plan_sweep(self, table: dict[str, Any]):
        """The form as a sweep, expanded, its cores split and its fork tree planned exactly as
        ``critui sweep --jobs N`` plans it. Errors as CritUIError or ParamError."""
        return build_plan(self.sweep_config(table), self.jobs(), self.registry, self.launcher.local)

    def sweep_config(self, table: dict[str, Any]) -> dict[str, Any]:
        """The form as a sweep config with ``table`` as its [sweep], named if it has no name."""
        config = self.form_config(table)
        if "name" not in config:
            axes = [a for a in ("removal", "onset") if a in table] + list(table.get("set", {}))
            config["name"] = f"{' '.join(axes) or 'seed'} sweep"
        return config

    # -- the live plan preview: what ctrl+l would launch, updated as the sweep fields change ----

    @on(Input.Changed)
    @on(Select.Changed)
    @on(Checkbox.Changed)
    def _form_changed(self, event) -> None:
        if self.registry is not None:
            self.schedule_preview()

    def schedule_preview(self) -> None:
        """Plan again once the typing has paused (PREVIEW_DELAY_S): one plan per pause, not per key."""
        if self._preview_timer is not None:
            self._preview_timer.stop()
        self._preview_timer = self.set_timer(PREVIEW_DELAY_S, self.update_preview)

    def update_preview(self) -> None:
        """Read the form here (UI thread) and plan it in a thread worker, as ctrl+l would."""
        self._preview_timer = None
        if not self.ready or not self.query("#sweep-preview"):
            self.schedule_preview()  # fields are being rebuilt: plan once they exist
            return
        preview = self.query_one("#sweep-preview", Static)
        try:
            table = self.sweep_table()
            if table is None:
                self.preview_text = ONE_RUN
                preview.update(self.preview_text)
                return
            config, jobs = self.sweep_config(table), self.jobs()
        except (ParamError, CritUIError) as exc:
            self.preview_text = f"plan: not yet: {exc}"
            preview.update(self.preview_text)
            return
        info = self.registry.get(self.launcher_id())
        local = bool(getattr(getattr(info, "cls", None), "local", True))
        self._preview_token += 1
        self._plan_preview(self._preview_token, config, jobs, local)

    @work(thread=True, group="plan-preview", exclusive=True, exit_on_error=False)
    def _plan_preview(self, token: int, config: dict[str, Any], jobs: int, local: bool) -> None:
        try:
            text = build_plan(config, jobs, self.registry, local).preview()
        except Exception as exc:  # noqa: BLE001 - a half-typed form: said, never raised
            text = f"plan: not yet: {explained(exc) if isinstance(exc, OSError) else exc}"
        try:
            self.app.call_from_thread(self._show_preview, token, text)
        except RuntimeError:
            pass  # the app is closing

    def _show_preview(self, token: int, text: str) -> None:
        if token == self._preview_token and self.query("#sweep-preview"):  # the latest plan only
            self.preview_text = text
            self.query_one("#sweep-preview", Static).update(text)
            self.previews += 1

    def action_launch(self) -> None:
        if self.registry is None:
            return
        spec = self.collect()
        if spec is None:
            return
        axis_error = self.query_one("#axis-error", Static)
        try:
            table = self.sweep_table()
            plan = self.plan_sweep(table) if table else None
        except (ParamError, CritUIError) as exc:
            axis_error.update(str(exc))
            self.query_one("#launch-error", Static).update(f"The sweep needs fixing: {exc}")
            return
        axis_error.update("")
        if plan is None:
            self.query_one("#launch", Button).disabled = True
            self.start_run(spec)
            return
        self.plan = plan

        def confirmed(yes: bool | None) -> None:
            if yes:
                self.query_one("#launch", Button).disabled = True
                self.start_sweep(plan)

        self.app.push_screen(SweepPlanModal(plan), confirmed)

    # -- TOML configs --------------------------------------------------------------------------

    def action_save_config(self) -> None:
        if self.registry is None:
            return
        try:
            table = self.sweep_table()
            config = self.form_config(table)
        except (ParamError, CritUIError) as exc:
            self.query_one("#launch-error", Static).update(f"Cannot save the form: {exc}")
            return
        default = (config.get("name") or "experiment").replace(" ", "-").replace("/", "-").replace(":", "")
        self.app.push_screen(
            PathModal("Save the form as a TOML config to:", f"{default}.toml", "Save"),
            lambda path: self.save_config(config, path) if path else None,
        )

    @work(thread=True, exit_on_error=False)
    def save_config(self, config: dict[str, Any], path: str) -> None:
        from critui.files import atomic_write

        target = Path(path).expanduser()
        try:
            atomic_write(target, to_toml(config))
        except OSError as exc:
            self.app.call_from_thread(self.app.notify, f"Could not save {target}: {explained(exc)}",
                                      severity="error", markup=False)
            return
        self.app.call_from_thread(self.app.notify, f"Saved the form to {target}", markup=False)

    def action_load_config(self) -> None:
        if self.registry is None:
            return
        self.app.push_screen(
            PathModal("Load which TOML config (a run or a sweep)?", "", "Load"),
            lambda path: self.run_worker(self.load_config(path), exclusive=True) if path else None,
        )

    async def load_config(self, path: str) -> None:
        """Fill the form from a config file; a problem is shown, and the form is left as it was."""
        from critui.config import load_toml

        error = self.query_one("#launch-error", Static)
        try:
            data, _ = load_toml(Path(path).expanduser())
            await self.fill(data)
        except (CritUIError, ParamError) as exc:
            error.update(f"Could not load {path}: {exc}")
            return
        error.update(f"Loaded {path}")

    async def fill(self, data: dict[str, Any]) -> None:
        """Set the pickers, fields and sweep section from a config dict (a parsed TOML)."""
        if not isinstance(data, dict):
            raise ParamError("the config is not a table")
        for section, kind in PICKS:
            table = data.get(section) or {}
            plugin_id = table.get("id") if isinstance(table, dict) else None
            select = self.query_one(f"#pick-{section}", Select)
            if plugin_id is None:
                plugin_id = NONE if section == "deficit" else DEFAULT_IDS.get(section)
            known = {p.id for p in self.registry.of_kind(kind)} | ({NONE} if section == "deficit" else set())
            if plugin_id not in known:
                raise ParamError(f"{section}.id = {plugin_id!r} is not an installed {kind[:-1]} plugin.")
            select.value = plugin_id
        metrics = data.get("metrics") or {}
        for box in self.query("#metrics-picks Checkbox").results(Checkbox):
            box.value = self.registry.get(box.name).name in metrics
        await self.rebuild_plugin_fields()
        unknown = []
        for section, table in data.items():
            if section in ("sweep", "name") or not isinstance(table, dict):
                continue
            items = (
                [(f"metrics.{m}.{k}", v) for m, t in table.items() if isinstance(t, dict) for k, v in t.items()]
                if section == "metrics" else [(f"{section}.{k}", v) for k, v in table.items() if k != "id"]
            )
            for key, value in items:
                try:
                    self.field(key).set_value(value)
                except Exception:  # noqa: BLE001 - no such field: said below
                    unknown.append(key)
        self.query_one("#run-name", Input).value = str(data.get("name") or "")
        self.fill_sweep(data.get("sweep") or {})
        if unknown:
            raise ParamError(f"the form has no field for {', '.join(unknown)}; the rest was loaded.")

    def fill_sweep(self, sweep: dict[str, Any]) -> None:
        window = "removal" if "removal" in sweep else "onset" if "onset" in sweep else "none"
        self.query_one("#window-axis", Select).value = window
        table = sweep.get(window) or {}
        for name in ("values", "after", "width"):
            value = table.get(name, "")
            text = ",".join(str(v) for v in value) if isinstance(value, list) else str(value)
            self.query_one(f"#window-{name}", Input).value = text
        self.set_axes = {k: ",".join(str(v) for v in values) for k, values in (sweep.get("set") or {}).items()
                         if isinstance(values, list)}
        seeds = sweep.get("seeds", "")
        if isinstance(seeds, int) and not isinstance(seeds, bool):
            seeds = list(range(seeds))
        self.query_one("#axis-seeds", Input).value = ",".join(str(s) for s in seeds) if seeds else ""
        self.query_one("#sweep-baseline", Checkbox).value = sweep.get("baseline") is True
        self.choose_axis(next(iter(self.set_axes), None))
        self._offer_axes()

    @work(thread=True, exit_on_error=False)
    def start_sweep(self, plan: SweepPlan) -> None:
        """Create the sweep's runs (parents first) and its record, as ``critui sweep`` does; then train."""
        from critui.runs import scheduler as sched

        launcher = self.launcher
        specs = [run.spec for run in plan.planned]
        try:
            preflight(self.registry, specs)
            record = sched.create_sweep(
                self.app.store, plan.sweep, plan.planned, plan.nodes, self._versions, config_path=None,
                launcher={"id": launcher.id, "settings": launcher.settings},
            )
        except Exception as exc:  # noqa: BLE001
            self.app.call_from_thread(self._launch_failed, explained(exc))
            return
        devices = {spec.train["device"] for spec in specs}
        gpus = sched.detect_gpus() if devices - {"cpu"} and launcher.local else []
        self.app.call_from_thread(self._sweep_launched, record, gpus, plan.jobs)

    def _sweep_launched(self, record: dict[str, Any], gpus: list[str], jobs: int = 1) -> None:
        from critui.tui.screens.sweep import SweepScreen

        self.launched_sweep = record["id"]
        self.app.run_sweep(record, gpus, self.launcher, jobs=jobs)
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


def parse_epoch(text: str, key: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise ParamError(f"{key}: give a whole number of epochs, e.g. 20 (got {text!r}).")
    return int(text)


def parse_epochs(text: str, key: str) -> list[int]:
    """Comma-separated epochs (whole numbers >= 0), each once."""
    items = [item.strip() for item in text.split(",")]
    if not text.strip() or not all(item.isascii() and item.isdigit() for item in items):
        raise ParamError(f"{key}: give the epochs separated by commas, e.g. 0,4,8,12 (got {text!r}).")
    values = [int(item) for item in items]
    if len(set(values)) != len(values):
        raise ParamError(f"{key}: {text!r} repeats a value; list each once.")
    return values


def row(label: str, widget, **kwargs) -> Horizontal:
    return Horizontal(Label(label, classes="name"), widget, **kwargs)


def sweep_rows(jobs: int = 1) -> Vertical:
    """The sweep section: a window axis, sweep.set axes from a searchable list, seeds, jobs."""
    width = row("width", Input(placeholder="onset: the window's width in epochs, e.g. 40",
                               id="window-width", compact=True), id="window-width-row")
    width.display = False
    return Vertical(
        row("window axis", Select([("none", "none"), ("removal: end the deficit at t0", "removal"),
                                   ("onset: a window [t, t+width)", "onset")],
                                  value="none", allow_blank=False, id="window-axis", compact=True)),
        row("epochs", Input(placeholder="t0 (removal) or t (onset), e.g. 0,4,8,12", id="window-values",
                            compact=True)),
        row("after", Input(placeholder="clean epochs after the window (removal: required), e.g. 20",
                           id="window-after", compact=True)),
        width,
        row("baseline", Checkbox("also train the no-deficit reference", id="sweep-baseline", compact=True)),
        row("find setting", Input(placeholder="type to filter the settings, e.g. depth; enter picks",
                                  id="axis-search", compact=True)),
        OptionList(id="axis-options", compact=True),
        row("axis", Static("none: pick a setting above", id="axis-key", markup=False)),
        row("values", Input(placeholder="comma-separated, e.g. 4,6", id="axis-values", compact=True,
                            disabled=True)),
        Static("", id="set-axes", markup=False),
        row("seeds", Input(placeholder="optional, e.g. 0,1,2 (default: train.seed)", id="axis-seeds",
                           compact=True)),
        row("jobs", Input(str(jobs), placeholder="workers at once (the CPU's cores are split between them)",
                          id="sweep-jobs", compact=True)),
        Static("", id="axis-error", markup=False),
        id="sweep-axis",
        classes="group",
    )


# -- the plan of a sweep, shown before it launches ---------------------------------------------


PREVIEW_DELAY_S = 0.3  # the plan preview waits this long after the last change
ONE_RUN = "plan: one run (no window axis, set axis, seeds or baseline in the sweep section)"


def build_plan(config: dict[str, Any], jobs: int, registry, local: bool) -> SweepPlan:
    """A sweep config expanded, its cores split and its fork tree planned exactly as ``critui
    sweep --jobs N`` plans it (:func:`critui.runs.scheduler.plan_sweep`). Errors as
    CritUIError or ParamError."""
    from critui.runs import scheduler as sched
    from critui.sweeps import expand, parse_sweep

    sweep = parse_sweep(config)
    planned = expand(sweep, registry)
    nodes, scratch, forked = sched.plan_sweep(planned, jobs, local)
    return SweepPlan(sweep, planned, nodes, scratch, forked, jobs)


class SweepPlan:
    """A sweep as it will launch: its spec, runs, fork tree, epochs and workers."""

    def __init__(self, sweep, planned, nodes, scratch: int, forked: int, jobs: int):
        self.sweep, self.planned, self.nodes = sweep, planned, nodes
        self.scratch, self.forked, self.jobs = scratch, forked, jobs

    def summary(self) -> str:
        threads = sorted({run.spec.train["threads"] for run in self.planned})
        each = "/".join(str(t) for t in threads) + " thread" + ("s" if threads != [1] else "")
        saved = self.scratch - self.forked
        percent = f", {100 * saved / self.scratch:.1f}% saved" if self.scratch else ""
        return (f"Sweep {self.sweep.name}: {len(self.planned)} runs, {self.jobs} at once ({each} each).\n"
                f"Epochs: {self.scratch} from scratch, {self.forked} with shared-prefix forking "
                f"({saved} fewer{percent}).")

    def preview(self) -> str:
        """The plan in two lines, for the form's live preview (ctrl+l shows the fork tree)."""
        saved = self.scratch - self.forked
        percent = f", {100 * saved / self.scratch:.0f}% saved" if self.scratch else ""
        return (f"plan: {len(self.planned)} runs, {self.jobs} at once; epochs {self.scratch} from scratch, "
                f"{self.forked} forked{percent} (ctrl+l: the fork tree, then launch)")

    def tree_lines(self, limit: int = 200) -> list[str]:
        """The fork tree, depth first, indented (a child starts from its parent's checkpoint)."""
        from critui.runs.planner import roots

        lines: list[str] = []
        stack = [(0, r) for r in reversed(roots(self.nodes))]
        while stack and len(lines) < limit:  # without recursion: a chain of forks may be deep
            depth, i = stack.pop()
            node = self.nodes[i]
            where = f"fork at {node.fork_epoch}, " if node.parent is not None else ""
            lines.append(f"{'  ' * depth}{'└ ' if depth else ''}#{i} {self.planned[i].label()}  "
                         f"({where}trains {node.epochs_to_train} of {node.spec.epochs})")
            children = sorted(node.children, key=lambda c: self.nodes[c].fork_epoch)
            stack.extend((depth + 1, c) for c in reversed(children))
        if len(lines) < len(self.nodes):
            lines.append(f"... and {len(self.nodes) - len(lines)} more runs")
        return lines


class SweepPlanModal(ModalScreen[bool]):
    """The plan of a sweep: run count, epochs from scratch and forked, the fork tree; launch?"""

    DEFAULT_CSS = """
    SweepPlanModal {
        align: center middle;
    }
    SweepPlanModal > Vertical {
        width: 90%;
        max-width: 110;
        height: 90%;
        border: round $accent;
        background: $surface;
        padding: 0 1;
    }
    SweepPlanModal #plan-summary {
        height: auto;
        text-style: bold;
    }
    SweepPlanModal #plan-tree {
        height: 1fr;
    }
    SweepPlanModal Horizontal {
        height: auto;
        align-horizontal: right;
    }
    """

    BINDINGS = [
        Binding("y,enter", "answer(True)", "Launch"),
        Binding("n,escape", "answer(False)", "Back"),
    ]

    def __init__(self, plan: SweepPlan):
        super().__init__()
        self.plan = plan

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(self.plan.summary(), id="plan-summary", markup=False)
            with VerticalScroll(id="plan-tree"):
                yield Static("fork tree (a child starts from its parent's checkpoint at the fork epoch)",
                             classes="muted", markup=False)
                yield Static("\n".join(self.plan.tree_lines()), id="plan-tree-text", markup=False)
            with Horizontal():
                yield Button("Launch (y)", id="plan-launch", variant="success", compact=True)
                yield Button("Back (n)", id="plan-back", compact=True)

    def on_mount(self) -> None:
        self.query_one("#plan-launch", Button).focus()

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "plan-launch")


class PathModal(ModalScreen[str | None]):
    """Ask for a file path (prefilled); enter confirms, escape cancels."""

    DEFAULT_CSS = """
    PathModal {
        align: center middle;
    }
    PathModal > Vertical {
        width: 80%;
        max-width: 100;
        height: auto;
        border: round $accent;
        background: $surface;
        padding: 0 1;
    }
    PathModal Static, PathModal Horizontal {
        height: auto;
    }
    PathModal Horizontal {
        align-horizontal: right;
    }
    """

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, question: str, value: str, verb: str):
        super().__init__()
        self.question, self.value, self.verb = question, value, verb

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(self.question, markup=False)
            yield Input(self.value, placeholder="a path, e.g. configs/my-sweep.toml", id="path")
            with Horizontal():
                yield Button(f"{self.verb} (enter)", id="path-ok", variant="primary", compact=True)
                yield Button("Cancel (esc)", id="path-cancel", compact=True)

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def action_cancel(self) -> None:
        self.dismiss(None)

    @on(Input.Submitted)
    def _submitted(self) -> None:
        self._answer()

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "path-ok":
            self._answer()
        else:
            self.dismiss(None)

    def _answer(self) -> None:
        path = self.query_one(Input).value.strip()
        self.dismiss(path or None)


# -- TOML out --------------------------------------------------------------------------------


def toml_value(value: Any) -> str:
    """One TOML value: a string (JSON's escapes are TOML's), a number, a bool or a list."""
    import json
    import math

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ("nan" if value != value else ("inf" if value > 0 else "-inf"))
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)


def toml_key(key: str) -> str:
    import re

    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else toml_value(key)


def to_toml(config: dict[str, Any]) -> str:
    """A config dict (plain values and nested tables) as TOML text that :func:`load_toml` reads back."""
    lines = ["# Saved from the critui form: `critui sweep FILE` (with a [sweep] table) or `critui run --config FILE`."]

    def table(path: list[str], data: dict[str, Any]) -> None:
        plain = {k: v for k, v in data.items() if not isinstance(v, dict)}
        nested = {k: v for k, v in data.items() if isinstance(v, dict)}
        if path and (plain or not nested):
            lines.append("")
            lines.append("[" + ".".join(toml_key(p) for p in path) + "]")
        for k, v in plain.items():
            lines.append(f"{toml_key(k)} = {toml_value(v)}")
        for k, v in nested.items():
            table([*path, k], v)

    table([], config)
    return "\n".join(lines) + "\n"
