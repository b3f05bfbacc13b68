"""The ``critui`` command line: run, resume, plugins, runs, show and export.

Every command that takes input validates it before doing anything; a problem is printed as
one paragraph (what, the value, the fix) with exit status 2, never a traceback.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import operator
import os
import signal
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import click
import rich.text
from rich import box
from rich.cells import cell_len
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from critui.config import (
    build_spec,
    deficit_label,
    device_text,
    launcher_text,
    load_toml,
    preflight,
    short_id,
    window_note,
)
from critui.errors import CritUIError, describe_os_error

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def home_option(func):
    return click.option(
        "--home",
        type=click.Path(file_okay=False),
        envvar="CRITUI_HOME",
        callback=_home_path,
        help="Folder holding the run index and run directories (default: CRITUI_HOME, else a per-user data dir).",
    )(func)


def _given_path(value: str | None, if_blank: str) -> Path | None:
    """An option's path; a blank one is refused with ``if_blank``: Path('') is the current
    folder, which nobody who typed ``''`` meant."""
    if value is None:
        return None
    if not value.strip():
        raise CritUIError(if_blank)
    return Path(value)


def _home_path(ctx, param, value: str | None) -> Path | None:
    return _given_path(value, "--home '' names no folder. Give the critui home's folder, e.g. --home ~/critui, "
                       "or leave --home out to use CRITUI_HOME or the per-user data folder.")


def _print_version(ctx: click.Context, value: bool) -> None:
    """``--version``, as click's option prints it; the version is looked up only when asked for."""
    if value and not ctx.resilient_parsing:
        from critui import __version__

        click.echo(f"critui, version {__version__}")
        ctx.exit()


def plain(text: Any) -> str:
    """A name or other text from a record, safe for a terminal outside rich: control
    characters (escape sequences, carriage returns) are shown as ``\\xNN``, not obeyed."""
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in str(text))


class LauncherOption(click.Option):
    """``--launcher``, whose help names the launchers registered now (built-in and plugins'):
    looked up only when help is shown, so that other commands never load the plugins for it."""

    def get_help_record(self, ctx: click.Context):
        self.help = launcher_help()
        return super().get_help_record(ctx)


def launcher_help() -> str:
    """``--launcher``'s help: each registered launcher's name and the first sentence of its description."""
    from critui.plugins import get_registry

    try:
        launchers = sorted(get_registry().of_kind("launchers"), key=lambda p: (p.name != "local", p.name))
    except Exception:  # noqa: BLE001 - help must show even if the plugins cannot be loaded
        launchers = []
    named = "; ".join(f"{plain(p.name)} ({_gist(p.description)})" for p in launchers)
    return (f"Where workers run: {named or 'local (this machine)'}. local is the default; settings as "
            "--set launcher.NAME=VALUE. `critui plugins` lists the launchers and their settings.")


def _gist(description: object) -> str:
    """A plugin's description up to its first aside: "Each worker as a Slurm job, through submitit"."""
    return plain(str(description).split("; ")[0].split(" (")[0].rstrip("."))


def launcher_option(func):
    return click.option("--launcher", metavar="NAME", cls=LauncherOption)(func)


def pick_launcher(registry, launcher_id: str | None, plugins, sets, home: Path, default: tuple[str | None, dict] = (None, {}),
                  check: bool = True):
    """The launcher of a command, from --launcher, a ``--plugin launchers.NAME`` and the
    ``--set launcher.*`` values; returns it with the plugins and sets left for the run.
    ``default`` is the launcher and settings to use when none is named (a resumed run's)."""
    from critui.runs.launcher import make_launcher, split_launcher_sets
    from critui.runs.store import default_home

    named = [p for p in plugins if p.strip().startswith("launchers.")]
    if len(named) + bool(launcher_id) > 1:
        raise CritUIError("Name one launcher, with --launcher NAME or --plugin launchers.NAME, not several.")
    sets, settings = split_launcher_sets(sets)
    launcher_id = launcher_id or (named[0] if named else None)
    inherited = launcher_id is None and default[0]
    if inherited:
        launcher_id, settings = default[0], {**default[1], **settings}
    try:
        launcher = make_launcher(registry, launcher_id, settings, Path(home).expanduser() if home else default_home(),
                                 check=check)
    except CritUIError as exc:
        if not inherited:
            raise
        raise CritUIError(f"{exc} (It ran with {launcher_id} before; name another with --launcher NAME, e.g. "
                          "--launcher local to continue on this machine.)") from None
    return launcher, [p for p in plugins if p not in named], sets


def only_launcher_sets(sets, what: str) -> None:
    """A resumed run or sweep keeps its settings: ``--set`` may only name the launcher's."""
    from critui.runs.launcher import SETTING_PREFIX

    if wrong := [s for s in sets if not s.strip().startswith(SETTING_PREFIX)]:
        raise CritUIError(f"--set {wrong[0]!r}: {what} keeps its settings; only launcher.NAME=VALUE can be set. "
                          "Start a new run or sweep to change the others.")


def open_store(home: Path | None):
    """The store of the home, brought up to date; what it could not read is printed as warnings."""
    from critui.runs.store import RunStore

    store = RunStore(home)
    store.reconcile()
    print_problems(store)
    return store


def print_problems(store) -> None:
    """The store's warnings (damaged records it skipped, folders it will not touch), on stderr."""
    for problem in store.take_problems():
        err_console.print(f"[yellow]Warning:[/] {escape(problem)}", soft_wrap=True)


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=lambda ctx, param, value: _print_version(ctx, value),
              help="Show the version and exit.")
@click.option("--home", "tui_home", type=click.Path(file_okay=False), envvar="CRITUI_HOME", callback=_home_path,
              help="The critui home: the one the interactive session opens, and the default of any command "
              "after it (default: CRITUI_HOME).")
@click.pass_context
def cli(ctx: click.Context, tui_home: Path | None) -> None:
    """critui: train networks with a sensory deficit during a window of epochs, remove it,
    and measure how much damage is permanent (Achille, Rovere, Soatto, ICLR 2019).

    \b
    critui run --plugin deficits.flip          one experiment, headless
    critui run --plugin deficits.blur --set deficit.end=8 --epochs 28
    critui plugins                              what is installed, with parameters
    critui runs / critui show last              the run history
    critui sweep configs/demo-removal.toml      a figure of the paper (configs/), then:
    critui report last                          its table and chart
    critui                                      the interactive session (dashboard, forms, live charts)
    """
    if ctx.invoked_subcommand is not None:
        if tui_home is not None and ctx.get_parameter_source("tui_home") == click.core.ParameterSource.COMMANDLINE:
            # `critui --home DIR runs` means DIR: the command's own --home still wins
            os.environ["CRITUI_HOME"] = str(tui_home)
        return
    if ctx.invoked_subcommand is None:
        from critui.tui.app import run_app

        run_app(tui_home)


# -- run ----------------------------------------------------------------------------------------


@cli.command()
@click.option("--plugin", "-p", "plugins", multiple=True, metavar="KIND.NAME",
              help="Use this plugin (deficits.blur, models.allcnn, datasets.cifar10, metrics.fisher, ...). Repeatable.")
@click.option("--set", "-s", "sets", multiple=True, metavar="KEY=VALUE",
              help="Set a parameter: deficit.end=3, model.depth=4, optim.lr=0.1, metrics.fisher.every=1. Repeatable.")
