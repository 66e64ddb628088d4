"""Models written the usual way, for the examples: a factory per model, with the signature
ddscope calls for ``model.name = "mymodels:<function>"``:

    factory(model_config, input_shape, num_classes) -> nn.Module

``model_config.width``, ``.depth`` and the free table ``.options`` (``[model.options]`` in TOML)
are yours to read.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class Conv1dNet(nn.Module):
    """A class CNN with functional ops on 1-D signals (MNIST-1D: 40 samples, one channel)."""

    def __init__(self, width: int, length: int, num_classes: int, dropout: float = 0.0):
        super().__init__()
        self.conv1 = nn.Conv1d(1, width, 5, padding=2)
        self.conv2 = nn.Conv1d(width, width, 3, padding=1)
        self.fc = nn.Linear(width * (length // 4), num_classes)
        self.dropout = dropout

    def forward(self, x):
        x = x.reshape(len(x), 1, -1)
        x = F.max_pool1d(F.relu(self.conv1(x)), 2)
        x = F.max_pool1d(F.relu(self.conv2(x)) + x, 2)  # a residual add between the pools
        x = F.dropout(torch.flatten(x, 1), self.dropout, self.training)
        return self.fc(x)


def conv1d_net(cfg, input_shape, num_classes) -> nn.Module:
    """``model.name = "mymodels:conv1d_net"``; ``[model.options] dropout = 0.1`` is optional."""
    return Conv1dNet(cfg.width, math.prod(input_shape), num_classes, float(cfg.options.get("dropout", 0.0)))


class MLP(nn.Module):
    def __init__(self, d: int, width: int, depth: int, num_classes: int):
        super().__init__()
        self.hidden = nn.ModuleList(nn.Linear(d if i == 0 else width, width) for i in range(depth))
        self.out = nn.Linear(width, num_classes)

    def forward(self, x):
        h = x.flatten(1)
        for layer in self.hidden:
            h = F.relu(layer(h))
        return self.out(h)


def mlp(cfg, input_shape, num_classes) -> nn.Module:
    """``model.name = "mymodels:mlp"``: ``model.depth`` hidden layers of ``model.width`` units."""
    return MLP(math.prod(input_shape), cfg.width, cfg.depth, num_classes)
