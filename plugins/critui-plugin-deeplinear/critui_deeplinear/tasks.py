"""The two synthetic tasks of Kleinman, Achille & Soatto (ICLR 2024), as critui datasets.

Both are regressions (``DatasetTensors.loss``): critui trains them with full-batch gradient
descent when ``optim.batch_size`` covers the training set, one epoch being one step.

- Matrix completion: the inputs are the (row, column) positions of observed entries of an
  n×n matrix, the targets their values. The paper's ``create_matrix``: U Vᵀ / √r from
  Gaussian U, V (n×r), rescaled to Frobenius norm n (entries of RMS 1).
- Hierarchy: the multipath experiment's 8 items (one-hot inputs) with 15 hierarchical
  features each (their ``Y_default``), fitted with ½ · the summed squared error.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from critui.errors import CritUIError
from critui.kinds import Dataset, DatasetTensors, Deficit
from critui.params import Param

if TYPE_CHECKING:
    import torch

# torch is imported inside the functions that compute, not here: listing the plugins and
# checking a run's settings then never pay its import.


def task_seed(seed: int, purpose: str) -> int:
    """A 63-bit seed from the run seed and a purpose, the same in every process (hashlib)."""
    digest = hashlib.sha256(f"deeplinear/{seed}/{purpose}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def low_rank_target(n: int, rank: int, seed: int, purpose: str) -> torch.Tensor:
    """An n×n matrix of rank ``rank``, Frobenius norm n, as the paper's ``create_matrix``."""
    import torch

    gen = torch.Generator().manual_seed(task_seed(seed, purpose))
    u = torch.randn(n, rank, generator=gen, dtype=torch.float64)
    v = torch.randn(n, rank, generator=gen, dtype=torch.float64)
    w = u @ v.T / rank**0.5
    return (w / torch.linalg.matrix_norm(w) * n).float()


