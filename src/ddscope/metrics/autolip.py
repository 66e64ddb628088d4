"""AutoLip: an upper bound on the ℓ2 Lipschitz constant of any model ``torch.fx`` can trace.

Virmaux & Scaman, "Lipschitz regularity of deep neural networks: analysis and efficient
estimation", NeurIPS 2018. The traced graph is walked in topological order, keeping for every
intermediate tensor z = g(x) an upper bound L(z) on the Lipschitz constant of g as a function of
the network input x (L(x) = 1). Each operation family is one small rule in :data:`RULES` (by
function / method name) or :func:`_module_rule` (by module type), each with its soundness test
against dense Jacobians in ``tests/metrics/test_autolip_rules.py``:

    composition z = h(u)               L(z) = Lip(h) · L(u)
    z = u ± v (both depend on x)       L(z) = √k_u L(u) + √k_v L(v)
    z = c · u,  u / c                  L(z) = max|c| · √k_u L(u),  √k_u L(u) / min|c|
    z = cat / stack(u₁, …, u_n)        L(z) = √(Σ L(uᵢ)²)
    selections (indexing, expand, repeat, flip, pad, nearest upsampling, …)
                                       L(z) = √(max copies of one entry) · L(u)
    sum over n entries √n · L(u); mean 1/√n · L(u); max, amax, logsumexp, norm over a dim: L(u)
    linear maps without parameters (linear / bilinear interpolation)   their norm on the shape seen
    anything that does not depend on x   a constant: L = 0

k_u is the broadcasting factor numel(z) / numel(u): an operand broadcast over k entries is
copied k times, which multiplies its norm by √k (``x + x.mean(1, keepdim=True)`` has
‖J‖₂ = 2, not 1 + 1/√n). Copies are counted, not assumed: a selection is replayed on the
entries' indices 1…n and the largest count of one index is its squared norm, exactly.

Leaf layers and activations get the constants of :func:`ddscope.metrics.lipschitz.leaf_lipschitz`
and :mod:`ddscope.metrics.activations` — the same for a module and its functional form (one table)
— measured on the input shape each one actually sees (shapes recorded by running the graph once
on zeros). Products of two input-dependent tensors (attention), LayerNorm, GroupNorm and
InstanceNorm are not globally Lipschitz: +inf. Operations without a known constant are all
collected and refused together in one ValueError that names each and how to declare it: the
``constants`` argument, keyed by graph node name, module path, module type (class or its name) or
function name, or a ``lipschitz_constant`` attribute on the module.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from ddscope.metrics.activations import (
    FUNCTIONAL, ONE_LIPSCHITZ_FUNCTIONS, UNBOUNDED_FUNCTIONS, activation_constant,
)
from ddscope.metrics.fxgraph import node_name as _name, trace, traced_values

# Shape-only rearrangements: every entry kept once (norm 1), no replay needed.
_VIEWS = {
    "flatten", "reshape", "view", "view_as", "reshape_as", "permute", "transpose", "t", "contiguous", "squeeze",
    "unsqueeze", "clone", "detach", "movedim", "moveaxis", "swapaxes", "swapdims", "float", "double", "half", "to",
    "type_as", "dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout", "feature_alpha_dropout",
    "identity", "ravel", "unflatten", "pixel_shuffle", "pixel_unshuffle", "channel_shuffle", "native_channel_shuffle",
}
# Selections and copies: the norm is √(largest number of copies of one entry), counted by replay.
_SELECTIONS = {
    "getitem", "narrow", "select", "chunk", "split", "tensor_split", "unbind", "expand", "expand_as", "repeat",
    "repeat_interleave", "tile", "broadcast_to", "index_select", "gather", "take", "take_along_dim", "flip",
    "fliplr", "flipud", "roll", "unfold", "pad", "diagonal", "tril", "triu", "masked_fill", "where", "rot90",
}
_ADD = {"add", "add_", "iadd", "sub", "sub_", "isub", "radd", "rsub"}
_SCALE = {"mul", "mul_", "imul", "neg", "neg_", "truediv", "div", "div_", "itruediv", "floordiv"}
_CAT = {"cat", "concat", "concatenate", "stack", "hstack", "vstack", "dstack"}
_SHAPE = {"size", "dim", "numel", "shape", "ndim", "device", "dtype", "is_cuda", "requires_grad"}  # no tensor of x
_SHAPE_ONLY_SECOND = {"expand_as", "view_as", "reshape_as", "type_as"}  # the second argument: its shape only
_REDUCE_MAX = {"max", "amax", "min", "amin", "logsumexp", "norm", "vector_norm"}  # 1-Lipschitz over a dim
_UNBOUNDED = {
    "layer_norm": "LayerNorm is not globally Lipschitz",
    "group_norm": "GroupNorm is not globally Lipschitz",
    "instance_norm": "InstanceNorm is not globally Lipschitz",
    "rms_norm": "RMSNorm is not globally Lipschitz",
    "scaled_dot_product_attention": "dot-product attention is not globally Lipschitz",
    "multi_head_attention_forward": "dot-product attention is not globally Lipschitz",
}
_POOLS = {"max_pool1d": nn.MaxPool1d, "max_pool2d": nn.MaxPool2d, "max_pool3d": nn.MaxPool3d,
          "avg_pool1d": nn.AvgPool1d, "avg_pool2d": nn.AvgPool2d, "avg_pool3d": nn.AvgPool3d,
          "adaptive_avg_pool1d": nn.AdaptiveAvgPool1d, "adaptive_avg_pool2d": nn.AdaptiveAvgPool2d,
          "adaptive_avg_pool3d": nn.AdaptiveAvgPool3d, "adaptive_max_pool1d": nn.AdaptiveMaxPool1d,
          "adaptive_max_pool2d": nn.AdaptiveMaxPool2d, "adaptive_max_pool3d": nn.AdaptiveMaxPool3d,
          "max_pool1d_with_indices": nn.MaxPool1d, "max_pool2d_with_indices": nn.MaxPool2d,
          "max_pool3d_with_indices": nn.MaxPool3d}
_CONVS = {"conv1d": nn.Conv1d, "conv2d": nn.Conv2d, "conv3d": nn.Conv3d}
_CONV_T = {"conv_transpose1d": nn.Conv1d, "conv_transpose2d": nn.Conv2d, "conv_transpose3d": nn.Conv3d}
# Module types that are selections (their call is replayed like the functions above).
_SELECTION_MODULES = (nn.ZeroPad1d, nn.ZeroPad2d, nn.ZeroPad3d, nn.ConstantPad1d, nn.ConstantPad2d, nn.ConstantPad3d,
                      nn.ReflectionPad1d, nn.ReflectionPad2d, nn.ReflectionPad3d, nn.ReplicationPad1d,
                      nn.ReplicationPad2d, nn.ReplicationPad3d, nn.CircularPad1d, nn.CircularPad2d, nn.CircularPad3d,
                      nn.PixelShuffle, nn.PixelUnshuffle, nn.ChannelShuffle, nn.Fold, nn.Unfold)
UNBOUNDED_MODULES = {nn.LayerNorm: "LayerNorm is not globally Lipschitz", nn.GroupNorm: "GroupNorm is not globally Lipschitz",
                     nn.InstanceNorm1d: "InstanceNorm is not globally Lipschitz",
                     nn.InstanceNorm2d: "InstanceNorm is not globally Lipschitz",
                     nn.InstanceNorm3d: "InstanceNorm is not globally Lipschitz",
                     nn.LocalResponseNorm: "LocalResponseNorm is not globally Lipschitz",
                     nn.MultiheadAttention: "dot-product attention is not globally Lipschitz",
                     nn.TransformerEncoderLayer: "dot-product attention is not globally Lipschitz",
                     nn.TransformerDecoderLayer: "dot-product attention is not globally Lipschitz",
                     nn.RNNBase: "a recurrent layer multiplies its state by input-dependent gates"}
if hasattr(nn, "RMSNorm"):
    UNBOUNDED_MODULES[nn.RMSNorm] = "RMSNorm is not globally Lipschitz"


def unbounded_reason(m: nn.Module) -> str | None:
    """Why ``m`` has no finite global constant (its type or its ``lipschitz_unbounded``), else None."""
    declared = getattr(m, "lipschitz_unbounded", None)
    if declared:
        return str(declared)
    for cls, why in UNBOUNDED_MODULES.items():
        if isinstance(m, cls):
            return why
    return None


def _abs_max(c) -> float:
    return float(c.detach().abs().max()) if isinstance(c, Tensor) else abs(float(c))


def _abs_min(c) -> float:
    return float(c.detach().abs().min()) if isinstance(c, Tensor) else abs(float(c))


def _arg(node: fx.Node, i: int, key: str, default=None):
    return node.args[i] if len(node.args) > i else node.kwargs.get(key, default)


def _numel(v) -> int:
    if isinstance(v, Tensor):
        return v.numel()
    if isinstance(v, (tuple, list)):
        return sum(_numel(t) for t in v)
    return 1


def _tensors(v) -> list[Tensor]:
    if isinstance(v, Tensor):
        return [v]
    if isinstance(v, (tuple, list)):
        return [t for item in v for t in _tensors(item)]
    return []


class Unknown(Exception):
    """An operation without a known constant (collected, then refused together)."""

    def __init__(self, what: str):
        super().__init__(what)
        self.what = what


@dataclass
class _Walk:
    """The state of one AutoLip pass: the graph, each node's value on zeros, the bounds L so far."""

    gm: fx.GraphModule
    values: dict[str, object]
    leaf: Callable[[str, nn.Module, tuple[int, ...]], float]
    constants: dict
    L: dict[str, float] = field(default_factory=dict)
    layers: list[tuple[str, str, float]] = field(default_factory=list)

    def lip(self, a) -> float:
        return self.L[a.name] if isinstance(a, fx.Node) and a.name in self.L else 0.0

    def const(self, a):
        return self.values[a.name] if isinstance(a, fx.Node) else a

    def shape_of(self, a: fx.Node) -> tuple[int, ...]:
        return tuple(self.values[a.name].shape[1:])

    def bcast(self, node: fx.Node, a: fx.Node) -> float:
        """√(numel(z) / numel(a)): the copies broadcasting makes of every entry of ``a``."""
        ratio = _numel(self.values[node.name]) / max(_numel(self.values[a.name]), 1)
        return math.sqrt(ratio) if ratio > 1 else 1.0

    def note(self, where: str, op: str, c: float) -> None:
        self.layers.append((where, op, c))


