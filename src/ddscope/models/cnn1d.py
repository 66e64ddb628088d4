"""CNN1d_c: the MNIST-1D convolutional baseline with c channels per layer.

Architecture (the ``ConvBase`` model of Greydanus & Steinbach, "Scaling down deep learning with
MNIST-1D", ICML 2024, ``mnist1d/models.py``), for an input of length L = 40::

    Unflatten (40,) -> (1, 40)                      only when the input has no channel axis
    Conv1d(1 -> c, kernel 5, stride 2, padding 1)   (B, c, 19)
    ReLU
    Conv1d(c -> c, kernel 3, stride 2, padding 1)   (B, c, 10)
    ReLU
    Conv1d(c -> c, kernel 3, stride 2, padding 1)   (B, c, 5)
    ReLU
    Flatten                                         (B, 5c)
    Linear(5c -> C)

We keep the paper's strided convolutions (rather than stride 1 with padding 2): the 8x spatial
reduction is what makes the linear head small (5c inputs instead of 40c), so the parameter count
grows as ~ 10 c^2 like the MLP's width sweep, and the published baseline (c = 25, 125 linear
inputs) is reproduced exactly. Parameters: (5 + 1) c + 2 (3 c^2 + c) + 5 c C + C.
"""

from __future__ import annotations

from torch import nn

from ..errors import UserError

# (kernel, stride, padding) of the three convolutions, as in mnist1d's ConvBase.
LAYERS = ((5, 2, 1), (3, 2, 1), (3, 2, 1))


def conv_out_len(length: int, kernel: int, stride: int, padding: int) -> int:
    """Output length of a Conv1d/Conv2d axis (dilation 1)."""
    return (length + 2 * padding - kernel) // stride + 1


def cnn1d(width: int, input_shape: tuple[int, ...], num_classes: int, **_) -> nn.Sequential:
    """Three Conv1d layers of ``width`` channels with ReLU, flatten, one linear layer.

    ``input_shape`` is ``(L,)`` (MNIST-1D's flat signals; viewed as one channel by a leading
    ``nn.Unflatten``) or ``(C_in, L)``. ``depth`` and ``batchnorm`` are ignored: the family is the
    published three-layer net without normalisation.
    """
    if len(input_shape) == 1:
        c_in, length = 1, input_shape[0]
        layers: list[nn.Module] = [nn.Unflatten(1, (1, length))]  # (B, L) -> (B, 1, L)
    elif len(input_shape) == 2:
        (c_in, length), layers = input_shape, []
    else:
        raise UserError(
            f"model 'cnn1d' needs 1-D signals of shape (L,) or (C, L), got input shape {tuple(input_shape)}"
        )
    for kernel, stride, padding in LAYERS:
        layers += [nn.Conv1d(c_in, width, kernel, stride=stride, padding=padding), nn.ReLU()]
        c_in, length = width, conv_out_len(length, kernel, stride, padding)
        if length < 1:
            raise UserError(f"model 'cnn1d': input length {input_shape[-1]} is too short for three strided convolutions")
    layers += [nn.Flatten(), nn.Linear(width * length, num_classes)]
    return nn.Sequential(*layers)


def cnn1d_num_params(width: int, input_shape: tuple[int, ...], num_classes: int) -> int:
    """Closed-form parameter count of :func:`cnn1d` (used by tests and the docs)."""
    c_in = 1 if len(input_shape) == 1 else input_shape[0]
    length = input_shape[-1]
    total = 0
    for kernel, stride, padding in LAYERS:
        total += c_in * width * kernel + width
        c_in, length = width, conv_out_len(length, kernel, stride, padding)
    return total + width * length * num_classes + num_classes


__all__ = ["cnn1d", "cnn1d_num_params", "conv_out_len"]
