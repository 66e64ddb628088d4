"""AutoLip: an upper bound on the ℓ2 Lipschitz constant of any model ``torch.fx`` can trace.

Virmaux & Scaman, "Lipschitz regularity of deep neural networks: analysis and efficient
estimation", NeurIPS 2018. The traced graph is walked in topological order, keeping for every
intermediate tensor z = g(x) an upper bound L(z) on the Lipschitz constant of g as a function of
the network input x (L(x) = 1):

    composition z = h(u)            L(z) = Lip(h) · L(u)
    z = u ± v (both depend on x)    L(z) = L(u) + L(v);  u ± c, c constant: L(z) = L(u)
    z = c · u,  u / c               L(z) = max|c| · L(u),  L(u) / min|c|
    z = cat / stack(u₁, …, u_n)     L(z) = √(Σ L(uᵢ)²)
    reshape, view, flatten, permute, transpose, slicing, indexing, dropout (eval)   L(z) ≤ L(u)
    sum over n entries √n · L(u); mean 1/√n · L(u)
    anything that does not depend on x   a constant: L = 0

Leaf layers and their functional forms (``F.relu``, ``F.linear`` and ``F.conv2d`` with parameter
weights, ``F.max_pool2d``, ``F.adaptive_avg_pool2d``, ``F.batch_norm``, …) get the constants of
:func:`ddscope.metrics.lipschitz.leaf_lipschitz`, measured on the input shape each one actually
sees (shapes recorded by running the graph once on zeros). Products of two input-dependent
tensors (attention) and LayerNorm are not globally Lipschitz: +inf. An operation without a known
constant raises ValueError naming the operation and the node, and how to declare one: the
``constants`` argument (``{node name, module path or function name: L}``) or a
``lipschitz_constant`` attribute on the module.
"""

from __future__ import annotations

import copy
import inspect
import math
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn
from torch.fx.experimental.meta_tracer import MetaProxy, MetaTracer

from ddscope.metrics.jacobian import eval_mode

# Elementwise with slope in [-1, 1], or a rearrangement / selection of the entries.
_ONE = {
    "relu", "relu_", "relu6", "hardtanh", "tanh", "abs", "dropout", "dropout1d", "dropout2d", "dropout3d",
    "alpha_dropout", "feature_alpha_dropout", "flatten", "reshape", "view", "permute", "transpose", "t",
    "contiguous", "squeeze", "unsqueeze", "clone", "detach", "getitem", "chunk", "split", "unbind", "narrow",
    "select", "float", "double", "to", "type_as", "softplus", "identity", "movedim", "swapaxes",
}
_ADD = {"add", "add_", "iadd", "sub", "sub_", "isub", "radd", "rsub"}
_SCALE = {"mul", "mul_", "imul", "neg", "neg_", "truediv", "div", "div_", "itruediv"}
_CAT = {"cat", "concat", "concatenate", "stack", "hstack", "vstack"}
_SHAPE = {"size", "dim", "numel", "shape", "ndim", "device", "dtype"}  # return no tensor of x
_UNBOUNDED = {
    "layer_norm": "LayerNorm is not globally Lipschitz",
    "group_norm": "GroupNorm is not globally Lipschitz",
    "scaled_dot_product_attention": "dot-product attention is not globally Lipschitz",
}


def _name(node: fx.Node) -> str:
    t = node.target
    return t if isinstance(t, str) else getattr(t, "__name__", str(t)).lstrip("_")


def _declares(m: nn.Module) -> bool:
    """A module that declares its constant or declares itself unbounded: a leaf, not traced into."""
    return hasattr(m, "lipschitz_constant") or bool(getattr(m, "lipschitz_unbounded", None))


class _Tracer(fx.Tracer):
    """torch.nn layers are leaves (the default), and so are modules that :func:`_declares`."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return _declares(m) or super().is_leaf_module(m, qualname)


class _Record(fx.Interpreter):
    """Runs the graph once, keeping every node's value (shapes, and the values of constants)."""

    def __init__(self, gm: fx.GraphModule):
        super().__init__(gm)
        self.values: dict[str, object] = {}

    def run_node(self, n: fx.Node):
        out = super().run_node(n)
        self.values[n.name] = out
        return out