def multiplicity(fn: Callable[[Tensor], object], value: Tensor) -> int:
    """Largest number of copies of one entry of ``value`` in ``fn(value)``, for a selection
    ``fn`` (an output entry is one input entry or a constant). Replays ``fn`` on the indices
    1…n in float64; raises :class:`Unknown` when the output is not such a selection."""
    n = value.numel()
    if n >= 2**50:
        raise Unknown("a selection on a tensor too large to count its copies")
    code = torch.arange(1, n + 1, dtype=torch.float64, device=value.device).reshape(value.shape)
    out = _tensors(fn(code))
    if not out:
        return 0
    flat = torch.cat([t.detach().reshape(-1).to(torch.float64) for t in out])
    if not bool(((flat == flat.round()) & (flat >= 0) & (flat <= n)).all()):
        raise Unknown("an operation that is not a selection of entries")
    counts = torch.bincount(flat.long(), minlength=n + 1)[1:]
    return int(counts.max()) if counts.numel() else 0


def _replay(w: _Walk, node: fx.Node, x: fx.Node) -> Callable[[Tensor], object]:
    """``node``'s operation as a function of the value of ``x`` (other arguments as recorded)."""
    def sub(a):
        if isinstance(a, fx.Node):
            return None if a is x else w.values[a.name]
        return a

    def fn(code: Tensor):
        args = fx.node.map_aggregate(node.args, lambda a: code if a is x else sub(a))
        kwargs = fx.node.map_aggregate(node.kwargs, lambda a: code if a is x else sub(a))
        if node.op == "call_method":
            return getattr(args[0], node.target)(*args[1:], **kwargs)
        if node.op == "call_module":
            return w.gm.get_submodule(node.target)(*args, **kwargs)
        return node.target(*args, **kwargs)
    return fn


