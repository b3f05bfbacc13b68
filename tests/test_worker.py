"""The worker alone: exact resume from a checkpoint, NaN and crash handling."""

from __future__ import annotations

import errno
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from critui.config import build_spec
from critui.events import epoch_table, read_events
from critui.plugins import get_registry

SMALL = ["dataset.n_train=300", "dataset.n_test=200", "train.threads=1"]


def make_run(tmp_path: Path, name: str, extra_sets=(), plugins=(), keep=()) -> Path:
    spec = build_spec(get_registry(), plugins=list(plugins), sets=SMALL + list(extra_sets))
    spec.keep_checkpoints = list(keep)
    run_dir = tmp_path / name
    run_dir.mkdir()
    (run_dir / "spec.json").write_text(json.dumps(spec.to_json()))
    return run_dir


def work(run_dir: Path) -> int:
    return subprocess.run([sys.executable, "-m", "critui.train.worker", str(run_dir)], capture_output=True, timeout=240).returncode


def weights(run_dir: Path) -> dict:
    return torch.load(run_dir / "ckpt" / "latest.pt", weights_only=False)["model"]


def test_resumed_run_equals_uninterrupted_run_bit_for_bit(tmp_path):
    sets = ["train.epochs=4", "deficit.end=2", "train.augment=crop-flip"]
    sets = sets + ["model.width=4"]
    straight = make_run(tmp_path, "straight", sets, ["deficits.blur"], keep=[2])
    assert work(straight) == 0
    resumed = make_run(tmp_path, "resumed", sets, ["deficits.blur"])
    (resumed / "ckpt").mkdir()
    (resumed / "ckpt" / "latest.pt").write_bytes((straight / "ckpt" / "epoch-0002.pt").read_bytes())
    assert work(resumed) == 0
    a, b = weights(straight), weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows_a = epoch_table(read_events(straight))
    rows_b = epoch_table(read_events(resumed))
    assert [r["epoch"] for r in rows_b] == [2, 3]
    for ra, rb in zip(rows_a[2:], rows_b, strict=True):
        assert {k: v for k, v in ra.items() if k != "seconds"} == {k: v for k, v in rb.items() if k != "seconds"}


def test_nan_loss_fails_cleanly_with_the_epoch(tmp_path):
    # Inputs of size 1e30 into a network without BatchNorm overflow within the first epoch.
    # deficit.std is bounded (1000) so that users never get there; the spec is edited as a
    # plugin with no such bound would leave it.
    run_dir = make_run(tmp_path, "nan", ["train.epochs=3", "model.depth=0", "deficit.std=1000"],
                       ["models.fc", "deficits.noise"])
    spec = json.loads((run_dir / "spec.json").read_text())
    spec["deficit"]["params"]["std"] = 1e30
    (run_dir / "spec.json").write_text(json.dumps(spec))
    assert work(run_dir) == 3
    failed = [e for e in read_events(run_dir) if e["event"] == "failed"]
    assert failed[-1]["reason"] == "nan" and failed[-1]["epoch"] == 0
    assert "NaN or infinite in epoch 0" in failed[-1]["error"]


def test_exception_is_recorded_with_its_traceback(tmp_path):
    run_dir = make_run(tmp_path, "crash", ["train.epochs=2"])
    spec = json.loads((run_dir / "spec.json").read_text())
    spec["model"]["params"]["depth"] = "not-a-number"  # bypasses validation: a plugin that raises
    (run_dir / "spec.json").write_text(json.dumps(spec))
    assert work(run_dir) == 1
    failed = [e for e in read_events(run_dir) if e["event"] == "failed"][-1]
    assert failed["reason"] == "exception"
    assert "Traceback" in failed["traceback"]


class FullDisk(io.FileIO):
    """A file on a disk that fills up after ``room`` bytes, as a real one does: the write
    that does not fit raises ENOSPC."""

    room = 4096

    def write(self, data) -> int:
        if self.tell() + len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return super().write(data)


def test_a_full_disk_fails_the_run_with_the_fix_and_leaves_it_resumable(tmp_path, monkeypatch):
    from critui import files
    from critui.train import worker

    run_dir = make_run(tmp_path, "full", ["train.epochs=2", "model.width=4"])
    # torch.save reports the full disk as a RuntimeError from its zip writer, with the
    # OSError as context; the checkpoint of epoch 0 is the write that does not fit. Every
    # atomic write opens its temporary file with os.fdopen.
    monkeypatch.setattr(files.os, "fdopen", FullDisk)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        assert worker.main([str(run_dir)]) == worker.EXIT_CRASHED
    finally:
        for s, handler in handlers.items():
            signal.signal(s, handler)
    failed = [e for e in read_events(run_dir) if e["event"] == "failed"][-1]
    assert "is full (No space left on device)" in failed["error"] and "critui resume full" in failed["error"]
    assert not list((run_dir / "ckpt").glob("*.tmp")) and not list((run_dir / "ckpt").glob(".*"))
    monkeypatch.undo()
    assert work(run_dir) == 0  # space freed: the run goes on
    assert [r["epoch"] for r in epoch_table(read_events(run_dir))] == [0, 1]


