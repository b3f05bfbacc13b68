"""A run's history across workers: its joined history, resuming it, and forking it.

A forked run's ``events.jsonl`` starts at its fork epoch; the epochs before it were trained
once, by its parent (or the parent's parent). :func:`run_history` joins them back together,
marking the inherited rows, so that every view (``critui show``, ``runs``, ``export``,
``report``, the TUI's screens) sees the same per-epoch curve, epoch count and final accuracy
the run would have had trained from scratch. It is the one place a run's history is
assembled: :func:`join_rows` does the joining for any source of per-run rows (the event
files here, the TUI's live tails there), and :func:`history_summary` turns a joined history
into the index's summary fields, wherever a run is settled. :func:`fork_run` makes a fork
from any run's epoch, and :func:`reopen_for_resume` readies a stopped run to continue; the
CLI and the TUI both go through them.

Nothing read here is trusted: a damaged events line or ``spec.json`` is skipped with a
:class:`~critui.events.Problem` naming the file, and the other runs read as before.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from critui.config import RunSpec
from critui.errors import CritUIError
from critui.events import Problem, epoch_table, final_accuracy, read_events

SPEC_FILE = "spec.json"

Rows = list[dict[str, Any]]


@dataclass(frozen=True)
class JoinedHistory:
    """One run's per-epoch rows from epoch 0: inherited ones (``inherited: True``) first.

    ``chain`` names the runs whose events it draws from, the run itself first; ``problems``
    what was skipped while reading them.
    """

    run_id: str
    rows: Rows
    chain: tuple[str, ...] = ()
    problems: list[Problem] = field(default_factory=list)
    version: Any = None  # changes whenever the rows do (a live view keys its charts on it)

    @property
    def inherited(self) -> int:
        """How many of the rows the run inherited from the runs it was forked from."""
        return sum(1 for r in self.rows if r.get("inherited"))

    @property
    def epochs_done(self) -> int:
        return len(self.rows)

    @property
    def final_acc(self) -> float | None:
        return final_accuracy(self.rows)

    @property
    def last_acc(self) -> float | None:
        return self.rows[-1].get("test_acc") if self.rows else None

    @property
    def layers(self) -> list[str]:
        return fisher_layers(self.rows)

    @property
    def metric_keys(self) -> list[str]:
        return metric_keys(self.rows)

    def summary(self) -> dict[str, Any]:
        """The index's summary fields, counted over the whole history."""
        return {"epochs_done": self.epochs_done, "final_acc": self.final_acc, "last_acc": self.last_acc}


def fisher_layers(rows: Rows) -> list[str]:
    """Fisher layer names in forward order, as the metric wrote them."""
    layers: dict[str, None] = {}
    for row in rows:
        for key in row:
            if key.startswith("fisher.") and key != "fisher.total":
                layers.setdefault(key[7:])
    return list(layers)


def metric_keys(rows: Rows) -> list[str]:
    """Every plugin metric's ``name.key`` but Fisher's, sorted."""
    return sorted({k for r in rows for k in r if "." in k and not k.startswith("fisher.")})


def fork_point(doc: dict[str, Any]) -> int | None:
    """The epoch a run was forked at, when it names a parent and a usable fork epoch."""
    epoch = doc.get("fork_epoch")
    if not isinstance(doc.get("parent"), str) or isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 1:
        return None
    return epoch


