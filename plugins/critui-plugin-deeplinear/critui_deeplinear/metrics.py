"""Measurements of a deep linear network's end-to-end map.

Both ask the model for its map (``end_to_end()``, ``pathway_maps()``), which the models of
this plugin provide; any model with those methods works.
"""

from __future__ import annotations

import torch

from critui.errors import CritUIError
from critui.kinds import Metric, MetricContext
from critui.params import Param


def _every(params) -> Param:
    return Param("every", "int", 1, "measure every N-th logged epoch (and the last)", min=1)


class SingularValues(Metric):
    """The largest singular values of the end-to-end map, ``s1`` first."""

    name = "singular-values"
    description = "The k largest singular values of the end-to-end map of a deep linear model (s1 >= s2 >= ...)."
    params = (Param("k", "int", 10, "how many singular values", min=1, max=100), _every(None))

    def when(self, epoch, epochs):
        return epoch % self.settings["every"] == 0 or epoch == epochs - 1

    def compute(self, ctx: MetricContext) -> dict[str, float]:
        if not hasattr(ctx.model, "end_to_end"):
            raise CritUIError(f"metrics.singular-values needs a model with an end_to_end() map (models.deep-linear, "
                              f"models.two-pathway); this run's is a {type(ctx.model).__name__}.")
        with torch.no_grad():
            values = torch.linalg.svdvals(ctx.model.end_to_end().double().cpu())
        k = min(self.settings["k"], len(values))
        return {f"s{i + 1}": float(values[i]) for i in range(k)}


class PathwayShare(Metric):
    """Each pathway's share of the output: the projection of Ω_a and Ω_b on Ω = Ω_a + Ω_b.

    ``share_a + share_b = 1``; a pathway that learnt nothing has a share near 0. The norms
    ``norm_a``, ``norm_b`` are the Frobenius norms of the two maps.
    """

    name = "pathway-share"
    description = ("Each pathway's share of the two-pathway output: <Ω_p, Ω>/|Ω|² for p = a, b (they sum to 1), "
                   "and each pathway map's Frobenius norm.")
    params = (_every(None),)

    def when(self, epoch, epochs):
        return epoch % self.settings["every"] == 0 or epoch == epochs - 1

    def compute(self, ctx: MetricContext) -> dict[str, float]:
        if not hasattr(ctx.model, "pathway_maps"):
            raise CritUIError(f"metrics.pathway-share needs a model with two pathways (models.two-pathway); this "
                              f"run's is a {type(ctx.model).__name__}.")
        with torch.no_grad():
            omega_a, omega_b = (m.double() for m in ctx.model.pathway_maps())
            total = omega_a + omega_b
            scale = float((total * total).sum()) or 1.0
            return {"share_a": float((omega_a * total).sum()) / scale, "share_b": float((omega_b * total).sum()) / scale,
                    "norm_a": float(torch.linalg.matrix_norm(omega_a)), "norm_b": float(torch.linalg.matrix_norm(omega_b))}
