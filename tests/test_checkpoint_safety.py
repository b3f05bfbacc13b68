"""Files critui reads and writes without trust: checkpoints load no code, writes follow no link.

A checkpoint's pickle could name any function; ``weights_only`` loading refuses all but
tensors and plain values, and the refusal says which file and what to do. A write goes to an
unpredictable temporary file and is renamed over its target, which must be a regular file
(or a device, written in place): nothing planted in a run directory or at an output path
redirects it.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from critui.config import build_spec
from critui.events import read_events
from critui.plugins import get_registry
from critui.runs.store import RunStore

SMALL = ["dataset.n_train=300", "dataset.n_test=200", "train.threads=1", "model.width=4"]


class WritesMarker:
    """Unpickled, it creates the file ``path``: what a planted checkpoint could do with os.system."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def plant(path: Path, marker: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"next_epoch": 1, "model": WritesMarker(marker), "optimizer": {}, "torch_rng": torch.zeros(1)}, path)


def stopped_run(home: Path, epochs: int = 2) -> tuple[RunStore, str, Path]:
    """A run in the index, cancelled after its first epoch as far as the index knows."""
    store = RunStore(home)
    doc = store.create(build_spec(get_registry(), sets=SMALL + [f"train.epochs={epochs}"]), {})
    store.update(doc["id"], status="cancelled")
    return store, doc["id"], store.run_dir(doc["id"])


def worker(run_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "critui.train.worker", str(run_dir)], capture_output=True,
                          text=True, timeout=600)


# -- part 1: checkpoints ------------------------------------------------------------------------


def test_a_planted_checkpoint_runs_no_code_on_resume(critui, home, tmp_path):
    store, run_id, run_dir = stopped_run(home)
    marker = tmp_path / "pwned"
    latest = run_dir / "ckpt" / "latest.pt"
    plant(latest, marker)
    result = critui("resume", run_id)
    assert result.returncode == 2, result.stderr
    assert not marker.exists()  # the pickle's code never ran
    message = " ".join(result.stderr.split())
    assert str(latest) in message and "Delete it" in message and "Traceback" not in result.stderr
    assert store.get(run_id)["status"] == "cancelled"  # refused before the run was reopened
    assert read_events(run_dir) == []  # and before any worker started


@pytest.mark.parametrize("content", [b"\x80\x02garbage", b"", b"PK\x03\x04 cut short"], ids=["pickle", "empty", "zip"])
def test_a_damaged_checkpoint_names_the_file_and_the_checkpoint_kept(critui, home, content):
    store, run_id, run_dir = stopped_run(home)
    ckpt = run_dir / "ckpt"
    ckpt.mkdir()
    (ckpt / "latest.pt").write_bytes(content)
    (ckpt / "epoch-0001.pt").write_bytes(b"kept")
    result = critui("resume", run_id)
    assert result.returncode == 2, result.stderr
    message = " ".join(result.stderr.split())
    assert str(ckpt / "latest.pt") in message and "epoch-0001.pt" in message
    assert "unpickling stack underflow" not in message and "Traceback" not in result.stderr


def test_a_forks_planted_checkpoint_fails_its_worker_with_the_fix(tmp_path):
    # A fork (the TUI's f, `critui sweep --resume`) copies its parent's kept checkpoint into
    # its own latest.pt, and no manager reads it first: the worker refuses it.
    _, _, run_dir = stopped_run(tmp_path / "home")
    marker = tmp_path / "pwned"
    plant(run_dir / "ckpt" / "latest.pt", marker)
    done = worker(run_dir)
    assert done.returncode == 2, done.stderr
    assert not marker.exists()
    failed = read_events(run_dir)[-1]
    assert failed["event"] == "failed" and failed["reason"] == "user"
    assert str(run_dir / "ckpt" / "latest.pt") in failed["error"] and "Delete it" in failed["error"]


def test_a_checkpoint_of_the_wrong_shape_is_refused(tmp_path):
    from critui.errors import CritUIError
    from critui.train.checkpoint import read

    path = tmp_path / "latest.pt"
    for state, problem in [([1, 2], "holds a list"), ({"next_epoch": 1}, "has no model"),
                           ({"next_epoch": -3, "model": {}, "optimizer": {}, "torch_rng": torch.zeros(1)}, "next_epoch is -3"),
                           ({"next_epoch": 1, "model": {}, "optimizer": {}, "torch_rng": torch.zeros(1)}, "torch_rng")]:
        torch.save(state, path)
        with pytest.raises(CritUIError, match=problem):
            read(path)
    path.unlink()
    path.symlink_to("/dev/zero")
    with pytest.raises(CritUIError, match="not a regular file"):
        read(path)


