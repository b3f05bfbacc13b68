"""The training subprocess: ``python -m critui.train.worker RUN_DIR``.

The worker owns its run directory. It reads ``spec.json``, resumes from ``ckpt/latest.pt``
when one exists, appends to ``events.jsonl`` and replaces the latest checkpoint at every
epoch boundary, keeping the checkpoints of the epochs listed in ``keep_checkpoints``. It
never touches the run index: its exit code and last event say how it ended.

Exit codes: 0 finished, 1 crashed (traceback in the events), 2 bad input (a message for the
user), 3 NaN loss, 4 busy (another worker holds the run directory; nothing was written),
75 paused for its cluster job to be requeued (``requeue_signal``; not an end: the requeued job
resumes the run), 130 cancelled (SIGTERM or SIGINT).
"""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import sys
import time
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

# The exit codes are the launcher contract's: whoever started the worker reads them.
from critui.launching import (
    EXIT_BUSY,
    EXIT_CANCELLED,
    EXIT_CRASHED,
    EXIT_FINISHED,
    EXIT_NAN,
    EXIT_REQUEUE,
    EXIT_USER,
)

LOCK_FILE = ".worker.lock"


class Cancelled(BaseException):
    """Raised from the signal handler so that the loop stops at a safe point.

    A BaseException, like KeyboardInterrupt, so that no ``except Exception`` on the way up
    (the fallback around torch.compile, a library's own) can swallow a cancel.
    """


class Diverged(Exception):
    """The training loss became NaN or infinite."""


# A signal raises Cancelled wherever the worker is, except inside ``_bookkeeping()``. An
# exception raised inside torch.save's C++ writer comes out as a RuntimeError ("unexpected
# pos"), or aborts the process from a destructor, so the run would end as crashed; there
# the cancel waits until the checkpoint and its event are complete. The worker starts
# shielded, too, until its events file is open: a cancel that arrives while it starts up
# is recorded like any other.
_signals = {"shield": 0, "pending": None}


def _on_signal(signum, frame):
    name = signal.Signals(signum).name
    if _signals["shield"]:
        _signals["pending"] = name
        return
    raise Cancelled(name)


def _unshield() -> None:
    """Leave one shielded stretch; raise Cancelled for a signal that came during it."""
    _signals["shield"] -= 1
    if not _signals["shield"] and (name := _signals["pending"]):
        _signals["pending"] = None
        raise Cancelled(name)


@contextmanager
def _bookkeeping():
    """Defer the stop signals (SIGTERM, SIGINT, a launcher's requeue signal) to the end of the
    block, where they raise Cancelled."""
    _signals["shield"] += 1
    try:
        yield
    except BaseException:
        _signals["shield"] -= 1  # the block failed: its own exception goes first
        raise
    _unshield()


def main(argv: list[str] | None = None, requeue_signal: int | None = None) -> int:
    """Train the run directory ``argv[0]``; return the exit code.

    ``requeue_signal`` (a cluster launcher's: submitit's SIGUSR2, sent before the job's time
    limit or on preemption) stops the worker at a safe point like SIGTERM, but records
    ``paused``, which does not end the run, and returns ``EXIT_REQUEUE``.
    """
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m critui.train.worker RUN_DIR", file=sys.stderr)
        return EXIT_USER
    run_dir = Path(argv[0])
    if not (run_dir / "spec.json").is_file():
        print(f"{run_dir} has no spec.json: not a critui run directory.", file=sys.stderr)
        return EXIT_USER
    # Restored on the way out: a second signal while the process exits (a terminal's Ctrl-C
    # reaches a whole process group) must not raise Cancelled into the interpreter's clean-up.
    stops = [signal.SIGTERM, signal.SIGINT] + ([requeue_signal] if requeue_signal is not None else [])
    _signals["shield"], _signals["pending"] = 1, None  # until the events file is open
    previous = {s: signal.signal(s, _on_signal) for s in stops}
    signal.pthread_sigmask(signal.SIG_UNBLOCK, stops)  # a local manager starts us with them blocked
    try:
        return _locked(run_dir, requeue_signal)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _signals["shield"], _signals["pending"] = 0, None