def join_rows(doc: dict[str, Any], docs_by_id: dict[str, dict[str, Any]], own_rows: Callable[[str], Rows],
              limit: int | None = None, problems: list[Problem] | None = None) -> tuple[Rows, tuple[str, ...]]:
    """``doc``'s rows below ``limit`` joined with every ancestor's before its fork; the chain.

    ``own_rows(run_id)`` gives a run's own rows (from its events file, or a live tail). Each
    ancestor contributes the epochs from its own fork epoch up to the earliest fork below it;
    a loop in the parents (a damaged index) or a missing parent ends the chain there.
    """
    segments: list[tuple[str, int, int | None]] = []  # (run id, first epoch, end epoch)
    cut, node, seen = limit, doc, set()
    while True:
        seen.add(node["id"])
        fork = fork_point(node)
        parent = docs_by_id.get(node["parent"]) if fork else None
        if fork and parent is None and problems is not None:
            problems.append(Problem(f"run {node['id']}", f"its parent run {node['parent']} is not in the index; "
                                    f"its epochs before {fork} are missing from its history"))
        if parent is None or parent.get("id") in seen:
            segments.append((node["id"], 0, cut))
            break
        segments.append((node["id"], fork, cut))
        cut = fork if cut is None else min(fork, cut)
        node = parent
    rows: Rows = []
    for depth, (run_id, first, end) in reversed(list(enumerate(segments))):
        part = [r for r in own_rows(run_id) if r["epoch"] >= first and (end is None or r["epoch"] < end)]
        rows += [{**r, "inherited": True} for r in part] if depth else part
    return rows, tuple(run_id for run_id, _, _ in segments)


def _events_rows(store, problems: list[Problem] | None) -> Callable[[str], Rows]:
    def own_rows(run_id: str) -> Rows:
        return epoch_table(read_events(store.run_dir(run_id), problems))

    return own_rows


def run_history(store, doc: dict[str, Any], docs_by_id: dict[str, dict[str, Any]] | None = None) -> JoinedHistory:
    """``doc``'s joined history from the event files, and what was skipped reading them."""
    problems: list[Problem] = []
    if docs_by_id is None:
        docs_by_id = {d["id"]: d for d in store.all()} if fork_point(doc) else {}
    rows, chain = join_rows(doc, docs_by_id, _events_rows(store, problems), problems=problems)
    return JoinedHistory(doc["id"], rows, chain, problems)


def full_rows(store, doc: dict[str, Any], docs_by_id: dict[str, dict[str, Any]] | None = None,
              limit: int | None = None) -> Rows:
    """Per-epoch rows of ``doc`` including inherited ones (``inherited: True``), up to ``limit``."""
    if docs_by_id is None:
        docs_by_id = {d["id"]: d for d in store.all()} if fork_point(doc) else {}
    return join_rows(doc, docs_by_id, _events_rows(store, None), limit)[0]


