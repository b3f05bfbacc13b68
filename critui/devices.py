"""Choosing the torch device a run trains on, with a clear error when it is not there."""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path

from critui.errors import CritUIError


def check_device(name: str) -> None:
    """Raise now if ``name`` cannot be a device here. ``auto`` and ``cpu`` always can, and are
    passed without importing torch (about 1.8 s), so that starting a CPU run does not pay it
    twice, in the manager and in its worker; a CUDA device is asked of torch."""
    if (name or "auto").strip().lower() not in ("auto", "cpu"):
        resolve_device(name)


def resolve_device(name: str) -> str:
    """Map ``auto``/``cpu``/``cuda``/``cuda:N`` to a concrete device string, or raise.

    ``auto`` is CUDA when torch sees a GPU, else the CPU.
    """
    import torch

    name = (name or "auto").strip().lower()
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return "cpu"
    match = re.fullmatch(r"cuda(?::(\d+))?", name)
    if not match:
        raise CritUIError(
            f"--device {name!r} is not a device critui knows. Use auto, cpu, cuda or cuda:N."
        )
    if not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
        raise CritUIError(
            f"--device {name} was asked for, but torch {torch.__version__} ({build}) sees no CUDA GPU "
            "here. Use --device cpu (or auto), or install a CUDA build of torch on a machine with "
            "an NVIDIA GPU and its driver."
        )
    index = int(match.group(1) or 0)
    if index >= torch.cuda.device_count():
        raise CritUIError(
            f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) are visible "
            f"(cuda:0..cuda:{torch.cuda.device_count() - 1}). Pick one of those."
        )
    return name


def place_on_gpu(gpus: list[str], busy: list[str], per_gpu: int | None = None) -> str | None:
    """The GPU for the next worker, or None when every GPU already holds ``per_gpu`` workers.

    ``gpus`` are the GPU ids to use (as ``CUDA_VISIBLE_DEVICES`` spells them), ``busy`` the
    GPU of each worker already running. The least-loaded GPU wins, the first listed on a
    tie, so k workers spread over G GPUs fill each GPU once before any holds two. With
    ``per_gpu`` None there is no cap per GPU (the caller's ``--jobs`` limits the total).
    """
    if not gpus:
        return None
    load = {g: busy.count(g) for g in gpus}
    gpu = min(gpus, key=lambda g: (load[g], gpus.index(g)))
    if per_gpu is not None and load[gpu] >= per_gpu:
        return None
    return gpu


def worker_slots(gpus: list[str], jobs: int, per_gpu: int | None) -> int:
    """How many workers run at once: ``G·per_gpu`` on G GPUs with ``--per-gpu``, else ``jobs``.

    Without GPUs ``per_gpu`` means nothing (the CPU splits its cores by ``--jobs``).
    """
    if gpus and per_gpu is not None:
        return len(gpus) * max(1, per_gpu)
    return max(1, jobs)


def device_name(device) -> str:
    """What a run trained on, for its record: the GPU's name, or the CPU's model.

    The CPU model matters for reproducing a run: on the CPU a run is bit-identical with the
    same torch on the same kind of CPU, while another CPU can pick other kernels and round
    differently.
    """
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity, which a Slurm job, a cgroup or
    ``taskset`` narrows, not the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


# What a GPU driver that torch.cuda can use leaves on Linux: NVIDIA's (/proc and /dev), AMD's
# ROCm (/dev/kfd) and WSL's GPU bridge (/dev/dxg).
GPU_DRIVER_PATHS = ("/proc/driver/nvidia", "/dev/nvidiactl", "/dev/kfd", "/dev/dxg")


def no_gpu_driver() -> bool:
    """True when this machine certainly has no GPU torch could use: a Linux without any GPU
    driver, or a Mac (torch has no CUDA there). Lets the manager count GPUs without importing
    torch (about 1.8 s) on a CPU machine; anywhere else it asks torch."""
    system = platform.system()
    if system == "Darwin":
        return True
    return system == "Linux" and not any(os.path.exists(path) for path in GPU_DRIVER_PATHS)