def linear_map_bound(fn: Callable[[Tensor], Tensor], shape: tuple[int, ...], *, nonnegative: bool,
                     dense_max: int = 4096) -> float:
    """A certified ‖A‖₂ of a parameter-free linear map ``fn`` on one sample ``shape``: the float64
    SVD of its dense matrix up to ``dense_max`` inputs, else (for entrywise nonnegative A) the
    Schur test ‖A‖₂ ≤ √(max row sum · max column sum)."""
    from ddscope.metrics.convnorm import ROUNDING_MARGIN

    dim = math.prod(shape)
    with torch.no_grad():
        if dim <= dense_max:
            eye = torch.eye(dim, dtype=torch.float64).view(dim, *shape)
            cols = fn(eye).reshape(dim, -1)
            return float(torch.linalg.matrix_norm(cols, 2)) * (1 + ROUNDING_MARGIN)
    if not nonnegative:
        raise Unknown(f"a linear map on {dim} inputs with signed weights (too large for its dense matrix)")
    ones = torch.ones(1, *shape, dtype=torch.float64, requires_grad=True)
    with torch.enable_grad():
        out = fn(ones)
        col = torch.autograd.grad(out, ones, torch.ones_like(out))[0]  # Aᵀ1: column sums
    return math.sqrt(float(out.max()) * float(col.max())) * (1 + ROUNDING_MARGIN)


