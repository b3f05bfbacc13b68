"""Measurements of a deep linear network's end-to-end map.

Both ask the model for its map (``end_to_end()``, ``pathway_maps()``), which the models of
this plugin provide; any model with those methods works.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from critui.errors import CritUIError
from critui.kinds import Metric, MetricContext
from critui.params import Param

if TYPE_CHECKING:
    import torch

# torch is imported inside the functions that compute, not here: listing the plugins and
# checking a run's settings then never pay its import.


def _every(params) -> Param:
    return Param("every", "int", 1, "measure every N-th logged epoch (and the last)", min=1)


class SingularValues(Metric):
    """The largest singular values of the end-to-end map, ``s1`` first."""

    name = "singular-values"
    description = "The k largest singular values of the end-to-end map of a deep linear model (s1 >= s2 >= ...)."
    params = (Param("k", "int", 10, "how many singular values", min=1, max=100), _every(None))

    def when(self, epoch, epochs):
        return epoch % self.settings["every"] == 0 or epoch == epochs - 1

    def reference(self, ctx: MetricContext) -> dict[str, list[tuple[float, float]]] | None:
        """The singular values gradient flow predicts for deep linear matrix completion
        (:func:`mode_trajectories`), with a task switch's first target during its window;
        None for any other task, or an optimiser other than plain gradient descent."""
        spec = ctx.spec
        if spec is None or spec.model.id != "models.deep-linear" or spec.dataset.id != "datasets.matrix-completion":
            return None
        optim = spec.optim
        if optim.get("name") != "sgd" or optim.get("momentum") or optim.get("weight_decay") or optim.get("decay") != 1:
            return None
        n, depth = int(spec.model.params["n"]), int(spec.model.params["depth"])
        target = full_matrix(n, ctx)
        phases: list[tuple[int, torch.Tensor]] = [(0, target)]
        first = getattr(ctx.deficit, "first", None)
        if spec.deficit is not None and spec.deficit.id == "deficits.task-switch" and first is not None:
            start, end = spec.window()
            if start < end:
                phases = ([(0, target)] if start > 0 else []) + [(start, first), (end, target)]
        curves = mode_trajectories(phases, depth=depth, lr=float(optim["lr"]), n=n,
                                   init=float(spec.model.params["init_scale"]), epochs=ctx.epochs,
                                   k=self.settings["k"])
        return {f"s{i + 1}": points for i, points in enumerate(curves)}

    def compute(self, ctx: MetricContext) -> dict[str, float]:
        if not hasattr(ctx.model, "end_to_end"):
            raise CritUIError(f"metrics.singular-values needs a model with an end_to_end() map (models.deep-linear, "
                              f"models.two-pathway); this run's is a {type(ctx.model).__name__}.")
        import torch

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
        import torch

        with torch.no_grad():
            omega_a, omega_b = (m.double() for m in ctx.model.pathway_maps())
            total = omega_a + omega_b
            scale = float((total * total).sum()) or 1.0
            return {"share_a": float((omega_a * total).sum()) / scale, "share_b": float((omega_b * total).sum()) / scale,
                    "norm_a": float(torch.linalg.matrix_norm(omega_a)), "norm_b": float(torch.linalg.matrix_norm(omega_b))}


def full_matrix(n: int, ctx: MetricContext) -> torch.Tensor:
    """The dataset's whole n×n target, put back together from its training and test entries
    (together they cover every entry, whichever ``test_on``)."""
    import torch

    matrix = torch.zeros(n, n, dtype=torch.float64)
    for x, y in ((ctx.test_x, ctx.test_y), (ctx.train_x, ctx.train_y)):
        rows, cols = x[:, 0].long().cpu(), x[:, 1].long().cpu()
        matrix[rows, cols] = y.reshape(-1).double().cpu()
    return matrix


SUBSTEP = 20  # gradient steps per RK4 step of the reference flow


def mode_trajectories(phases: list[tuple[int, torch.Tensor]], *, depth: int, lr: float, n: int, init: float,
                      epochs: int, k: int, points: int = 2000) -> list[list[tuple[float, float]]]:
    """The ``k`` largest end-to-end singular values over ``epochs`` full-batch steps, as
    gradient flow predicts them mode by mode (Saxe et al. 2014; Arora et al. 2019, Thm 3):
    a mode of singular value σ, aligned with a target mode of singular value m, moves as
    dσ/dt = lr · depth · σ^(2 − 2/depth) · (m − σ) / n².

    Approximations, all stated: the gradient of ½·MSE on the observed entries is replaced by
    its expectation over the positions, (W − M)/n² (full observation, rescaled); every mode
    starts aligned with its target at σ₀ = init/√n (the RMS projection of the initial map on
    one target mode); the modes of different targets (``phases``: ``(first epoch, target)``,
    in order; the same tensor again is the same target) are orthogonal, so a target's modes
    decay to 0 while another is trained. Their own code integrates Arora et al.'s full
    singular-vector dynamics instead (O(n³) a step). Returns ``k`` lists of (epoch, value):
    the value after the step of that epoch, on about ``points`` epochs (and every phase edge).
    """
    import torch

    targets: list[torch.Tensor] = []
    for _, matrix in phases:
        if not any(matrix is t for t in targets):
            targets.append(matrix)
    # each target's nonzero singular values (a rank-r target has r)
    goals = []
    for matrix in targets:
        values = torch.linalg.svdvals(matrix.double()).tolist()
        goals.append([v for v in values if v > 1e-6 * values[0]])
    sigma = [[init / n**0.5] * len(g) for g in goals]
    alpha = 2.0 - 2.0 / depth
    rate = lr * depth / n**2
    stride = max(1, -(-epochs // points))
    edges = sorted({e for e, _ in phases if 0 < e < epochs})
    curves: list[list[tuple[float, float]]] = [[] for _ in range(k)]

    def active_at(t: int) -> int:
        current = phases[0][1]
        for first, matrix in phases:
            if first <= t:
                current = matrix
        return next(i for i, m in enumerate(targets) if m is current)

    def flow(s: float, m: float) -> float:
        return rate * max(s, 0.0) ** alpha * (m - s)

    t = 0
    while t < epochs:
        nxt = min([epochs] + [e for e in edges if e > t] + [(t // stride + 1) * stride])
        active = active_at(t)
        while t < nxt:  # RK4 in stretches of at most SUBSTEP steps: one step moves σ far less than σ
            h = min(SUBSTEP, nxt - t)
            for i, goal in enumerate(goals):
                sig = sigma[i]
                for j, s in enumerate(sig):
                    m = goal[j] if i == active else 0.0
                    k1 = flow(s, m)
                    k2 = flow(s + h * k1 / 2, m)
                    k3 = flow(s + h * k2 / 2, m)
                    k4 = flow(s + h * k3, m)
                    sig[j] = s + h * (k1 + 2 * k2 + 2 * k3 + k4) / 6
            t += h
        largest = sorted((s for sig in sigma for s in sig), reverse=True)
        for i in range(min(k, len(largest))):
            curves[i].append((float(t - 1), largest[i]))
    return [c for c in curves if c]