def test_a_second_worker_on_one_run_directory_writes_nothing_and_says_busy(tmp_path):
    from critui.train.worker import EXIT_BUSY, EXIT_CANCELLED

    # Enough epochs that the first worker is still training when the second has started
    # (a 3-epoch run once finished first on a loaded machine); it is stopped afterwards.
    run_dir = make_run(tmp_path, "shared", ["train.epochs=5000", "model.width=4"])
    command = [sys.executable, "-m", "critui.train.worker", str(run_dir)]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 900  # a wait for an event, generous: it times nothing
        while time.monotonic() < deadline and first.poll() is None:  # until the first holds the lock and trains
            if any(e["event"] == "started" for e in read_events(run_dir)):
                break
            time.sleep(0.05)
        second = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert first.poll() is None  # the first was training all along
        assert second.returncode == EXIT_BUSY and "being trained by another worker" in second.stderr
    finally:
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=240) == EXIT_CANCELLED
    events = read_events(run_dir)
    assert [e["event"] for e in events].count("started") == 1
    epochs = [r["epoch"] for r in epoch_table(events)]
    assert epochs == list(range(len(epochs)))  # each epoch once, by the first worker


# The worker run with its checkpoint writes interrupted: the third write to the file sends the
# process SIGTERM, which Python delivers inside torch.save's C++ writer, as a kill can.
INTERRUPTED_SAVE = """
import os, signal, sys, torch
from critui.train import worker

real_save = torch.save

class Interrupted:
    def __init__(self, f):
        self.f, self.writes = f, 0

    def write(self, data):
        self.writes += 1
        if self.writes == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return self.f.write(data)

    def flush(self):
        self.f.flush()

torch.save = lambda state, f: real_save(state, Interrupted(f))
sys.exit(worker.main([sys.argv[1]]))
"""


def test_a_cancel_during_a_checkpoint_save_waits_for_the_checkpoint(tmp_path):
    from critui.train.worker import EXIT_CANCELLED

    run_dir = make_run(tmp_path, "cancel", ["train.epochs=3", "model.width=4"])
    done = subprocess.run([sys.executable, "-c", INTERRUPTED_SAVE, str(run_dir)], capture_output=True, text=True, timeout=240)
    assert done.returncode == EXIT_CANCELLED, done.stderr  # was 1: torch's "unexpected pos"
    events = [e["event"] for e in read_events(run_dir)]
    assert events[-3:] == ["epoch", "checkpoint", "cancelled"]
    assert torch.load(run_dir / "ckpt" / "latest.pt", weights_only=False)["next_epoch"] == 1
    assert sorted(p.name for p in (run_dir / "ckpt").iterdir()) == ["latest.pt"]  # no half-written file
    assert work(run_dir) == 0
    assert [r["epoch"] for r in epoch_table(read_events(run_dir))] == [0, 1, 2]


def test_the_worker_skips_the_teardown_but_keeps_its_exit_code_handlers_and_output(tmp_path):
    # `python -m critui.train.worker` ends through exit_without_teardown: what a launcher reads
    # (the exit code, the streams) and what a plugin's atexit handler writes must survive it.
    marker = tmp_path / "handler-ran"
    script = (
        "import atexit, sys\n"
        "from critui.train.worker import exit_without_teardown\n"
        f"atexit.register(lambda: open({str(marker)!r}, 'w').write('yes'))\n"
        "sys.stdout.write('unflushed out'); sys.stderr.write('unflushed err')\n"
        "exit_without_teardown(75)\n"
    )
    buffered = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # pipes: block-buffered
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=buffered)
    assert (done.returncode, done.stdout, done.stderr) == (75, "unflushed out", "unflushed err")
    assert marker.read_text() == "yes"
    # And the entry point itself: a directory that is not a run is bad input, exit code 2.
    entry = subprocess.run([sys.executable, "-m", "critui.train.worker", str(tmp_path)], capture_output=True,
                           text=True, timeout=120)
    assert entry.returncode == 2 and "has no spec.json" in entry.stderr
