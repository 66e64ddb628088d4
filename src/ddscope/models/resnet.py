"""ResNet-18_k: the CIFAR ResNet-18 with stage widths [k, 2k, 4k, 8k].

He, Zhang, Ren & Sun, "Deep Residual Learning for Image Recognition", CVPR 2016, in the CIFAR
form used by the double-descent literature (Nakkiran et al. 2020; Gamba et al., TMLR 2023):
a 3x3 stem without max pooling, so 32x32 inputs keep their resolution in the first stage::

    Conv3x3(C_in -> k) -> (BN) -> ReLU                       (B, k, 32, 32)
    stage 1: 2 x BasicBlock(k),   stride 1                   (B, k, 32, 32)
    stage 2: 2 x BasicBlock(2k),  first with stride 2        (B, 2k, 16, 16)
    stage 3: 2 x BasicBlock(4k),  first with stride 2        (B, 4k, 8, 8)
    stage 4: 2 x BasicBlock(8k),  first with stride 2        (B, 8k, 4, 4)
    AdaptiveAvgPool(1) -> Flatten -> Linear(8k -> C)

    BasicBlock: relu( shortcut(x) + [Conv3x3 -> (BN) -> ReLU -> Conv3x3 -> (BN)](x) )
    shortcut = identity, or Conv1x1 (stride s) -> (BN) where the shape changes.

Each block is a :class:`~ddscope.models.blocks.Residual` and everything else ``nn.Sequential``
of leaf layers, so the Lipschitz upper bound can walk the net (a block's constant is bounded by
``||shortcut|| + ||branch||``).

BatchNorm is optional (the Lipschitz paper trains without it). With BatchNorm the convolutions
have no bias (k = 64, 10 classes: 11,173,962 parameters, the standard CIFAR ResNet-18); without
it every convolution gets a bias instead, one per output channel instead of BatchNorm's two
(k = 64, 10 classes: 11,169,162 parameters).
"""

from __future__ import annotations

from torch import nn

from .blocks import Residual
from .convnet import image_shape

STAGES = (2, 2, 2, 2)  # BasicBlocks per stage: ResNet-18


def _conv_bn(c_in: int, c_out: int, kernel: int, stride: int, batchnorm: bool) -> list[nn.Module]:
    """Conv (padding keeps the size at stride 1) followed by BatchNorm when enabled."""
    conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=not batchnorm)
    return [conv, nn.BatchNorm2d(c_out)] if batchnorm else [conv]


def basic_block(c_in: int, c_out: int, stride: int, batchnorm: bool) -> Residual:
    """Two 3x3 convolutions with a ReLU between them, a shortcut and a ReLU after the sum."""
    branch = nn.Sequential(
        *_conv_bn(c_in, c_out, 3, stride, batchnorm),
        nn.ReLU(),
        *_conv_bn(c_out, c_out, 3, 1, batchnorm),
    )
    shortcut = None
    if stride != 1 or c_in != c_out:  # 1x1 projection matches channels and resolution
        shortcut = nn.Sequential(*_conv_bn(c_in, c_out, 1, stride, batchnorm))
    return Residual(branch, shortcut, post=nn.ReLU())


def resnet18(
    width: int, input_shape: tuple[int, ...], num_classes: int, *, batchnorm: bool = False, **_
) -> nn.Sequential:
    """ResNet-18_k; ``depth`` is ignored (always [2, 2, 2, 2] BasicBlocks)."""
    c_in, _, _ = image_shape("resnet18", input_shape, min_size=8)
    layers: list[nn.Module] = [*_conv_bn(c_in, width, 3, 1, batchnorm), nn.ReLU()]
    c = width
    for i, blocks in enumerate(STAGES):
        c_out = width * 2**i
        for j in range(blocks):
            stride = 2 if (i > 0 and j == 0) else 1
            layers.append(basic_block(c, c_out, stride, batchnorm))
            c = c_out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes)]
    return nn.Sequential(*layers)


def resnet18_num_params(width: int, c_in: int, num_classes: int, batchnorm: bool = False) -> int:
    """Closed-form parameter count of :func:`resnet18`.

    Every convolution is followed by BatchNorm (2 parameters per channel) or has a bias (1).
    """
    per_channel = 2 if batchnorm else 1
    total = 9 * c_in * width + per_channel * width  # stem
    c = width
    for i, blocks in enumerate(STAGES):
        c_out = width * 2**i
        for j in range(blocks):
            total += 9 * c * c_out + 9 * c_out * c_out + 2 * per_channel * c_out
            if c != c_out or (i > 0 and j == 0):
                total += c * c_out + per_channel * c_out
            c = c_out
    return total + c * num_classes + num_classes


__all__ = ["resnet18", "resnet18_num_params", "basic_block"]
