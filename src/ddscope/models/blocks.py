"""Building blocks shared by the model families.

Every ddscope model is a tree of ``nn.Sequential``, :class:`Residual` and leaf layers, so that
the Lipschitz upper bound (``ddscope.metrics.lipschitz``) can walk it in forward order.
"""

from __future__ import annotations

import torch
from torch import nn


class Residual(nn.Module):
    """y = shortcut(x) + branch(x), then an optional post-activation.

    ``shortcut`` is ``None`` for the identity (Lipschitz constant 1) or a module (e.g. a 1x1
    projection conv, optionally followed by BatchNorm) when the shape changes.
    """

    def __init__(self, branch: nn.Module, shortcut: nn.Module | None = None, post: nn.Module | None = None):
        super().__init__()
        self.branch = branch
        self.shortcut = shortcut
        self.post = post

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x if self.shortcut is None else self.shortcut(x)
        y = s + self.branch(x)
        return y if self.post is None else self.post(y)
