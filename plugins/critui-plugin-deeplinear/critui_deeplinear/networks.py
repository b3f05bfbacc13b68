"""The networks behind the models: a product of bias-free linear layers, and two such
pathways summed.

Kept apart from models.py because an ``nn.Module`` cannot be defined without torch: critui
imports models.py whenever it lists the plugins, and only a run's ``build`` imports this.
Both networks initialise from torch's global RNG only (critui seeds it from the run seed
before ``build``), with the paper's small Gaussian scale, so the end-to-end map starts near zero.
"""

from __future__ import annotations

import torch
from torch import nn


def gaussian_init(layers: nn.ModuleList, depth: int, init_scale: float, width: int) -> None:
    """The paper's ``init_model(initialization='gaussian')``: std init_scale^(1/depth) / √width,
    so the end-to-end map has Frobenius norm about init_scale · √width."""
    std = init_scale ** (1.0 / depth) * width**-0.5
    for layer in layers:
        nn.init.normal_(layer.weight, std=std)


class Factorisation(nn.Module):
    """W = W_depth ⋯ W_1 (n×n each); an input (row, column) gives the entry W[row, column]."""

    def __init__(self, n: int, depth: int, init_scale: float):
        super().__init__()
        self.n = n
        self.layers = nn.ModuleList(nn.Linear(n, n, bias=False) for _ in range(depth))
        gaussian_init(self.layers, depth, init_scale, n)
        self._positions: tuple[torch.Tensor, int, torch.Tensor] | None = None

    def end_to_end(self) -> torch.Tensor:
        """The product matrix, as the paper's ``get_e2e``: W_1ᵀ fed through the later layers."""
        layers = iter(self.layers)  # not self.layers[1:]: slicing builds a new ModuleList every step
        weight = next(layers).weight.t()
        for layer in layers:
            weight = layer(weight)
        return weight

    def flat_positions(self, x: torch.Tensor) -> torch.Tensor:
        """``row · n + column`` of each input, kept for the tensor last seen: full-batch
        training passes the same positions every step, and four tensor ops a step are a
        noticeable share of a 100×100 model's step. A new tensor, or the same one changed
        in place (its version counter), is converted afresh."""
        cached = self._positions
        if cached is not None and cached[0] is x and cached[1] == x._version:
            return cached[2]
        flat = x[:, 0].long() * self.n + x[:, 1].long()
        self._positions = (x, x._version, flat)
        return flat

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # take() on the flat index: the same entries and gradient as e2e[rows, cols], faster.
        return self.end_to_end().take(self.flat_positions(x)).unsqueeze(1)


class Pathways(nn.Module):
    """Two deep linear pathways from the same input, their outputs summed.

    ``frozen`` names the pathways whose output is detached in forward (they pass their
    output on, but no gradient reaches their weights): the paper's ``gate_path`` deficit.
    """

    def __init__(self, n_in: int, n_out: int, depth: int, width: int, init_scale: float):
        super().__init__()
        sizes = [n_in] + [width] * (depth - 1) + [n_out]
        self.a = nn.ModuleList(nn.Linear(i, o, bias=False) for i, o in zip(sizes, sizes[1:], strict=False))
        self.b = nn.ModuleList(nn.Linear(i, o, bias=False) for i, o in zip(sizes, sizes[1:], strict=False))
        for pathway in (self.a, self.b):
            gaussian_init(pathway, depth, init_scale, width)
        self.frozen: frozenset[str] = frozenset()

    @staticmethod
    def _through(pathway: nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
        for layer in pathway:
            x = layer(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out_a, out_b = self._through(self.a, x), self._through(self.b, x)
        if "a" in self.frozen:
            out_a = out_a.detach()
        if "b" in self.frozen:
            out_b = out_b.detach()
        return out_a + out_b

    def pathway_maps(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Each pathway's end-to-end matrix (n_out×n_in), Ω_a and Ω_b."""
        eye = torch.eye(self.a[0].in_features, device=self.a[0].weight.device)
        return self._through(self.a, eye).T, self._through(self.b, eye).T

    def end_to_end(self) -> torch.Tensor:
        omega_a, omega_b = self.pathway_maps()
        return omega_a + omega_b