class _ShapeProxy(MetaProxy):
    """A proxy that knows its value's shape: ``len(x)``, ``b, n, k = x.shape`` and ``x.size(0)``
    give integers, as user code expects (fixed by the traced example, batch 2)."""

    def __len__(self):
        meta = getattr(self, "_tensor_meta", None)
        return len(meta) if meta is not None else super().__len__()

    def __iter__(self):
        meta = getattr(self, "_tensor_meta", None)
        return iter(meta) if isinstance(meta, (torch.Size, tuple)) else super().__iter__()


class _ShapeTracer(MetaTracer):
    """fx tracing on meta tensors (shapes known at every node), with the leaves of :class:`_Tracer`."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return _declares(m) or super().is_leaf_module(m, qualname)

    def proxy(self, node):
        return _ShapeProxy(node, self)


def trace(model: nn.Module, input_shape: tuple[int, ...] | None = None) -> fx.GraphModule:
    """The model's graph with torch.nn layers as leaves. Plain symbolic tracing first; when that
    fails (``len(x)``, ``x.shape`` unpacking) and ``input_shape`` is given, tracing a copy of the
    model on meta tensors of that shape, so shapes are integers. Raises when neither works
    (control flow on the input's values)."""
    try:
        return fx.GraphModule(model, _Tracer().trace(model))
    except Exception:  # noqa: BLE001 — try again with shapes known
        if input_shape is None:
            raise
    ghost = copy.deepcopy(model).to("meta")
    arg = next(iter(inspect.signature(ghost.forward).parameters))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = _ShapeTracer().trace(ghost, meta_args={arg: torch.zeros(2, *input_shape, device="meta")})
    return fx.GraphModule(model, graph)


def traced_values(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[fx.GraphModule, _Record]:
    """The model's graph and every node's value on zeros (2, *input_shape), eval mode."""
    gm = trace(model, input_shape)
    ref = next(iter(model.parameters()), None)
    x0 = torch.zeros(2, *input_shape, dtype=ref.dtype if ref is not None else None,
                     device=ref.device if ref is not None else None)
    rec = _Record(gm)
    with eval_mode(model), torch.no_grad():
        rec.run(x0)
    return gm, rec


def _abs_max(c) -> float:
    return float(c.detach().abs().max()) if isinstance(c, Tensor) else abs(float(c))


def _abs_min(c) -> float:
    return float(c.detach().abs().min()) if isinstance(c, Tensor) else abs(float(c))


def _arg(node: fx.Node, i: int, key: str, default=None):
    return node.args[i] if len(node.args) > i else node.kwargs.get(key, default)


def autolip(model: nn.Module, input_shape: tuple[int, ...], leaf: Callable[[str, nn.Module, tuple[int, ...]], float],
            *, constants: dict[str, float] | None = None):
    """(bound, layers) of ``model`` by AutoLip over its fx graph; see the module docstring.

    Args:
        leaf: ``leaf(path, module, input shape) -> constant`` for leaf modules (and the module
            forms built for functional pools).
        constants: user-declared constants by node name, module path or function name.

    Returns:
        ``(value, [(path or node name, op name, constant)])``, the entries for every operation
        with a constant other than a plain rearrangement, in forward order.
    """
    constants = dict(constants or {})
    gm, rec = traced_values(model, input_shape)
    values = rec.values
    modules = dict(gm.named_modules())
    L: dict[str, float] = {}  # input-dependent nodes only
    layers: list[tuple[str, str, float]] = []
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if not placeholders:
        raise ValueError("lipschitz_upper: the model takes no input")

    def lip(a) -> float | None:
        return L.get(a.name) if isinstance(a, fx.Node) else None

    def deps(node: fx.Node) -> list[fx.Node]:
        out: list[fx.Node] = []
        fx.node.map_arg((node.args, node.kwargs), lambda a: out.append(a) if a.name in L else None)
        return out

    def shape_of(a: fx.Node) -> tuple[int, ...]:
        return tuple(values[a.name].shape[1:])

    def const(a):
        return values[a.name] if isinstance(a, fx.Node) else a

    def declared(node: fx.Node, path: str | None) -> float | None:
        for key in (node.name, path, _name(node)):
            if key is not None and key in constants:
                return float(constants[key])
        return None

    def unknown(node: fx.Node, what: str) -> ValueError:
        return ValueError(
            f"lipschitz_upper: no Lipschitz constant for {what} at graph node '{node.name}'; declare one with "
            f"lipschitz_upper(model, input_shape, constants={{'{node.name}': L}})"
            + (" or a `lipschitz_constant = L` attribute on the module" if node.op == "call_module" else ""))

    def op_constant(node: fx.Node, name: str, d: list[fx.Node]) -> float:
        """Lip of the operation in the argument that depends on x (a single one)."""
        x = d[0]
        if name in _ONE:
            return 1.0
        # Elementwise functions: the constants of their module forms (one table, in leaf_lipschitz).
        if name in ("sigmoid", "sigmoid_"):
            return leaf(node.name, nn.Sigmoid(), shape_of(x))
        if name == "gelu":
            return leaf(node.name, nn.GELU(approximate=_arg(node, 1, "approximate", "none")), shape_of(x))
        if name in ("leaky_relu", "leaky_relu_"):
            return leaf(node.name, nn.LeakyReLU(float(_arg(node, 1, "negative_slope", 0.01))), shape_of(x))
        if name in ("elu", "elu_"):
            return leaf(node.name, nn.ELU(float(_arg(node, 1, "alpha", 1.0))), shape_of(x))
        if name == "silu":
            return leaf(node.name, nn.SiLU(), shape_of(x))
        if name in ("linear", "matmul", "mm", "bmm"):
            others = [a for a in (node.args[:2]) if a is not x]
            W = const(others[0]) if others else None
            if not isinstance(W, Tensor):
                raise unknown(node, f"'{name}' without a constant weight")
            W = W.detach()
            return float(torch.linalg.matrix_norm(W if W.dim() >= 2 else W[None], 2).max())
        if name in ("conv1d", "conv2d"):
            W = const(_arg(node, 1, "weight"))
            if node.args[0] is not x or not isinstance(W, Tensor):
                raise unknown(node, f"'{name}' with an input-dependent weight")
            kw = dict(stride=_arg(node, 3, "stride", 1), padding=_arg(node, 4, "padding", 0),
                      dilation=_arg(node, 5, "dilation", 1), groups=_arg(node, 6, "groups", 1))
            # the module form of the call, so it gets the same (certified) constant as a layer
            cls = nn.Conv1d if name == "conv1d" else nn.Conv2d
            W = W.detach()
            conv = cls(W.shape[1] * kw["groups"], W.shape[0], tuple(W.shape[2:]), bias=False, device="meta", **kw)
            conv.weight = nn.Parameter(W, requires_grad=False)
            return leaf(node.name, conv, shape_of(x))
        if name == "batch_norm":
            var, w = const(_arg(node, 2, "running_var")), const(_arg(node, 3, "weight"))
            if not isinstance(var, Tensor) or bool(_arg(node, 5, "training", False)):
                raise unknown(node, "'batch_norm' without running statistics (training mode)")
            scale = (var + float(_arg(node, 7, "eps", 1e-5))).rsqrt()
            if isinstance(w, Tensor):
                scale = scale * w.detach().abs()
            return float(scale.max())
        pools = {"max_pool1d": nn.MaxPool1d, "max_pool2d": nn.MaxPool2d, "avg_pool1d": nn.AvgPool1d,
                 "avg_pool2d": nn.AvgPool2d, "adaptive_avg_pool1d": nn.AdaptiveAvgPool1d,
                 "adaptive_avg_pool2d": nn.AdaptiveAvgPool2d, "adaptive_max_pool1d": nn.AdaptiveMaxPool1d,
                 "adaptive_max_pool2d": nn.AdaptiveMaxPool2d, "max_pool1d_with_indices": nn.MaxPool1d,
                 "max_pool2d_with_indices": nn.MaxPool2d}
        if name in pools:
            args = [const(a) for a in node.args[1:]]
            kwargs = {k: const(v) for k, v in node.kwargs.items() if k != "return_indices"}
            if name.startswith("max_pool") and len(args) >= 5:
                args = args[:4] + args[5:]  # (kernel, stride, padding, dilation, ceil_mode)
            return leaf(node.name, pools[name](*args, **kwargs), shape_of(x))
        if name in ("sum", "mean"):
            ratio = values[x.name].numel() / max(values[node.name].numel(), 1)
            return math.sqrt(ratio) if name == "sum" else 1.0 / math.sqrt(ratio)
        if name in _UNBOUNDED:
            return math.inf
        raise unknown(node, f"the operation '{name}'")

    for node in gm.graph.nodes:
        if node.op == "placeholder":
            if node is placeholders[0]:
                L[node.name] = 1.0
            continue
        if node.op == "output":
            out = node.args[0]
            if not isinstance(out, fx.Node):
                raise ValueError("lipschitz_upper: the model returns several outputs; bound one tensor output")
            return (L.get(out.name, 0.0), layers)
        d = deps(node)
        if not d or node.op == "get_attr":
            continue  # a constant
        name = _name(node)
        if name in _SHAPE or (name == "getattr" and len(node.args) > 1 and node.args[1] in _SHAPE):
            continue  # x.shape, x.size(0): integers, not a function of x's values
        if name == "getattr" and len(node.args) > 1 and node.args[1] in ("T", "mT", "data"):
            name = "transpose"
        path = node.target if node.op == "call_module" else None
        if (c := declared(node, path)) is not None:
            value = c * max(lip(a) for a in d)
            layers.append((path or node.name, name, c))
        elif node.op == "call_module":
            m = modules[node.target]
            if hasattr(m, "lipschitz_constant"):
                c = float(m.lipschitz_constant)
            elif getattr(m, "lipschitz_unbounded", None):
                c = math.inf
            else:
                try:
                    c = float(leaf(node.target, m, shape_of(node.args[0])))
                except ValueError as e:
                    if "is not supported" not in str(e):
                        raise
                    raise unknown(node, f"module '{node.target}' of type {type(m).__name__}") from None
            value = c * lip(node.args[0])
            layers.append((node.target, type(m).__name__, c))
        elif name in _ADD:
            alpha = _abs_max(node.kwargs.get("alpha", 1.0))
            parts = [lip(a) for a in node.args[:2] if isinstance(a, fx.Node) and a.name in L]
            if len(parts) == 2:
                parts[1] *= alpha
            elif node.args[0] is not d[0]:  # c ± alpha·x
                parts[0] *= alpha
            value = sum(parts)
        elif name in _SCALE:
            if name.startswith("neg"):
                value = lip(d[0])
            elif len([a for a in node.args[:2] if isinstance(a, fx.Node) and a.name in L]) == 2:
                value = math.inf  # a product or quotient of two functions of x
                layers.append((node.name, name, math.inf))
            elif "div" in name:
                if node.args[0] is not d[0]:
                    value = math.inf  # c / g(x)
                else:
                    den = _abs_min(const(node.args[1]))
                    value = lip(d[0]) / den if den > 0 else math.inf
                    layers.append((node.name, name, 1.0 / den if den > 0 else math.inf))
            else:
                other = node.args[1] if node.args[0] is d[0] else node.args[0]
                c = _abs_max(const(other))
                value = c * lip(d[0])
                layers.append((node.name, name, c))
        elif name in _CAT:
            seq = node.args[0] if node.args else node.kwargs.get("tensors")
            value = math.sqrt(sum(lip(a) ** 2 for a in seq if isinstance(a, fx.Node) and a.name in L))
        elif (name in ("matmul", "mm", "bmm") and len(d) == 2) or name in _UNBOUNDED:
            value = math.inf  # attention scores (x on both sides), LayerNorm, fused attention
            layers.append((node.name, name, math.inf))
        else:
            if len(d) != 1 and name not in ("linear", "conv1d", "conv2d", "batch_norm"):
                raise unknown(node, f"the operation '{name}' on several input-dependent tensors")
            c = op_constant(node, name, d)
            value = c * lip(d[0])
            if name not in _ONE:
                layers.append((node.name, name, c))
        L[node.name] = value
    raise ValueError("lipschitz_upper: the traced graph has no output")


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
            if isinstance(m, nn.Linear):
                W = m.weight.detach()
                return f"'{node.target}' (Linear)", W, shape
            if isinstance(m, (nn.Conv1d, nn.Conv2d)):
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


__all__ = ["autolip", "first_linear_map", "trace"]
