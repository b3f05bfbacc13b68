"""A run's history across workers: resuming it, forking it, and stitching a fork's epochs.

A forked run's ``events.jsonl`` starts at its fork epoch; the epochs before it were trained
once, by its parent (or the parent's parent). :func:`full_rows` stitches them back together,
marking the inherited rows, so that reports and ``critui show`` see the same per-epoch curve
the run would have written had it been trained from scratch. :func:`fork_run` makes such a
fork from any run's epoch, and :func:`reopen_for_resume` readies a stopped run to continue;
the CLI and the TUI both go through them.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path
from typing import Any

from critui.config import RunSpec
from critui.errors import CritUIError
from critui.events import epoch_table, final_accuracy, read_events


def full_rows(store, doc: dict[str, Any], docs_by_id: dict[str, dict[str, Any]] | None = None,
              limit: int | None = None) -> list[dict[str, Any]]:
    """Per-epoch rows of ``doc`` including inherited ones (``inherited: True``), up to ``limit``."""
    own = [r for r in epoch_table(read_events(store.run_dir(doc["id"])))
           if limit is None or r["epoch"] < limit]
    parent_id, fork = doc.get("parent"), doc.get("fork_epoch")
    if not parent_id or not fork:
        return own
    if docs_by_id is None:
        docs_by_id = {d["id"]: d for d in store.all()}
    parent = docs_by_id.get(parent_id)
    if parent is None:
        return own
    cut = fork if limit is None else min(fork, limit)
    inherited = [{**r, "inherited": True} for r in full_rows(store, parent, docs_by_id, cut)]
    return inherited + [r for r in own if r["epoch"] >= fork]


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


# -- continuing a run: resume it, or fork a new run from one of its epochs -------------------


def reopen_for_resume(store, ref: str) -> tuple[dict[str, Any], RunSpec]:
    """Check that a run can be resumed and mark it ``queued``; its index entry and spec.

    ``critui resume`` and the TUI both start the worker afterwards, which continues from the
    run's ``ckpt/latest.pt`` (or from epoch 0 when it stopped before its first checkpoint).
    """
    doc = store.get(ref)
    spec = RunSpec.from_json(json.loads((store.run_dir(doc["id"]) / "spec.json").read_text()))

    def resumable(current: dict[str, Any]) -> None:
        if current["status"] in ("running", "queued"):
            raise CritUIError(f"Run {current['id']} is still {current['status']}; it cannot be resumed twice.")
        if current["status"] == "finished":
            raise CritUIError(f"Run {current['id']} already finished all {current['epochs']} epochs; "
                              "there is nothing to resume.")

    # Checked and marked under one lock: a second `critui resume` (or the TUI) started at the
    # same moment sees "queued" and stops, instead of training the run a second time.
    doc = store.claim(doc["id"], resumable, status="queued", error=None)
    return doc, spec


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


def fork_run(store, registry, parent_ref: str, epoch: int, sets: list[str] | tuple[str, ...] = ()) -> tuple[dict[str, Any], bool]:
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

    parent = store.get(parent_ref)
    spec = RunSpec.from_json(json.loads((store.run_dir(parent["id"]) / "spec.json").read_text()))
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
    source = fork_source(store, parent, epoch)
    if source is not None:
        from critui.train.checkpoint import LATEST

        latest = store.run_dir(doc["id"]) / "ckpt" / LATEST
        latest.parent.mkdir(parents=True, exist_ok=True)
        tmp = latest.with_name(f".{latest.name}.fork.tmp")
        shutil.copyfile(source, tmp)
        os.replace(tmp, latest)
    return doc, source is not None


def summarise_fork(store, run_id: str) -> None:
    """A fork's index entry counts its inherited epochs too, like the run trained from scratch."""
    docs = {d["id"]: d for d in store.all()}
    rows = full_rows(store, docs[run_id], docs)
    store.update(run_id, epochs_done=len(rows), final_acc=final_accuracy(rows),
                 last_acc=rows[-1]["test_acc"] if rows else None)
