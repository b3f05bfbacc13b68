"""Exact checkpoints: model, optimiser, epoch and RNG, written atomically.

A checkpoint taken at an epoch boundary holds everything needed to continue bit-identically
on the CPU: the rest of the randomness is derived from (seed, epoch), not carried. The file
is written to a temporary name and renamed into place, so a kill mid-write leaves the
previous checkpoint intact.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

LATEST = "latest.pt"


def epoch_checkpoint_name(epoch: int) -> str:
    """The file kept for the state at the start of ``epoch`` (after ``epoch`` epochs)."""
    return f"epoch-{epoch:04d}.pt"


def save_atomic(state: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def make_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, next_epoch: int, lr_state: dict) -> dict[str, Any]:
    """Everything that training carries from one epoch to the next."""
    state: dict[str, Any] = {
        "next_epoch": next_epoch,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "lr_state": dict(lr_state),
        "torch_rng": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda_rng"] = torch.cuda.get_rng_state_all()
    return state


def load(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, device: torch.device) -> dict[str, Any]:
    """Restore ``model`` and ``optimizer`` in place; return the checkpoint's bookkeeping."""
    state = torch.load(path, map_location=device, weights_only=False)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"].cpu())
    if "cuda_rng" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda_rng"]])
    return {"next_epoch": int(state["next_epoch"]), "lr_state": state.get("lr_state", {})}
