"""The exact trace of the loss Hessian for networks that are piecewise linear in each parameter.

For L(θ) = (1/N) Σ_n ℓ(f_θ(x_n), y_n) the Hessian splits as (Schraudolph 2002; Martens 2020)

    H = (1/N) Σ_n J_nᵀ A_n J_n  +  (1/N) Σ_n Σ_c (∂ℓ/∂f_c) ∇²_θ f_c(x_n),

with J_n = ∂f_θ(x_n)/∂θ (C × P) and A_n = ∇²_f ℓ (C × C). When every parameter enters the
network affinely and everything downstream of it is piecewise linear (Linear / Conv layers each
called once, ReLU / LeakyReLU / Hardtanh, max and average pooling, eval-mode BatchNorm, sums,
concatenations, reshapes), ∂²f_c/∂θ_i² = 0 for every single parameter θ_i (almost everywhere),
so the second term has a zero diagonal and

    tr(H) = tr(GGN) = (1/N) Σ_n Σ_k s_nk ‖J_nᵀ v_nk‖² = (1/N) Σ_n Σ_k s_nk ‖∇_θ (v_nkᵀ f_θ(x_n))‖²

for any factorisation A_n = Σ_k s_nk v_nk v_nkᵀ: C per-sample squared-gradient passes
(:mod:`ddscope.metrics.persample`; ‖δ‖²‖a‖² per Linear layer). Cross-entropy's
A_n = diag(p_n) − p_n p_nᵀ = Σ_c p_nc (e_c − p_n)(e_c − p_n)ᵀ, a sum of C positive terms (no
eigendecomposition and no cancellation: the c-th entry 1 − p_c is computed as Σ_{c'≠c} p_c');
MSE's A = (2/C)·I; any other loss's A_n from ``torch.func.hessian`` and ``eigh``. The sum per
parameter tensor gives per-layer traces for free.

GELU, tanh, LayerNorm, attention, or a layer called twice (weight sharing) break the identity:
:func:`exact_trace_refusal` says why, and :func:`ddscope.metrics.hessian.hess_trace` then uses
Hutch++.
"""

from __future__ import annotations

import torch
from torch import Tensor, fx, nn
from torch.func import hessian, vmap
from torch.nn.utils import parametrize

from ddscope.metrics.fxgraph import node_name as _name, trace
from ddscope.metrics.jacobian import eval_mode
from ddscope.metrics.losses import Loss, loss_fn
from ddscope.metrics.persample import per_sample_grad_sq_by_param

# Leaf modules that are affine in their own parameters and piecewise linear in their input (in
# eval mode: BatchNorm on its running statistics, dropout off).
PIECEWISE_LINEAR = (
    nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Hardtanh, nn.Identity,
    nn.Flatten, nn.Unflatten, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.BatchNorm1d,
    nn.BatchNorm2d, nn.BatchNorm3d, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d,
    nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Upsample, nn.ZeroPad1d, nn.ZeroPad2d, nn.ZeroPad3d,
    nn.ConstantPad1d, nn.ConstantPad2d, nn.ConstantPad3d, nn.ReflectionPad1d, nn.ReflectionPad2d, nn.ReflectionPad3d,
    nn.ReplicationPad1d, nn.ReplicationPad2d, nn.ReplicationPad3d, nn.PixelShuffle, nn.PixelUnshuffle,
    nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool3d,
)  # (Upsample and interpolation are linear in their input whatever the mode)
# Functions and methods linear or piecewise linear in all their tensor arguments together.
_PL_FUNCTIONS = {
    "add", "add_", "iadd", "radd", "sub", "sub_", "isub", "rsub", "neg", "cat", "concat", "stack", "flatten",
    "reshape", "view", "permute", "transpose", "t", "contiguous", "squeeze", "unsqueeze", "getitem", "relu",
    "relu_", "relu6", "leaky_relu", "leaky_relu_", "hardtanh", "max_pool1d", "max_pool2d", "max_pool3d",
    "max_pool1d_with_indices", "max_pool2d_with_indices", "avg_pool1d", "avg_pool2d", "avg_pool3d",
    "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_max_pool1d", "adaptive_max_pool2d", "mean", "sum",
    "dropout", "chunk", "split", "narrow", "select", "movedim", "swapaxes", "size", "dim", "numel", "shape",
    "float", "double", "to", "linear", "conv1d", "conv2d", "conv3d", "max", "amax", "clone", "detach",
    "conv_transpose1d", "conv_transpose2d", "conv_transpose3d", "pad", "interpolate", "upsample", "expand",
    "expand_as", "repeat", "repeat_interleave", "tile", "broadcast_to", "flip", "roll", "index_select", "unbind",
    "pixel_shuffle", "pixel_unshuffle", "view_as", "reshape_as", "ravel", "unflatten", "min", "amin",
    "max_pool3d_with_indices", "adaptive_avg_pool3d", "adaptive_max_pool3d", "tensor_split",
}
_PRODUCTS = {"mul", "mul_", "imul", "truediv", "div", "div_", "itruediv", "matmul", "mm", "bmm"}
_DIVISIONS = {"truediv", "div", "div_", "itruediv"}
_SHAPE_ATTRS = {"shape", "ndim", "dtype", "device", "is_cuda", "requires_grad"}


