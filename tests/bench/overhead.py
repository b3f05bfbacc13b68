"""critui's epoch time against a bare PyTorch loop on the same model and data, on the CPU.

Run: ``python tests/bench/overhead.py [--epochs 8] [--threads 1]``

Both sides train the default CPU setup (``datasets.synthetic`` + ``models.cnn``, batch 128,
SGD) with the data already on the device, and score the clean test set after every epoch.
The bare loop is written here with nothing but torch: no deficit, no events, no checkpoints.
critui's side is the real worker subprocess (``critui run``) with events and checkpoints on
and Fisher off, once with no deficit (the framework's overhead) and once with blur active in
every epoch (overhead plus the deficit's own cost). Its per-epoch time is the wall time
between consecutive ``epoch`` events in ``events.jsonl``, so it includes writing the events
and replacing the checkpoint. The first epoch of each side is a warm-up and is not counted. The two sides
run alternately, several rounds, so that machine noise hits both alike.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from critui.builtin.datasets import Synthetic
from critui.builtin.models import SmallCNN
from critui.events import read_events


def bare_epochs(epochs: int, threads: int) -> list[float]:
    torch.set_num_threads(threads)
    data = Synthetic().load({p.name: p.default for p in Synthetic.params}, 0)
    mean = torch.tensor(data.mean).view(1, -1, 1, 1)
    std = torch.tensor(data.std).view(1, -1, 1, 1)
    norm = lambda x: ((x.float() / 255 if x.dtype == torch.uint8 else x.float()) - mean) / std  # noqa: E731
    train_x, test_x = norm(data.train_x), norm(data.test_x)
    train_y, test_y = data.train_y.long(), data.test_y.long()
    torch.manual_seed(0)
    model = SmallCNN().build(tuple(train_x.shape[1:]), 10)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    times = []
    for epoch in range(epochs):
        t0 = time.perf_counter()
        model.train()
        for group in opt.param_groups:
            group["lr"] = 0.05 * 0.85**epoch
        order = torch.randperm(len(train_y))
        for i in range(0, len(order), 128):
            idx = order[i : i + 128]
            loss = F.cross_entropy(model(train_x[idx]), train_y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        model.eval()
        with torch.inference_mode():
            for i in range(0, len(test_y), 1000):
                model(test_x[i : i + 1000]).argmax(1)
        times.append(time.perf_counter() - t0)
    return times


def critui_epochs(epochs: int, threads: int, blur: bool) -> list[float]:
    deficit = ["--plugin", "deficits.blur", "--set", f"deficit.end={epochs}"] if blur else []
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "CRITUI_HOME": home}
        subprocess.run(
            [sys.executable, "-m", "critui", "run", *deficit, "--epochs", str(epochs), "--set", f"train.threads={threads}"],
            env=env, check=True, capture_output=True,
        )
        (run_dir,) = (Path(home) / "runs").iterdir()
        stamps = [e["time"] for e in read_events(run_dir) if e["event"] == "epoch"]
        return [0.0] + [b - a for a, b in zip(stamps, stamps[1:], strict=False)]  # the 0.0 stands for the warm-up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    bare, plain, blurred = [], [], []
    for round_ in range(args.rounds):
        b = bare_epochs(args.epochs, args.threads)[1:]
        c = critui_epochs(args.epochs, args.threads, blur=False)[1:]
        d = critui_epochs(args.epochs, args.threads, blur=True)[1:]
        bare += b
        plain += c
        blurred += d
        print(f"round {round_}: median s/epoch: bare {statistics.median(b):.3f}, "
              f"critui {statistics.median(c):.3f}, critui+blur {statistics.median(d):.3f}")
    med = statistics.median
    result = {
        "torch": torch.__version__,
        "threads": args.threads,
        "epochs_counted_per_side": len(bare),
        "bare_s_per_epoch": round(med(bare), 4),
        "critui_s_per_epoch": round(med(plain), 4),
        "critui_blur_s_per_epoch": round(med(blurred), 4),
        "ratio_critui_over_bare": round(med(plain) / med(bare), 3),
        "ratio_critui_blur_over_bare": round(med(blurred) / med(bare), 3),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
