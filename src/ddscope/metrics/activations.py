"""Lipschitz constants of elementwise activations: one table for the module and functional forms.

Every activation is looked up through its module form: ``F.hardswish(x)`` and ``nn.Hardswish()``
go through the same :func:`activation_constant`, so the two spellings of one function can never
get different constants (or one be refused while the other is accepted). A functional call is
turned into its module by :data:`FUNCTIONAL` (its arguments read from the call).

The constant of an elementwise φ: R → R applied entrywise is sup |φ'|; a map whose ℓ2 constant
is not finite (discontinuous, or growing slope) gets +inf — a true, if useless, bound — with the
reason in :data:`UNBOUNDED_REASON`. Softmax-type maps act on a whole dimension:

    softmax / softmin   J = diag(p) − p pᵀ,  ‖J‖₂ ≤ max_i p_i ≤ 1
    log_softmax         J = I − 1 pᵀ,         ‖J‖₂ ≤ 1 + ‖1‖₂‖p‖₂ ≤ 1 + √n  (n = size of the dim)

Slopes that are not simple numbers (GELU, SiLU, Mish) are maximised numerically in float64 at
import (golden-section search on the derivative's unimodal bump), never typed in.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn


def _max_slope(f: Callable[[float], float], lo: float, hi: float) -> float:
    """max f on [lo, hi] for a unimodal f: a grid, then golden-section search to rounding."""
    xs = [lo + (hi - lo) * i / 400 for i in range(401)]
    k = max(range(len(xs)), key=lambda i: f(xs[i]))
    a, b = xs[max(k - 1, 0)], xs[min(k + 1, len(xs) - 1)]
    r = (math.sqrt(5) - 1) / 2
    for _ in range(100):
        c, d = b - r * (b - a), a + r * (b - a)
        a, b = (a, d) if f(c) > f(d) else (c, b)
    return f((a + b) / 2) * (1 + 1e-12)  # the search stops within rounding of the maximum


def _sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def _gelu_tanh_slope(x: float) -> float:
    """d/dx of ½x(1 + tanh(u)), u = √(2/π)(x + 0.044715x³)."""
    c = math.sqrt(2 / math.pi)
    t = math.tanh(c * (x + 0.044715 * x**3))
    return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * c * (1 + 3 * 0.044715 * x * x)


def _mish_slope(x: float) -> float:
    sp = math.log1p(math.exp(x))
    t = math.tanh(sp)
    return t + x * (1 - t * t) * _sig(x)


# GELU x·Φ(x): largest slope Φ(√2) + √2·φ(√2) ≈ 1.1289 (closed form, at x = √2).
GELU_LIPSCHITZ = (0.5 * (1 + math.erf(1.0)) + math.sqrt(2) * math.exp(-1.0) / math.sqrt(2 * math.pi)) * (1 + 1e-12)
GELU_TANH_LIPSCHITZ = _max_slope(_gelu_tanh_slope, 0.0, 4.0)
SILU_LIPSCHITZ = _max_slope(lambda x: _sig(x) * (1 + x * (1 - _sig(x))), 0.0, 8.0)  # ≈ 1.0998
MISH_LIPSCHITZ = _max_slope(_mish_slope, 0.0, 8.0)  # ≈ 1.0886

# Hardsigmoid's slope is 1/6, but PyTorch's kernels multiply by 1/6 rounded to float32
# (0.16666667163…), so the function it computes has that slope: the larger of the two.
HARDSIGMOID_LIPSCHITZ = max(1 / 6, float(torch.tensor(1 / 6, dtype=torch.float32)))

# Discontinuous maps: no finite ℓ2 constant.
UNBOUNDED_REASON = {
    nn.Hardshrink: "Hardshrink jumps at ±lambda", nn.Threshold: "Threshold jumps at its threshold",
    nn.GLU: "GLU multiplies two halves of its input",
}


def activation_constant(m: nn.Module, shape: tuple[int, ...] | None = None) -> float | None:
    """sup ‖J‖₂ of the activation module ``m`` (eval mode) on inputs of ``shape`` (one sample,
    needed only by the softmax family), +inf where no finite constant exists, ``None`` when
    ``m`` is not an activation of this table."""
    t = type(m)
    if t in (nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.Tanh, nn.Softsign, nn.Tanhshrink, nn.LogSigmoid, nn.Softplus,
             nn.Softshrink, nn.Identity):
        return 1.0  # slopes in [0, 1]
    if t is nn.CELU:
        return 1.0  # slope min(1, exp(x/α)) ≤ 1 for α > 0
    if t is nn.ELU:
        return max(1.0, abs(float(m.alpha)))  # slope α·eˣ < |α| for x < 0
    if t is nn.SELU:
        return 1.0507009873554805 * 1.6732632423543772  # λ·α·eˣ < λα for x < 0, λ for x > 0
    if t is nn.LeakyReLU:
        return max(1.0, abs(float(m.negative_slope)))
    if t is nn.RReLU:  # eval mode: the fixed slope (lower + upper) / 2
        return max(1.0, abs(float(m.lower) + float(m.upper)) / 2)
    if t is nn.PReLU:
        return max(1.0, float(m.weight.detach().abs().max()))
    if t is nn.Sigmoid:
        return 0.25
    if t is nn.Hardsigmoid:
        return HARDSIGMOID_LIPSCHITZ
    if t is nn.Hardswish:
        return 1.5  # slope (2x + 3)/6 on (−3, 3), up to 3/2 at x → 3; 1 beyond
    if t is nn.SiLU:
        return SILU_LIPSCHITZ
    if t is nn.Mish:
        return MISH_LIPSCHITZ
    if t is nn.GELU:
        return GELU_LIPSCHITZ if m.approximate == "none" else GELU_TANH_LIPSCHITZ
    if t in (nn.Softmax, nn.Softmin, nn.Softmax2d):
        return 1.0
    if t is nn.LogSoftmax:
        if shape is None:
            return None
        dim = m.dim if m.dim is not None else 0
        n = shape[dim - 1] if dim > 0 else shape[dim]  # dim counts the batch dimension
        return 1.0 + math.sqrt(n)
    if t in UNBOUNDED_REASON:
        return math.inf
    return None


def _a(args: tuple, kwargs: dict, i: int, key: str, default):
    return args[i] if len(args) > i else kwargs.get(key, default)


# Function / method name -> its module form built from the call's arguments (after the input).
FUNCTIONAL: dict[str, Callable[[tuple, dict], nn.Module]] = {
    **{n: (lambda a, k: nn.ReLU()) for n in ("relu", "relu_")},
    "relu6": lambda a, k: nn.ReLU6(),
    **{n: (lambda a, k: nn.Hardtanh()) for n in ("hardtanh", "hardtanh_")},
    **{n: (lambda a, k: nn.Tanh()) for n in ("tanh", "tanh_")},
    **{n: (lambda a, k: nn.Sigmoid()) for n in ("sigmoid", "sigmoid_")},
    "softsign": lambda a, k: nn.Softsign(),
    "tanhshrink": lambda a, k: nn.Tanhshrink(),
    **{n: (lambda a, k: nn.LogSigmoid()) for n in ("logsigmoid", "log_sigmoid")},
    "softplus": lambda a, k: nn.Softplus(),
    "softshrink": lambda a, k: nn.Softshrink(),
    "hardshrink": lambda a, k: nn.Hardshrink(),
    "threshold": lambda a, k: nn.Threshold(0.0, 0.0),
    "glu": lambda a, k: nn.GLU(),
    **{n: (lambda a, k: nn.CELU(max(float(_a(a, k, 0, "alpha", 1.0)), 1e-12))) for n in ("celu", "celu_")},
    **{n: (lambda a, k: nn.ELU(float(_a(a, k, 0, "alpha", 1.0)))) for n in ("elu", "elu_")},
    **{n: (lambda a, k: nn.SELU()) for n in ("selu", "selu_")},
    **{n: (lambda a, k: nn.LeakyReLU(float(_a(a, k, 0, "negative_slope", 0.01)))) for n in ("leaky_relu", "leaky_relu_")},
    "rrelu": lambda a, k: nn.RReLU(float(_a(a, k, 0, "lower", 1 / 8)), float(_a(a, k, 1, "upper", 1 / 3))),
    "hardsigmoid": lambda a, k: nn.Hardsigmoid(),
    "hardswish": lambda a, k: nn.Hardswish(),
    "silu": lambda a, k: nn.SiLU(),
    "mish": lambda a, k: nn.Mish(),
    "gelu": lambda a, k: nn.GELU(approximate=str(_a(a, k, 0, "approximate", "none"))),
    "softmax": lambda a, k: nn.Softmax(dim=_a(a, k, 0, "dim", -1)),
    "softmin": lambda a, k: nn.Softmin(dim=_a(a, k, 0, "dim", -1)),
    "log_softmax": lambda a, k: nn.LogSoftmax(dim=_a(a, k, 0, "dim", -1)),
}
# Elementwise functions with slope in [−1, 1] that have no module form.
ONE_LIPSCHITZ_FUNCTIONS = {"abs", "abs_", "clamp", "clamp_", "clip", "clip_", "clamp_min", "clamp_max", "sin", "cos",
                           "nan_to_num"}
# Elementwise functions without a finite global constant: +inf, with the reason.
UNBOUNDED_FUNCTIONS = {
    "exp": "exp", "exp_": "exp", "square": "x²", "pow": "a power", "sqrt": "sqrt", "rsqrt": "1/sqrt",
    "reciprocal": "1/x", "log": "log", "log1p": "log", "sign": "sign (a jump at 0)",
    "round": "rounding (jumps)", "floor": "floor (jumps)", "ceil": "ceil (jumps)", "tan": "tan",
}

__all__ = ["FUNCTIONAL", "GELU_LIPSCHITZ", "GELU_TANH_LIPSCHITZ", "MISH_LIPSCHITZ", "ONE_LIPSCHITZ_FUNCTIONS",
           "SILU_LIPSCHITZ", "UNBOUNDED_FUNCTIONS", "UNBOUNDED_REASON", "activation_constant"]