def exact_trace_refusal(model: nn.Module, input_shape: tuple[int, ...]) -> str | None:
    """``None`` when tr(H) = tr(GGN) holds exactly for ``model`` (see the module docstring),
    otherwise the reason it does not (or cannot be shown), naming the operation.

    Read from the ``torch.fx`` graph: every module node is a :data:`PIECEWISE_LINEAR` leaf, every
    module with parameters is called once and every parameter read once, every function is in
    the piecewise-linear list, a product's factors depend on disjoint parameters, no quotient
    has a parameter-dependent denominator, and a parameter-derived value (a weight, its view) is
    used once. Never the last word: :func:`ddscope.metrics.hessian.ggn_mismatch` checks the
    result at run time (a product of two tensors that share a parameter may be quadratic in it).
    """
    for path, m in model.named_modules():
        if parametrize.is_parametrized(m):
            return f"module '{path}' ({type(m).__name__}) has a parametrisation (its weight is a nonlinear function of its parameters)"
        if m._forward_pre_hooks and next(m.parameters(recurse=False), None) is not None:
            return (f"module '{path}' ({type(m).__name__}) has a forward pre-hook that may recompute its weight "
                    "(weight_norm / spectral_norm)")
    try:
        gm = trace(model, tuple(input_shape))
    except Exception as e:  # noqa: BLE001 — control flow on the input: the graph cannot be read
        return f"torch.fx cannot trace the model ({type(e).__name__}), so its operations cannot be checked"
    modules = dict(gm.named_modules())
    param_names = {id(p): n for n, p in model.named_parameters(remove_duplicate=False)}
    uses: dict[int, str] = {}  # id(parameter) -> the call that used it (each parameter used once)
    param_dep: dict[str, frozenset[int]] = {}  # node -> ids of the parameters its value depends on
    input_dep: set[str] = set()  # nodes whose value depends on the input

    def use(p: nn.Parameter, where: str) -> str | None:
        if id(p) in uses:
            return (f"parameter '{param_names.get(id(p), '?')}' is used by {uses[id(p)]} and by {where} "
                    "(tied or shared weights)")
        uses[id(p)] = where
        return None

    for node in gm.graph.nodes:
        args: list[fx.Node] = []
        fx.node.map_arg((node.args, node.kwargs), args.append)
        dep = list(dict.fromkeys(a for a in args if a.name in param_dep))
        if node.op == "output":
            continue
        if node.op == "placeholder":
            input_dep.add(node.name)
            continue
        if any(a.name in input_dep for a in args):
            input_dep.add(node.name)
        if node.op == "get_attr":
            obj = getattr_path(gm, node.target)
            if isinstance(obj, nn.Parameter):
                if (why := use(obj, f"graph node '{node.name}'")) is not None:
                    return why
                param_dep[node.name] = frozenset({id(obj)})
            continue
        inherited = frozenset().union(*(param_dep[a.name] for a in dep))
        # A value that depends on parameters only (a weight, a view of it) may enter the network
        # once: read twice, θ_i would appear in two places and f could be quadratic in it.
        for a in dep:
            if a.name not in input_dep and len(a.users) > 1:
                return f"parameter-derived value '{a.name}' is used {len(a.users)} times (shared weights)"
        if node.op == "call_module":
            m = modules[node.target]
            if not isinstance(m, PIECEWISE_LINEAR):
                return f"module '{node.target}' ({type(m).__name__}) is not piecewise linear"
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)) and m.running_var is None:
                return f"BatchNorm '{node.target}' has no running statistics (batch statistics are not affine)"
            own = list(m.parameters())
            for p in own:
                if (why := use(p, f"module '{node.target}'")) is not None:
                    return why
            if own or dep:
                param_dep[node.name] = inherited | {id(p) for p in own}
            continue
        name = _name(node)
        if name == "getattr" and len(node.args) > 1 and node.args[1] in _SHAPE_ATTRS:
            continue  # x.shape, x.ndim: integers, not a function of θ
        if name in _PRODUCTS:
            if dep and name in _DIVISIONS and (len(node.args) < 2 or node.args[1] in dep):
                return f"'{name}' at graph node '{node.name}' divides by a parameter-dependent tensor"
            # A product of two factors that depend on disjoint parameters is linear in each
            # parameter (α ⊙ h, s · logits); a parameter in both factors makes it quadratic in it.
            factors = [a for a in node.args[:2] if isinstance(a, fx.Node) and a.name in param_dep]  # h * h: twice
            if len(factors) > 1 and frozenset.intersection(*(param_dep[a.name] for a in factors)):
                return (f"'{name}' at graph node '{node.name}' multiplies two tensors that depend on the same "
                        "parameter")
        elif name not in _PL_FUNCTIONS:
            return f"operation '{name}' at graph node '{node.name}' is not piecewise linear"
        if dep:
            param_dep[node.name] = inherited
    return None