def interpolation_constant(mode: str, fn: Callable[[Tensor], Tensor], in_shape: tuple[int, ...],
                           select: Callable[[], int]) -> float:
    """Lip of an interpolation on one sample (C, *spatial): nearest modes are selections
    (``select()`` counts copies), the others a linear map acting alike on every channel, bounded
    on one channel by :func:`linear_map_bound` (bicubic has signed weights)."""
    if mode in ("nearest", "nearest-exact"):
        return math.sqrt(select())
    one = (1, *in_shape[1:])
    return linear_map_bound(fn, one, nonnegative=mode != "bicubic")


# ---- the rules: (walk, node, name, input-dependent args) -> L(node) -------------------------------

def _rule_add(w: _Walk, node: fx.Node, name: str, d: list[fx.Node]) -> float:
    alpha = _abs_max(w.const(node.kwargs.get("alpha", 1.0)))
    total = 0.0
    for i, a in enumerate(node.args[:2]):
        if isinstance(a, fx.Node) and a.name in w.L:
            total += (alpha if i == 1 else 1.0) * w.bcast(node, a) * w.L[a.name]
    return total


def _rule_scale(w: _Walk, node: fx.Node, name: str, d: list[fx.Node]) -> float:
    if name.startswith("neg"):
        return w.lip(d[0])
    if len(d) == 2:
        w.note(node.name, name, math.inf)
        return math.inf  # a product or quotient of two functions of x
    x = d[0]
    if name == "floordiv":
        raise Unknown("'floordiv' (a step function)")
    if "div" in name:
        if node.args[0] is not x:
            w.note(node.name, name, math.inf)
            return math.inf  # c / g(x)
        den = _abs_min(w.const(node.args[1]))
        c = 1.0 / den if den > 0 else math.inf
    else:
        other = node.args[1] if node.args[0] is x else node.args[0]
        c = _abs_max(w.const(other))
    w.note(node.name, name, c)
    return c * w.bcast(node, x) * w.lip(x)


def _rule_cat(w: _Walk, node: fx.Node, name: str, d: list[fx.Node]) -> float:
    seq = node.args[0] if node.args else node.kwargs.get("tensors")
    return math.sqrt(sum(w.lip(a) ** 2 for a in seq if isinstance(a, fx.Node)))


def _single(d: list[fx.Node], what: str) -> fx.Node:
    if len(d) != 1:
        raise Unknown(f"{what} on several input-dependent tensors")
    return d[0]


def _rule_view(w: _Walk, node: fx.Node, name: str, d: list[fx.Node]) -> float:
    return w.lip(_single(d, f"'{name}'"))


def _rule_select(w: _Walk, node: fx.Node, name: str, d: list[fx.Node]) -> float:
    x = _single(d, f"'{name}'")
    src = w.values[x.name]
    if not isinstance(src, Tensor):  # picking one tensor out of a tuple (chunk, max with dim)
        return w.lip(x)
    k = multiplicity(_replay(w, node, x), src)
    if k > 1:
        w.note(node.name, name, math.sqrt(k))
    return math.sqrt(max(k, 1)) * w.lip(x) if k else 0.0


