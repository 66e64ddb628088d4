"""ConvNet_k: the four-block CNN of the smooth-interpolation double-descent experiments.

Gamba, Englesson, Björkman & Azizpour, "Deep Double Descent via Smooth Interpolation", TMLR 2023
(and the poster "On the Lipschitz Constant of Deep Networks and Double Descent"). For a
(C_in, 32, 32) input::

    [Conv3x3(C_in -> k) -> (BatchNorm) -> ReLU]          (B, k, 32, 32)
    [Conv3x3(k -> 2k)   -> (BatchNorm) -> ReLU]          (B, 2k, 32, 32)
    AvgPool 2x2                                          (B, 2k, 16, 16)
    [Conv3x3(2k -> 4k)  -> (BatchNorm) -> ReLU]          (B, 4k, 16, 16)
    AvgPool 2x2                                          (B, 4k, 8, 8)
    [Conv3x3(4k -> 8k)  -> (BatchNorm) -> ReLU]          (B, 8k, 8, 8)
    AdaptiveAvgPool(1) -> Flatten                        (B, 8k)
    Linear(8k -> C)

All convolutions have stride 1 and padding 1, so any H, W >= 4 works (MNIST 28 -> 14 -> 7,
digits 8 -> 4 -> 2); global average pooling makes the head independent of the input size.
Convolutions carry a bias only without BatchNorm (BatchNorm's shift makes it redundant).
Average pooling is linear, so the Lipschitz upper bound uses its exact operator norm.

Parameters without BatchNorm: 9 k C_in + 9 (2k^2 + 8k^2 + 32k^2) + 15k + 8k C + C.
"""

from __future__ import annotations

from itertools import pairwise

from torch import nn

from ..errors import UserError


def conv_bn_relu(c_in: int, c_out: int, batchnorm: bool) -> list[nn.Module]:
    """3x3 convolution (stride 1, padding 1), optional BatchNorm, ReLU: shape-preserving."""
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=not batchnorm)]
    if batchnorm:
        layers.append(nn.BatchNorm2d(c_out))
    return layers + [nn.ReLU()]


def image_shape(name: str, input_shape: tuple[int, ...], min_size: int) -> tuple[int, int, int]:
    """``(C, H, W)`` of an image input, or a UserError naming the family and the shape."""
    if len(input_shape) != 3:
        raise UserError(
            f"model '{name}' needs image inputs of shape (C, H, W), got input shape {tuple(input_shape)}"
        )
    c, h, w = input_shape
    if min(h, w) < min_size:
        raise UserError(f"model '{name}' needs images of at least {min_size}x{min_size} pixels, got {h}x{w}")
    return c, h, w


def convnet(
    width: int, input_shape: tuple[int, ...], num_classes: int, *, batchnorm: bool = False, **_
) -> nn.Sequential:
    """ConvNet_k with channels [k, 2k, 4k, 8k]; ``depth`` is ignored (always four blocks)."""
    c_in, _, _ = image_shape("convnet", input_shape, min_size=4)
    k = width
    layers = conv_bn_relu(c_in, k, batchnorm) + conv_bn_relu(k, 2 * k, batchnorm)
    layers += [nn.AvgPool2d(2)] + conv_bn_relu(2 * k, 4 * k, batchnorm)
    layers += [nn.AvgPool2d(2)] + conv_bn_relu(4 * k, 8 * k, batchnorm)
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8 * k, num_classes)]
    return nn.Sequential(*layers)


def convnet_num_params(width: int, c_in: int, num_classes: int, batchnorm: bool = False) -> int:
    """Closed-form parameter count of :func:`convnet`."""
    chans = [c_in, width, 2 * width, 4 * width, 8 * width]
    total = 0
    for a, b in pairwise(chans):
        total += 9 * a * b + (2 * b if batchnorm else b)  # kernel + (BN gamma, beta | bias)
    return total + 8 * width * num_classes + num_classes


__all__ = ["convnet", "convnet_num_params", "conv_bn_relu", "image_shape"]
