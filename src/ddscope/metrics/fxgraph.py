"""The model as a ``torch.fx`` graph, for the analyses that read it (AutoLip, the exact-trace and
ECLipsE tests): :func:`trace` — torch.nn layers and modules that declare their Lipschitz constant
as leaves, symbolic tracing first and tracing on meta tensors of the input's shape when the model
needs integer shapes — and :func:`traced_values`, every node's value on zeros."""

from __future__ import annotations

import copy
import inspect
import warnings

import torch
from torch import fx, nn
from torch.fx.experimental.meta_tracer import MetaProxy, MetaTracer

from ddscope.metrics.jacobian import eval_mode


def node_name(node: fx.Node) -> str:
    """The name of a call's target: a method or function name without leading underscores."""
    t = node.target
    return t if isinstance(t, str) else getattr(t, "__name__", str(t)).lstrip("_")


def declares(m: nn.Module) -> bool:
    """A module that declares its constant or declares itself unbounded: a leaf, not traced into."""
    return hasattr(m, "lipschitz_constant") or bool(getattr(m, "lipschitz_unbounded", None))


class _Tracer(fx.Tracer):
    """torch.nn layers are leaves (the default), and so are modules that :func:`declares`."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return declares(m) or super().is_leaf_module(m, qualname)


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
        if isinstance(meta, torch.Size):  # b, n, k = x.shape: integers
            return iter(meta)
        if isinstance(meta, (tuple, list)):  # a, b = x.chunk(2): proxies of the parts, never their meta values
            return iter([self[i] for i in range(len(meta))])
        return super().__iter__()


class _ShapeTracer(MetaTracer):
    """fx tracing on meta tensors (shapes known at every node), with the leaves of :class:`_Tracer`."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return declares(m) or super().is_leaf_module(m, qualname)

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
    # The graph's attributes are the model's own, except the tensor constants tracing created
    # (``torch.tensor(...)`` in forward), which live on the ghost (with their real values).
    root: dict[str, object] = {}
    for node in graph.nodes:
        if node.op in ("get_attr", "call_module"):
            try:
                root[node.target] = _getattr_path(model, node.target)
            except AttributeError:
                root[node.target] = _getattr_path(ghost, node.target)
    return fx.GraphModule(root, graph)


def _getattr_path(obj, target: str):
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


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


__all__ = ["declares", "node_name", "trace", "traced_values"]
