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

LOSSES = ("cross_entropy", "mse")
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


__all__ = ["LOSSES", "Loss", "loss_fn"]
