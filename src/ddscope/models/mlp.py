"""MLP_k: d -> k -> ... -> k -> C with ReLU (MNIST-1D: two hidden layers)."""

from __future__ import annotations

import math

from torch import nn


def mlp(width: int, input_shape: tuple[int, ...], num_classes: int, depth: int = 2, **_) -> nn.Sequential:
    """``depth`` hidden layers of ``width`` units; inputs of any shape are flattened first."""
    d = math.prod(input_shape)
    layers: list[nn.Module] = [nn.Flatten()]
    for i in range(depth):
        layers += [nn.Linear(d if i == 0 else width, width), nn.ReLU()]
    layers.append(nn.Linear(width if depth else d, num_classes))
    return nn.Sequential(*layers)
