"""Training throughput on a GPU: critui's worker epoch against the bare model and a DataLoader.

Run, on a machine with a CUDA GPU, from the repository root (critui installed; the ResNet
plugin and torchvision are used when importable)::

    python tests/bench/gpu_throughput.py --out gpu_throughput.json

Smoke test on the CPU (tiny sizes, under 2 minutes on 2 cores)::

    python tests/bench/gpu_throughput.py --device cpu

For All-CNN (``models.allcnn``) and ResNet-18 (``models.resnet18`` from
plugins/critui-plugin-resnet) at batch 128 on CIFAR-shaped data made on the device
(3×32×32, 10 classes, 10k training and 2k test images; throughput does not depend on the
pixels), it measures side by side, in this one process:

(a) the limit: a bare training loop over the device-resident data, nothing but the model,
    the loss and the optimiser, then a test pass;
(b) critui's epoch: ``critui.train.loop.train_epoch`` with pad-4 crop + flip and the blur
    deficit active, then ``evaluate``; with Fisher off, and with the built-in Fisher metric
    at its default cadence, amortised over a ``--fisher-epochs`` run;
(c) the conventional baseline: a torchvision CIFAR-style ``DataLoader`` (PIL images,
    RandomCrop(32, padding=4), RandomHorizontalFlip, ToTensor, Normalize; 4 workers,
    pinned memory) feeding the same step. Skipped with a message without torchvision.

Every side does the same epoch: every training image once, then the clean test set, so its
images/s is n_train / seconds per epoch. Each is measured for float32 and for bf16 autocast
+ channels_last, eager and (``--compile``, the default on CUDA) under ``torch.compile``.
The ratios are of time per epoch: b/a is critui's cost over the limit (target <= 1.10 with
Fisher off, <= 1.25 with it), c/b the DataLoader's cost over critui's (target >= 3).

Packing: total images/s of k = 1, 2, 4 concurrent All-CNN runs on one GPU, through the real
path, ``critui sweep --per-gpu k`` on the synthetic dataset at 3×32×32, blur on, Fisher off;
measured from the workers' epoch events over the window where all k were training.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[2]
MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


# -- setup ---------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="allcnn,resnet18", help="comma-separated: allcnn, resnet18")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, help="timed training steps per measurement, rounded up to whole "
                        "epochs (default: 3 epochs on CUDA, 1 on the CPU)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--n-train", type=int, help="training images (default 10000; 512 on the CPU)")
    parser.add_argument("--n-test", type=int, help="test images (default 2000; 256 on the CPU)")
    parser.add_argument("--width", type=float, help="model width multiplier (default 1; 0.25 on the CPU)")
    parser.add_argument("--precisions", help="fp32 and/or bf16 (bf16 autocast + channels_last), comma-separated "
                        "(default: both on CUDA; fp32 on the CPU, where bf16 convolutions are very slow)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="also measure under torch.compile (default: on with CUDA, off on the CPU)")
    parser.add_argument("--loader-workers", type=int, default=4, help="DataLoader workers of the baseline (c)")
    parser.add_argument("--fisher-epochs", type=int, default=160,
                        help="run length over which the default Fisher cadence is amortised (the paper's shortest)")
    parser.add_argument("--pack", help="concurrent All-CNN runs to pack on one GPU, e.g. 1,2,4 (the default; "
                        "1,2 on the CPU); '' skips")
    parser.add_argument("--pack-epochs", type=int, help="epochs of each packed run (default 6; 3 on the CPU)")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    cpu = torch.device(args.device).type == "cpu"
    args.n_train = args.n_train or (256 if cpu else 10_000)
    args.n_test = args.n_test or (128 if cpu else 2_000)
    args.precisions = args.precisions or ("fp32" if cpu else "fp32,bf16")
    args.pack = ("1,2" if cpu else "1,2,4") if args.pack is None else args.pack
    args.width = args.width or (0.25 if cpu else 1.0)
    args.compile = (not cpu) if args.compile is None else args.compile
    args.pack_epochs = args.pack_epochs or (3 if cpu else 8)
    steps_per_epoch = math.ceil(args.n_train / args.batch)
    args.epochs = max(1, math.ceil(args.steps / steps_per_epoch)) if args.steps else (1 if cpu else 3)
    return args


def build_model(name: str, width: float):
    """A fresh model by critui id, from the registry, or from the plugin folder when not installed."""
    from critui.plugins import get_registry

    registry = get_registry()
    known = {p.id for p in registry.of_kind("models")}
    if f"models.{name}" in known:
        cls = registry.get(f"models.{name}").cls
    elif name == "resnet18":
        sys.path.insert(0, str(REPO / "plugins" / "critui-plugin-resnet"))
        from critui_resnet import ResNet18 as cls  # noqa: N813
    else:
        raise ValueError(name)
    params = {"width": max(1, round(64 * width))} if name.startswith("resnet") else {"width": width}
    return lambda: cls().build((3, 32, 32), 10, **params)


def cifar_shaped(n: int, device: torch.device, seed: int):
    gen = torch.Generator(device=device).manual_seed(seed)
    x = torch.randint(0, 256, (n, 32, 32, 3), generator=gen, device=device, dtype=torch.uint8)
    y = torch.randint(0, 10, (n,), generator=gen, device=device)
    return x, y  # HWC uint8, like CIFAR-10's arrays


@dataclass(frozen=True)
class Config:
    name: str
    speed: object  # critui.train.loop.Speed


def configs(precisions: str, compile_: bool):
    """fp32, and bf16 autocast with channels_last; each eager and, with ``compile_``, compiled."""
    from critui.train.loop import Speed

    chosen = [p.strip() for p in precisions.split(",") if p.strip()]
    base = [Config("fp32", Speed("fp32", False, False))] if "fp32" in chosen else []
    base += [Config("bf16+cl", Speed("bf16", True, False))] if "bf16" in chosen else []
    compiled = [Config(f"{c.name}+compile", Speed(c.speed.precision, c.speed.channels_last, True)) for c in base]
    return base + (compiled if compile_ else [])


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def fresh(make, speed, device):
    torch.manual_seed(0)
    model = make().to(device)
    if speed.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    return model, opt


def timed_epochs(epoch_fn, epochs: int, device) -> float:
    """Seconds per epoch, after one warm-up epoch (compilation, cuDNN autotuning, allocator)."""
    epoch_fn(0)
    sync(device)
    t0 = time.perf_counter()
    for e in range(1, epochs + 1):
        epoch_fn(e)
    sync(device)
    return (time.perf_counter() - t0) / epochs


# -- (a) the bare loop -----------------------------------------------------------------------------


def bare(make, speed, data, args, device) -> float:
    model, opt = fresh(make, speed, device)
    fast = torch.compile(model, dynamic=False) if speed.compile else model
    train_x, train_y, test_x, test_y = data

    def epoch(e):
        fast.train()
        order = torch.randperm(len(train_y), device=device)
        for i in range(0, len(order), args.batch):
            idx = order[i : i + args.batch]
            with speed.autocast(device):
                loss = F.cross_entropy(fast(speed.layout(train_x[idx])), train_y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        fast.eval()
        with torch.inference_mode():
            for i in range(0, len(test_y), 1000):
                with speed.autocast(device):
                    fast(speed.layout(test_x[i : i + 1000])).argmax(1)

    return timed_epochs(epoch, args.epochs, device)


# -- (b) critui's epoch ----------------------------------------------------------------------------


def critui_setup(model_name: str, args, device, raw):
    from critui.config import build_spec
    from critui.kinds import DatasetTensors
    from critui.plugins import get_registry
    from critui.train.loop import prepare_data

    registry = get_registry()
    spec = build_spec(registry, plugins=["deficits.blur", "models.allcnn"],
                      sets=["deficit.end=100000", "train.epochs=100000", f"optim.batch_size={args.batch}",
                            "train.augment=crop-flip"])
    (x, y), (tx, ty) = raw
    tensors = DatasetTensors(x.permute(0, 3, 1, 2), y, tx.permute(0, 3, 1, 2), ty, [str(i) for i in range(10)],
                             MEAN, STD, "crop-flip")
    data = prepare_data(tensors, device, "crop-flip")
    deficit = registry.get("deficits.blur").cls(spec.deficit.params, 0, 10, (3, 32, 32))
    return spec, data, deficit


def critui_epoch(make, speed, setup, args, device) -> float:
    from critui.train.loop import compile_model, evaluate, train_epoch

    spec, data, deficit = setup
    model, opt = fresh(make, speed, device)
    fast = compile_model(model, data, speed, args.batch, 1000) if speed.compile else model

    def epoch(e):
        train_epoch(fast, opt, data, spec, e, deficit, speed)
        evaluate(fast, data.test_x, data.test_y, 1000, speed)

    return timed_epochs(epoch, args.epochs, device)


def fisher_seconds(make, setup, args, device) -> tuple[float, float]:
    """Seconds of one Fisher measurement (the built-in metric, default settings, eager fp32
    model, as the worker runs it) and the fraction of epochs the default cadence measures."""
    from critui.builtin.metrics import fisher_due
    from critui.kinds import MetricContext
    from critui.plugins import get_registry

    spec, data, deficit = setup
    model, _ = fresh(make, speed_fp32(), device)
    metric = get_registry().get("metrics.fisher").cls({}, 0)
    ctx = MetricContext(model=model, epoch=0, epochs=args.fisher_epochs, device=device, train_x=data.train_x,
                        train_y=data.train_y, test_x=data.test_x, test_y=data.test_y, num_classes=10, seed=0)
    metric.compute(ctx)  # warm-up
    sync(device)
    t0 = time.perf_counter()
    metric.compute(ctx)
    sync(device)
    due = sum(fisher_due(e, args.fisher_epochs, metric.settings["every"]) for e in range(args.fisher_epochs))
    return time.perf_counter() - t0, due / args.fisher_epochs


def speed_fp32():
    from critui.train.loop import FP32

    return FP32


# -- (c) the conventional DataLoader -------------------------------------------------------------


class CifarStyle(torch.utils.data.Dataset):
    """What torchvision.datasets.CIFAR10 does per item: a PIL image from the HWC array, transformed."""

    def __init__(self, images, labels, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def loaders(raw, args, device):
    import torchvision.transforms as T  # noqa: N812

    (x, y), (tx, ty) = raw
    normalize = T.Normalize(MEAN, STD)
    train = CifarStyle(x.cpu().numpy(), y.cpu().numpy(),
                       T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), normalize]))
    test = CifarStyle(tx.cpu().numpy(), ty.cpu().numpy(), T.Compose([T.ToTensor(), normalize]))
    common = dict(num_workers=args.loader_workers, pin_memory=device.type == "cuda",
                  persistent_workers=args.loader_workers > 0)
    return (torch.utils.data.DataLoader(train, batch_size=args.batch, shuffle=True, **common),
            torch.utils.data.DataLoader(test, batch_size=1000, **common))


def dataloader_epoch(make, speed, loader_pair, args, device) -> float:
    model, opt = fresh(make, speed, device)
    fast = torch.compile(model, dynamic=False) if speed.compile else model
    train_loader, test_loader = loader_pair

    def epoch(e):
        fast.train()
        for xb, yb in train_loader:
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            with speed.autocast(device):
                loss = F.cross_entropy(fast(speed.layout(xb)), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        fast.eval()
        with torch.inference_mode():
            for xb, _ in test_loader:
                with speed.autocast(device):
                    fast(speed.layout(xb.to(device, non_blocking=True))).argmax(1)

    return timed_epochs(epoch, args.epochs, device)


# -- packing: k concurrent critui runs on one GPU --------------------------------------------------


def packed_throughput(k: int, args, device) -> dict:
    """Total images/s of k All-CNN runs started by ``critui sweep --per-gpu k`` on one GPU."""
    from critui.events import read_events

    epochs = args.pack_epochs
    config = (
        f'name = "pack-{k}"\n[train]\nepochs = {epochs}\naugment = "crop-flip"\ndevice = "{device.type}"\n'
        f'[dataset]\nid = "datasets.synthetic"\nsize = 32\nchannels = 3\nn_train = {args.n_train}\n'
        f'n_test = {args.n_test}\n[model]\nid = "models.allcnn"\nwidth = {args.width}\n'
        f'[optim]\nbatch_size = {args.batch}\n[deficit]\nid = "deficits.blur"\nend = {epochs}\n'
        f"[sweep]\nseeds = {list(range(k))}\n"
    )
    with tempfile.TemporaryDirectory() as home:
        path = Path(home) / f"pack-{k}.toml"
        path.write_text(config)
        gpu = ["--gpus", str(device.index or 0)] if device.type == "cuda" else []
        t0 = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "critui", "sweep", str(path), "--per-gpu", str(k),
                               "--jobs", str(k), *gpu], env={**os.environ, "CRITUI_HOME": home},
                              capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if done.returncode != 0:
            return {"k": k, "error": (done.stderr or done.stdout).strip()[-600:]}
        runs = [read_events(d) for d in sorted((Path(home) / "runs").iterdir()) if d.is_dir()]
    stamps = [[e["time"] for e in events if e["event"] == "epoch"] for events in runs]
    # The window in which every run had finished its warm-up epoch and none had ended yet.
    start, end = max(s[0] for s in stamps), min(s[-1] for s in stamps)
    if end > start:
        images = sum(args.n_train * sum(1 for t in s if start < t <= end) for s in stamps)
        rate = images / (end - start)
    else:  # the runs barely overlapped: sum each run's own steady rate instead
        rate = sum(args.n_train * (len(s) - 1) / (s[-1] - s[0]) for s in stamps if len(s) > 1)
    return {"k": k, "runs": len(runs), "images_per_s": rate, "wall_s": round(wall, 1)}


# -- the report ------------------------------------------------------------------------------------


def fmt(value, digits=0):
    return "-" if value is None else f"{value:,.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device {device} ({name}), torch {torch.__version__}, batch {args.batch}, {args.n_train} train / "
          f"{args.n_test} test images 3x32x32, {args.epochs} timed epoch(s) after 1 warm-up, width {args.width}")
    raw = (cifar_shaped(args.n_train, device, 0), cifar_shaped(args.n_test, device, 1))
    data = tuple(t.to(device) for t in _normalised(raw, device))
    skipped: list[str] = []
    try:
        import torchvision  # noqa: F401

        loader_pair = loaders(raw, args, device)
    except Exception as exc:  # noqa: BLE001 - missing, or built for another torch
        loader_pair = None
        skipped.append(f"(c) DataLoader baseline skipped: torchvision is not importable ({type(exc).__name__}: {exc})")
        print(skipped[-1])

    rows = []
    for model_name in [m.strip() for m in args.models.split(",") if m.strip()]:
        try:
            make = build_model(model_name, args.width)
        except Exception as exc:  # noqa: BLE001 - the plugin may be absent
            skipped.append(f"{model_name} skipped: {type(exc).__name__}: {exc}")
            print(skipped[-1])
            continue
        setup = critui_setup(model_name, args, device, raw)
        fisher_s, fisher_share = fisher_seconds(make, setup, args, device)
        print(f"{model_name}: one Fisher measurement {fisher_s:.2f} s; the default cadence measures "
              f"{fisher_share:.1%} of a {args.fisher_epochs}-epoch run's epochs")
        for config in configs(args.precisions, args.compile):
            row = {"model": model_name, "config": config.name}
            try:
                a = bare(make, config.speed, data, args, device)
                b = critui_epoch(make, config.speed, setup, args, device)
                c = dataloader_epoch(make, config.speed, loader_pair, args, device) if loader_pair else None
            except Exception as exc:  # noqa: BLE001 - e.g. compile unavailable: report it, go on
                row["error"] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
                print(f"{model_name} {config.name}: {row['error']}")
                rows.append(row)
                continue
            b_fisher = b + fisher_s * fisher_share
            row.update(
                a_images_per_s=args.n_train / a, b_images_per_s=args.n_train / b,
                b_fisher_images_per_s=args.n_train / b_fisher,
                c_images_per_s=args.n_train / c if c else None,
                b_over_a=b / a, b_fisher_over_a=b_fisher / a, c_over_b=c / b if c else None,
            )
            rows.append(row)
            print(f"  {config.name:<16} a {fmt(row['a_images_per_s'])}  b {fmt(row['b_images_per_s'])}  "
                  f"b+fisher {fmt(row['b_fisher_images_per_s'])}  c {fmt(row['c_images_per_s'])} images/s", flush=True)
            if device.type == "cuda":
                torch.cuda.empty_cache()

    packing = []
    for k in [int(v) for v in args.pack.split(",") if v.strip()]:
        result = packed_throughput(k, args, device)
        packing.append(result)
        print(f"packing k={k}: " + (f"{fmt(result['images_per_s'])} images/s total ({result['wall_s']} s wall)"
                                    if "error" not in result else f"failed: {result['error']}"), flush=True)
    if device.type == "cpu" and packing:
        skipped.append("packing on the CPU: --per-gpu is ignored there, so k runs share the cores (--jobs k)")

    print_table(rows, packing, device, name)
    for line in skipped:
        print(f"note: {line}")
    if args.out:
        result = {"device": str(device), "device_name": name, "torch": torch.__version__,
                  "command": " ".join([Path(sys.executable).name, *sys.argv]),
                  "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                  "rows": rows, "packing": packing, "skipped": skipped}
        args.out.write_text(json.dumps(result, indent=1))
        print(f"wrote {args.out}")
    return 0


def _normalised(raw, device):
    mean = torch.tensor(MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=device).view(1, 3, 1, 1)
    (x, y), (tx, ty) = raw
    norm = lambda t: ((t.permute(0, 3, 1, 2).float() / 255 - mean) / std).contiguous()  # noqa: E731
    return norm(x), y, norm(tx), ty


def print_table(rows, packing, device, name) -> None:
    print()
    print(f"images/s on {device} ({name}); ratios are of time per epoch: b/a critui over the bare limit "
          "(targets 1.10, 1.25 with Fisher), c/b the DataLoader over critui (target >= 3)")
    header = f"{'model':<10} {'config':<16} {'a bare':>10} {'b critui':>10} {'b+fisher':>10} {'c loader':>10} " \
             f"{'b/a':>6} {'bF/a':>6} {'c/b':>6}"
    print(header)
    print("-" * len(header))
    for r in rows:
        if "error" in r:
            print(f"{r['model']:<10} {r['config']:<16} error: {r['error']}")
            continue
        print(f"{r['model']:<10} {r['config']:<16} {fmt(r['a_images_per_s']):>10} {fmt(r['b_images_per_s']):>10} "
              f"{fmt(r['b_fisher_images_per_s']):>10} {fmt(r['c_images_per_s']):>10} {fmt(r['b_over_a'], 2):>6} "
              f"{fmt(r['b_fisher_over_a'], 2):>6} {fmt(r['c_over_b'], 2):>6}")
    if packing:
        ok = [p for p in packing if "error" not in p]
        one = next((p["images_per_s"] for p in ok if p["k"] == 1), None)
        print()
        print("packing: All-CNN runs at once on one device (critui sweep --per-gpu k), total images/s")
        for p in packing:
            if "error" in p:
                print(f"  k={p['k']}: failed: {p['error']}")
            else:
                gain = f"  ({p['images_per_s'] / one:.2f}x k=1)" if one else ""
                print(f"  k={p['k']}: {fmt(p['images_per_s'])}{gain}")


if __name__ == "__main__":
    sys.exit(main())
