"""mCNN_k: the five-layer CNN of "Deep Double Descent".

Nakkiran, Kaplun, Bansal, Yang, Barak & Sutskever, "Deep Double Descent: Where Bigger Models
and More Data Hurt", ICLR 2020 (their ``make_cnn``, Appendix B). For a (C_in, 32, 32) input::

    Conv3x3(C_in -> k)  -> BatchNorm -> ReLU             (B, k, 32, 32)
    Conv3x3(k -> 2k)    -> BatchNorm -> ReLU -> MaxPool2 (B, 2k, 16, 16)
    Conv3x3(2k -> 4k)   -> BatchNorm -> ReLU -> MaxPool2 (B, 4k, 8, 8)
    Conv3x3(4k -> 8k)   -> BatchNorm -> ReLU -> MaxPool2 (B, 8k, 4, 4)
    MaxPool 4x4 -> Flatten                               (B, 8k)
    Linear(8k -> C)

The final max pool covers the whole remaining feature map: ``MaxPool2d(4)`` at 32x32 as
published, ``MaxPool2d(3)`` for MNIST's 28x28 (28 -> 14 -> 7 -> 3), so the head always sees 8k
features. The convolutions keep their bias as in the published code.

BatchNorm is part of the published architecture, so it is always on: ``batchnorm=False`` from
the config (its default) is ignored for this family. Max pooling over non-overlapping windows is
1-Lipschitz in the l2 norm.

Parameters: 9 k C_in + 9 (2k^2 + 8k^2 + 32k^2) + 3 * 15k + 8k C + C (conv biases and BatchNorm's
gamma, beta: three per channel).
"""

from __future__ import annotations

from itertools import pairwise

from torch import nn

from .convnet import image_shape


def mcnn(width: int, input_shape: tuple[int, ...], num_classes: int, **_) -> nn.Sequential:
    """mCNN_k with channels [k, 2k, 4k, 8k] and BatchNorm; ``depth``/``batchnorm`` are ignored."""
    c_in, h, w = image_shape("mcnn", input_shape, min_size=8)
    k = width
    chans = [c_in, k, 2 * k, 4 * k, 8 * k]
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(pairwise(chans)):
        layers += [nn.Conv2d(a, b, 3, padding=1, bias=True), nn.BatchNorm2d(b), nn.ReLU()]
        if i >= 1:  # 2x2 max pooling after blocks 2-4 halves H and W (flooring odd sizes)
            layers.append(nn.MaxPool2d(2))
            h, w = h // 2, w // 2
    # Global max pool over the remaining (h, w) map: 4x4 at 32x32 input.
    layers += [nn.MaxPool2d((h, w)), nn.Flatten(), nn.Linear(8 * k, num_classes)]
    return nn.Sequential(*layers)


def mcnn_num_params(width: int, c_in: int, num_classes: int) -> int:
    """Closed-form parameter count of :func:`mcnn`."""
    chans = [c_in, width, 2 * width, 4 * width, 8 * width]
    total = sum(9 * a * b + 3 * b for a, b in pairwise(chans))
    return total + 8 * width * num_classes + num_classes


__all__ = ["mcnn", "mcnn_num_params"]
