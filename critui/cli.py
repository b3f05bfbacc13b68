"""The ``critui`` command line: run, resume, plugins, runs, show and export.

Every command that takes input validates it before doing anything; a problem is printed as
one paragraph (what, the value, the fix) with exit status 2, never a traceback.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

import click
from rich import box
from rich.console import Console
from rich.table import Table

from critui import __version__
from critui.errors import CritUIError

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def home_option(func):
    return click.option(
        "--home",
        type=click.Path(file_okay=False, path_type=Path),
        envvar="CRITUI_HOME",
        help="Folder holding the run index and run directories (default: CRITUI_HOME, else a per-user data dir).",
    )(func)


def open_store(home: Path | None):
    from critui.runs.store import RunStore

    store = RunStore(home)
    store.reconcile()
    return store


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="critui")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """critui: train networks with a sensory deficit during a window of epochs, remove it,
    and measure how much damage is permanent (Achille, Rovere, Soatto, ICLR 2019).

    \b
    critui run --plugin deficits.flip          one experiment, headless
    critui run --plugin deficits.blur --set deficit.end=8 --epochs 28
    critui plugins                              what is installed, with parameters
    critui runs / critui show last              the run history
    """
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())


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
@home_option
def run(plugins, sets, epochs, seed, device, config_path, name, dry_run, home) -> None:
    """Train one run headless, with a live progress bar, and record it in the history.

    Ctrl-C stops the run cleanly (status `cancelled`); `critui resume RUN` continues it.
    """
    from critui.config import build_spec, load_toml
    from critui.devices import resolve_device
    from critui.plugins import get_registry

    registry = get_registry()
    config, source = ({}, None)
    if config_path is not None:
        config, text = load_toml(config_path)
        source = (str(config_path), text)
    overrides = {"epochs": epochs, "seed": seed, "device": device}
    if name:
        config["name"] = name
    spec = build_spec(registry, config, plugins, sets, overrides, source=source)
    resolve_device(spec.train["device"])  # fail now, not inside the worker
    if dry_run:
        console.print_json(json.dumps(spec.to_json()))
        return
    store = open_store(home)
    used = [spec.dataset, spec.model] + ([spec.deficit] if spec.deficit else []) + spec.metrics
    versions = {p.id: _plugin_source(registry.get(p.id)) for p in used}
    doc = store.create(spec, versions)
    sys.exit(watch_run(store, doc["id"], spec))


def _plugin_source(info) -> dict[str, str]:
    return {"distribution": info.distribution, "version": info.version}


def watch_run(store, run_id: str, spec) -> int:
    """Start the worker, follow its events with a progress bar, keep the index in step."""
    from rich.progress import (
        BarColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from critui.events import EventTail, epoch_table, final_accuracy, read_events
    from critui.runs.launcher import start_worker, stop_worker

    run_dir = store.run_dir(run_id)
    tail = EventTail(run_dir)
    tail.offset = (run_dir / "events.jsonl").stat().st_size if (run_dir / "events.jsonl").exists() else 0
    process = start_worker(run_dir)
    store.update(run_id, status="running", pid=process.pid, manager_pid=_own_pid())
    console.print(f"[bold]run {run_id}[/]  {spec.describe()}  ({spec.epochs} epochs)  {run_dir}")
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    end: dict[str, Any] | None = None
    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} epochs"),
        TextColumn("{task.fields[status]}"), TimeElapsedColumn(), TimeRemainingColumn(),
        console=console, transient=False,
    )
    try:
        with progress:
            task = progress.add_task("starting", total=spec.epochs, status="loading data")
            while end is None:
                for event in tail.read_new():
                    end = _on_event(store, run_id, spec, event, progress, task) or end
                if end is None and process.poll() is not None:
                    for event in tail.read_new():
                        end = _on_event(store, run_id, spec, event, progress, task) or end
                    if end is None:
                        end = {"event": "failed", "reason": "exception",
                               "error": f"the worker exited with code {process.returncode} without a final event"}
                    break
                time.sleep(0.1)
    except KeyboardInterrupt:
        err_console.print("Stopping the run cleanly...")
        stop_worker(process)
        for event in tail.read_new():
            end = _on_event(store, run_id, spec, event, None, None) or end
        end = end or {"event": "cancelled"}
    finally:
        signal.signal(signal.SIGTERM, previous)
    process.wait()
    fields = store.summary_fields(read_events(run_dir), ended_default=end["event"] if end["event"] != "finished" else None)
    if end["event"] == "failed" and "error" not in fields:
        fields.update(status="failed", error=end.get("error"))
    store.update(run_id, **fields)
    rows = epoch_table(read_events(run_dir))
    return _print_outcome(run_id, run_dir, end, rows, final_accuracy(rows))


def _own_pid() -> int:
    import os

    return os.getpid()


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def _on_event(store, run_id, spec, event, progress, task) -> dict[str, Any] | None:
    kind = event["event"]
    if kind == "started":
        store.update(run_id, status="running", device=event.get("device"), device_name=event.get("device_name"),
                     torch=event.get("torch"), started=event.get("time"), lr_at_removal=event.get("lr_at_removal"))
        if progress is not None:
            progress.update(task, description="training", completed=event.get("epoch", 0),
                            status=f"on {event.get('device')}")
    elif kind == "epoch" and progress is not None:
        deficit = " deficit on " if event.get("deficit_active") else ""
        progress.update(
            task, completed=event["epoch"] + 1,
            status=f"test acc {event['test_acc']:.3f}  train loss {event['train_loss']:.3f}  lr {event['lr']:.3g}{deficit}",
        )
    elif kind in ("finished", "failed", "cancelled"):
        return event
    return None


def _print_outcome(run_id, run_dir, end, rows, final) -> int:
    kind = end["event"]
    if kind == "finished":
        best = max((r["test_acc"] for r in rows), default=None)
        table = Table(title=f"run {run_id} finished", show_header=False, box=None)
        table.add_row("final test accuracy", f"{final:.4f}  (mean of the last {min(5, len(rows))} epochs)")
        table.add_row("best test accuracy", f"{best:.4f}")
        table.add_row("epochs", str(len(rows)))
        table.add_row("time", f"{end.get('seconds', 0):.1f} s")
        table.add_row("stored in", str(run_dir))
        console.print(table)
        console.print(f"See it again with: critui show {run_id}")
        return 0
    if kind == "cancelled":
        err_console.print(f"Run {run_id} cancelled after {len(rows)} epochs; every completed epoch is kept. "
                          f"Continue it with: critui resume {run_id}")
        return 130
    reason = end.get("reason")
    where = f" in epoch {end['epoch']}" if end.get("epoch") is not None else ""
    err_console.print(f"[red]Error:[/] run {run_id} failed{where}: {end.get('error')}", soft_wrap=True)
    if reason == "user":
        return 2
    if reason == "exception":
        err_console.print(f"The traceback is in {run_dir / 'log.txt'} and in `critui show {run_id}`.")
    return 1


@cli.command()
@click.argument("run_ref", metavar="RUN")
@home_option
def resume(run_ref, home) -> None:
    """Continue an interrupted, cancelled or failed run from its last checkpoint."""
    import json as _json

    from critui.config import RunSpec

    store = open_store(home)
    doc = store.get(run_ref)
    if doc["status"] in ("running", "queued"):
        raise CritUIError(f"Run {doc['id']} is still {doc['status']}; it cannot be resumed twice.")
    if doc["status"] == "finished":
        raise CritUIError(f"Run {doc['id']} already finished all {doc['epochs']} epochs; there is nothing to resume.")
    spec = RunSpec.from_json(_json.loads((store.run_dir(doc["id"]) / "spec.json").read_text()))
    store.update(doc["id"], status="queued", error=None)
    sys.exit(watch_run(store, doc["id"], spec))


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
                               "failed": [f.to_json() for f in registry.failures]}, indent=2))
        return
    table = Table(title="critui plugins", show_lines=True)
    for column in ("id", "from", "description", "parameters"):
        table.add_column(column, overflow="fold")
    for p in ordered:
        params = "\n".join(f"{q.name}={q.default!r} ({q.describe()})" for q in p.params) or "-"
        alias = f"\n(alias {', '.join(p.kind + '.' + a for a in p.cls.aliases)})" if p.cls.aliases else ""
        table.add_row(p.id + alias, f"{p.distribution} {p.version}", p.description, params)
    console.print(table)
    if registry.failures:
        failed = Table(title="plugins that failed to load", show_lines=True, title_style="bold red")
        for column in ("entry point", "from", "error"):
            failed.add_column(column, overflow="fold")
        for f in registry.failures:
            failed.add_row(f.source, f"{f.distribution} {f.version}", f.error)
        console.print(failed)


# -- history ------------------------------------------------------------------------------------


@cli.command()
@click.option("--status", type=click.Choice(["queued", "running", "finished", "failed", "cancelled", "interrupted"]),
              multiple=True, help="Only runs with this status. Repeatable.")
@click.option("--deficit", help="Only runs with this deficit (id or name; `none` for no deficit).")
@click.option("--model", help="Only runs of this model (id or name).")
@click.option("--dataset", help="Only runs on this dataset (id or name).")
@click.option("--limit", "-n", type=click.IntRange(min=1), help="Only the N most recent runs.")
@click.option("--json", "as_json", is_flag=True, help="Print the index documents as JSON.")
@home_option
def runs(status, deficit, model, dataset, limit, as_json, home) -> None:
    """List the run history, oldest first."""
    store = open_store(home)
    docs = [d for d in store.all() if _matches(d, status, deficit, model, dataset)]
    if limit:
        docs = docs[-limit:]
    if as_json:
        click.echo(json.dumps(docs, indent=2))
        return
    if not docs:
        console.print(f"No runs{' match' if (status or deficit or model or dataset) else ''} in {store.home}.")
        return
    table = Table(title=f"runs in {store.home}", box=box.SIMPLE_HEAD, pad_edge=False)
    forks = any(d.get("parent") for d in docs)
    wide = console.width >= 100  # below that, the creation time gives way to the experiment
    columns = ["id", "status", "model / dataset / deficit", "epochs", "final acc"] + (["created"] if wide else [])
    for column in columns + (["forked from"] if forks else []):
        table.add_column(column, no_wrap=column != columns[2], min_width=22 if column == columns[2] else None,
                         justify="right" if column in ("epochs", "final acc") else "left")
    for d in docs:
        row = [
            d["id"], _status_markup(d["status"]),
            f"{_short(d['model'])} / {_short(d['dataset'])} / {_deficit_text(d)}",
            f"{d.get('epochs_done', 0)}/{d['epochs']}", _fmt_acc(d.get("final_acc")),
        ] + ([time.strftime("%m-%d %H:%M", time.localtime(d.get("created", 0)))] if wide else [])
        if forks:
            row.append(f"{d['parent']}@{d['fork_epoch']}" if d.get("parent") else "")
        table.add_row(*row)
    console.print(table)


def _matches(doc, status, deficit, model, dataset) -> bool:
    if status and doc.get("status") not in status:
        return False
    if deficit is not None:
        if deficit == "none":
            if doc.get("deficit"):
                return False
        elif not _same_plugin(doc.get("deficit"), deficit):
            return False
    return (model is None or _same_plugin(doc.get("model"), model)) and (
        dataset is None or _same_plugin(doc.get("dataset"), dataset))


def _same_plugin(plugin_id: str | None, wanted: str) -> bool:
    return bool(plugin_id) and wanted in (plugin_id, _short(plugin_id))


def _short(plugin_id: str | None) -> str:
    return plugin_id.split(".", 1)[1] if plugin_id else "-"


def _deficit_text(doc) -> str:
    if not doc.get("deficit"):
        return "none"
    start, end = doc["window"]
    return f"{_short(doc['deficit'])} [{start},{end})"


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
@home_option
def show(run_ref, fisher, normalised, home) -> None:
    """Print a run's config, status, plugin versions and per-epoch metrics.

    RUN is a run id, a unique prefix or suffix of one, or `last`.
    """
    from critui.events import epoch_table, read_events

    store = open_store(home)
    doc = store.get(run_ref)
    run_dir = store.run_dir(doc["id"])
    spec = json.loads((run_dir / "spec.json").read_text()) if (run_dir / "spec.json").exists() else {}
    events = read_events(run_dir)
    _print_overview(doc, spec, run_dir)
    rows = epoch_table(events)
    if rows:
        console.print(_epoch_table(rows))
    else:
        console.print("No epoch has finished yet.")
    layers = _fisher_layers(rows)
    if fisher and layers:
        console.print(_fisher_table(rows, layers, normalised))
    failure = next((e for e in reversed(events) if e["event"] == "failed"), None)
    if doc["status"] == "failed" and failure and failure.get("traceback"):
        console.print("[red]traceback[/]")
        console.print(failure["traceback"], markup=False)


def _print_overview(doc, spec, run_dir) -> None:
    table = Table(show_header=False, box=None, title=f"run {doc['id']}", title_justify="left")
    table.add_row("status", _status_markup(doc["status"]) + (f"  {doc.get('error')}" if doc.get("error") else ""))
    table.add_row("name", str(doc.get("name", "")))
    table.add_row("progress", f"{doc.get('epochs_done', 0)}/{doc['epochs']} epochs")
    table.add_row("final test acc", _fmt_acc(doc.get("final_acc")) + "  (mean of the last 5 epochs)")
    table.add_row("seed", str(doc.get("seed")))
    table.add_row("device", f"{doc.get('device') or '-'} ({doc.get('device_name') or '-'}), torch {doc.get('torch') or '-'}")
    if doc.get("lr_at_removal") is not None:
        table.add_row("lr at removal", f"{doc['lr_at_removal']:.4g}")
    table.add_row("git commit", str(doc.get("git_commit") or "-"))
    if doc.get("parent"):
        table.add_row("forked from", f"{doc['parent']} at epoch {doc['fork_epoch']}")
    table.add_row("directory", str(run_dir))
    for section in ("dataset", "model", "deficit"):
        part = spec.get(section)
        if part:
            version = (doc.get("plugins") or {}).get(part["id"], {})
            params = ", ".join(f"{k}={v}" for k, v in part["params"].items())
            table.add_row(section, f"{part['id']} ({version.get('distribution', '?')} {version.get('version', '?')})  {params}")
    for metric in spec.get("metrics", []):
        params = ", ".join(f"{k}={v}" for k, v in metric["params"].items())
        table.add_row("metric", f"{metric['id']}  {params}")
    if spec:
        table.add_row("optim", ", ".join(f"{k}={v}" for k, v in spec["optim"].items()))
        table.add_row("train", ", ".join(f"{k}={v}" for k, v in spec["train"].items()))
    console.print(table)


def _epoch_table(rows) -> Table:
    table = Table(title="per-epoch metrics (test data is always clean)", box=box.SIMPLE_HEAD)
    columns = ["epoch", "lr", "deficit", "train loss", "train acc", "test loss", "test acc"]
    has_fisher = any("fisher.total" in r for r in rows)
    extra = sorted({k for r in rows for k in r if "." in k and not k.startswith("fisher.")})
    for column in columns + (["fisher total"] if has_fisher else []) + extra:
        table.add_column(column, justify="right")
    for r in rows:
        cells = [str(r["epoch"]), f"{r['lr']:.3g}", "on" if r.get("deficit_active") else "",
                 f"{r['train_loss']:.4f}", f"{r['train_acc']:.4f}", f"{r['test_loss']:.4f}", f"{r['test_acc']:.4f}"]
        if has_fisher:
            cells.append(_fmt_num(r.get("fisher.total")))
        cells += [_fmt_num(r.get(k)) for k in extra]
        table.add_row(*cells)
    return table


def _fisher_layers(rows) -> list[str]:
    layers: list[str] = []
    for r in rows:
        for key in r:
            if key.startswith("fisher.") and key != "fisher.total" and key[7:] not in layers:
                layers.append(key[7:])
    return layers


def _fisher_table(rows, layers, normalised) -> Table:
    title = "Fisher trace per layer" + (" / sum over layers" if normalised else " (raw)")
    table = Table(title=title, box=box.SIMPLE_HEAD)
    table.add_column("epoch", justify="right")
    for layer in layers:
        table.add_column(layer, justify="right")
    for r in rows:
        if "fisher.total" not in r:
            continue
        total = sum(r.get(f"fisher.{layer}", 0.0) for layer in layers) or 1.0
        values = [r.get(f"fisher.{layer}") for layer in layers]
        cells = [f"{v / total:.3f}" if normalised and v is not None else _fmt_num(v) for v in values]
        table.add_row(str(r["epoch"]), *cells)
    return table


def _fmt_num(value) -> str:
    if value is None:
        return ""
    return f"{value:.4g}"


@cli.command()
@click.argument("run_refs", metavar="RUN...", nargs=-1, required=True)
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv", show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path),
              help="Write to this file (atomically) instead of standard output.")
@home_option
def export(run_refs, fmt, output, home) -> None:
    """Export runs' per-epoch metrics: CSV (one row per run and epoch) or JSON (with specs)."""
    from critui.runs.export import export_csv, export_json

    store = open_store(home)
    docs = [store.get(ref) for ref in run_refs]
    text = export_csv(store, docs) if fmt == "csv" else export_json(store, docs)
    if output is None:
        click.echo(text, nl=False)
        return
    from critui.runs.export import write_atomic

    write_atomic(output, text)
    err_console.print(f"Wrote {len(docs)} run(s) to {output}")


# -- new-plugin ---------------------------------------------------------------------------------


@cli.command("new-plugin")
@click.argument("name")
@click.option("--kind", "-k", required=True, type=click.Choice(["deficit", "model", "dataset", "metric"]),
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


# -- entry point --------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: user errors become one paragraph and exit status 2."""
    try:
        cli.main(args=argv, prog_name="critui", standalone_mode=False)
    except CritUIError as exc:
        err_console.print(f"[bold red]Error:[/] {exc}", soft_wrap=False)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        err_console.print("Aborted.")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