def _rule_activation(w: _Walk, node: fx.Node, name: str, d: list[fx.Node]) -> float:
    x = _single(d, f"'{name}'")
    args = tuple(w.const(a) for a in node.args[1:])
    kwargs = {k: w.const(v) for k, v in node.kwargs.items()}
    if name == "prelu":
        c = max(1.0, _abs_max(args[0] if args else kwargs["weight"]))
    else:
        c = activation_constant(FUNCTIONAL[name](args, kwargs), w.shape_of(x))
    if c is None:
        raise Unknown(f"the activation '{name}'")
    if c != 1.0:
        w.note(node.name, name, c)
    return c * w.lip(x)


def _rule_one(w: _Walk, node: fx.Node, name: str, d: list[fx.Node]) -> float:
    return w.lip(_single(d, f"'{name}'"))


def _rule_unbounded(w: _Walk, node: fx.Node, name: str, d: list[fx.Node]) -> float:
    w.note(node.name, name, math.inf)
    return math.inf


def _rule_linear(w: _Walk, node: fx.Node, name: str, d: list[fx.Node]) -> float:
    if len(d) == 2 and name in ("matmul", "mm", "bmm"):
        w.note(node.name, name, math.inf)  # attention scores: x on both sides
        return math.inf
    x = _single(d, f"'{name}'")
    others = [a for a in node.args[:2] if a is not x]
    W = w.const(others[0]) if others else None
    if not isinstance(W, Tensor):
        raise Unknown(f"'{name}' without a constant weight")
    W = W.detach()
    c = float(torch.linalg.matrix_norm(W.to(torch.float64) if W.dim() >= 2 else W.to(torch.float64)[None], 2).max())
    c *= 1 + 1e-9
    w.note(node.name, name, c)
    return c * w.lip(x)


def _conv_module(cls, W: Tensor, kw: dict) -> nn.Module:
    conv = cls(W.shape[1] * kw["groups"], W.shape[0], tuple(W.shape[2:]), bias=False, device="meta", **kw)
    conv.weight = nn.Parameter(W.detach(), requires_grad=False)
    return conv


def _rule_conv(w: _Walk, node: fx.Node, name: str, d: list[fx.Node]) -> float:
    x = _single(d, f"'{name}'")
    W = w.const(_arg(node, 1, "weight"))
    if node.args[0] is not x or not isinstance(W, Tensor):
        raise Unknown(f"'{name}' with an input-dependent weight")
    kw = dict(stride=w.const(_arg(node, 3, "stride", 1)), padding=w.const(_arg(node, 4, "padding", 0)),
              dilation=w.const(_arg(node, 5, "dilation", 1)), groups=w.const(_arg(node, 6, "groups", 1)))
    c = w.leaf(node.name, _conv_module(_CONVS[name], W, kw), w.shape_of(x))  # the layer's (certified) constant
    w.note(node.name, name, c)
    return c * w.lip(x)


def conv_transpose_adjoint(weight: Tensor, stride, padding, dilation, groups: int, dims: int) -> nn.Module:
    """The convolution whose adjoint a transposed convolution is: ConvTranspose(W)(x) = Aᵀx with
    A = Conv(W) on the transposed convolution's output shape (same stride, padding, dilation,
    groups; output_padding only adds rows A never reads), so ‖ConvTranspose‖₂ = ‖A‖₂."""
    cls = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[dims]
    return _conv_module(cls, weight, dict(stride=stride, padding=padding, dilation=dilation, groups=groups))


def _rule_conv_transpose(w: _Walk, node: fx.Node, name: str, d: list[fx.Node]) -> float:
    x = _single(d, f"'{name}'")
    W = w.const(_arg(node, 1, "weight"))
    if node.args[0] is not x or not isinstance(W, Tensor):
        raise Unknown(f"'{name}' with an input-dependent weight")
    dims = int(name[-2])
    adj = conv_transpose_adjoint(W, w.const(_arg(node, 3, "stride", 1)), w.const(_arg(node, 4, "padding", 0)),
                                 w.const(_arg(node, 7, "dilation", 1)), w.const(_arg(node, 6, "groups", 1)), dims)
    c = w.leaf(node.name, adj, tuple(w.values[node.name].shape[1:]))
    w.note(node.name, name, c)
    return c * w.lip(x)


