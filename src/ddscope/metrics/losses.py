"""The training loss ℓ(f(x), y) that curvature and Theorem 2 are measured for.

``loss`` is ``"cross_entropy"`` (the default; integer class labels), ``"mse"`` (squared error
‖f(x) − t‖² per sample, averaged over the output's entries, as ``F.mse_loss``; integer labels
are one-hot encoded) or any callable ``(outputs (B, ...), targets (B, ...)) -> (B,)`` per-sample
losses. :func:`loss_fn` turns it into ``fn(outputs, targets, reduction)`` with ``reduction``
``"none"`` (B,) or ``"sum"`` (a scalar).
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor

LOSSES = ("cross_entropy", "mse")  # = ddscope.catalogue.TRAIN_LOSSES
Loss = str | Callable[[Tensor, Tensor], Tensor]


def _cross_entropy(out: Tensor, y: Tensor, reduction: str = "none") -> Tensor:
    if y.is_floating_point() or y.is_complex():
        raise ValueError("loss 'cross_entropy' needs integer class labels, got float targets; pass loss='mse' or a "
                         "callable (outputs, targets) -> per-sample losses")
    return F.cross_entropy(out.reshape(len(out), -1), y, reduction=reduction)


def _mse(out: Tensor, y: Tensor, reduction: str = "none") -> Tensor:
    out = out.reshape(len(out), -1)
    target = F.one_hot(y, out.shape[1]).to(out.dtype) if not y.is_floating_point() else y.reshape(len(y), -1)
    per = (out - target).square().mean(1)
    return per.sum() if reduction == "sum" else per


class LabelSmoothing:
    """Cross-entropy to the smoothed targets (1 − ε) e_y + ε/C (Szegedy et al. 2016), per sample:
    ``F.cross_entropy(..., label_smoothing=ε)``. A picklable callable, so a trial's loss crosses to
    worker processes; its Hessian in the logits is cross-entropy's (the targets sum to 1)."""

    def __init__(self, epsilon: float):
        if not 0.0 <= float(epsilon) < 1.0:
            raise ValueError(f"label smoothing must be in [0, 1), got {epsilon}")
        self.epsilon = float(epsilon)

    def __call__(self, out: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(out.reshape(len(out), -1), y, reduction="none", label_smoothing=self.epsilon)

    def __eq__(self, other) -> bool:
        return isinstance(other, LabelSmoothing) and other.epsilon == self.epsilon

    def __hash__(self) -> int:
        return hash(("label_smoothing", self.epsilon))

    def __repr__(self) -> str:
        return f"LabelSmoothing({self.epsilon:g})"


def trial_loss(name: str = "cross_entropy", label_smoothing: float = 0.0) -> Loss:
    """The loss a trial's ``optim.loss`` and ``optim.label_smoothing`` name, as :func:`loss_fn`
    takes it: ``"cross_entropy"``, ``"mse"`` or a :class:`LabelSmoothing`."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; allowed: {', '.join(LOSSES)}")
    if label_smoothing:
        if name != "cross_entropy":
            raise ValueError("label smoothing applies to the cross-entropy only")
        return LabelSmoothing(label_smoothing)
    return name


def batch_losses(out: Tensor, y: Tensor, loss: Loss) -> Tensor:
    """Per-sample losses of outputs ``out`` (..., C) against labels ``y`` (...): the training
    step's loss for any leading shape (a stacked group's (M, B, C))."""
    if loss == "cross_entropy":  # classes on dim 1: on the CPU several times faster than on the last
        return F.cross_entropy(out.movedim(-1, 1) if out.dim() > 2 else out, y, reduction="none")
    lead = y.shape
    return loss_fn(loss)(out.reshape(-1, out.shape[-1]), y.reshape(-1)).reshape(lead)


def loss_fn(loss: Loss = "cross_entropy") -> Callable[..., Tensor]:
    """``fn(outputs, targets, reduction="none" | "sum")`` for a loss name or callable."""
    if callable(loss):
        def custom(out: Tensor, y: Tensor, reduction: str = "none") -> Tensor:
            per = loss(out, y)
            if per.dim() != 1 or per.shape[0] != len(out):
                raise ValueError(f"the loss callable must return per-sample losses ({len(out)},), "
                                 f"got shape {tuple(per.shape)}")
            return per.sum() if reduction == "sum" else per

        return custom
    if loss == "cross_entropy":
        return _cross_entropy
    if loss == "mse":
        return _mse
    raise ValueError(f"unknown loss {loss!r}; allowed: {', '.join(LOSSES)} or a callable (outputs, targets) -> "
                     "per-sample losses")


__all__ = ["LOSSES", "LabelSmoothing", "Loss", "batch_losses", "loss_fn", "trial_loss"]
