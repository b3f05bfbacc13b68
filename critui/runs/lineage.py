"""A run's history across workers: resuming it, forking it, and stitching a fork's epochs.

A forked run's ``events.jsonl`` starts at its fork epoch; the epochs before it were trained
once, by its parent (or the parent's parent). :func:`full_rows` stitches them back together,
marking the inherited rows, so that reports and ``critui show`` see the same per-epoch curve
the run would have written had it been trained from scratch. :func:`fork_run` makes such a
fork from any run's epoch, and :func:`reopen_for_resume` readies a stopped run to continue;
the CLI and the TUI both go through them.
"""

from __future__ import annotations

import json
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
    from critui.runs.planner import shared_prefix

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
    same = shared_prefix(spec, child)
    if same < epoch:
        raise CritUIError(f"These changes alter training from epoch {same} on (the deficit window, the learning "
                          f"rate or a setting of the whole run), before the fork at epoch {epoch}. Fork from "
                          f"epoch {same} or earlier, or change only what happens after epoch {epoch}.")
    used = [child.dataset, child.model] + ([child.deficit] if child.deficit else []) + child.metrics
    versions = {p.id: {"distribution": registry.get(p.id).distribution, "version": registry.get(p.id).version}
                for p in used}
    doc = store.create(child, versions, extra={"parent": parent["id"], "fork_epoch": epoch})
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
    rows = full_rows(store, docs[run_id], docs)
    store.update(run_id, epochs_done=len(rows), final_acc=final_accuracy(rows),
                 last_acc=rows[-1]["test_acc"] if rows else None)