def _rule_batch_norm(w: _Walk, node: fx.Node, name: str, d: list[fx.Node]) -> float:
    x = _single(d, "'batch_norm'")
    var, weight = w.const(_arg(node, 2, "running_var")), w.const(_arg(node, 3, "weight"))
    if not isinstance(var, Tensor) or bool(_arg(node, 5, "training", False)):
        raise Unknown("'batch_norm' without running statistics (training mode)")
    scale = (var + float(_arg(node, 7, "eps", 1e-5))).rsqrt()
    if isinstance(weight, Tensor):
        scale = scale * weight.detach().abs()
    c = float(scale.max())
    w.note(node.name, name, c)
    return c * w.lip(x)


def _rule_pool(w: _Walk, node: fx.Node, name: str, d: list[fx.Node]) -> float:
    x = _single(d, f"'{name}'")
    args = [w.const(a) for a in node.args[1:]]
    kwargs = {k: w.const(v) for k, v in node.kwargs.items() if k != "return_indices"}
    if name.startswith("max_pool") and len(args) >= 5:
        args = args[:4] + args[5:]  # (kernel, stride, padding, dilation, ceil_mode)
    c = w.leaf(node.name, _POOLS[name](*args, **kwargs), w.shape_of(x))
    w.note(node.name, name, c)
    return c * w.lip(x)


def _rule_reduce_sum(w: _Walk, node: fx.Node, name: str, d: list[fx.Node]) -> float:
    x = _single(d, f"'{name}'")
    ratio = _numel(w.values[x.name]) / max(_numel(w.values[node.name]), 1)
    c = math.sqrt(ratio) if name == "sum" else 1.0 / math.sqrt(ratio)
    w.note(node.name, name, c)
    return c * w.lip(x)


def _rule_interpolate(w: _Walk, node: fx.Node, name: str, d: list[fx.Node]) -> float:
    x = _single(d, f"'{name}'")
    mode = str(w.const(node.kwargs.get("mode", node.args[3] if len(node.args) > 3 else "nearest")))
    replay = _replay(w, node, x)

    def one_channel(t: Tensor) -> Tensor:  # the same call on (m, 1, *spatial)
        return replay(t)

    c = interpolation_constant(mode, one_channel, w.shape_of(x),
                               lambda: multiplicity(replay, w.values[x.name]))
    w.note(node.name, f"{name} ({mode})", c)
    return c * w.lip(x)


RULES: dict[str, Callable[[_Walk, fx.Node, str, list[fx.Node]], float]] = {
    **{n: _rule_add for n in _ADD},
    **{n: _rule_scale for n in _SCALE},
    **{n: _rule_cat for n in _CAT},
    **{n: _rule_view for n in _VIEWS},
    **{n: _rule_select for n in _SELECTIONS},
    **{n: _rule_activation for n in (*FUNCTIONAL, "prelu")},
    **{n: _rule_one for n in ONE_LIPSCHITZ_FUNCTIONS | _REDUCE_MAX},
    **{n: _rule_unbounded for n in (*_UNBOUNDED, *UNBOUNDED_FUNCTIONS)},
    **{n: _rule_linear for n in ("linear", "matmul", "mm", "bmm")},
    **{n: _rule_conv for n in _CONVS},
    **{n: _rule_conv_transpose for n in _CONV_T},
    "batch_norm": _rule_batch_norm,
    **{n: _rule_pool for n in _POOLS},
    "sum": _rule_reduce_sum, "mean": _rule_reduce_sum,
    "interpolate": _rule_interpolate, "upsample": _rule_interpolate,
}


