"""Exact checkpoints: model, optimiser, epoch and RNG, written atomically, read without trust.

A checkpoint taken at an epoch boundary holds everything needed to continue bit-identically
on the CPU: the rest of the randomness is derived from (seed, epoch), not carried. The file
is written to a temporary file and renamed into place (:mod:`critui.files`), so a kill
mid-write leaves the previous checkpoint intact.

A checkpoint holds only tensors and plain values (dicts, lists, numbers, strings), so it is
read with ``torch.load(weights_only=True)``: a file that asks the unpickler for anything else
(a planted ``latest.pt`` whose pickle calls ``os.system``, or a fork's copy of one) is
refused before any of it runs, like a damaged file, with a message naming the file and what
to do about it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

from critui.errors import CritUIError
from critui.files import atomic_file

# torch is imported where a checkpoint is read or written, not here: the commands that only
# need the file names (LATEST, epoch_checkpoint_name: `critui sweep`, `report`) then start
# without torch's seconds of import.
if TYPE_CHECKING:
    import torch

LATEST = "latest.pt"
_KEPT_GLOB = "epoch-[0-9][0-9][0-9][0-9].pt"


def epoch_checkpoint_name(epoch: int) -> str:
    """The file kept for the state at the start of ``epoch`` (after ``epoch`` epochs)."""
    return f"epoch-{epoch:04d}.pt"


def save_atomic(state: dict[str, Any], path: Path) -> None:
    """Write ``state`` to ``path`` whole or not at all."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as f:
        torch.save(state, f)


def make_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, next_epoch: int, lr_state: dict) -> dict[str, Any]:
    """Everything that training carries from one epoch to the next."""
    import torch

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


def read(path: Path, map_location: torch.device | str = "cpu") -> dict[str, Any]:
    """The checkpoint at ``path``, checked to have the shape :func:`make_state` gives it;
    a ``CritUIError`` naming the file and the fix if it cannot be read safely."""
    import torch

    if not stat.S_ISREG(os.lstat(path).st_mode):  # a planted link could point at /dev/zero
        raise unreadable(path, "it is not a regular file")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a damaged or hostile file, however the unpickler says it
        raise unreadable(path, _load_failure(exc)) from None
    problem = _shape_problem(state)
    if problem:
        raise unreadable(path, problem)
    return state


def load(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, device: torch.device) -> dict[str, Any]:
    """Restore ``model`` and ``optimizer`` in place; return the checkpoint's bookkeeping."""
    import torch

    state = read(path, map_location=device)
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"].cpu())
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        raise unreadable(path, f"it does not fit this run's model and optimiser ({_first_line(exc)})") from None
    if "cuda_rng" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda_rng"]])
    return {"next_epoch": int(state["next_epoch"]), "lr_state": state.get("lr_state", {})}


def unreadable(path: Path, reason: str) -> CritUIError:
    """The error for a checkpoint that cannot be used: which file, why, and what to do."""
    path = Path(path)
    kept = sorted(p.name for p in path.parent.glob(_KEPT_GLOB) if p != path)
    if path.name == LATEST and kept:
        fix = (f"Delete it and resume from the last checkpoint kept ({kept[-1]}): rm '{path}' && "
               f"cp '{path.parent / kept[-1]}' '{path}', then resume the run again; or delete it alone "
               "to train the run again from its first epoch.")
    else:
        fix = (f"Delete it (rm '{path}') and resume the run again: with no checkpoint it trains "
               "again from its first epoch.")
    return CritUIError(
        f"The checkpoint {path} cannot be loaded: {reason}. critui reads only tensors and plain "
        f"values from a checkpoint, never code, so a damaged file, or one that critui did not "
        f"write, is refused. {fix}"
    )


def _shape_problem(state: Any) -> str | None:
    """What is wrong with a loaded checkpoint's layout, or None."""
    import torch

    if not isinstance(state, dict):
        return f"it holds a {type(state).__name__}, not a critui checkpoint"
    missing = [k for k in ("next_epoch", "model", "optimizer", "torch_rng") if k not in state]
    if missing:
        return f"it has no {', '.join(missing)}: not a critui checkpoint"
    epoch = state["next_epoch"]
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        return f"its next_epoch is {epoch!r}, not a count of epochs"
    if not isinstance(state["model"], dict) or not isinstance(state["optimizer"], dict):
        return "its model or optimizer entry is not a state dict"
    if not isinstance(state["torch_rng"], torch.Tensor) or state["torch_rng"].dtype != torch.uint8:
        return "its torch_rng entry is not a random generator state"
    if not isinstance(state.get("lr_state", {}), dict):
        return "its lr_state entry is not a dict"
    return None


def _load_failure(exc: BaseException) -> str:
    """Why ``torch.load`` refused a file, in a few words. Its own message for a refused
    pickle suggests ``weights_only=False``, the one thing not to do with a file one did not
    write; only the detail after "WeightsUnpickler error:" is kept."""
    _, found, detail = str(exc).partition("WeightsUnpickler error:")
    if found:
        detail = next((line.strip() for line in detail.splitlines() if line.strip()), "")
        return f"it is damaged, or asks for more than tensors and plain values ({detail.split('. Please')[0].rstrip('.')})"
    if isinstance(exc, EOFError):
        return "it is empty or cut short"
    return _first_line(exc)


def _first_line(exc: BaseException) -> str:
    """The first sentence of an exception's message, after its type."""
    text = (str(exc).strip().splitlines() or [""])[0].split(". ")[0].strip().rstrip(".")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
