"""What is due at each epoch of a trial: metric groups, losses and errors, checkpoints."""

from __future__ import annotations

import time

import numpy as np

from ..config import TrialConfig


def metric_epochs(epochs: int, num_log: int, explicit: tuple[int, ...] = ()) -> list[int]:
    """Epochs at which the metric suite runs: ``explicit`` if given, else 0, ``num_log``
    log-spaced epochs in [1, epochs] and the last epoch."""
    if explicit:
        return sorted({e for e in explicit if e <= epochs} | {epochs})
    pts = np.unique(np.round(np.geomspace(1, epochs, max(num_log, 1))).astype(int))
    return sorted({0, epochs, *pts.tolist()})


def eval_epochs(epochs: int, m) -> set[int] | None:
    """Epochs whose losses and errors are recorded; ``None`` = every epoch.

    With ``m.num_eval_epochs`` > 0: epoch 0, that many log-spaced epochs, the last and every epoch
    of the metric schedules (so each metric row has its errors beside it). Evaluating 16 000
    MNIST-1D samples costs as much as an epoch of training (bench/README.md, benchmark 1)."""
    if m.num_eval_epochs <= 0:
        return None
    return (set(metric_epochs(epochs, m.num_eval_epochs)) | set(metric_epochs(epochs, m.num_log_epochs, m.epochs))
            | set(metric_epochs(epochs, m.num_sparse_epochs, m.epochs)))


class Schedule:
    """The metric groups due at each epoch and whether losses and errors are recorded."""

    def __init__(self, cfg: TrialConfig):
        m, epochs = cfg.metrics, cfg.optim.epochs
        self.metrics = m
        self.dense = set(metric_epochs(epochs, m.num_log_epochs, m.epochs))
        self.sparse = set(metric_epochs(epochs, m.num_sparse_epochs, m.epochs))
        self.evals = eval_epochs(epochs, m)  # None: every epoch

    def evaluates(self, epoch: int) -> bool:
        """Whether losses and errors are recorded at ``epoch``."""
        return self.evals is None or epoch in self.evals

    def groups(self, epoch: int) -> list[str]:
        m = self.metrics
        return [g for g in m.groups if epoch in self.dense] + [
            g for g in m.sparse_groups if epoch in self.sparse and g not in m.groups
        ]


class CheckpointSchedule:
    """Which checkpoint is due after an epoch: ``init.pt`` after epoch 0, ``final.pt`` after the
    last, ``epoch_NNNNN.pt`` at ``checkpoint.epochs`` and every ``every_epochs`` epochs or
    ``every_minutes`` minutes. One per training run, so the members of a group save together."""

    def __init__(self, cfg: TrialConfig):
        self.c, self.total = cfg.checkpoint, cfg.optim.epochs
        self.keep = set(self.c.epochs)
        self.last_save = time.monotonic()

    def due(self, epoch: int) -> tuple[str, bool] | None:
        """``(file name, full)`` where ``full`` means optimiser and RNG state too (a resume point);
        None when nothing is due."""
        c = self.c
        if epoch == self.total:
            return "final.pt", False
        if epoch == 0:
            return "init.pt", True
        if (epoch in self.keep or (c.every_epochs and epoch % c.every_epochs == 0)
                or (c.every_minutes and time.monotonic() - self.last_save >= 60.0 * c.every_minutes)):
            return f"epoch_{epoch:05d}.pt", True
        return None

    def saved(self) -> None:
        self.last_save = time.monotonic()


__all__ = ["CheckpointSchedule", "Schedule", "eval_epochs", "metric_epochs"]
