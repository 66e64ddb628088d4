"""Models written the way users write them (classes, functional ops, in-place residual adds,
concatenation), for the tests of measuring models ddscope did not build.

A plain module: tests and the examples import it by name. Every factory has the signature of a
``model.name = "module:function"`` factory: ``(model_config, input_shape, num_classes)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class SmallCNN(nn.Module):
    """A class CNN with functional ops: F.relu, F.max_pool2d, torch.flatten, F.dropout."""

    def __init__(self, channels: int = 4, num_classes: int = 10, in_ch: int = 1, side: int = 8):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, 2 * channels, 3, padding=1)
        self.fc = nn.Linear(2 * channels * (side // 4) ** 2, num_classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.dropout(torch.flatten(x, 1), p=0.1, training=self.training)
        return self.fc(x)


class BasicBlock(nn.Module):
    """torchvision's ResNet BasicBlock: ``out += identity`` and an in-place ReLU."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class Bottleneck(nn.Module):
    """torchvision's Bottleneck: 1x1, 3x3, 1x1 convolutions and ``out += identity``."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class TinyResNet(nn.Module):
    """torchvision-style ResNet: stem, two stages of ``block``, adaptive average pool, fc."""

    def __init__(self, block=BasicBlock, width: int = 4, num_classes: int = 10, in_ch: int = 3):
        super().__init__()
        self.inplanes = width
        self.conv1 = nn.Conv2d(in_ch, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._stage(block, width, 1)
        self.layer2 = self._stage(block, 2 * width, 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(2 * width * block.expansion, num_classes)

    def _stage(self, block, planes: int, stride: int) -> nn.Sequential:
        down = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            down = nn.Sequential(nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                                 nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, down)]
        self.inplanes = planes * block.expansion
        layers.append(block(self.inplanes, planes))
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class DenseNet(nn.Module):
    """DenseNet-style concatenation: every layer sees the concatenation of all earlier maps."""

    def __init__(self, growth: int = 3, layers: int = 3, num_classes: int = 10, in_ch: int = 1):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(in_ch + i * growth, growth, 3, padding=1) for i in range(layers))
        self.head = nn.Linear(in_ch + layers * growth, num_classes)

    def forward(self, x):
        feats = [x]
        for conv in self.convs:
            feats.append(F.relu(conv(torch.cat(feats, 1))))
        return self.head(F.adaptive_avg_pool2d(torch.cat(feats, 1), 1).flatten(1))


class ScaledResidual(nn.Module):
    """x + 0.5·f(x) blocks (a scaled residual), an MLP on flat inputs, GELU and a division."""

    def __init__(self, d: int = 12, width: int = 16, num_classes: int = 10, blocks: int = 2):
        super().__init__()
        self.inp = nn.Linear(d, width)
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, width))
                                    for _ in range(blocks))
        self.out = nn.Linear(width, num_classes)

    def forward(self, x):
        h = self.inp(x.flatten(1))
        for b in self.blocks:
            h = h + 0.5 * b(h)
        return self.out(h / 2.0)


class Wrapped(nn.Module):
    """A class wrapping an nn.Sequential with Dropout (the usual "Net" wrapper)."""

    def __init__(self, d: int = 12, width: int = 16, num_classes: int = 10):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(d, width), nn.ReLU(), nn.Dropout(0.2),
                                 nn.Linear(width, num_classes))

    def forward(self, x):
        return self.net(x)


class ShapeUser(nn.Module):
    """Reads shapes the way user code does: ``len(x)``, ``b, c, h, w = x.shape``, ``x.size(1)``."""

    def __init__(self, channels: int = 3, num_classes: int = 10, in_ch: int = 1, side: int = 8):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, channels, 3, padding=1)
        self.fc = nn.Linear(channels * side * side, num_classes)

    def forward(self, x):
        b, c, h, w = x.shape
        y = F.relu(self.conv(x))
        return self.fc(y.reshape(len(x), y.size(1) * h * w))


class TinyViT(nn.Module):
    """A small ViT as users write it: the position embedding owned by the root module, the
    fused ``F.scaled_dot_product_attention`` and ``nn.MultiheadAttention``-free blocks."""

    def __init__(self, dim: int = 8, num_classes: int = 10, in_ch: int = 1, side: int = 8, patch: int = 2):
        super().__init__()
        n = (side // patch) ** 2
        self.embed = nn.Conv2d(in_ch, dim, patch, patch)
        self.pos = nn.Parameter(torch.randn(1, n, dim) * 0.02)
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x):
        x = self.embed(x).flatten(2).transpose(1, 2) + self.pos  # (B, N, dim)
        q, k, v = self.qkv(self.norm1(x)).chunk(3, dim=-1)
        x = x + self.proj(F.scaled_dot_product_attention(q, k, v))
        x = x + self.mlp(self.norm2(x))
        return self.head(x.mean(1))


def _image(input_shape) -> tuple[int, int]:
    if len(input_shape) == 3:
        return input_shape[0], input_shape[1]
    return 1, int(math.isqrt(math.prod(input_shape)))


def small_cnn(cfg, input_shape, num_classes) -> nn.Module:
    """Factory for ``model.name = "tests.usermodels:small_cnn"`` on images (C, H, W)."""
    c, side = _image(input_shape)
    return SmallCNN(channels=cfg.width, num_classes=num_classes, in_ch=c, side=side)


def scaled_mlp(cfg, input_shape, num_classes) -> nn.Module:
    """Factory on any input shape: ``[model.options] blocks`` sets the number of blocks."""
    blocks = int(dict(cfg.options).get("blocks", 2))
    return ScaledResidual(d=math.prod(input_shape), width=cfg.width, num_classes=num_classes, blocks=blocks)
