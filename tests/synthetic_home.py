"""Run folders as a worker leaves them, written directly: for store tests and the scale bench."""

from __future__ import annotations

import json
import time
from pathlib import Path

T0 = 1_790_000_000.0


def spec_json(epochs: int, seed: int, deficit: bool) -> dict:
    """A resolved spec.json like `critui run` writes (synthetic data, the small CNN, Fisher)."""
    return {
        "dataset": {"id": "datasets.synthetic", "params": {
            "channels": 1, "classes": 10, "coarse": 1.0, "fine": 0.2, "jitter": 2.3, "n_test": 400,
            "n_train": 600, "pink": 0.4, "seed": 0, "size": 16, "white": 0.12}},
        "deficit": {"id": "deficits.flip", "params": {"start": 0, "end": 4}} if deficit else None,
        "keep_checkpoints": [],
        "metrics": [{"id": "metrics.fisher", "params": {"chunk": 64, "every": 1, "samples": 256}}],
        "model": {"id": "models.cnn", "params": {"depth": 6, "width": 16}},
        "name": "",
        "optim": {"after_removal": "continue", "batch_size": 128, "decay": 0.85, "lr": 0.05, "momentum": 0.9,
                  "name": "sgd", "weight_decay": 0.0005},
        "train": {"augment": "auto", "channels_last": "off", "compile": "off", "device": "cpu", "epochs": epochs,
                  "eval_batch_size": 1000, "precision": "fp32", "seed": seed, "threads": 1},
    }


def events(epochs: int, done: int, created: float, end: str | None, start: int = 0) -> list[dict]:
    """A worker's events: started, then per epoch an epoch line and a Fisher metric line."""
    t = created + 1
    lines = [{"event": "started", "time": t, "epoch": start, "pid": 2_000_000_000, "device": "cpu",
              "device_name": "cpu", "threads": 1, "torch": "2.13.0", "resumed": False, "lr_at_removal": None}]
    for epoch in range(start, done):
        acc = round(0.1 + 0.8 * (1 - 0.8 ** (epoch + 1)), 4)
        t += 1
        lines.append({"event": "epoch", "time": t, "epoch": epoch, "lr": round(0.05 * 0.85 ** epoch, 6),
                      "deficit_active": epoch < 4, "train_loss": round(2.3 - 2 * acc, 4), "train_acc": acc,
                      "test_loss": round(2.3 - 1.9 * acc, 4), "test_acc": acc, "seconds": 0.4})
        lines.append({"event": "metric", "time": t, "epoch": epoch, "metric": "metrics.fisher",
                      "values": {"total": 10.0 / (epoch + 1), **{f"conv{i}": 1.0 / (i + epoch + 1) for i in range(6)}}})
        lines.append({"event": "checkpoint", "time": t, "epoch": epoch + 1, "path": None})
    if end == "finished":
        lines.append({"event": "finished", "time": t + 1, "epochs": epochs, "final_acc": lines[-3]["test_acc"],
                      "seconds": float(epochs)})
    elif end:
        lines.append({"event": end, "time": t + 1, "epoch": done, "error": "synthetic", "signal": "SIGTERM"})
    return lines


def write_run(home: Path, run_id: str, *, epochs: int = 8, done: int | None = None, seed: int = 0,
              end: str | None = "finished", created: float = T0, parent: str | None = None,
              fork_epoch: int | None = None, deficit: bool = True) -> Path:
    """A run folder under ``home/runs``; a fork's events start at its fork epoch."""
    done = epochs if done is None else done
    run_dir = Path(home) / "runs" / run_id
    run_dir.mkdir(parents=True)
    (run_dir / "spec.json").write_text(json.dumps(spec_json(epochs, seed, deficit), indent=2, sort_keys=True))
    meta = {"id": run_id, "name": f"synthetic {seed}", "created": created, "host": "lab",
            "manager_pid": 2_000_000_000, "git_commit": None, "spec_hash": "0" * 16,
            "plugins": {"datasets.synthetic": {"distribution": "critui", "version": "0.1.0"}},
            "parent": parent, "fork_epoch": fork_epoch}
    (run_dir / "run.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    lines = events(epochs, done, created, end, start=fork_epoch or 0)
    (run_dir / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in lines))
    return run_dir


def run_id(i: int, created: float = T0) -> str:
    """A distinct id of critui's form for the i-th synthetic run."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(created + i))
    return f"{stamp}-{i % 65536:04x}"