def test_what_critui_saves_loads_with_weights_only(tmp_path):
    from critui.train import checkpoint
    from critui.train.loop import make_optimizer

    spec = build_spec(get_registry(), sets=SMALL)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    optimizer = make_optimizer(spec, model)
    model(torch.randn(2, 3, 8, 8)).sum().backward()
    optimizer.step()  # momentum buffers in the optimizer's state
    state = checkpoint.make_state(model, optimizer, 3, {"lr": 0.05})
    checkpoint.save_atomic(state, tmp_path / "latest.pt")
    loaded = torch.load(tmp_path / "latest.pt", weights_only=True)
    assert loaded["next_epoch"] == 3 and loaded["lr_state"] == {"lr": 0.05}
    assert torch.equal(loaded["torch_rng"], state["torch_rng"])
    assert all(torch.equal(loaded["model"][k], v) for k, v in state["model"].items())
    assert loaded["optimizer"]["param_groups"] == state["optimizer"]["param_groups"]


# -- part 4: atomic writes ----------------------------------------------------------------------


def test_a_symlink_planted_at_a_checkpoints_temporary_name_is_not_followed(tmp_path):
    # The kept copy of a checkpoint was written to the predictable ckpt/.epoch-0001.pt.tmp,
    # following a symlink planted there and overwriting its target.
    _, _, run_dir = stopped_run(tmp_path / "home", epochs=1)
    spec = json.loads((run_dir / "spec.json").read_text())
    spec["keep_checkpoints"] = [1]
    (run_dir / "spec.json").write_text(json.dumps(spec))
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (run_dir / "ckpt").mkdir()
    for name in (".epoch-0001.pt.tmp", ".latest.pt.fork.tmp"):
        (run_dir / "ckpt" / name).symlink_to(victim)
    done = worker(run_dir)
    assert done.returncode == 0, done.stderr
    assert victim.read_text() == "precious"
    kept = run_dir / "ckpt" / "epoch-0001.pt"
    assert kept.is_file() and not kept.is_symlink()
    assert sorted(p.name for p in (run_dir / "ckpt").iterdir()) == ["epoch-0001.pt", "latest.pt"]


def test_stale_temporaries_of_a_killed_worker_are_removed_by_the_next(tmp_path):
    _, _, run_dir = stopped_run(tmp_path / "home", epochs=1)
    (run_dir / "ckpt").mkdir()
    stale = [run_dir / "ckpt" / ".latest.pt.x1y2z3.critui-tmp", run_dir / ".spec.json.abc123.critui-tmp",
             run_dir / "ckpt" / ".latest.pt.4242.tmp", run_dir / "ckpt" / ".latest.pt.fork.tmp"]
    for path in stale:
        path.write_bytes(b"half a checkpoint")
    done = worker(run_dir)
    assert done.returncode == 0, done.stderr
    assert not [p for p in stale if p.exists()]
    assert sorted(p.name for p in (run_dir / "ckpt").iterdir()) == ["latest.pt"]


def exported_run(home: Path) -> str:
    store = RunStore(home)
    return store.create(build_spec(get_registry(), sets=SMALL), {})["id"]


def test_export_refuses_a_symlink_planted_at_its_target(critui, home, tmp_path):
    run_id = exported_run(home)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    link = tmp_path / "out.csv"
    link.symlink_to(victim)
    result = critui("export", run_id, "-o", str(link))
    assert result.returncode == 2, result.stderr
    assert "symbolic link" in result.stderr and "Traceback" not in result.stderr
    assert link.is_symlink() and victim.read_text() == "precious"


def test_export_to_a_fifo_is_refused_and_leaves_it_a_fifo(critui, home, tmp_path):
    run_id = exported_run(home)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    result = critui("export", run_id, "-o", str(fifo))
    assert result.returncode == 2, result.stderr
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_export_to_dev_null_leaves_it_a_device(critui, home):
    run_id = exported_run(home)
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    result = critui("export", run_id, "-o", "/dev/null")
    assert result.returncode == 0, result.stderr
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