def observed_positions(n: int, count: int, seed: int) -> torch.Tensor:
    """``count`` distinct (row, column) positions of an n×n matrix, as an int64 count×2."""
    import torch

    gen = torch.Generator().manual_seed(task_seed(seed, "observed"))
    flat = torch.randperm(n * n, generator=gen)[:count]
    return torch.stack([flat // n, flat % n], dim=1)


def positions_as_inputs(positions: torch.Tensor) -> torch.Tensor:
    """Positions as the float inputs a model gets (exact: n is far below 2**24)."""
    import torch

    return positions.to(torch.float32)


class MatrixCompletion(Dataset):
    """Fit the observed entries of a low-rank n×n matrix; score on the whole matrix."""

    name = "matrix-completion"
    description = ("Deep matrix completion (Kleinman et al. 2024): fit observed entries of a random rank-r n×n "
                   "matrix (inputs: row, column); test MSE on every entry, or the unobserved ones.")
    params = (
        Param("n", "int", 100, "the matrix is n×n (the model's width must be n)", min=2, max=2000),
        Param("rank", "int", 5, "rank of the target (the paper's rank2, learnt after the switch)", min=1, max=2000),
        Param("observed", "int", 2000, "number of observed (training) entries", min=1, max=4_000_000),
        Param("test_on", "choice", "all", "score on every entry (the paper's get_test_loss) or only the unobserved",
              choices=("all", "unobserved")),
    )

    def load(self, params: dict[str, Any], seed: int) -> DatasetTensors:
        import torch

        n, rank, observed = params["n"], params["rank"], params["observed"]
        if observed >= n * n or rank > n:
            raise CritUIError(f"datasets.matrix-completion: observed={observed} and rank={rank} do not fit an "
                              f"{n}×{n} matrix. Observe fewer than n² = {n * n} entries and keep rank <= n.")
        target = low_rank_target(n, rank, seed, "target")
        train = observed_positions(n, observed, seed)
        every = torch.cartesian_prod(torch.arange(n), torch.arange(n))
        if params["test_on"] == "unobserved":
            seen = torch.zeros(n * n, dtype=torch.bool)
            seen[train[:, 0] * n + train[:, 1]] = True
            every = every[~seen]
        return DatasetTensors(
            train_x=positions_as_inputs(train), train_y=target[train[:, 0], train[:, 1]].unsqueeze(1),
            test_x=positions_as_inputs(every), test_y=target[every[:, 0], every[:, 1]].unsqueeze(1),
            classes=[], mean=(0.0,), std=(1.0,), loss="half_mse",
            info={"n": n, "rank": rank},
        )


class TaskSwitch(Deficit):
    """During the window, train on a first low-rank target at the same observed positions.

    The paper's deficit for matrix completion: T steps on a rank-10 matrix, then the rank-5
    target. The first target is derived from the run seed alone, so it is the same in every
    run of a seed, whatever the window.
    """

    name = "task-switch"
    description = ("Matrix completion: while the window is open, the targets are the entries of another random "
                   "low-rank matrix (the paper's rank-10 first task) at the same positions.")
    level = "high"
    params = (
        Param("n", "int", 100, "size of the matrix (the dataset's n)", min=2, max=2000),
        Param("rank", "int", 10, "rank of the first target (the paper's rank1)", min=1, max=2000),
    )

    def __init__(self, params, seed, num_classes, input_shape):
        super().__init__(params, seed, num_classes, input_shape)
        self.first = low_rank_target(params["n"], params["rank"], seed, "first-target")
        self._on: dict[str, torch.Tensor] = {}
        self._last: tuple[torch.Tensor, int, torch.Size, torch.dtype, torch.Tensor] | None = None

    def apply(self, x, y, epoch, generator):
        # Full-batch training passes the same positions every step: their first-task targets
        # are kept for the tensor last seen (unless it changed in place: its version counter).
        last = self._last
        if last is not None and last[0] is x and last[1] == x._version and last[2] == y.shape and last[3] == y.dtype:
            return x, last[4]
        n = self.settings["n"]
        key = str(x.device)
        # The shape always; the range (a host sync) once per device, since the positions are fixed.
        if x.dim() != 2 or x.shape[1] != 2 or (key not in self._on and bool((x < 0).any() | (x >= n).any())):
            raise CritUIError(f"deficits.task-switch expects matrix positions (row, column) in 0..{n - 1}, as "
                              f"datasets.matrix-completion gives them; it got inputs of shape {tuple(x.shape)}. "
                              "Use it with that dataset and the same n (--set deficit.n=N).")
        rows, cols = x[:, 0].long(), x[:, 1].long()
        if key not in self._on:  # one copy per device, made once
            self._on[key] = self.first.to(x.device)
        targets = self._on[key][rows, cols].reshape(y.shape).to(y.dtype)
        self._last = (x, x._version, y.shape, y.dtype, targets)
        return x, targets


# Their Y_default (multipath/analysis_diag.py): 8 items, 15 features of a three-level hierarchy,
# features × items. Plain lists, so that importing this module does not import torch.
Y_DEFAULT = [
    [1, 1, 1, 1, 1, 1, 1, 1],
    [1, 1, 1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 1, 1, 1, 1],
    [1, 1, 0, 0, 0, 0, 0, 0], [0, 0, 1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 1, 1, 0, 0], [0, 0, 0, 0, 0, 0, 1, 1],
    *[[1 if i == j else 0 for j in range(8)] for i in range(8)],
]


def hierarchy_targets() -> torch.Tensor:
    """The multipath targets, items × features: 8×15 float32, a new tensor on every call."""
    import torch

    return torch.tensor(Y_DEFAULT, dtype=torch.float32).T



class Hierarchy(Dataset):
    """The multipath task: one-hot items to hierarchical features, ½ · summed squared error."""

    name = "hierarchy"
    description = ("Multipath task (Kleinman et al. 2024, after Saxe et al.): 8 one-hot items to 15 hierarchical "
                   "features; loss ½ · summed squared error, trained and tested on the same 8 items.")

    def load(self, params: dict[str, Any], seed: int) -> DatasetTensors:
        import torch

        x = torch.eye(8)
        return DatasetTensors(train_x=x, train_y=hierarchy_targets(), test_x=x.clone(), test_y=hierarchy_targets(),
                              classes=[], mean=(0.0,), std=(1.0,), loss="half_sse")
