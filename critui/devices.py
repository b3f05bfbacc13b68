"""Choosing the torch device a run trains on, with a clear error when it is not there."""

from __future__ import annotations

import re

from critui.errors import CritUIError


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