def history_summary(store, doc: dict[str, Any], docs_by_id: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """``epochs_done``, ``final_acc`` and ``last_acc`` of a run over its joined history.

    Wherever a run is settled (its monitor, a sweep's scheduler, the TUI, the store's
    reconcile of a run that ended unwatched), a fork's summary comes from here, so that it
    counts its inherited epochs like the run trained from scratch.
    """
    return run_history(store, doc, docs_by_id).summary()


def ancestry(doc: dict[str, Any], docs_by_id: dict[str, dict[str, Any]]) -> list[tuple[str, int]]:
    """``[(parent id, fork epoch), ...]`` from the nearest ancestor up to the root."""
    chain: list[tuple[str, int]] = []
    seen = {doc["id"]}
    while doc.get("parent") and doc["parent"] not in seen:
        chain.append((doc["parent"], int(doc.get("fork_epoch") or 0)))
        seen.add(doc["parent"])
        doc = docs_by_id.get(doc["parent"], {})
        if not doc:
            break
    return chain


# -- a run's spec.json, checked before any view relies on its shape ---------------------------


def read_spec_json(run_dir: Path, problems: list[Problem] | None = None) -> dict[str, Any] | None:
    """A run's ``spec.json`` as stored, or None (with a problem) when it is missing, cut short
    or of the wrong shape: a view then shows the run without its config."""
    path = Path(run_dir) / SPEC_FILE
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        what = "is missing"
    except UnicodeDecodeError:
        what = "is not UTF-8 text"
    except ValueError:
        what = "is not valid JSON (cut short, or edited by hand)"
    except OSError as exc:
        what = f"cannot be read ({exc.strerror or exc})"
    else:
        what = spec_shape_problem(data)
        if what is None:
            return data
    if problems is not None:
        problems.append(Problem(path, f"{what}; the run's config is left out"))
    return None


def read_spec(run_dir: Path, problems: list[Problem] | None = None) -> RunSpec | None:
    """A run's :class:`RunSpec`, or None with a problem (see :func:`read_spec_json`)."""
    data = read_spec_json(run_dir, problems)
    return RunSpec.from_json(data) if data is not None else None


def spec_shape_problem(data: Any) -> str | None:
    """What makes a parsed ``spec.json`` unusable, or None."""
    if not isinstance(data, dict):
        return f"holds a JSON {type(data).__name__}, not a run spec object"

    def plugin(value: Any) -> bool:
        return isinstance(value, dict) and isinstance(value.get("id"), str) and isinstance(value.get("params", {}), dict)

    for section in ("dataset", "model"):
        if not plugin(data.get(section)):
            return f"has no usable `{section}` (an object with an `id` and `params`)"
    if data.get("deficit") is not None and not plugin(data["deficit"]):
        return "has a `deficit` that is not an object with an `id` and `params`"
    if not isinstance(data.get("metrics", []), list) or not all(plugin(m) for m in data.get("metrics", [])):
        return "has `metrics` that are not a list of objects with an `id` and `params`"
    for section in ("optim", "train"):
        if not isinstance(data.get(section), dict):
            return f"has no `{section}` object"
    try:
        spec = RunSpec.from_json(data)
        spec.epochs, spec.seed, spec.window()  # noqa: B018 - each raises on a wrong type
    except (KeyError, TypeError, ValueError) as exc:
        return f"has a wrong value ({type(exc).__name__}: {exc})"
    return None


# -- continuing a run: resume it, or fork a new run from one of its epochs -------------------


def reopen_for_resume(store, ref: str, allow_plugin_change: bool = False) -> tuple[dict[str, Any], RunSpec]:
    """Check that a run can be resumed and mark it ``queued``; its index entry and spec.

    Its plugins must come from the distributions and versions it recorded
    (:func:`critui.provenance.check_provenance`), or ``allow_plugin_change`` records the change.

    ``critui resume`` and the TUI both start the worker afterwards, which continues from the
    run's ``ckpt/latest.pt`` (or from epoch 0 when it stopped before its first checkpoint).
    """
    from critui.provenance import check_provenance, record_changes

    doc = store.get(ref)
    spec = _spec_or_error(store, doc)
    changes = check_provenance(doc, allow_change=allow_plugin_change, spec=spec)  # before any claim or worker

    def resumable(current: dict[str, Any]) -> None:
        if current["status"] in ("running", "queued"):
            raise CritUIError(f"Run {current['id']} is still {current['status']}; it cannot be resumed twice.")
        if current["status"] == "finished":
            raise CritUIError(f"Run {current['id']} already finished all {current['epochs']} epochs; "
                              "there is nothing to resume.")

    # Checked and marked under one lock: a second `critui resume` (or the TUI) started at the
    # same moment sees "queued" and stops, instead of training the run a second time.
    doc = store.claim(doc["id"], resumable, status="queued", error=None)
    record_changes(store, doc["id"], changes)
    return doc, spec


def _spec_or_error(store, doc: dict[str, Any]) -> RunSpec:
    problems: list[Problem] = []
    spec = read_spec(store.run_dir(doc["id"]), problems)
    if spec is None:
        raise CritUIError(f"Run {doc['id']} cannot be continued: its {problems[0]}. It keeps its history; "
                          "start a new run with the same settings instead.")
    return spec


def spec_config(spec: RunSpec, registry) -> dict[str, Any]:
    """A resolved spec as a config dict, so that ``build_spec`` can apply ``--set`` changes to it."""
    config: dict[str, Any] = {"name": spec.name, "train": dict(spec.train), "optim": dict(spec.optim)}
    for section in ("dataset", "model", "deficit"):
        part = getattr(spec, section)
        if part is not None:
            config[section] = {"id": part.id, **part.params}
    config["metrics"] = {registry.get(m.id).name: dict(m.params) for m in spec.metrics}
    return config


def fork_source(store, parent: dict[str, Any], epoch: int) -> Path | None:
    """The parent's checkpoint holding its state after ``epoch`` epochs, if it kept one.

    A sweep's parent keeps ``ckpt/epoch-KKKK.pt`` at its planned fork epochs; any stopped run
    also has ``latest.pt``, which holds epoch K when the run's last checkpoint event says so.
    """
    from critui.train.checkpoint import LATEST, epoch_checkpoint_name  # torch: only when forking

    ckpt = store.run_dir(parent["id"]) / "ckpt"
    kept = ckpt / epoch_checkpoint_name(epoch)
    if kept.exists():
        return kept
    if parent["status"] in ("running", "queued"):
        return None  # its latest.pt moves on with every epoch
    marks = [e for e in read_events(store.run_dir(parent["id"])) if e["event"] == "checkpoint"]
    if marks and marks[-1].get("epoch") == epoch and (ckpt / LATEST).exists():
        return ckpt / LATEST
    return None


# What a fork may change freely: bookkeeping, what is measured after an epoch (metrics run in
# eval mode, and every epoch reseeds the global RNG before it trains), the run's length and
# the evaluation batch size. Anything else alters training from some epoch on.
NOT_TRAINING = ("name", "keep_checkpoints", "metrics", "train.epochs", "train.eval_batch_size")


def first_training_change(parent: RunSpec, child: RunSpec) -> tuple[int, list[str]]:
    """From which epoch ``child`` trains differently from ``parent``, and the settings that make it.

    The epoch is the number of leading epochs the two train identically (as
    :func:`critui.runs.planner.shared_prefix` counts them, the settings in ``NOT_TRAINING``
    aside); the settings are the dotted names (``deficit.start``, ``optim.lr``, ``deficit``
    for a different or no deficit) whose change alone alters that epoch, empty when the two
    train alike over all their common epochs.
    """
    from critui.runs.planner import shared_prefix

    old, new = parent.to_json(), child.to_json()
    comparable = copy.deepcopy(new)
    for key in ("name", "keep_checkpoints", "metrics"):
        comparable[key] = copy.deepcopy(old[key])
    comparable["train"]["eval_batch_size"] = old["train"].get("eval_batch_size")
    epoch = shared_prefix(parent, RunSpec.from_json(comparable))
    if epoch >= min(parent.epochs, child.epochs):
        return epoch, []
    changed = _changed_settings(old, new)
    alone = [key for key in changed if shared_prefix(parent, RunSpec.from_json(_with_setting(old, new, key))) == epoch]
    return epoch, alone or changed


def _settings(data: dict[str, Any]) -> dict[str, Any]:
    """A spec's JSON as dotted settings that alter training: ``deficit`` (its id), ``deficit.end``..."""
    flat: dict[str, Any] = {}
    for section in ("dataset", "model", "deficit"):
        part = data.get(section) or {"id": None, "params": {}}
        flat[section] = part["id"]
        flat.update({f"{section}.{k}": v for k, v in part["params"].items()})
    for table in ("train", "optim"):
        flat.update({f"{table}.{k}": v for k, v in data[table].items()})
    return {k: v for k, v in flat.items() if k not in NOT_TRAINING}


def _changed_settings(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The settings that differ; a changed plugin counts once, not with each of its parameters."""
    a, b = _settings(old), _settings(new)
    changed = [k for k in sorted(a.keys() | b.keys()) if a.get(k, None) != b.get(k, None)]
    swapped = {k for k in changed if k in ("dataset", "model", "deficit")}
    return [k for k in changed if k.split(".")[0] not in swapped or k in swapped]


def _with_setting(old: dict[str, Any], new: dict[str, Any], key: str) -> dict[str, Any]:
    """``old`` with the one setting ``key`` taken from ``new``."""
    data = copy.deepcopy(old)
    section, _, name = key.partition(".")
    if not name:
        data[section] = copy.deepcopy(new[section])
        return data
    table = data[section] if section in ("train", "optim") else data[section]["params"]
    source = new[section] if section in ("train", "optim") else new[section]["params"]
    if name in source:
        table[name] = source[name]
    else:
        table.pop(name, None)
    return data


def _setting_text(data: dict[str, Any], key: str) -> str:
    """``key=value`` as a spec's JSON has it (``deficit=none`` without a deficit)."""
    value = _settings(data).get(key)
    return f"{key}={'none' if value is None else value}"


def _fork_refusal(parent_id: str, parent: RunSpec, child: RunSpec, epoch: int, same: int,
                  settings: list[str]) -> str:
    """Why a fork at ``epoch`` cannot have these changes: the settings, the epoch they act from, the fix."""
    old, new = parent.to_json(), child.to_json()
    changes = ", ".join(_setting_text(new, key) for key in settings)
    before = ", ".join(_setting_text(old, key) for key in settings)
    names = ", ".join(settings)
    earlier = f"Fork from epoch {same} or earlier, or leave" if same else "Leave"
    return (f"{changes} (run {parent_id} has {before}) would alter training from epoch {same} on, before "
            f"the fork at epoch {epoch}, so the fork would not continue run {parent_id}. {earlier} {names} "
            f"as the run has it, or change only what acts from epoch {epoch} on: the metrics, more "
            f"train.epochs, the deficit window's start or end at epoch {epoch} or later.")


def fork_run(store, registry, parent_ref: str, epoch: int, sets: list[str] | tuple[str, ...] = (),
             allow_plugin_change: bool = False) -> tuple[dict[str, Any], bool]:
    """Create a run that continues ``parent_ref`` from ``epoch``, with ``sets`` changed after it.

    The child records its parent and fork epoch, so that :func:`full_rows` stitches the two
    histories. Its ``ckpt/latest.pt`` is the parent's state at the fork when the parent kept
    it (as a sweep's scheduler does); otherwise the child trains the first ``epoch`` epochs
    again, which the worker's (seed, epoch) randomness makes the same run, only slower. The
    changes may not alter any epoch before the fork (e.g. a deficit window that already
    closed), or the child would not be the parent's continuation. Returns the child's index
    entry and whether it starts from a checkpoint.
    """
    from critui.config import build_spec
    from critui.provenance import check_provenance, record_changes

    parent = store.get(parent_ref)
    spec = _spec_or_error(store, parent)
    changes = check_provenance(parent, registry, allow_plugin_change, action="fork", spec=spec)
    done = len(full_rows(store, parent))
    if not 1 <= epoch <= done:
        raise CritUIError(f"Run {parent['id']} has {done} finished epoch(s); fork it from an epoch between 1 and "
                          f"{done} (the state after that many epochs)." if done else
                          f"Run {parent['id']} has not finished an epoch yet; there is nothing to fork from.")
    config = spec_config(spec, registry)
    config["name"] = f"{spec.name or parent['name']} fork@{epoch}"
    child = build_spec(registry, config, sets=sets)
    if child.epochs <= epoch:
        raise CritUIError(f"The fork would train nothing: it starts after epoch {epoch} and has train.epochs="
                          f"{child.epochs}. Give it more epochs, e.g. train.epochs={epoch + spec.epochs}.")
    same, settings = first_training_change(spec, child)
    if same < epoch:
        raise CritUIError(_fork_refusal(parent["id"], spec, child, epoch, same, settings))
    used = [child.dataset, child.model] + ([child.deficit] if child.deficit else []) + child.metrics
    versions = {p.id: {"distribution": registry.get(p.id).distribution, "version": registry.get(p.id).version}
                for p in used}
    doc = store.create(child, versions, extra={"parent": parent["id"], "fork_epoch": epoch})
    record_changes(store, doc["id"], changes, action="fork")
    source = fork_source(store, parent, epoch)
    if source is not None:
        from critui.files import atomic_copy
        from critui.train.checkpoint import LATEST

        latest = store.run_dir(doc["id"]) / "ckpt" / LATEST
        latest.parent.mkdir(parents=True, exist_ok=True)
        atomic_copy(source, latest)
    return doc, source is not None


def summarise_fork(store, run_id: str) -> None:
    """A fork's index entry counts its inherited epochs too, like the run trained from scratch."""
    docs = {d["id"]: d for d in store.all()}
    if run_id in docs:
        store.update(run_id, **history_summary(store, docs[run_id], docs))