def _locked(run_dir: Path, requeue_signal: int | None) -> int:
    """Take the run directory's lock, clear what a killed worker left, and train."""
    # One worker per run directory, for as long as it lives (the OS drops the lock with the
    # process, even on SIGKILL): two managers starting one run at the same moment must not
    # both append to its events and replace its checkpoint.
    from filelock import FileLock, Timeout

    lock = FileLock(run_dir / LOCK_FILE, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        print(f"{run_dir} is being trained by another worker; this one wrote nothing.", file=sys.stderr)
        return EXIT_BUSY
    except OSError as exc:  # e.g. a full disk: not even an empty file fits
        print(f"Cannot lock {run_dir / LOCK_FILE}: {exc}. Free some space or fix the folder's "
              "permissions, then resume the run.", file=sys.stderr)
        return EXIT_CRASHED
    _remove_stale_temps(run_dir)

    from critui.events import EventLog

    log = EventLog(run_dir)
    try:
        return _logged(run_dir, log, requeue_signal)
    finally:
        log.close()


def _remove_stale_temps(run_dir: Path) -> None:
    """Temporary files that a killed worker left half-written: no one else writes here while
    this worker holds the lock. (Older critui versions named theirs ``.NAME.<pid>.tmp``.)"""
    from critui.files import remove_stale_temps

    for folder in (run_dir, run_dir / "ckpt"):
        remove_stale_temps(folder)
        for path in folder.glob(".*.tmp") if folder.is_dir() else ():
            if _LEGACY_TEMP.fullmatch(path.name) and (path.is_symlink() or path.is_file()):
                path.unlink(missing_ok=True)  # a link itself, never what it points to


_LEGACY_TEMP = re.compile(r"\..+\.([0-9]+\.|fork\.|)tmp")


def _logged(run_dir: Path, log, requeue_signal: int | None) -> int:
    """Train, and record how it ended as the last event; return the exit code."""
    state = {"epoch": None}
    try:
        _unshield()  # a cancel that came while starting up is raised here, and recorded
        run(run_dir, log, state)
        return EXIT_FINISHED
    except Cancelled as exc:
        _signals["shield"] += 1  # the last event is written whole, whatever comes now
        if requeue_signal is not None and str(exc) == signal.Signals(requeue_signal).name:
            log.write("paused", epoch=state["epoch"], signal=str(exc),
                      reason="its job is to be requeued (time limit or preemption); it resumes from its last checkpoint")
            return EXIT_REQUEUE
        log.write("cancelled", epoch=state["epoch"], signal=str(exc))
        return EXIT_CANCELLED
    except Diverged as exc:
        _signals["shield"] += 1
        log.write("failed", epoch=state["epoch"], reason="nan", error=str(exc))
        return EXIT_NAN
    except Exception as exc:  # noqa: BLE001 - every failure must reach the events
        _signals["shield"] += 1
        from critui.errors import CritUIError

        if isinstance(exc, CritUIError):
            log.write("failed", epoch=state["epoch"], reason="user", error=str(exc))
            return EXIT_USER
        message = f"{type(exc).__name__}: {exc}"
        if "out of memory" in str(exc).lower():
            message += " (try a smaller optim.batch_size, train.eval_batch_size or model width)"
        if full := _disk_full(exc):
            message = (
                f"the disk holding {run_dir} is full ({full}). Every finished epoch is kept in "
                "events.jsonl, and no checkpoint is half-written (each goes to a temporary file "
                f"first). Free some space, then continue with `critui resume {run_dir.name}`."
            )
        log.write("failed", epoch=state["epoch"], reason="exception", error=message, traceback=traceback.format_exc())
        traceback.print_exc()
        return EXIT_CRASHED


def _disk_full(exc: BaseException | None) -> str | None:
    """The OSError text if ``exc`` comes from a full disk, else None. torch.save reports one
    as a RuntimeError from its zip writer ("unexpected pos ..."), with the OSError it hit
    as its context, so the whole chain is searched."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return exc.strerror or str(exc)
        exc = exc.__cause__ or exc.__context__
    return None


def run(run_dir: Path, log, state: dict) -> None:
    import torch

    from critui import __version__
    from critui.config import RunSpec
    from critui.devices import device_name, resolve_device, usable_cores
    from critui.events import FINAL_WINDOW
    from critui.plugins import registry_for_run
    from critui.train import checkpoint
    from critui.train.loop import (
        derive_seed,
        lr_at,
        make_optimizer,
        prepare_data,
        resolve_speed,
        train_epoch,
    )

    spec = RunSpec.from_json(json.loads((run_dir / "spec.json").read_text()))
    device = torch.device(resolve_device(spec.train["device"]))
    # Half the cores this process may use (a Slurm job's allocation, not the node's count).
    torch.set_num_threads(spec.train["threads"] or max(1, usable_cores() // 2))
    registry = registry_for_run(run_dir)  # only the distributions this run's plugins come from
    t_start, cpu_start = time.perf_counter(), time.process_time()

    from critui.train.plugin_guard import MetricRunner, check_dataset_tensors

    dataset_info = registry.get(spec.dataset.id)
    dataset = dataset_info.cls().load(spec.dataset.params, spec.seed)
    check_dataset_tensors(dataset_info, dataset)  # bad labels or shapes: a message naming the plugin
    data = prepare_data(dataset, device, spec.train["augment"])
    input_shape = tuple(data.train_x.shape[1:])

    torch.manual_seed(derive_seed(spec.seed, -1, "init"))
    model = registry.get(spec.model.id).cls().build(input_shape, data.num_classes, **spec.model.params).to(device)
    speed = resolve_speed(spec.train, device)
    if speed.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(spec, model)
    deficit = None
    if spec.deficit is not None:
        deficit = registry.get(spec.deficit.id).cls(spec.deficit.params, spec.seed, data.num_classes, input_shape)
    metrics = MetricRunner([(registry.get(m.id), registry.get(m.id).cls(m.params, spec.seed)) for m in spec.metrics],
                           log, _bookkeeping)

    ckpt_dir = run_dir / "ckpt"
    latest = ckpt_dir / checkpoint.LATEST
    first_epoch = 0
    if latest.exists():
        first_epoch = checkpoint.load(latest, model, optimizer, device)["next_epoch"]
    eval_bs = spec.train["eval_batch_size"]
    fast, speed = _compiled(model, data, speed, spec.optim["batch_size"], eval_bs, log)
    requested = {k: spec.train.get(k) for k in speed.as_train()}
    _record_speed(run_dir, spec, speed)
    removal = spec.removal_epoch()  # None: the run ends inside its deficit window
    log.write(
        "started",
        epoch=first_epoch,
        pid=os.getpid(),
        device=str(device),
        device_name=device_name(device),
        threads=torch.get_num_threads(),
        torch=torch.__version__,
        critui=__version__,
        resumed=first_epoch > 0,
        input_shape=list(input_shape),
        num_classes=data.num_classes,
        n_train=len(data.train_y),
        n_test=len(data.test_y),
        augment=data.augment,
        **speed.as_train(),
        requested=requested,
        parameters=sum(p.numel() for p in model.parameters()),
        lr_at_removal=None if removal is None else lr_at(spec, removal),
        setup_seconds=round(time.perf_counter() - t_start, 3),
        setup_cpu_seconds=round(time.process_time() - cpu_start, 3),  # CPU time: what a loaded machine does not inflate
    )

    log_every = int(spec.train.get("log_every", 1))
    checkpoint_every = int(spec.train.get("checkpoint_every", 1))
    window = spec.window()
    metrics.record_references(_metric_context(model, data, spec, first_epoch, device, deficit))
    fast.train()  # train_epoch calls train() only when the root module is out of training mode
    for epoch in range(first_epoch, spec.epochs):
        state["epoch"] = epoch
        t0 = time.perf_counter()
        if deficit is not None:  # a deficit acting on the model sets its state every epoch
            deficit.before_epoch(model, epoch, spec.deficit_active(epoch))
        result = train_epoch(fast, optimizer, data, spec, epoch, deficit, speed)
        if not result.finite:
            raise Diverged(
                f"the training loss became NaN or infinite in epoch {epoch} (lr {lr_at(spec, epoch):.4g}). "
                "Lower optim.lr, or check the deficit and dataset."
            )
        if _logged_epoch(epoch, spec.epochs, log_every, window):
            _log_epoch(log, fast, data, spec, epoch, result, eval_bs, speed, t0)
            context = _metric_context(model, data, spec, epoch, device, deficit)
            metrics.measure(context)  # a failing metric is a warning naming it, never the run's end
            fast.train()  # a metric may have left a submodule in eval mode
        next_epoch = epoch + 1
        if (next_epoch % checkpoint_every == 0 or next_epoch == spec.epochs
                or next_epoch in spec.keep_checkpoints):
            with _bookkeeping():
                _checkpoint(spec, model, optimizer, next_epoch, ckpt_dir, log, lr_at(spec, epoch))

    _signals["shield"] += 1  # every epoch is trained and kept: a stop now has nothing to cancel
    from critui.events import epoch_table, final_accuracy, read_events

    rows = epoch_table(read_events(run_dir))
    log.write(
        "finished",
        epochs=spec.epochs,
        final_acc=final_accuracy(rows),  # the final score: an accuracy, or a regression's test MSE
        final_window=FINAL_WINDOW,
        seconds=round(time.perf_counter() - t_start, 3),
        cpu_seconds=round(time.process_time() - cpu_start, 3),
    )


def _metric_context(model, data, spec, epoch: int, device, deficit):
    from critui.kinds import MetricContext

    return MetricContext(
        model=model, epoch=epoch, epochs=spec.epochs, device=device,
        train_x=data.train_x, train_y=data.train_y, test_x=data.test_x, test_y=data.test_y,
        num_classes=data.num_classes, seed=spec.seed, deficit=deficit,
        deficit_active=spec.deficit_active(epoch), spec=spec,
    )


def _logged_epoch(epoch: int, epochs: int, log_every: int, window) -> bool:
    """Whether ``epoch`` gets an epoch event: every ``log_every``-th, the last (the final
    score's), and the epochs on each side of a deficit window's edges (so a chart shows the
    switch where it happened)."""
    if log_every == 1 or epoch % log_every == 0 or epoch >= epochs - 1:
        return True
    return window is not None and any(epoch in (edge - 1, edge) for edge in window)


def _log_epoch(log, model, data, spec, epoch: int, result, eval_bs: int, speed, t0: float) -> None:
    """Evaluate on the clean test set and write the epoch event.

    A classification's event holds ``train_acc`` and ``test_acc``; a regression's holds its
    primary score instead: ``score`` (the test MSE), ``score_name`` and ``higher_is_better``
    (false), which :func:`critui.events.score_of` and the reports read.
    """
    from critui.train.loop import evaluate, evaluate_regression, lr_at

    if data.regression:
        test_loss, test_mse = evaluate_regression(model, data.test_x, data.test_y, data.loss, eval_bs, speed)
        scores = {"train_loss": result.train_loss, "test_loss": test_loss,
                  "score": test_mse, "score_name": "test_mse", "higher_is_better": False}
    else:
        test_loss, test_acc = evaluate(model, data.test_x, data.test_y, eval_bs, speed)
        scores = {"train_loss": result.train_loss, "train_acc": result.train_acc,
                  "test_loss": test_loss, "test_acc": test_acc}
    with _bookkeeping():
        log.write("epoch", epoch=epoch, lr=lr_at(spec, epoch), deficit_active=spec.deficit_active(epoch),
                  **scores, seconds=round(time.perf_counter() - t0, 4))


def _compiled(model, data, speed, batch_size: int, eval_batch_size: int, log):
    """The module to train and evaluate with, and the settings it really runs with.

    With ``compile`` on, that is the compiled model; when compiling raises (no compiler, an
    unsupported op, an old GPU), the run goes on eager and says so in its events and log.
    """
    import dataclasses

    from critui.train.loop import compile_model

    if not speed.compile:
        return model, speed
    try:
        return compile_model(model, data, speed, batch_size, eval_batch_size), speed
    except Exception as exc:  # noqa: BLE001 - any compiler failure means: train eager
        first_line = (str(exc).strip().splitlines() or [""])[0]
        message = (f"torch.compile failed ({type(exc).__name__}: {first_line}); training without it. "
                   "Set train.compile=off to skip the attempt.")
        print(f"warning: {message}", file=sys.stderr)
        log.write("warning", message=message)
        return model, dataclasses.replace(speed, compile=False)


def _record_speed(run_dir: Path, spec, speed) -> None:
    """Write the resolved precision, channels_last and compile into ``spec.json``.

    ``auto`` depends on the device the worker found, so only the worker can resolve it; the
    spec then says what the run trained with, and ``critui show`` prints it. Replaced
    atomically, like every file a reader may open at any moment.
    """
    resolved = speed.as_train()
    if all(spec.train.get(k) == v for k, v in resolved.items()):
        return
    spec.train.update(resolved)
    from critui.files import atomic_write

    atomic_write(run_dir / "spec.json", json.dumps(spec.to_json(), indent=2, sort_keys=True))


def _checkpoint(spec, model, optimizer, next_epoch: int, ckpt_dir: Path, log, lr: float) -> None:
    """Replace the latest checkpoint; keep a copy when the caller asked for this epoch."""
    from critui.files import atomic_copy
    from critui.train import checkpoint

    state = checkpoint.make_state(model, optimizer, next_epoch, {"lr": lr})
    latest = ckpt_dir / checkpoint.LATEST
    checkpoint.save_atomic(state, latest)
    kept = None
    if next_epoch in spec.keep_checkpoints:
        kept = ckpt_dir / checkpoint.epoch_checkpoint_name(next_epoch)
        atomic_copy(latest, kept)
    log.write("checkpoint", epoch=next_epoch, path=str(kept.relative_to(ckpt_dir.parent)) if kept else None)


def exit_without_teardown(code: int) -> NoReturn:
    """End the worker process with ``code`` once its exit handlers have run, skipping the
    interpreter's teardown.

    With torch loaded, that teardown (freeing every module's objects) takes 0.7-1 s on a CPU,
    after the run's last event is written, and the manager, and a sweep's next run, wait for
    it. Nothing of the run is left to it: the events file is closed, every checkpoint and
    spec was written whole through a temporary file, and the OS drops the run's lock with
    the process. Exit handlers (``atexit``: logging's, a plugin's) still run, and the
    standard streams are flushed. Only the ``python -m critui.train.worker`` entry point
    exits this way; a launcher that calls :func:`main` in its own process keeps its teardown.
    """
    import atexit

    run_handlers = getattr(atexit, "_run_exitfuncs", None)
    if run_handlers is None:  # not CPython: the usual way out
        sys.exit(code)
    run_handlers()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more can reach it
            pass
    os._exit(code)


if __name__ == "__main__":
    exit_without_teardown(main())
