"""Upper bound on the global Lipschitz constant (ℓ2 → ℓ2) of a network.

    Lip(f) ≤ ∏_l Lip(layer_l)

walking the module tree in forward order (Gamba, Azizpour & Björkman, poster "On the Lipschitz
Constant of Deep Networks and Double Descent"; Gamba et al., TMLR 2023). Linear layers
contribute their operator norm: a convolution's norm is measured **on the input shape that the
layer actually sees** (its dense matrix depends on the spatial size, stride and padding), never
the norm of the reshaped kernel. A residual block y = s(x) + b(x) contributes Lip(s) + Lip(b).

Per-layer norms are computed by Lanczos on AᵀA with A applied through the layer itself and Aᵀ
through its VJP — the same products as power iteration, but converging in far fewer steps when
the top singular values cluster, as they do for convolutions. The estimate is a Ritz value, so
it approaches the exact norm from below; with the default tolerance it matches the dense SVD
to ~1e-8 relative on small layers (see tests/metrics/test_lipschitz.py).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.func import vjp

from ..catalogue import OPTIONS
from ddscope.estimators import lanczos_top_eig, sqrt_clamped
from ddscope.metrics.activations import activation_constant
from ddscope.metrics.autolip import (
    autolip, conv_transpose_adjoint, declared_constant, linear_map_bound, trace, unbounded_reason,
)
from ddscope.metrics.convnorm import ROUNDING_MARGIN, conv_norm_certified
from ddscope.metrics.jacobian import eval_mode
from ddscope.models.blocks import Residual

# Leaf types whose forward is a rearrangement or the identity in eval mode: constant 1.
ONE_LIPSCHITZ = (
    nn.Identity, nn.Flatten, nn.Unflatten, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
    nn.FeatureAlphaDropout,
)
AVG_POOLS = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)
MAX_POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)
CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
CONV_TRANSPOSES = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
SUPPORTED = (
    "Sequential, Residual, modules defining lipschitz_parts(), Linear, Conv1d/2d/3d, ConvTranspose1d/2d/3d, "
    "BatchNorm1d/2d/3d, the activations of ddscope.metrics.activations (ReLU, ReLU6, LeakyReLU, ELU, SELU, CELU, "
    "PReLU, Tanh, Sigmoid, Hardsigmoid, Hardswish, Softplus, GELU, SiLU, Mish, Softmax, LogSoftmax, ...), Identity, "
    "Dropout*, Flatten, Unflatten, average and max pools (1d/2d/3d, adaptive); LayerNorm, GroupNorm, InstanceNorm, "
    "attention, recurrent layers and modules with lipschitz_unbounded give +inf"
)


def stock(module: nn.Module, cls: type | tuple[type, ...]) -> bool:
    """``module`` is an instance of ``cls`` whose ``forward`` is the class's own: a subclass that
    overrides ``forward`` computes another function, and reading its weights would bound that
    other function (parametrisations keep the stock forward and read ``weight`` through it)."""
    classes = cls if isinstance(cls, tuple) else (cls,)
    return any(isinstance(module, c) and type(module).forward is c.forward for c in classes)

LeafNorm = Callable[[str, nn.Module, tuple[int, ...]], float]


@dataclass(frozen=True)
class LipschitzBound:
    """``value`` = the bound; ``layers`` = (module path, type name, norm) in forward order.

    Entries are the leaf layers and, after their inner layers, each Residual block with its
    combined constant (shortcut + branch) · post.
    """

    value: float
    layers: list[tuple[str, str, float]]
    method: str = "walk"  # "autolip" (the fx graph) or "walk" (the module tree)
    # The same bound with every conv / average-pool norm its Lanczos estimate (a Ritz value,
    # from below) instead of its certified value, and those estimates by layer: the gap shows
    # how much the certificate costs. Equal to ``value`` for networks without such layers.
    lanczos_value: float | None = None
    lanczos_layers: dict[str, float] = field(default_factory=dict)


def record_input_shapes(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[dict[int, tuple[int, ...]], list[nn.Module]]:
    """Run one eval-mode forward pass on zeros (2, *input_shape) with pre-hooks on every module
    (two samples, so that a BatchNorm without running statistics reaches the clear error below).

    Returns:
        ``{id(module): input shape without batch dim}`` (first call) and the modules in call order.
    """
    shapes: dict[int, tuple[int, ...]] = {}
    order: list[nn.Module] = []

    def hook(module: nn.Module, args: tuple) -> None:
        if id(module) not in shapes and args and isinstance(args[0], Tensor):
            shapes[id(module)] = tuple(args[0].shape[1:])
            order.append(module)

    ref = next(iter(model.parameters()), None)
    x = torch.zeros(2, *input_shape, dtype=ref.dtype if ref is not None else None, device=ref.device if ref is not None else None)
    handles = [m.register_forward_pre_hook(hook) for m in model.modules()]
    try:
        with eval_mode(model), torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return shapes, order


def linear_map_norm(
    fn: Callable[[Tensor], Tensor],
    input_shape: tuple[int, ...],
    *,
    dtype: torch.dtype,
    device: torch.device,
    num_iters: int = 100,
    tol: float = 1e-8,
    generator: torch.Generator | None = None,
) -> float:
    """‖A‖₂ of a linear map given as ``fn(X (m, *input_shape)) -> (m, ...)``.

    ‖A‖₂² = λ_max(AᵀA) by Lanczos; AᵀA X = vjp(fn, X)(fn(X)) since the VJP of a linear map at
    any point is its adjoint. ``fn`` must be linear (no bias).
    """
    dim = math.prod(input_shape)
    adjoints: dict[int, Callable] = {}  # batch size m -> Aᵀ, recorded once (A is linear)

    def matvec(V: Tensor) -> Tensor:  # (dim, m) -> (dim, m)
        m = V.shape[1]
        X = V.T.reshape(m, *input_shape)
        with torch.no_grad():
            if m not in adjoints:
                adjoints[m] = vjp(fn, torch.zeros_like(X))[1]
            return adjoints[m](fn(X))[0].reshape(m, dim).T

    lam = lanczos_top_eig(matvec, dim, num_iters, tol=tol, generator=generator, dtype=dtype, device=device)
    return sqrt_clamped(lam)


def conv_operator_norm(
    conv: nn.Conv1d | nn.Conv2d,
    input_shape: tuple[int, ...],
    *,
    num_iters: int = 100,
    tol: float = 1e-8,
    generator: torch.Generator | None = None,
) -> float:
    """Operator norm ‖A‖₂ of a convolution (bias ignored) acting on inputs of ``input_shape``.

    A is the (C_out·L_out) × (C_in·L_in) matrix of the layer on that shape, with its stride,
    padding (any ``padding_mode``), dilation and groups; computed matrix-free by
    :func:`linear_map_norm`.

    Args:
        conv: the layer.
        input_shape: (C_in, L) or (C_in, H, W), without the batch dimension.
    """
    if not isinstance(conv, CONVS):
        raise ValueError(f"conv_operator_norm takes Conv1d, Conv2d or Conv3d, got {type(conv).__name__}")
    if len(input_shape) != conv.weight.dim() - 1 or input_shape[0] != conv.in_channels:
        raise ValueError(f"input_shape {tuple(input_shape)} does not fit {conv}")
    W = conv.weight.detach()
    return linear_map_norm(
        lambda X: conv._conv_forward(X, W, None),  # the module's own padding_mode handling
        tuple(input_shape), dtype=W.dtype, device=W.device, num_iters=num_iters, tol=tol, generator=generator,
    )


def _window_coverage(length: int, out: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """Largest number of pooling windows containing one input position (one dimension)."""
    count = [0] * length
    for o in range(out):
        for t in range(kernel):
            pos = o * stride - padding + t * dilation
            if 0 <= pos < length:
                count[pos] += 1
    return max(count)


def _adaptive_coverage(length: int, out: int) -> int:
    count = [0] * length
    for o in range(out):
        for pos in range((o * length) // out, -((-(o + 1) * length) // out)):
            count[pos] += 1
    return max(count)


def max_pool_lipschitz(pool: nn.Module, input_shape: tuple[int, ...]) -> float:
    """√(max number of windows one input belongs to).

    ‖mp(a) − mp(b)‖² = Σ_w (max_w a − max_w b)² ≤ Σ_w max_{i∈w} (a_i − b_i)²
    ≤ Σ_i cover(i) (a_i − b_i)², so Lip = 1 for non-overlapping windows and √max cover
    otherwise. Windows form a product grid, so the 2-D cover is the product of 1-D covers.
    """
    spatial = input_shape[1:]
    with torch.no_grad():
        out = pool(torch.zeros(1, 1, *spatial)).shape[2:]

    def per_dim(v, i):
        return v if isinstance(v, int) else v[i]

    total = 1
    for i, (length, o) in enumerate(zip(spatial, out)):
        if isinstance(pool, (nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d)):
            total *= _adaptive_coverage(length, o)
        else:
            total *= _window_coverage(
                length, o, per_dim(pool.kernel_size, i), per_dim(pool.stride, i),
                per_dim(pool.padding, i), per_dim(pool.dilation, i),
            )
    return math.sqrt(total)


def leaf_lipschitz(
    path: str, module: nn.Module, input_shape: tuple[int, ...], *, num_iters: int = 100, tol: float = 1e-8,
    generator: torch.Generator | None = None, certified: bool = True, estimate: float | None = None,
) -> float:
    """Lipschitz constant (upper bound) of one leaf layer on its input shape; see module doc.

    ``certified=True``: never below the exact constant (convolutions by
    :func:`~ddscope.metrics.convnorm.conv_norm_certified`, average pools by their dense matrix
    or the Schur bound, Linear by a float64 SVD; ``estimate`` = the Lanczos value when the
    caller has it); ``False``: conv and pool norms are Lanczos estimates (from below)."""
    if stock(module, nn.Linear):
        W = module.weight.detach()
        if not certified:
            return float(torch.linalg.matrix_norm(W, 2))
        return float(torch.linalg.matrix_norm(W.to(torch.float64), 2)) * (1 + ROUNDING_MARGIN)
    if stock(module, CONVS):
        lanczos = estimate if estimate is not None else conv_operator_norm(module, input_shape, num_iters=num_iters, tol=tol,
                                                                           generator=generator)
        return conv_norm_certified(module, input_shape, estimate=lanczos).value if certified else lanczos
    if stock(module, CONV_TRANSPOSES):  # the adjoint of a convolution on this layer's output shape
        with torch.no_grad():
            out_shape = tuple(module(torch.zeros(1, *input_shape, dtype=module.weight.dtype,
                                                 device=module.weight.device)).shape[1:])
        adj = conv_transpose_adjoint(module.weight, module.stride, module.padding, module.dilation, module.groups,
                                     len(module.kernel_size))
        return leaf_lipschitz(path, adj, out_shape, num_iters=num_iters, tol=tol, generator=generator, certified=certified)
    if stock(module, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
        if module.running_var is None:
            raise ValueError(f"BatchNorm '{path}' has no running statistics, so it is not a fixed map in eval mode")
        scale = (module.running_var + module.eps).rsqrt()
        if module.weight is not None:
            scale = scale * module.weight.detach().abs()
        return float(scale.max())
    if stock(module, ONE_LIPSCHITZ):
        return 1.0
    if unbounded_reason(module) is not None:
        return math.inf
    if type(module).__module__.startswith("torch.nn") and (c := activation_constant(module, tuple(input_shape))) is not None:
        return c
    if stock(module, AVG_POOLS):
        # pools act on each channel alike, so the norm on one channel is the norm on all; a
        # parameter-free map on one channel is cheap enough to measure in float64 on the CPU
        if certified:
            return avg_pool_certified(module, (1, *input_shape[1:]))
        return linear_map_norm(module, (1, *input_shape[1:]), dtype=torch.float64, device=torch.device("cpu"),
                               num_iters=num_iters, tol=tol, generator=generator)
    if stock(module, MAX_POOLS):
        return max_pool_lipschitz(module, input_shape)
    raise ValueError(f"lipschitz_upper: module '{path}' of type {type(module).__name__} is not supported; supported: {SUPPORTED}")


POOL_DENSE_MAX = 4096  # spatial positions of one channel up to which an average pool's matrix is formed


def avg_pool_certified(pool: nn.Module, shape: tuple[int, ...]) -> float:
    """‖A‖₂ of an average pool on one channel ``shape`` = (1, *spatial), never below: the dense
    matrix's float64 SVD up to :data:`POOL_DENSE_MAX` positions, else the Schur test
    ‖A‖₂ ≤ √(max row sum · max column sum) (A ≥ 0 entrywise); :func:`~ddscope.metrics.autolip.linear_map_bound`."""
    return linear_map_bound(pool, tuple(shape), nonnegative=True, dense_max=POOL_DENSE_MAX)


def walk_lipschitz(model: nn.Module, input_shape: tuple[int, ...], leaf_norm: LeafNorm) -> LipschitzBound:
    """Combine leaf constants over the module tree; ``leaf_norm(path, module, in_shape)``.

    Sequential (or ``lipschitz_parts()``): product of the parts. Residual: (1 if the shortcut is
    the identity else Lip(shortcut)) + Lip(branch), times Lip(post).
    """
    shapes, _ = record_input_shapes(model, tuple(input_shape))
    paths = {id(m): name for name, m in model.named_modules()}
    layers: list[tuple[str, str, float]] = []

    def walk(module: nn.Module, path: str) -> float:
        if getattr(module, "lipschitz_unbounded", None):  # checked before its parts: no bound exists
            layers.append((path, type(module).__name__, math.inf))
            return math.inf
        if isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward:
            return math.prod(walk(child, paths[id(child)]) for child in module)  # the stock chain only
        if isinstance(module, nn.Sequential) and not hasattr(module, "lipschitz_parts"):
            raise ValueError(
                f"lipschitz_upper: '{path}' ({type(module).__name__}) is an nn.Sequential subclass with its own "
                "forward, so its children's chain is not its function; define lipschitz_parts() returning the "
                "submodules in the order its forward applies them, or declare a lipschitz_constant")
        if hasattr(module, "lipschitz_parts"):
            parts = list(module.lipschitz_parts())
            for part in parts:
                if not isinstance(part, nn.Module) or id(part) not in paths:
                    raise ValueError(
                        f"lipschitz_upper: lipschitz_parts() of '{path}' ({type(module).__name__}) returned "
                        f"{type(part).__name__}, which is not a submodule of the model; return its own submodules "
                        "in the order they are applied")
            return math.prod(walk(part, paths[id(part)]) for part in parts)
        if isinstance(module, Residual):
            value = 1.0 if module.shortcut is None else walk(module.shortcut, paths[id(module.shortcut)])
            value += walk(module.branch, paths[id(module.branch)])
            if module.post is not None:
                value *= walk(module.post, paths[id(module.post)])
            layers.append((path, "Residual", value))
            return value
        if id(module) not in shapes:
            raise ValueError(f"lipschitz_upper: module '{path}' ({type(module).__name__}) was not called in the forward pass")
        value = float(leaf_norm(path, module, shapes[id(module)]))
        layers.append((path, type(module).__name__, value))
        return value

    return LipschitzBound(value=float(walk(model, "")), layers=layers)


def lipschitz_upper(
    model: nn.Module, input_shape: tuple[int, ...], *, num_iters: int = OPTIONS["lip_iters"], tol: float = 1e-8,
    generator: torch.Generator | None = None, constants: dict[str, float] | None = None, method: str = "auto",
) -> LipschitzBound:
    """Upper bound on the ℓ2 Lipschitz constant of ``model``: AutoLip over its ``torch.fx``
    graph (:mod:`ddscope.metrics.autolip`), or, for a model fx cannot trace, ∏ over the module
    tree (:func:`walk_lipschitz`). On a tree of Sequential / Residual / leaf layers both give
    the same value.

    Layer constants: Linear ‖W‖₂ (exact SVD); Conv1d/Conv2d the operator norm on the layer's
    actual input shape (:func:`conv_operator_norm`); BatchNorm (eval) max_i |γ_i|/√(var_i+ε);
    ReLU, LeakyReLU(|slope| ≤ 1), ELU(α ≤ 1), Tanh, Identity, Dropout, Flatten 1; Sigmoid 1/4;
    average pools their exact operator norm on the actual input shape; max pools
    √(max windows per input) (1 when windows do not overlap); GELU ≈ 1.1289. LayerNorm and
    dot-product self-attention are not globally Lipschitz: they (and any module with a
    ``lipschitz_unbounded`` attribute) make the bound +inf. A module with a
    ``lipschitz_constant`` attribute contributes that constant; an operation without a known
    constant raises ValueError naming it and how to declare one.

    Args:
        model: any module fx can trace, or a tree the walk understands (modules may define
            ``lipschitz_parts()`` returning their submodules in the order they are applied).
        input_shape: one sample's shape, without the batch dimension.
        num_iters, tol, generator: Lanczos settings for conv and pooling norms (``None``: seeded 0).
        constants: declared constants ``{graph node name, module path or function name: L}``.
        method: ``"auto"`` (AutoLip, the walk when fx cannot trace the model or AutoLip meets an
            operation the walk's ``lipschitz_parts()`` covers), ``"autolip"`` or ``"walk"``.
    """
    if method not in ("auto", "autolip", "walk"):
        raise ValueError(f"method must be auto, autolip or walk, got {method!r}")
    estimates: dict[tuple, float] = {}  # (path, shape) -> Lanczos value, shared by both passes
    lanczos_layers: dict[str, float] = {}

    def leaf_with(certified: bool):
        def leaf(path: str, module: nn.Module, shape: tuple[int, ...]) -> float:
            c = declared_constant(constants or {}, path, type(module), type(module).__name__)
            if c is not None:
                return c
            if hasattr(module, "lipschitz_constant"):
                return float(module.lipschitz_constant)
            est = None
            if stock(module, (*CONVS, *AVG_POOLS)):
                key = (path, tuple(shape))
                if key not in estimates:
                    estimates[key] = leaf_lipschitz(path, module, shape, num_iters=num_iters, tol=tol,
                                                    generator=generator, certified=False)
                est = estimates[key]
                lanczos_layers[path] = est
                if not certified:
                    return est
            return leaf_lipschitz(path, module, shape, num_iters=num_iters, tol=tol, generator=generator,
                                  certified=certified, estimate=est if stock(module, CONVS) else None)
        return leaf

    with torch.no_grad():
        bound = _combine(model, tuple(input_shape), leaf_with(True), constants, method)
        if not lanczos_layers:  # no conv or pool: the Lanczos product is the same number
            return dataclasses.replace(bound, lanczos_value=bound.value)
        rough = _combine(model, tuple(input_shape), leaf_with(False), constants, bound.method)
    return dataclasses.replace(bound, lanczos_value=rough.value, lanczos_layers=dict(lanczos_layers))


def _combine(model: nn.Module, input_shape: tuple[int, ...], leaf: LeafNorm, constants, method: str) -> LipschitzBound:
    """AutoLip or the walk (``method`` as in :func:`lipschitz_upper`) with leaf constants ``leaf``."""
    if method == "walk":
        return walk_lipschitz(model, input_shape, leaf)
    if method == "autolip":
        value, layers = autolip(model, input_shape, leaf, constants=constants)
        return LipschitzBound(value=float(value), layers=layers, method="autolip")
    try:
        trace(model, input_shape)
    except Exception as traced:  # noqa: BLE001 — control flow on the input, untraceable calls
        try:
            return walk_lipschitz(model, input_shape, leaf)
        except ValueError as e:
            raise ValueError(f"{e} (and torch.fx cannot trace the model for AutoLip: "
                             f"{type(traced).__name__}: {str(traced).splitlines()[0] if str(traced) else ''})") from None
    try:
        value, layers = autolip(model, input_shape, leaf, constants=constants)
    except ValueError as auto_error:
        try:  # a module tree with lipschitz_parts() may still be walked
            return walk_lipschitz(model, input_shape, leaf)
        except ValueError:
            raise auto_error from None
    return LipschitzBound(value=float(value), layers=layers, method="autolip")