def getattr_path(root: nn.Module, target: str):
    obj = root
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def output_hessian_factors(out: Tensor, y: Tensor, loss: Loss = "cross_entropy") -> tuple[Tensor, Tensor]:
    """(V (N, K, C), s (N, K)) with ∇²_f ℓ(f_n, y_n) = Σ_k s_nk v_nk v_nkᵀ, f_n = ``out[n]``
    flattened to C entries (see the module docstring for each loss)."""
    n = len(out)
    flat = out.detach().reshape(n, -1)
    C = flat.shape[1]
    if loss == "cross_entropy":
        p = flat.softmax(1)  # (N, C)
        V = -p[:, None, :].expand(n, C, C).clone()  # V[n, c] = e_c − p_n
        rest = p.sum(1, keepdim=True) - p  # 1 − p_c without cancellation when p_c ≈ 1
        idx = torch.arange(C, device=out.device)
        V[:, idx, idx] = rest
        return V, p
    if loss == "mse":
        eye = torch.eye(C, dtype=flat.dtype, device=flat.device).expand(n, C, C)
        return eye, torch.full((n, C), 2.0 / C, dtype=flat.dtype, device=flat.device)
    ell = loss_fn(loss)
    shape = out.shape[1:]

    def one(o: Tensor, t: Tensor) -> Tensor:
        return ell(o.reshape(1, *shape), t.unsqueeze(0), "sum")

    try:
        A = vmap(hessian(one))(flat, y)  # (N, C, C)
    except RuntimeError:  # a loss vmap cannot batch (one_hot, .item()): one sample at a time
        A = torch.stack([hessian(one)(flat[i], y[i]) for i in range(n)])
    lam, U = torch.linalg.eigh((A + A.transpose(1, 2)) / 2)
    return U.transpose(1, 2), lam


def _dot(out: Tensor, v: Tensor) -> Tensor:
    return (out.reshape(len(out), -1) * v).sum(1)


def ggn_trace(model: nn.Module, x: Tensor, y: Tensor, *, loss: Loss = "cross_entropy",
              chunk_size: int = 64) -> tuple[float, dict[str, float]]:
    """tr(GGN) = (1/N) Σ_n Σ_k s_nk ‖∇_θ(v_nkᵀ f_θ(x_n))‖² over the parameters with
    requires_grad, and its part per module (``{module path: trace}``, in parameter order).

    Equal to tr(H) when :func:`exact_trace_refusal` is ``None``; otherwise tr of the Gauss–Newton
    part only. Eval mode; ``chunk_size`` samples per per-sample-gradient pass.
    """
    if len(x) == 0:
        raise ValueError("ggn_trace needs at least one sample")
    with eval_mode(model), torch.no_grad():
        out = torch.cat([model(x[s : s + chunk_size]) for s in range(0, len(x), chunk_size)])
    V, s = output_hessian_factors(out, y, loss)
    per_param: dict[str, Tensor] = {}
    for k in range(V.shape[1]):
        if not bool((s[:, k] != 0).any()):
            continue
        parts = per_sample_grad_sq_by_param(model, x, V[:, k, :].contiguous(), chunk_size=chunk_size, loss=_dot)
        for name, g2 in parts.items():
            term = (s[:, k] * g2).sum()
            per_param[name] = per_param[name] + term if name in per_param else term
    order = [n for n, p in model.named_parameters() if p.requires_grad]
    layers: dict[str, float] = {}
    for name in order:
        if name in per_param:
            layer = name.rsplit(".", 1)[0] if "." in name else name
            layers[layer] = layers.get(layer, 0.0) + float(per_param[name]) / len(x)
    return sum(layers.values()), layers


__all__ = ["PIECEWISE_LINEAR", "exact_trace_refusal", "ggn_trace", "output_hessian_factors"]
