"""Tiny float64 networks shared by the metric tests (every builder seeds torch itself)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from ddscope.models.blocks import Residual


def _randomise_bn(model: nn.Module, seed: int) -> nn.Module:
    """Non-trivial running statistics and affine parameters, so eval-mode BatchNorm is not ~identity."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g, dtype=torch.float64) * 2 - 1)
            m.running_var.copy_(torch.rand(n, generator=g, dtype=torch.float64) * 1.5 + 0.25)
            m.weight.data.copy_(torch.rand(n, generator=g, dtype=torch.float64) * 1.5 + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g, dtype=torch.float64) - 0.5)
    return model


def mlp(d: int = 6, widths: tuple[int, ...] = (8, 8), classes: int = 4, seed: int = 0) -> nn.Sequential:
    """d -> widths... -> classes with ReLU."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for w in widths:
        layers += [nn.Linear(d, w), nn.ReLU()]
        d = w
    layers.append(nn.Linear(d, classes))
    return nn.Sequential(*layers).double()


def conv1d_net(seed: int = 0) -> nn.Sequential:
    """Input (2, 12): strided, dilated and padded Conv1d, average pooling, linear head."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv1d(2, 3, 5, stride=2, padding=2),  # (3, 6)
        nn.ReLU(),
        nn.Conv1d(3, 4, 3, padding=2, dilation=2),  # (4, 6)
        nn.ReLU(),
        nn.AvgPool1d(2),  # (4, 3)
        nn.Flatten(),
        nn.Linear(12, 5),
    ).double()


def conv2d_net(seed: int = 0) -> nn.Sequential:
    """Input (2, 8, 8): strided conv, BatchNorm (eval), average and overlapping max pooling."""
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(2, 3, 3, stride=2, padding=1),  # (3, 4, 4)
        nn.BatchNorm2d(3),
        nn.ReLU(),
        nn.AvgPool2d(2),  # (3, 2, 2)
        nn.Conv2d(3, 4, 3, padding=1),  # (4, 2, 2)
        nn.LeakyReLU(0.1),
        nn.MaxPool2d(3, stride=1, padding=1),  # (4, 2, 2), overlapping windows
        nn.Flatten(),
        nn.Linear(16, 5),
    ).double()
    return _randomise_bn(net, seed)


def residual_net(seed: int = 0) -> nn.Sequential:
    """Input (2, 6, 6): identity-shortcut block and a strided block with a 1x1 projection."""
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1),
        nn.ReLU(),
        Residual(nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.Conv2d(3, 3, 3, padding=1)),
                 post=nn.ReLU()),
        Residual(nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1)),
                 shortcut=nn.Sequential(nn.Conv2d(3, 4, 1, stride=2), nn.BatchNorm2d(4)), post=nn.ReLU()),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    ).double()
    return _randomise_bn(net, seed)


NETS = {
    # name: (builder, input shape, classes)
    "mlp": (lambda seed=0: mlp(seed=seed), (6,), 4),
    "conv1d": (conv1d_net, (2, 12), 5),
    "conv2d": (conv2d_net, (2, 8, 8), 5),
    "residual": (residual_net, (2, 6, 6), 3),
}


def data(input_shape: tuple[int, ...], classes: int, n: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Standard-normal inputs (n, *input_shape) and uniform labels, float64."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *input_shape, generator=g, dtype=torch.float64)
    y = torch.randint(0, classes, (n,), generator=g)
    return x, y


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy 2-core machine OpenMP
    spin-waiting makes them up to 100x slower; restored after each test."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def nets() -> SimpleNamespace:
    return SimpleNamespace(mlp=mlp, conv1d=conv1d_net, conv2d=conv2d_net, residual=residual_net, all=NETS, data=data)
