"""Randomness derived, not carried: every seed a run uses comes from (run seed, epoch, purpose).

A run resumed or forked at an epoch boundary therefore draws exactly what it would have drawn
had it never stopped. Apart from the epoch loop (:mod:`critui.train.loop`), metrics use these
too, so they live here, with nothing of critui's to import.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def derive_seed(seed: int, epoch: int, purpose: str) -> int:
    """A 63-bit seed that depends on (run seed, epoch, purpose) and nothing else."""
    digest = hashlib.sha256(f"{seed}/{epoch}/{purpose}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def generator(device: torch.device, seed: int, epoch: int, purpose: str) -> torch.Generator:
    import torch
    return torch.Generator(device=device).manual_seed(derive_seed(seed, epoch, purpose))