def _module_rule(w: _Walk, node: fx.Node, m: nn.Module) -> float:
    """L(node) for a call of the leaf module ``m``: its declared or table constant × L(input)."""
    x = node.args[0]
    shape = w.shape_of(x)
    if hasattr(m, "lipschitz_constant"):
        c = float(m.lipschitz_constant)
    elif unbounded_reason(m) is not None:
        c = math.inf
    elif isinstance(m, _SELECTION_MODULES):
        c = math.sqrt(max(multiplicity(_replay(w, node, x), w.values[x.name]), 1))
    elif isinstance(m, nn.Upsample):
        replay = _replay(w, node, x)
        c = interpolation_constant(m.mode, replay, shape, lambda: multiplicity(replay, w.values[x.name]))
    elif isinstance(m, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
        adj = conv_transpose_adjoint(m.weight, m.stride, m.padding, m.dilation, m.groups, len(m.kernel_size))
        c = float(w.leaf(node.target, adj, tuple(w.values[node.name].shape[1:])))
    else:
        try:
            c = float(w.leaf(node.target, m, shape))
        except ValueError as e:
            if "is not supported" not in str(e):
                raise
            raise Unknown(f"module '{node.target}' of type {type(m).__name__}") from None
    w.note(node.target, type(m).__name__, c)
    return c * w.lip(x)


def declared_constant(constants: dict, *keys) -> float | None:
    """The constant declared under the first of ``keys`` found (node name, module path, module
    type or its name, function name), else None."""
    for key in keys:
        if key is not None and key in constants:
            return float(constants[key])
    return None


def autolip(model: nn.Module, input_shape: tuple[int, ...], leaf: Callable[[str, nn.Module, tuple[int, ...]], float],
            *, constants: dict | None = None):
    """(bound, layers) of ``model`` by AutoLip over its fx graph; see the module docstring.

    Args:
        leaf: ``leaf(path, module, input shape) -> constant`` for leaf modules (and the module
            forms built for functional layers).
        constants: user-declared constants by node name, module path, module type (the class or
            its name, e.g. ``"Hardswish"``) or function name (e.g. ``"hardswish"``).

    Returns:
        ``(value, [(path or node name, op name, constant)])``, the entries for every operation
        with a constant other than a plain rearrangement, in forward order.

    Raises:
        ValueError naming every operation without a known constant and how to declare each.
    """
    constants = dict(constants or {})
    gm, rec = traced_values(model, input_shape)
    w = _Walk(gm, rec.values, leaf, constants)
    modules = dict(gm.named_modules())
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if not placeholders:
        raise ValueError("lipschitz_upper: the model takes no input")
    unknown: list[tuple[fx.Node, str, str]] = []  # (node, what, the key to declare it by)

    for node in gm.graph.nodes:
        if node.op == "placeholder":
            if node is placeholders[0]:
                w.L[node.name] = 1.0
            continue
        if node.op == "output":
            out = node.args[0]
            if not isinstance(out, fx.Node):
                raise ValueError("lipschitz_upper: the model returns several outputs; bound one tensor output")
            if unknown:
                raise _refusal(unknown)
            return (w.L.get(out.name, 0.0), w.layers)
        d: list[fx.Node] = []
        fx.node.map_arg((node.args, node.kwargs), lambda a: d.append(a) if a.name in w.L else None)
        name = _name(node)
        if name in _SHAPE_ONLY_SECOND and d:  # x.expand_as(y): y gives only a shape
            d = [a for a in d if a is node.args[0]]
        if not d or node.op == "get_attr":
            continue  # a constant
        if name in _SHAPE or (name == "getattr" and len(node.args) > 1 and node.args[1] in _SHAPE):
            continue  # x.shape, x.size(0): integers, not a function of x's values
        if name == "getattr" and len(node.args) > 1 and node.args[1] in ("T", "mT", "data"):
            name = "transpose"
        m = modules[node.target] if node.op == "call_module" else None
        c = declared_constant(constants, node.name, node.target if m is not None else None,
                              type(m) if m is not None else None, type(m).__name__ if m is not None else None, name)
        try:
            if c is not None:
                w.note(node.target if m is not None else node.name, name, c)
                w.L[node.name] = c * max(w.lip(a) for a in d)
            elif m is not None:
                w.L[node.name] = _module_rule(w, node, m)
            elif name in RULES:
                w.L[node.name] = RULES[name](w, node, name, d)
            else:
                raise Unknown(f"the operation '{name}'")
        except Unknown as e:
            key = (node.target if m is not None else name)
            unknown.append((node, e.what, key if isinstance(key, str) else node.name))
            w.L[node.name] = math.inf
    raise ValueError("lipschitz_upper: the traced graph has no output")


def _refusal(unknown: list[tuple[fx.Node, str, str]]) -> ValueError:
    """One line naming every operation without a constant and the declaration that covers it."""
    whats = "; ".join(f"{what} at graph node '{node.name}'" for node, what, _ in unknown)
    keys = list(dict.fromkeys(k for _, _, k in unknown))
    decl = ", ".join(f"'{k}': L" for k in keys)
    return ValueError(
        f"lipschitz_upper: no Lipschitz constant for {len(unknown)} operation(s): {whats}; declare them with "
        f"lipschitz_upper(model, input_shape, constants={{{decl}}}) (keys may be node names, module paths, "
        "module types or function names; [metrics] lip_constants in a config), or a `lipschitz_constant = L` "
        "attribute on a module")


def first_linear_map(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[str, Tensor | Callable[[Tensor], Tensor], tuple[int, ...]]:
    """θ¹ of Theorem 2: the first parametrised operation the input flows into, as a linear map.

    Returns ``(where, op, in_shape)``: a description (node and type), ``op`` = the weight matrix
    W of a linear layer or ``fn(X (m, *in_shape))`` applying a convolution's weight without
    bias, and the shape it sees. Translations by a parameter (a
    position embedding added to the input) are skipped: they do not change ∇ₓ. Raises
    ValueError when fx cannot trace the model or the first parametrised operation is not a
    Linear / Conv1d / Conv2d layer (module or functional form).
    """
    gm, rec = traced_values(model, input_shape)
    modules = dict(gm.named_modules())
    params = {n for n, _ in gm.named_parameters()}
    dep: set[str] = set()
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            dep.add(node.name) if not dep else None
            continue
        args: list[fx.Node] = []
        fx.node.map_arg((node.args, node.kwargs), args.append)
        if not any(a.name in dep for a in args):
            continue
        dep.add(node.name)
        x = next(a for a in args if a.name in dep)
        shape = tuple(rec.values[x.name].shape[1:])
        name = _name(node)
        if node.op == "call_module":
            m = modules[node.target]
            if next(m.parameters(), None) is None:
                continue
            # the stock forward only (a parametrised layer keeps it and reads its weight through it)
            if isinstance(m, nn.Linear) and type(m).forward is nn.Linear.forward:
                W = m.weight.detach()
                return f"'{node.target}' (Linear)", W, shape
            if any(isinstance(m, c) and type(m).forward is c.forward for c in (nn.Conv1d, nn.Conv2d)):
                W = m.weight.detach()
                return f"'{node.target}' ({type(m).__name__})", lambda X: m._conv_forward(X, W, None), shape
            raise ValueError(f"Theorem 2 needs θ¹ to be a Linear or Conv layer; the input flows first into "
                             f"'{node.target}' ({type(m).__name__})")
        uses_param = [a for a in args if a.op == "get_attr" and a.target in params]
        if not uses_param:
            continue
        if name in _ADD:
            continue  # x + parameter: a translation
        if name in ("linear", "conv1d", "conv2d") and node.args[0] is x:
            W = rec.values[node.args[1].name].detach()
            if name == "linear":
                return f"node '{node.name}' (F.linear)", W, shape
            kw = dict(stride=_arg(node, 3, "stride", 1), padding=_arg(node, 4, "padding", 0),
                      dilation=_arg(node, 5, "dilation", 1), groups=_arg(node, 6, "groups", 1))
            conv = F.conv1d if name == "conv1d" else F.conv2d
            return f"node '{node.name}' (F.{name})", lambda X: conv(X, W, None, **kw), shape
        raise ValueError(f"Theorem 2 needs θ¹ to be a Linear or Conv layer; the input flows first into "
                         f"'{name}' with a parameter at graph node '{node.name}'")
    raise ValueError("Theorem 2 needs a parametrised first layer; the input reaches no parameter")


__all__ = ["RULES", "autolip", "conv_transpose_adjoint", "declared_constant", "first_linear_map", "interpolation_constant",
           "linear_map_bound", "multiplicity", "trace", "unbounded_reason"]
