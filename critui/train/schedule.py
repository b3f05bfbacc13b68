"""The learning-rate schedule, without torch: the planner and `critui report` need it too,
and those commands start faster without torch's seconds of import."""

from __future__ import annotations

from critui.config import RunSpec


def lr_at(spec: RunSpec, epoch: int) -> float:
    """The learning rate of ``epoch``: lr * decay^epoch, counted from epoch 0.

    The paper never resets the schedule at removal (a known confound, hence
    ``optim.after_removal``): ``reset`` restarts the decay at the removal epoch, and
    ``constant`` holds the LR the run had at removal.
    """
    lr, decay = spec.optim["lr"], spec.optim["decay"]
    policy = spec.optim["after_removal"]
    window = spec.window()
    if window is None or policy == "continue" or epoch < window[1]:
        return lr * decay**epoch
    removal = window[1]
    return lr * decay ** (epoch - removal) if policy == "reset" else lr * decay**removal