@click.option("--epochs", type=int, help="Training epochs (train.epochs).")
@click.option("--seed", type=int, help="Run seed (train.seed).")
@click.option("--device", help="auto, cpu, cuda or cuda:N (train.device).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="A TOML file with the run's settings; flags override it.")
@click.option("--name", help="A name for the run in the history.")
@click.option("--dry-run", is_flag=True, help="Print the resolved spec and exit without training.")
@launcher_option
@home_option
def run(plugins, sets, epochs, seed, device, config_path, name, dry_run, launcher, home) -> None:
    """Train one run headless, with a live progress bar, and record it in the history.

    Ctrl-C stops the run cleanly (status `cancelled`); `critui resume RUN` continues it.
    """
    from critui.plugins import get_registry

    registry = get_registry()
    warn_failed_plugins(registry)
    worker_launcher, plugins, sets = pick_launcher(registry, launcher, plugins, sets, home, check=not dry_run)
    config, source = ({}, None)
    if config_path is not None:
        config, text = load_toml(config_path)
        source = (str(config_path), text)
    overrides = {"epochs": epochs, "seed": seed, "device": device}
    if name:
        config["name"] = name
    spec = build_spec(registry, config, plugins, sets, overrides, source=source)
    if dry_run:
        console.print_json(json.dumps(spec.to_json()))
        return
    preflight(registry, [spec])  # fail now, not inside the worker
    if note := spec.window_note():
        err_console.print(f"[yellow]Note:[/] {escape(note)}")
    store = open_store(home)
    used = [spec.dataset, spec.model] + ([spec.deficit] if spec.deficit else []) + spec.metrics
    versions = {p.id: _plugin_source(registry.get(p.id)) for p in used}
    with StopSignals() as stop:  # from the moment the run exists, a Ctrl-C cancels it
        doc = store.create(spec, versions)
        code = watch_run(store, doc["id"], spec, worker_launcher, stop)
    sys.exit(code)


def warn_failed_plugins(registry) -> None:
    """One line on stderr naming the plugins that failed to load: a run that does not use them
    goes on, but the user should not learn of a broken install only from an "Unknown plugin"."""
    if not registry.failures:
        return
    names = sorted({f"{f.distribution} {f.version} ({f.source})" for f in registry.failures})
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    err_console.print(f"[yellow]Warning:[/] {len(registry.failures)} plugin(s) failed to load: {escape(shown)}; "
                      "`critui plugins` shows why.", soft_wrap=True)


def _output_path(value: str | None) -> Path | None:
    return _given_path(value, "-o '' names no file. Give the file to write, e.g. -o runs.csv, or leave -o out "
                       "to print to standard output.")


def _how_to_stop(registry, docs: list[dict[str, Any]], home: Path | None) -> str:
    """How to cancel the cluster jobs of ``docs`` by hand: each launcher names its own command
    (``scancel`` for Slurm, ``ray job stop`` for Ray), for at most five jobs of each."""
    from critui.runs.launcher import make_launcher
    from critui.runs.store import default_home

    by_launcher: dict[str, list[str]] = {}
    for doc in docs:
        by_launcher.setdefault(doc.get("launcher") or "", []).append(doc["job"])
    commands = []
    for launcher_id, jobs in by_launcher.items():
        try:
            launcher = make_launcher(registry, launcher_id, {}, home or default_home(), check=False)
            command = launcher.stop_command(jobs[:5])
        except Exception:  # noqa: BLE001 - a launcher gone or without the method: say so plainly
            command = None
        commands.append(f"`{plain(command)}`" if command else
                        f"stop them with {plain(launcher_id or 'their launcher')}'s own command")
    return "cancel them with " + " and ".join(commands)


def _plugin_source(info) -> dict[str, str]:
    return {"distribution": info.distribution, "version": info.version}


class StopSignals:
    """Ctrl-C (SIGINT) and SIGTERM to a managing command, noted while the block runs and acted
    on by its watch loop between two polls.

    A handler that raised KeyboardInterrupt could land anywhere: between starting a worker
    and recording it, in the middle of an index update, or nowhere at all when the command
    inherited SIGINT ignored (a shell starts its background jobs so). Both handlers are
    installed here explicitly and only note the signal, so a stop always reaches the loop,
    which cancels the run (exit 130), whenever it came.
    """

    def __init__(self) -> None:
        self.received: str | None = None

    def __enter__(self) -> StopSignals:
        self._previous = {s: signal.signal(s, self._note) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)

    def _note(self, signum, frame) -> None:
        self.received = signal.Signals(signum).name


def watch_run(store, run_id: str, spec, launcher=None, stop: StopSignals | None = None) -> int:
    """Start the worker, follow its events with a progress bar, keep the index in step; a
    stop signal (``stop``'s, else one noted from here on) cancels the run."""
    if stop is None:
        with StopSignals() as stop:
            return watch_run(store, run_id, spec, launcher, stop)
    from rich.progress import (
        BarColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from critui.events import epoch_table, final_accuracy, read_events
    from critui.runs.monitor import RunMonitor

    monitor = RunMonitor(store, run_id, launcher=launcher)
    if job := getattr(monitor.process, "job", None):
        console.print(f"[dim]worker submitted by {launcher.id} as job {job}[/]")
    console.print(f"[bold]run {run_id}[/]  {spec.describe()}  ({spec.epochs} epochs)  {monitor.run_dir}")
    # Under 100 columns the line drops the time left and shortens its words, so it fits 80.
    compact = console.width < 100
    progress = Progress(
        TextColumn("{task.description}"), BarColumn(bar_width=12 if compact else 40),
        TextColumn("{task.completed}/{task.total}" + ("" if compact else " epochs")),
        TextColumn("{task.fields[status]}"), TimeElapsedColumn(),
        *([] if compact else [TimeRemainingColumn()]), console=console,
    )
    with progress:
        task = progress.add_task("starting", total=spec.epochs, status="loading data")
        while not monitor.done and not stop.received:
            for event in monitor.poll():
                _show_progress(progress, task, event, compact)
            time.sleep(0.1)
    if not monitor.done:
        err_console.print("Stopping the run cleanly...")
        monitor.cancel()  # the worker records `cancelled` at its next safe point
    rows = epoch_table(read_events(monitor.run_dir))
    return _print_outcome(run_id, monitor.run_dir, monitor.end, rows, final_accuracy(rows))


def _show_progress(progress, task, event: dict[str, Any], compact: bool = False) -> None:
    if event["event"] == "started":
        progress.update(task, description="training", completed=event.get("epoch", 0), status=f"on {event.get('device')}")
    elif event["event"] == "paused":
        progress.update(task, description="paused", status="its job is requeued; it resumes from the last checkpoint")
    elif event["event"] == "epoch":
        from critui.events import score_text

        test, train, lr = score_text(event), f"{event['train_loss']:.3f}", f"{event['lr']:.3g}"
        if compact:
            test = test.replace("test acc ", "acc ")
            status = f"{test} loss {train} lr {lr}" + (" deficit" if event.get("deficit_active") else "")
        else:
            status = f"{test}  train loss {train}  lr {lr}" + ("  deficit on" if event.get("deficit_active") else "")
        progress.update(task, completed=event["epoch"] + 1, status=status)


def _print_outcome(run_id, run_dir, end, rows, final) -> int:
    kind = end["event"]
    if kind == "finished":
        from critui.events import epochs_covered, score_kind, score_label, score_of

        higher = score_kind(rows)[1]
        scores = [v for r in rows if (v := score_of(r)) is not None]
        best = (max if higher else min)(scores, default=None)
        label = "test accuracy" if higher and score_kind(rows)[0] == "test_acc" else score_label(rows)
        table = Table(title=f"run {run_id} finished", show_header=False, box=None)
        table.add_row(f"final {label}", "-" if final is None else
                      f"{final:.4f}  (mean of the last {min(5, len(rows))} epochs)")
        table.add_row(f"best {label}", "-" if best is None else f"{best:.4f}")
        table.add_row("epochs", str(epochs_covered(rows)))
        table.add_row("time", f"{end.get('seconds', 0):.1f} s")
        table.add_row("stored in", str(run_dir))
        console.print(table)
        console.print(f"See it again with: critui show {run_id}")
        return 0
    if kind == "cancelled":
        err_console.print(f"Run {run_id} cancelled after {len(rows)} epochs; every completed epoch is kept. "
                          f"Continue it with:\n  critui resume {run_id}")
        return 130
    if kind == "busy":
        err_console.print(f"[red]Error:[/] {escape(end['error'])}")
        return 2
    reason = end.get("reason")
    where = f" in epoch {end['epoch']}" if end.get("epoch") is not None else ""
    err_console.print(f"[red]Error:[/] run {run_id} failed{where}: {escape(str(end.get('error')))}")
    if reason == "user":
        return 2
    if reason == "exception":
        err_console.print(f"The traceback is in {run_dir / 'log.txt'} and in `critui show {run_id}`.")
    return 1


@cli.command()
@click.argument("run_ref", metavar="RUN")
@click.option("--set", "-s", "sets", multiple=True, metavar="launcher.NAME=VALUE",
              help="A launcher setting, e.g. launcher.time=600. Repeatable.")
@click.option("--allow-plugin-change", is_flag=True,
              help="Resume even though a plugin now comes from another distribution or version; the change is recorded.")
@launcher_option
@home_option
def resume(run_ref, sets, allow_plugin_change, launcher, home) -> None:
    """Continue an interrupted, cancelled or failed run from its last checkpoint.

    It runs where it ran before (the same launcher and settings) unless --launcher says otherwise.
    Its plugins must come from the distributions and versions it recorded.
    """
    from critui.plugins import get_registry
    from critui.runs.lineage import reopen_for_resume

    only_launcher_sets(sets, "a resumed run")
    store = open_store(home)
    before = store.get(run_ref)
    worker_launcher, _, _ = pick_launcher(get_registry(), launcher, (), sets, home,
                                          default=(before.get("launcher"), before.get("launcher_settings") or {}))
    _check_checkpoint(store.run_dir(before["id"]))
    with StopSignals() as stop:
        doc, spec = reopen_for_resume(store, before["id"], allow_plugin_change)
        code = watch_run(store, doc["id"], spec, worker_launcher, stop)
    sys.exit(code)


def _check_checkpoint(run_dir: Path) -> None:
    """Read a run's checkpoint here before a worker is started on it: a damaged or planted
    one is refused (exit 2, the file and the fix) with the run left as it was."""
    from critui.train.checkpoint import LATEST, read

    latest = run_dir / "ckpt" / LATEST
    if latest.exists() or latest.is_symlink():
        read(latest)


# -- plugins ------------------------------------------------------------------------------------


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def plugins(as_json: bool) -> None:
    """List plugins by id, with distribution, version, description and parameters, and those that failed."""
    from critui.kinds import KINDS
    from critui.plugins import get_registry

    registry = get_registry()
    ordered = [p for kind in KINDS for p in sorted(registry.of_kind(kind), key=lambda p: p.id)]
    if as_json:
        click.echo(json.dumps({"plugins": [p.to_json() for p in ordered],
                               "failed": [f.to_json() for f in registry.failures],
                               "conflicts": [c.to_json() for c in registry.conflicts],
                               "distributions": registry.distribution_status()}, indent=2))
        return
    table = Table(title="critui plugins", show_lines=True)
    # Ids are what a user types: they never wrap. The prose columns take what width is left.
    table.add_column("id", no_wrap=True)
    table.add_column("from", overflow="fold")
    table.add_column("description", overflow="fold", ratio=3)
    table.add_column("parameters", overflow="fold", ratio=2)
    for p in ordered:
        params = "\n".join(f"{q.name}={q.default!r} ({q.describe()})" for q in p.params) or "-"
        alias = f"\n(alias {', '.join(p.kind + '.' + a for a in p.cls.aliases)})" if p.cls.aliases else ""
        # A plugin's own text is not markup: "critui[slurm]" must print as written.
        table.add_row(p.id + alias, f"{p.distribution} {p.version}", escape(p.description), escape(params))
    console.print(table)
    if registry.failures:
        failed = Table(title="plugins that failed to load", show_lines=True, title_style="bold red")
        for column in ("entry point", "from", "error"):
            failed.add_column(column, overflow="fold")
        for f in registry.failures:
            failed.add_row(escape(f.source), f"{f.distribution} {f.version}", escape(f.error))
        console.print(failed)
    if registry.conflicts:
        clashes = Table(title="ids registered by more than one distribution", show_lines=True, title_style="bold yellow")
        for column in ("id", "registered by", "outcome"):
            clashes.add_column(column, overflow="fold")
        for c in registry.conflicts:
            clashes.add_row(c.id, "\n".join(f"{d} {v}" for d, v in c.claimants), escape(c.describe()))
        console.print(clashes)
    if third_party := registry.distribution_status():
        dists = Table(title="plugin distributions", box=None)
        for column in ("distribution", "version", "status"):
            dists.add_column(column)
        for row in third_party:
            dists.add_row(row["distribution"], row["version"], row["status"])
        console.print(dists)


# -- history ------------------------------------------------------------------------------------


@cli.command()
@click.option("--status", type=click.Choice(["queued", "running", "finished", "failed", "cancelled", "interrupted"]),
              multiple=True, help="Only runs with this status. Repeatable.")
@click.option("--deficit", help="Only runs with this deficit (id or name; `none`: no deficit, or an empty window).")
@click.option("--model", help="Only runs of this model (id or name).")
@click.option("--dataset", help="Only runs on this dataset (id or name).")
@click.option("--tag", "tags", multiple=True, metavar="NAME",
              help="Only runs tagged NAME (`critui tag`). Repeatable: runs with every tag given.")
@click.option("--limit", "-n", type=click.IntRange(min=1), help="Only the N most recent runs.")
@click.option("--json", "as_json", is_flag=True, help="Print the index documents as JSON.")
@home_option
def runs(status, deficit, model, dataset, tags, limit, as_json, home) -> None:
    """List the run history, oldest first."""
    from critui.runs.store import RunStore, check_tag, entry_tags

    for tag in tags:
        check_tag(tag)
    if as_json:
        store = open_store(home)
        docs = store.all()
    else:  # only the columns shown: read from the listing kept beside the index, not all of it
        store = RunStore(home)
        docs = store.listing()
        print_problems(store)
    if status or deficit is not None or model is not None or dataset is not None:
        docs = [d for d in docs if _matches(d, status, deficit, model, dataset)]
    if tags:
        docs = [d for d in docs if all(t in entry_tags(d) for t in tags)]
    if limit:
        docs = docs[-limit:]
    if as_json:
        click.echo(json.dumps(docs, indent=2))
        return
    if not docs:
        console.print(f"No runs{' match' if (status or deficit or model or dataset or tags) else ''} in {store.home}.")
        return
    # The full table if it fits; else the compact one (no creation time, and a dataset that
    # every run shares named in the title), which fits 80 columns.
    shared: dict[str, list[str]] = {}  # the columns both tables have, made once
    table = _runs_table(docs, store.home, wide=True, shared=shared)
    if table.width > console.width:
        table = _runs_table(docs, store.home, wide=False, shared=shared)
    table.print(console)


STATUS_COLOURS = {"finished": "green", "running": "cyan", "failed": "red", "interrupted": "yellow",
                  "cancelled": "yellow", "queued": "blue"}


def _width(text: str) -> int:
    return len(text) if text.isascii() else cell_len(text)


@dataclasses.dataclass
class RunsListing:
    """The runs listing, laid out as a rich table with a simple head would be, but in time
    linear in the runs: rich measures and renders every cell twice, 1.5 s per 1,000 runs.
    Work is done a column at a time (10,000 runs are 70,000 cells)."""

    title: str
    columns: list[str]
    cells: list[list[str]]  # a list per column, plain text; the status column is coloured when printed
    right: set[str]
    wrap: str  # the one column that may be cut to fit

    def __post_init__(self):
        self.widths = [max(_width(c), _column_width(col)) for c, col in zip(self.columns, self.cells, strict=True)]

    @property
    def width(self) -> int:
        return sum(self.widths) + 2 * (len(self.columns) - 1)

    def print(self, console: Console) -> None:
        """Write the table to ``console``'s file, coloured when the console is a terminal."""
        widths = list(self.widths)
        cut = self.columns.index(self.wrap)
        widths[cut] = max(16, widths[cut] - max(0, self.width - console.width))
        total = sum(widths) + 2 * (len(widths) - 1)
        status, right = self.columns.index("status"), [c in self.right for c in self.columns]
        colour = console.color_system is not None and not console.no_color

        def paint(text: str, style: str) -> str:
            if not colour:
                return text
            segments = console.render(rich.text.Text(text, style=style))
            return "".join(seg.style.render(seg.text, color_system=console.color_system) if seg.style else seg.text
                           for seg in segments).rstrip("\n")

        codes = {s: paint("\0", c).split("\0") for s, c in STATUS_COLOURS.items()} if colour else {}

        def column(i: int, cells: list[str]) -> list[str]:
            width = widths[i]
            measure = len if "".join(cells).isascii() else _width  # "…" below is one cell wide, too
            if max(map(measure, set(cells)), default=0) > width:
                cells = [c if measure(c) <= width else _cut(c, width) for c in cells]
            if i == status and codes:  # padded as the plain text, then coloured
                return [c.join(codes[c]) + " " * (width - len(c)) if c in codes else _pad(c, width, False)
                        for c in cells]
            if measure is len:
                return list(map(str.rjust if right[i] else str.ljust, cells, itertools.repeat(width)))
            padded = {c: _pad(c, width, right[i]) for c in set(cells)}  # each distinct text measured once
            return [padded[c] for c in cells]

        title = [paint(part.replace("\u00a0", " ").center(total).rstrip(), "italic")
                 for part in textwrap.wrap(self.title, max(total, 20))]
        head = "  ".join(column(i, [c])[0] for i, c in enumerate(self.columns)).rstrip()
        body = ["  ".join(cells).rstrip() for cells in zip(*(column(i, col) for i, col in enumerate(self.cells)), strict=True)]
        console.file.write("\n".join([*title, paint(head, "bold"), "─" * total, *body]) + "\n")
        console.file.flush()


def _column_width(cells: list[str]) -> int:
    """The widest cell's width; measured by len when the column is ASCII (nearly always)."""
    if not cells:
        return 0
    if "".join(cells).isascii():
        return max(map(len, cells))
    return max(map(_width, set(cells)))  # cells repeat (a parent's forks): measure each text once


def _cut(text: str, width: int) -> str:
    text = text[: width - 1]
    while _width(text) > width - 1:
        text = text[:-1]
    return text + "…"


def _pad(text: str, width: int, right: bool) -> str:
    pad = " " * (width - _width(text))
    return pad + text if right else text + pad


def _runs_table(docs: list[dict[str, Any]], home: Path, wide: bool,
                shared: dict[str, list[str]] | None = None) -> RunsListing:
    """The listing of ``docs`` (rows of :meth:`RunStore.listing`), a column at a time;
    ``shared`` keeps the columns the wide and the compact table share, for the other one."""
    forks = any(d["parent"] for d in docs)
    datasets = {short_id(name) for name in {d["dataset"] for d in docs}}
    one_dataset = not wide and len(datasets) == 1
    # No-break spaces keep "all on DATASET" on one line when a long home wraps the title.
    title = f"runs in {home}" + (f", all\u00a0on\u00a0{datasets.pop()}" if one_dataset else "")
    experiment = "model / deficit" if one_dataset else "model / dataset / deficit"
    columns = ["id", "status", experiment, "epochs", "final acc"] + (["created"] if wide else [])
    described: dict[tuple, str] = {}  # a home holds few experiments, repeated over many runs
    experiments = []
    for model, dataset, deficit, window in map(operator.itemgetter("model", "dataset", "deficit", "window"), docs):
        key = (model, dataset, deficit, tuple(window) if window else None)
        text = described.get(key)
        if text is None:
            parts = [short_id(model)] + ([] if one_dataset else [short_id(dataset)]) + [deficit_label(deficit, window)]
            text = described[key] = " / ".join(parts)
        experiments.append(text)
    shared = {} if shared is None else shared
    if "id" not in shared:
        shared.update({
            "id": [d["id"] for d in docs], "status": [d["status"] for d in docs],
            "epochs": [f"{done}/{epochs}" for done, epochs in map(operator.itemgetter("epochs_done", "epochs"), docs)],
            "final acc": ["-" if d["final_acc"] is None else f"{d['final_acc']:.4f}" for d in docs],  # as _fmt_acc
        })
    cells = [shared["id"], shared["status"], experiments, shared["epochs"], shared["final acc"]]
    if wide:
        minutes: dict[float, str] = {}  # runs of a sweep are made in the same few minutes
        made = []
        for created in map(operator.itemgetter("created"), docs):
            minute = created // 60  # time zones are offset by whole minutes (since 1972, everywhere)
            text = minutes.get(minute)
            if text is None:
                text = minutes[minute] = time.strftime("%m-%d %H:%M", time.localtime(created))
            made.append(text)
        cells.append(made)
    if forks:
        if "fork of" not in shared:
            # The id's random suffix is enough to name the parent (`critui show a092` finds it).
            shared["fork of"] = [f"…{d['parent'][-4:]}@{d['fork_epoch']}" if d["parent"] else "" for d in docs]
        cells.append(shared["fork of"])
    return RunsListing(title, columns + (["fork of"] if forks else []), cells, {"epochs", "final acc"}, experiment)


@cli.command(context_settings={"ignore_unknown_options": True})
@click.argument("run_ref", metavar="RUN")
@click.argument("changes", metavar="[+TAG | -TAG]...", nargs=-1)
@home_option
def tag(run_ref, changes, home) -> None:
    """Add (+NAME, or a bare NAME) and remove (-NAME) a run's tags; print its tags.

    RUN is a run id, a unique prefix or suffix of one, or `last`. Tags are kept in the run's
    folder (tags.json) and listed by `critui runs --tag NAME` and the TUI (filter `tag:NAME`).

        critui tag last +baseline +cifar -draft
    """
    from critui.runs.store import check_run_ref

    check_run_ref(run_ref)
    add, remove = [], []
    for change in changes:
        (remove if change.startswith("-") else add).append(change[1:] if change[:1] in "+-" else change)
    store = open_store(home)
    doc = store.get(run_ref)
    notes = store.annotate(doc["id"], add=add, remove=remove)
    shown = " ".join(notes["tags"]) or "(no tags)"
    console.print(f"{doc['id']}: {escape(shown)}", highlight=False)


@cli.command()
@click.argument("run_ref", metavar="RUN")
@click.argument("text", nargs=-1)
@home_option
def note(run_ref, text, home) -> None:
    """Set a run's note: one line of free text (`critui note RUN ''` clears it).

    RUN is a run id, a unique prefix or suffix of one, or `last`. The note is kept in the run's
    folder (tags.json) and shown by `critui show` and the TUI.

        critui note last "lr too high? compare with seed 2"
    """
    from critui.runs.store import check_run_ref

    check_run_ref(run_ref)
    store = open_store(home)
    doc = store.get(run_ref)
    notes = store.annotate(doc["id"], note=" ".join(text))
    console.print(f"{doc['id']}: {escape(notes['note'] or '(no note)')}", highlight=False)


@cli.command()
@click.argument("run_refs", metavar="RUN...", nargs=-1, required=True, callback=lambda ctx, param, refs: _named(refs))
@click.option("--yes", "-y", is_flag=True, help="Delete without asking first.")
@home_option
def delete(run_refs, yes, home) -> None:
    """Delete runs: their directories, checkpoints and history entries.

    RUN is a run id, a unique prefix or suffix of one, or `last`. A running or queued run
    must be stopped first, and a run that forked runs inherit epochs from is kept until
    they go (name them together to delete a whole tree).
    """
    from critui.runs.store import check_run_ref

    for ref in run_refs:  # before any path is touched: `..`, `/x` or '' never name a run
        check_run_ref(ref)
    store = open_store(home)
    docs = list({d["id"]: d for d in (store.get(ref) for ref in run_refs)}.values())
    ids = {d["id"] for d in docs}
    for d in docs:
        if d.get("status") in ("queued", "running"):
            raise CritUIError(f"Run {d['id']} is {d['status']}. Stop it first (Ctrl-C in its `critui run`, "
                              "or `x` in the TUI), then delete it.")
        forks = [c["id"] for c in store.all() if c.get("parent") == d["id"] and c["id"] not in ids]
        if forks:
            from critui.runs.store import forked_from_message

            raise CritUIError(forked_from_message(d["id"], forks))
    if not yes:
        names = "\n".join(f"  {d['id']}  {plain(d.get('name', ''))}" for d in docs)
        click.confirm(f"Delete {len(docs)} run(s), with their checkpoints and history entries?\n{names}\n",
                      abort=True, err=True)
    # Forks before the runs they came from, so each deletion leaves the rest consistent.
    depth = {d["id"]: _fork_depth(d, {x["id"]: x for x in docs}) for d in docs}
    for d in sorted(docs, key=lambda d: -depth[d["id"]]):
        store.delete(d["id"])
    err_console.print(f"Deleted {len(docs)} run(s) from {store.home}.")


def _named(refs: tuple[str, ...]) -> tuple[str, ...]:
    """Run references as given, none of them blank: `delete ''` must never match every run."""
    if any(not ref.strip() for ref in refs):
        raise CritUIError("An empty run reference names no run. Give a run id, a unique part of one, or "
                          "`last` (`critui runs` lists them).")
    return refs


def _fork_depth(doc, docs: dict[str, dict[str, Any]]) -> int:
    depth = 0
    while doc.get("parent") in docs:
        doc, depth = docs[doc["parent"]], depth + 1
    return depth


def _matches(doc, status, deficit, model, dataset) -> bool:
    if status and doc.get("status") not in status:
        return False
    if deficit is not None:
        if deficit == "none":  # no deficit plugin, or one whose window is empty
            if _deficit_text(doc) != "none":
                return False
        elif not _same_plugin(doc.get("deficit"), deficit):
            return False
    return (model is None or _same_plugin(doc.get("model"), model)) and (
        dataset is None or _same_plugin(doc.get("dataset"), dataset))


def _same_plugin(plugin_id: str | None, wanted: str) -> bool:
    return bool(plugin_id) and wanted in (plugin_id, short_id(plugin_id))


def _deficit_text(doc) -> str:
    return deficit_label(doc.get("deficit"), doc.get("window"))


def _fmt_acc(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def _status_markup(status: str) -> str:
    colour = {"finished": "green", "running": "cyan", "failed": "red", "interrupted": "yellow",
              "cancelled": "yellow", "queued": "blue"}.get(status, "white")
    return f"[{colour}]{status}[/]"


@cli.command()
@click.argument("run_ref", metavar="RUN")
@click.option("--fisher/--no-fisher", default=True, help="Print per-layer Fisher traces when the run has them.")
@click.option("--normalised", is_flag=True, help="Show each layer's Fisher trace divided by the sum over layers.")
@click.option("--chart", is_flag=True, help="Also draw test accuracy and the total Fisher trace against the epoch.")
@home_option
def show(run_ref, fisher, normalised, chart, home) -> None:
    """Print a run's config, status, plugin versions and per-epoch metrics.

    RUN is a run id, a unique prefix or suffix of one, or `last`. A forked run's epochs
    before its fork, trained by its parent, are shown first and marked with *.
    """
    from critui.events import read_events, reference_series
    from critui.runs.lineage import read_spec_json, run_history

    store = open_store(home)
    doc = store.get(run_ref)
    run_dir = store.run_dir(doc["id"])
    history = run_history(store, doc)  # a fork: its parent's epochs before the fork, then its own
    problems = list(history.problems)
    spec = read_spec_json(run_dir, problems) or {}
    _print_overview(doc, spec, run_dir, history)
    rows = history.rows
    if rows:
        console.print(_epoch_table(rows))
    else:
        console.print("No epoch has finished yet.")
    layers = history.layers
    if fisher and layers:
        for table in _fisher_tables(rows, layers, normalised, console.width):
            console.print(table)
    events = read_events(run_dir)
    references = reference_series(events)  # a metric's predicted curve, printed beside its values
    for table in _metric_tables(rows, console.width, references):  # plugin metrics, each in its own table(s)
        console.print(table)
    if chart and rows:
        from critui.runs.report import run_chart

        window = spec.get("deficit", {}).get("params", {}) if spec.get("deficit") else {}
        bounds = (window["start"], window["end"]) if "start" in window and "end" in window else None
        from rich.text import Text

        console.print(Text.from_ansi(run_chart(rows, bounds, width=min(console.width, 100))))
    _print_warnings(events)
    failure = next((e for e in reversed(events) if e["event"] == "failed"), None)
    if doc["status"] == "failed" and failure and failure.get("traceback"):
        console.print("[red]traceback[/]")
        console.print(str(failure["traceback"]), markup=False)
    warn_problems(problems)


def warn_problems(problems, per_file: int = 2) -> None:
    """A short warning on stderr for what was skipped: the first lines of each file, then how
    many more, so that every damaged file is named without flooding the terminal."""
    by_file: dict[str, list] = {}
    for problem in problems:
        by_file.setdefault(str(problem.path), []).append(problem)
    for path, found in by_file.items():
        for problem in found[:per_file]:
            err_console.print(f"[yellow]Warning:[/] {escape(str(problem))}", soft_wrap=True)
        if len(found) > per_file:
            err_console.print(f"[yellow]Warning:[/] {len(found) - per_file} more unusable line(s) in "
                              f"{escape(path)} skipped.", soft_wrap=True)


def _print_warnings(events, limit: int = 10) -> None:
    """The worker's warnings (a metric switched off, a null value, no compiler) and plugin changes."""
    notes = [e for e in events if e["event"] in ("warning", "plugins_changed")]
    if not notes:
        return
    console.print(f"[yellow]warnings ({len(notes)})[/]")
    for e in notes[:limit]:
        epoch = f"epoch {e['epoch']}: " if e.get("epoch") is not None else ""
        console.print(f"  {epoch}{e.get('message', '')}", markup=False, highlight=False)
    if len(notes) > limit:
        console.print(f"  ... and {len(notes) - limit} more (events.jsonl has them all)", highlight=False)


def _print_overview(doc, spec, run_dir, history) -> None:
    from critui.runs.store import entry_note, entry_tags

    table = Table(show_header=False, box=None, title=f"run {doc['id']}", title_justify="left")
    table.add_row("status", _status_markup(doc["status"]) + (f"  {escape(str(doc.get('error')))}" if doc.get("error") else ""))
    table.add_row("name", escape(str(doc.get("name", ""))))
    if tags := entry_tags(doc):
        table.add_row("tags", escape(" ".join(tags)))
    if notes := entry_note(doc):
        table.add_row("notes", escape(notes))
    inherited = f" ({history.inherited} inherited)" if history.inherited else ""
    table.add_row("progress", f"{history.epochs_done}/{doc['epochs']} epochs{inherited}")
    from critui.events import score_label

    table.add_row(f"final {score_label(history.rows)}", _fmt_acc(history.final_acc) + "  (mean of the last 5 epochs)")
    table.add_row("seed", str(doc.get("seed")))
    table.add_row("device", device_text(doc))
    if launched := launcher_text(doc):
        table.add_row("launcher", launched)
    if isinstance(doc.get("lr_at_removal"), (int, float)):
        table.add_row("lr at removal", f"{doc['lr_at_removal']:.4g}")
    if note := window_note(spec):
        table.add_row("note", f"[yellow]{escape(note)}[/]")
    table.add_row("git commit", str(doc.get("git_commit") or "-"))
    if doc.get("parent"):
        table.add_row("forked from", f"{doc['parent']} at epoch {doc['fork_epoch']}")
    table.add_row("directory", escape(str(run_dir)))
    for section in ("dataset", "model", "deficit"):
        part = spec.get(section)
        if part:
            version = (doc.get("plugins") or {}).get(part["id"], {})
            params = ", ".join(f"{k}={v}" for k, v in part.get("params", {}).items())
            table.add_row(section, escape(f"{part['id']} ({version.get('distribution', '?')} "
                                          f"{version.get('version', '?')})  {params}"))
    for metric in spec.get("metrics", []):
        params = ", ".join(f"{k}={v}" for k, v in metric.get("params", {}).items())
        table.add_row("metric", escape(f"{metric['id']}  {params}"))
    if spec:
        table.add_row("optim", escape(", ".join(f"{k}={v}" for k, v in spec["optim"].items())))
        table.add_row("train", escape(", ".join(f"{k}={v}" for k, v in spec["train"].items())))
    console.print(table)


def _epoch_table(rows) -> Table:
    table = Table(title="per-epoch metrics (test data is always clean)", box=box.SIMPLE_HEAD)
    from critui.events import score_kind

    name, _ = score_kind(rows)
    score_key = "test_acc" if name == "test_acc" else "score"
    columns = ["epoch", "lr", "deficit", "train loss", "train acc", "test loss",
               "test acc" if score_key == "test_acc" else name]
    has_fisher = any("fisher.total" in r for r in rows)
    extra: list[str] = []  # plugin metrics get their own tables (_metric_tables): this one stays readable
    for column in columns + (["fisher total"] if has_fisher else []) + extra:
        table.add_column(column, justify="right")
    for r in rows:
        cells = [f"{r['epoch']}*" if r.get("inherited") else str(r["epoch"]), _fmt_num(r.get("lr"), ".3g"),
                 "on" if r.get("deficit_active") else "", *(_fmt_num(r.get(key), ".4f") for key in
                                                           ("train_loss", "train_acc", "test_loss", score_key))]
        if has_fisher:
            cells.append(_fmt_num(r.get("fisher.total")))
        cells += [_fmt_num(r.get(k)) for k in extra]
        table.add_row(*cells)
    if any(r.get("inherited") for r in rows):
        table.caption = "* inherited: trained once by the parent run before the fork"
    return table


def _fisher_layers(rows) -> list[str]:
    from critui.runs.lineage import fisher_layers

    return fisher_layers(rows)


def _fisher_tables(rows, layers, normalised, width: int) -> list[Table]:
    """The Fisher table, its layers split over several tables when they do not fit ``width``."""
    parts = _column_parts(layers, [r for r in rows if "fisher.total" in r], lambda r, layer: r.get(f"fisher.{layer}"),
                          width, name=lambda layer: layer)
    tables = []
    for i, part in enumerate(parts):
        table = _fisher_table(rows, layers, normalised, shown=part)
        if len(parts) > 1:
            table.title = f"{table.title} ({i + 1}/{len(parts)})"
        tables.append(table)
    return tables


def _column_parts(keys, rows, value, width: int, name) -> list[list[str]]:
    """``keys`` in runs that fit ``width`` next to an epoch column, each at its widest cell."""
    epoch_w = max([len("epoch"), *(len(str(r["epoch"])) + 1 for r in rows)])
    parts: list[list[str]] = [[]]
    used = epoch_w + 2
    for key in keys:
        need = max([len(name(key)), *(len(_fmt_num(value(r, key)) or "null") for r in rows)]) + 2
        if parts[-1] and used + need > width:
            parts.append([])
            used = epoch_w + 2
        parts[-1].append(key)
        used += need
    return parts


def _fisher_table(rows, layers, normalised, shown=None) -> Table:
    """Per-layer Fisher traces of the epochs that measured them; ``shown``: only those layers."""
    title = "Fisher trace per layer" + (" / sum over layers" if normalised else " (raw)")
    table = Table(title=title, box=box.SIMPLE_HEAD)
    table.add_column("epoch", justify="right")
    shown = layers if shown is None else shown
    for layer in shown:
        table.add_column(escape(layer), justify="right")
    for r in rows:
        if "fisher.total" not in r:
            continue
        total = sum(r.get(f"fisher.{layer}") or 0.0 for layer in layers) or 1.0
        values = [r.get(f"fisher.{layer}") for layer in shown]
        cells = [f"{v / total:.3f}" if normalised and v is not None else _fmt_num(v) for v in values]
        table.add_row(f"{r['epoch']}*" if r.get("inherited") else str(r["epoch"]), *cells)
    return table


def _metric_tables(rows, width: int, references=None) -> list[Table]:
    """Each plugin metric's values as a table like the Fisher one: an epoch row per
    measurement, a column per key (a per-layer metric: per layer). Keys that do not fit
    ``width`` go on to a further table, the epoch column repeated, so that no value is cut.
    A key with a reference curve (``references``, from :func:`critui.events.reference_series`)
    gets a ``KEY ref`` column beside it: the curve's value at that epoch."""
    from critui.events import REFERENCE_SUFFIX as REF
    from critui.events import reference_at
    from critui.runs.lineage import metric_keys

    references = references or {}
    groups: dict[str, list[str]] = {}
    for key in metric_keys(rows):
        groups.setdefault(key.split(".", 1)[0], []).append(key)
        if key in references:
            groups[key.split(".", 1)[0]].append(key + REF)

    def value(r, k):
        if k.endswith(REF):
            return reference_at(references[k[: -len(REF)]], r["epoch"])
        return r.get(k)

    tables = []
    for name, keys in groups.items():
        measured = [r for r in rows if any(k in r for k in keys)]
        parts = _column_parts(keys, measured, value, width, name=lambda k: k.split(".", 1)[1])
        for i, part in enumerate(parts):
            more = f" ({i + 1}/{len(parts)})" if len(parts) > 1 else ""
            table = Table(title=f"metrics.{escape(name)}{more}", box=box.SIMPLE_HEAD)
            table.add_column("epoch", justify="right", no_wrap=True)
            for key in part:
                table.add_column(escape(key.split(".", 1)[1]), justify="right", no_wrap=True)
            for r in measured:
                if not any(k.removesuffix(REF) in r for k in part):
                    continue
                # null: the metric returned something not finite (the warnings below say which)
                cells = [("null" if r.get(k) is None and k in r else _fmt_num(value(r, k))) for k in part]
                table.add_row(f"{r['epoch']}*" if r.get("inherited") else str(r["epoch"]), *cells)
            tables.append(table)
    return tables


def _fmt_num(value, spec: str = ".4g") -> str:
    if value is None:
        return ""
    return f"{value:{spec}}"


@cli.command()
@click.argument("run_refs", metavar="RUN...", nargs=-1, required=True)
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv", show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False), callback=lambda ctx, param, value: _output_path(value),
              help="Write to this file (atomically) instead of standard output.")
@home_option
def export(run_refs, fmt, output, home) -> None:
    """Export runs' per-epoch metrics: CSV (one row per run and epoch) or JSON (with specs).

    A fork's rows start at epoch 0, its parent's epochs marked inherited. A metric with a
    reference curve gets a `KEY ref` column beside its values, as in `critui show`.
    """
    from critui.runs.export import export_csv, export_json

    store = open_store(home)
    docs = [store.get(ref) for ref in run_refs]
    problems: list = []
    text = export_csv(store, docs, problems) if fmt == "csv" else export_json(store, docs, problems)
    warn_problems(problems)
    if output is None:
        click.echo(text, nl=False)
        return
    from critui.runs.export import write_atomic

    write_atomic(output, text)
    err_console.print(f"Wrote {len(docs)} run(s) to {output}")


# -- new-plugin ---------------------------------------------------------------------------------


@cli.command("new-plugin")
@click.argument("name")
@click.option("--kind", "-k", required=True, type=click.Choice(["deficit", "model", "dataset", "metric", "launcher"]),
              help="The kind of plugin to start from.")
@click.option("--dir", "parent", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
              show_default=True, help="Folder to create critui-plugin-NAME/ in.")
def new_plugin(name, kind, parent) -> None:
    """Write a plugin distribution critui-plugin-NAME/: pyproject with the entry point, one
    documented example plugin of KIND, and a test using critui's contract checks.

    \b
    critui new-plugin pixel-dropout --kind deficit
    cd critui-plugin-pixel-dropout && pip install -e '.[test]' && critui plugins && pytest
    """
    from critui.scaffold import names_for
    from critui.scaffold import new_plugin as write_plugin

    root = write_plugin(name, kind, parent)
    names = names_for(name, kind)
    written = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    click.echo(f"Wrote the plugin {names.plugin_id} in {root}/:\n" + "".join(f"  {p}\n" for p in written))
    click.echo(f"Next:\n  cd {root}\n  pip install -e '.[test]'\n  critui plugins\n  pytest\n"
               f"  critui run --plugin {names.plugin_id}")


# -- sweep and report ---------------------------------------------------------------------------


@cli.command()
@click.argument("config_path", metavar="[FILE.toml]", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Print the planned runs, the fork tree and its cost in epochs; train nothing.")
@click.option("--jobs", "-j", type=click.IntRange(min=1), default=1, show_default=True,
              help="Workers at once. On the CPU the cores are split between them (train.threads).")
@click.option("--gpus", metavar="0,1,...", help="GPUs to assign round-robin through CUDA_VISIBLE_DEVICES "
              "(default: every visible GPU when the runs use one).")
@click.option("--per-gpu", "per_gpu", type=click.IntRange(min=1), metavar="K",
              help="Run K workers on each GPU at once (G GPUs: G·K workers, each pinned to its GPU); "
              "small models leave a GPU mostly idle alone. Ignored on the CPU, which uses --jobs.")
@click.option("--set", "-s", "sets", multiple=True, metavar="KEY=VALUE",
              help="Set a parameter in every run of the sweep, like `critui run --set`. Repeatable.")
@click.option("--seeds", metavar="0,1,2", help="Replace the config's sweep.seeds with these seeds.")
@click.option("--max-runs", "max_runs", type=click.IntRange(min=1), metavar="N",
              help="Refuse a grid of more than N runs (default: the config's sweep.max_runs, else 5000). "
              "The size is counted from the axes before any run is made.")
@click.option("--resume", "resume_ref", metavar="SWEEP",
              help="Continue an interrupted sweep (id, unique prefix, or `last`) from its runs' last checkpoints.")
@click.option("--allow-plugin-change", is_flag=True,
              help="With --resume: continue even though a plugin now comes from another distribution or version.")
@launcher_option
@home_option
def sweep(config_path, dry_run, jobs, gpus, per_gpu, sets, seeds, max_runs, resume_ref, allow_plugin_change,
          launcher, home) -> None:
    """Run a sweep that reproduces one of the paper's figures, sharing training prefixes.

    \b
    critui sweep configs/demo-removal.toml --dry-run    the plan, the fork tree, epochs saved
    critui sweep configs/demo-removal.toml --jobs 2     train it, two workers at once
    critui sweep configs/demo-removal.toml --seeds 0,1,2  the same over three seeds
    critui sweep configs/fig1-removal.toml --per-gpu 4  on GPUs: four workers share each one
    critui sweep FILE --max-runs 20000                  allow a grid above 5000 runs
    critui sweep --resume last                          continue after Ctrl-C or a crash
    critui report last                                  the figure's table and chart
    critui sweep FILE --launcher slurm --jobs 40 --set launcher.partition=gpu
                                                        each run a Slurm job, 40 at a time

    Runs that train identically up to epoch k (same settings, same deficit activity and
    learning rate for every epoch before k) share that prefix: it is trained once,
    checkpointed exactly at k, and the other runs fork from the checkpoint. A forked run is
    bit-identical (on the CPU) to the same run trained from scratch.

    A grid of more than 5000 runs is refused before it is expanded; raise the limit with
    --max-runs N or max_runs = N in the config's [sweep] table.
    """
    from critui.plugins import get_registry
    from critui.runs import scheduler as sched

    registry = get_registry()
    warn_failed_plugins(registry)
    if resume_ref and config_path:
        raise CritUIError("Give either a sweep config (FILE.toml) to start a sweep or --resume SWEEP to "
                          "continue one, not both.")
    if resume_ref:
        only_launcher_sets(sets, "a resumed sweep")
        store = open_store(home)
        record = sched.load_record(store, resume_ref)
        docs = {d["id"]: d for d in store.all()}
        live = sched.left_behind(store, record, docs)
        jobs_left = live["jobs"]
        if jobs_left:  # its manager may be gone; the cluster still trains them
            raise CritUIError(f"Sweep {record['id']} still has {len(jobs_left)} job(s) on the cluster (e.g. run "
                              f"{jobs_left[0]['id']}, job {plain(jobs_left[0]['job'])}). Wait for them to end "
                              f"(`critui runs --status running`), or {_how_to_stop(registry, jobs_left, home)}, "
                              "then resume it.")
        if busy := live["managed"]:
            raise CritUIError(f"Sweep {record['id']} is still running: {len(busy)} run(s) have a live worker "
                              f"(e.g. {busy[0]['id']}) followed by the critui process {busy[0]['manager_pid']} "
                              "(a `critui sweep` or the TUI). Stop that process first, or wait for it.")
        previous = record.get("launcher") or {}
        worker_launcher, _, _ = pick_launcher(registry, launcher, (), sets, home,
                                              default=(previous.get("id"), previous.get("settings") or {}))
        _check_sweep_provenance(store, registry, record, docs, allow_plugin_change)
        sys.exit(_run_sweep(store, record, jobs, gpus, per_gpu, worker_launcher, adopt=live["orphans"]))
    if config_path is None:
        raise CritUIError("Give a sweep config, e.g. `critui sweep configs/demo-removal.toml`, or continue "
                          "one with `critui sweep --resume SWEEP`.")
    from critui.sweeps import expand, load_sweep

    # A dry run plans on a laptop what a cluster will train: the launcher's settings are
    # checked, not whether it can start here.
    worker_launcher, _, sets = pick_launcher(registry, launcher, (), sets, home, check=not dry_run)
    spec_sweep = load_sweep(config_path, max_runs=max_runs)
    if seeds is not None:
        spec_sweep = dataclasses.replace(spec_sweep, seeds=_parse_seeds(seeds))
    planned = expand(spec_sweep, registry, sets)
    # The cores split between --jobs local workers, then the fork tree (as the TUI's form does).
    nodes, scratch, forked = sched.plan_sweep(planned, jobs, worker_launcher.local)
    if notes := [note for run in planned if (note := run.spec.window_note())]:
        err_console.print(f"[yellow]Note:[/] {len(notes)} of the {len(planned)} runs: {escape(notes[0])}")
    if worker_launcher.local:
        _hint_idle_cores(planned, jobs)
    if dry_run:
        _print_plan(spec_sweep, planned, nodes, scratch, forked)
        return

    preflight(registry, [run.spec for run in planned])
    store = open_store(home)
    record = sched.create_sweep(store, spec_sweep, planned, nodes,
                                lambda spec: _plugin_versions(registry, spec), str(config_path),
                                launcher={"id": worker_launcher.id, "settings": worker_launcher.settings})
    console.print(f"[bold]sweep {record['id']}[/]  {len(planned)} runs, {forked} epochs to train "
                  f"({scratch} from scratch: {_saved(scratch, forked)})")
    sys.exit(_run_sweep(store, record, jobs, gpus, per_gpu, worker_launcher))


def _check_sweep_provenance(store, registry, record, docs, allow_change: bool) -> None:
    """Every unfinished run of a resumed sweep must find its plugins where it recorded them."""
    from critui.provenance import check_provenance, record_changes
    from critui.runs.lineage import read_spec

    unfinished = [docs[e["run_id"]] for e in record["runs"]
                  if e["run_id"] in docs and docs[e["run_id"]].get("status") != "finished"]
    allowed = [(doc["id"], check_provenance(doc, registry, allow_change, action="resume",
                                            spec=read_spec(store.run_dir(doc["id"]), [])))
               for doc in unfinished]
    for run_id, changes in allowed:
        record_changes(store, run_id, changes)


def _parse_seeds(text: str) -> list[int]:
    items = [item.strip() for item in text.split(",")]
    # ASCII digits only: int() also reads "١" or "߁" as digits, which nobody types as a seed.
    if not all(item.isascii() and item.isdigit() for item in items):
        raise CritUIError(f"--seeds {text!r} is not a list of seeds: give integers >= 0 separated by "
                          "commas, e.g. --seeds 0,1,2.")
    numbers = [int(item) for item in items]
    if len(set(numbers)) != len(numbers):
        raise CritUIError(f"--seeds {text!r} repeats a seed; list each once.")
    return numbers


def _plugin_versions(registry, spec) -> dict[str, dict[str, str]]:
    used = [spec.dataset, spec.model] + ([spec.deficit] if spec.deficit else []) + spec.metrics
    return {p.id: _plugin_source(registry.get(p.id)) for p in used}


def _saved(scratch: int, forked: int) -> str:
    saved = scratch - forked
    return f"{saved} fewer epochs, {100 * saved / scratch:.1f}% saved" if scratch else "nothing to train"


def _print_plan(spec_sweep, planned, nodes, scratch: int, forked: int) -> None:
    from rich.tree import Tree

    from critui.runs.planner import roots

    table = Table(title=f"sweep {escape(spec_sweep.name)}: {len(planned)} runs", box=box.SIMPLE_HEAD,
                  pad_edge=False, show_edge=False, padding=(0, 1, 0, 0))
    # "fork of" reads #PARENT@EPOCH, as in `critui runs`; the run label is the one column that wraps.
    for column in ("#", "run", "deficit", "epochs", "fork of", "trains"):
        table.add_column(column, justify="left" if column in ("run", "deficit") else "right",
                         no_wrap=column != "run")
    for node, run in zip(nodes, planned, strict=True):
        window = node.spec.window()
        table.add_row(
            str(node.index), escape(run.label()),
            deficit_label(node.spec.deficit.id if node.spec.deficit else None, window),
            str(node.spec.epochs), "-" if node.parent is None else f"#{node.parent}@{node.fork_epoch}",
            str(node.epochs_to_train),
        )
    console.print(table)
    tree = Tree("fork tree (a child starts from its parent's checkpoint at the fork epoch)")

    stack = [(tree, r) for r in reversed(roots(nodes))]
    while stack:  # depth first without recursion: a chain of forks may be thousands deep
        branch, i = stack.pop()
        node = nodes[i]
        where = f"fork at {node.fork_epoch}, " if node.parent is not None else ""
        sub = branch.add(f"#{i} {escape(planned[i].label())}  ({where}trains {node.epochs_to_train} of {node.spec.epochs})")
        stack.extend((sub, child) for child in reversed(sorted(node.children, key=lambda c: nodes[c].fork_epoch)))
    console.print(tree)
    console.print(f"Epochs: {scratch} from scratch, {forked} with shared-prefix forking ({_saved(scratch, forked)}).")


def _hint_idle_cores(planned, jobs: int) -> None:
    """Say so when a CPU sweep whose runs pin their threads (the demos pin one) would leave
    cores idle at this --jobs."""
    from critui.runs import scheduler as sched

    cores = sched.cpu_threads_per_worker(1)
    each = max(run.spec.train["threads"] for run in planned)
    if len(planned) > jobs and jobs * each < cores and not sched.detect_gpus():
        better = min(len(planned), max(1, cores // each))
        err_console.print(f"[dim]Each run takes {each} thread{'s' if each > 1 else ''}, so --jobs {jobs} keeps "
                          f"{jobs * each} of the {cores} cores busy; --jobs {better} would use them all.[/]")


def _device_of(store, run_id: str) -> str:
    """The device a run's spec asks for; "cpu" when its spec.json cannot be read (the worker
    then fails that run with the reason, and the others still run)."""
    try:
        device = json.loads((store.run_dir(run_id) / "spec.json").read_text(encoding="utf-8"))["train"]["device"]
    except (OSError, ValueError, KeyError, TypeError):
        return "cpu"
    return device if isinstance(device, str) else "cpu"


def _run_sweep(store, record: dict[str, Any], jobs: int, gpus_option: str | None, per_gpu: int | None = None,
               launcher=None, adopt=()) -> int:
    """Train a sweep's pending runs with a progress display; Ctrl-C cancels the whole sweep."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from critui.runs import scheduler as sched

    gpus = [g.strip() for g in gpus_option.split(",") if g.strip()] if gpus_option else None
    if launcher is not None and not launcher.local:
        if gpus or per_gpu:
            err_console.print(f"Note: --gpus and --per-gpu are ignored with {launcher.id}: its scheduler places "
                              "each job (see its gpus setting); --jobs sets how many are submitted at once.")
        gpus, per_gpu = [], None
    present = {d["id"] for d in store.all()}
    if deleted := [e["run_id"] for e in record["runs"] if e["run_id"] not in present]:
        err_console.print(f"Note: {len(deleted)} run(s) of sweep {record['id']} were deleted (e.g. {deleted[0]}) "
                          "and are skipped; `critui report` shows them as not finished.")
    if gpus is None:
        devices = {_device_of(store, e["run_id"]) for e in record["runs"] if e["run_id"] in present}
        gpus = sched.detect_gpus() if devices - {"cpu"} else []
    if per_gpu is not None and not gpus:
        err_console.print(f"Note: --per-gpu {per_gpu} is ignored: these runs train on the CPU, where --jobs "
                          f"({jobs}) sets how many run at once.")
    from critui.events import epoch_table, epochs_covered, read_events, score_text

    kept = [e for e in record["runs"] if e["run_id"] in present]
    total = sum(e["epochs"] - (e.get("fork_epoch") or 0) for e in kept)
    done = sum(epochs_covered(epoch_table(read_events(store.run_dir(e["run_id"])))) for e in kept)
    progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                        TextColumn("{task.fields[status]}"), TimeElapsedColumn(), console=console)
    overall = progress.add_task(f"sweep {record['id']}", total=total, completed=min(done, total), status="epochs")
    tasks: dict[int, Any] = {}

    def on_start(entry) -> None:
        tasks[entry["index"]] = progress.add_task(f"  #{entry['index']} {escape(entry['label'])}", total=entry["epochs"],
                                                  completed=entry.get("fork_epoch") or 0, status="starting")

    scored: dict[int, str] = {}  # a regression's score name, per entry
    reached: dict[int, int] = {}  # the epochs each entry's events have covered

    def on_event(entry, event) -> None:
        task = tasks.get(entry["index"])
        if event["event"] == "epoch" and task is not None:
            # train.log_every > 1 logs every N-th epoch: advance by the epochs it covers
            # (the first event of a run counts one epoch: a resumed run's earlier ones are in `done`)
            before = reached.get(entry["index"], event["epoch"])
            reached[entry["index"]] = event["epoch"] + 1
            progress.update(task, completed=event["epoch"] + 1, status=score_text(event))
            progress.advance(overall, max(1, event["epoch"] + 1 - before))
            if "score" in event:
                scored[entry["index"]] = str(event.get("score_name") or "score")

    def on_end(entry, status: str) -> None:
        task = tasks.pop(entry["index"], None)
        if task is not None:
            progress.remove_task(task)
        doc = store.get(entry["run_id"])
        progress.console.print(f"#{entry['index']} {escape(entry['label'])}: {_status_markup(status)}"
                               + (f"  final {scored.get(entry['index'], 'acc')} {doc['final_acc']:.4f}"
                                  if doc.get("final_acc") is not None else ""))

    scheduler = sched.SweepScheduler(store, record, jobs, gpus, per_gpu, on_event=on_event, on_start=on_start,
                                     on_end=on_end, launcher=launcher)
    if adopt:  # workers a TUI (or a killed `critui sweep`) left training: followed, not restarted
        err_console.print(f"Following {len(adopt)} run(s) still training from an earlier session "
                          f"(e.g. {adopt[0][0]['id']}); they count towards --jobs.")
    with StopSignals() as stop:
        with progress:
            scheduler.adopt(list(adopt))
            while not stop.received and scheduler.step():
                time.sleep(0.2)
        if stop.received and (scheduler.pending or scheduler.running):  # else every run had ended
            err_console.print("Stopping the sweep cleanly...")
            scheduler.cancel()
            err_console.print(f"Sweep {record['id']} cancelled; finished runs and every checkpoint are kept. "
                              f"Continue it with:\n  critui sweep --resume {record['id']}")
            return 130
    statuses = scheduler.status
    failed = [i for i, s in statuses.items() if s not in ("finished", "deleted")]
    if failed:
        err_console.print(f"[red]{len(failed)} run(s) of sweep {record['id']} did not finish[/] "
                          f"({', '.join(record['runs'][i]['run_id'] for i in failed[:5])}); see `critui show RUN`, "
                          f"then `critui sweep --resume {record['id']}`.")
        return 1
    # Commands go on their own line, so a narrow terminal does not break them in two.
    console.print(f"Sweep {record['id']} finished. See the figure with:\n  critui report {record['id']}")
    return 0


@cli.command()
@click.argument("sweep_refs", metavar="SWEEP...", nargs=-1, required=True)
@click.option("--csv", "as_csv", is_flag=True, help="Print the table as CSV.")
@click.option("--json", "as_json", is_flag=True, help="Print the table as JSON (with each seed's accuracy).")
@click.option("--output", "-o", type=click.Path(dir_okay=False), callback=lambda ctx, param, value: _output_path(value),
              help="Write the CSV or JSON to this file (atomically) instead of standard output.")
@click.option("--png", type=click.Path(dir_okay=False, path_type=Path),
              help="Also draw the figure to this PNG file (needs matplotlib: pip install 'critui[plot]').")
@click.option("--chart/--no-chart", default=True, help="Draw the terminal chart under the table.")
@click.option("--metric", metavar="NAME.KEY", default=None,
              help="Report a recorded metric's final value (mean of its last 5) instead of the test score, e.g. "
                   "pathway-share.b; the drop is the reference's value minus the row's.")
@click.option("--per-seed", is_flag=True,
              help="Show each seed's final accuracy and its drop from the same seed's reference "
                   "(with --csv: one line per run).")
@home_option
def report(sweep_refs, as_csv, as_json, output, png, chart, metric, per_seed, home) -> None:
    """Print a sweep's figure: final test accuracy per axis value (mean ± std over seeds),
    the drop against the baseline, the LR at removal, and a terminal chart.

    SWEEP is a sweep id, a unique prefix of one, or `last`. Several sweeps of the same
    config (run again with other seeds, say) are reported together, as one figure.
    """
    from critui.runs import report as reports
    from critui.runs import scheduler as sched

    if as_csv and as_json:
        raise CritUIError("Choose one of --csv and --json.")
    if output and not (as_csv or as_json):
        raise CritUIError("--output writes the CSV or JSON export; add --csv or --json.")
    if png is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise CritUIError(f"--png {png} needs matplotlib, which is not installed. Install the optional "
                              "extra with pip install 'critui[plot]' (or pip install matplotlib), or export "
                              "the table with --csv / --json and plot it elsewhere.") from None
    store = open_store(home)
    problems: list = []
    record = reports.merge_records([sched.load_record(store, ref) for ref in sweep_refs])
    data = reports.build_report(store, record, problems, metric=metric)
    warn_problems(problems)
    reports.check_metric(data, store, record)
    if as_csv or as_json:
        if as_csv:
            text = reports.per_seed_csv(data) if per_seed else reports.to_csv(data)
        else:
            text = reports.to_json(data) + "\n"  # it always holds each seed's accuracy and drop
        if output is None:
            click.echo(text, nl=False)
        else:
            from critui.runs.export import write_atomic

            write_atomic(output, text)
            err_console.print(f"Wrote the report of sweep {data['sweep']} to {output}")
    else:
        for table in reports.per_seed_tables(data, console.width) if per_seed else [reports.rich_table(data)]:
            console.print(table)
        if chart and not per_seed:
            drawn = reports.terminal_chart(data, width=min(console.width, 100))
            if drawn:
                from rich.text import Text

                console.print(Text.from_ansi(drawn))
    if png is not None:
        reports.draw_png(data, png)
        err_console.print(f"Wrote the figure to {png}")


# -- entry point --------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: user errors become one paragraph and exit status 2."""
    try:
        cli.main(args=argv, prog_name="critui", standalone_mode=False)
    except CritUIError as exc:
        err_console.print(f"[bold red]Error:[/] {escape(str(exc))}", soft_wrap=False)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        err_console.print("Aborted.")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except OSError as exc:
        if (message := describe_os_error(exc)) is None:
            raise
        err_console.print(f"[bold red]Error:[/] {escape(message)}", soft_wrap=False)
        sys.exit(2)


if __name__ == "__main__":
    main()
