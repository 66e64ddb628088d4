"""Curvature of the training loss in parameter space: trace and top eigenvalue of the Hessian.

H = ∇²_θ L(θ), L = (1/N) Σ_n CE(f_θ(x_n), y_n) over all samples of all batches. tr(H) is the
Laplacian Δ L in Theorem 2 of Gamba et al. (poster "On the Lipschitz Constant of Deep Networks
and Double Descent"; TMLR 2023). Neither H nor any dense matrix is formed: Hessian-vector
products Hv = ∂(∇Lᵀv)/∂θ (Pearlmutter 1994) are double backward — each batch's gradient ∇L_b
is computed once with ``create_graph=True`` and kept (while it fits in memory), and every product
is one backward pass through it, batched over probes (``is_grads_batched``) — or forward-over-
reverse, ``torch.func.jvp`` of ``torch.func.grad`` vmapped over probes; by default the first
for models without convolutions and the second for conv nets (:func:`resolve_mode`). The estimators of ``ddscope.estimators`` turn them into tr(H) (Hutchinson 1989;
Hutch++, Meyer et al. 2021) and λ_max(H) (Lanczos 1950).

Parameters are flattened in ``model.named_parameters()`` order; the model runs in eval mode
(BatchNorm on running statistics, buffers passed through ``functional_call``).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, jvp, vmap

from ..catalogue import OPTIONS
from ddscope.estimators import default_generator, hutchinson_trace, hutchpp_trace, lanczos_top_eig
from ddscope.metrics.ggn import exact_trace_refusal, ggn_trace, output_hessian_factors
from ddscope.metrics.jacobian import activations_per_sample, eval_mode, math_attention, memory_budget
from ddscope.metrics.losses import Loss, loss_fn

TRACE_METHODS = ("auto", "ggn", "hutchpp", "hutchinson", "exact")
HVP_MODES = ("auto", "double_backward", "forward_over_reverse")
# mode="auto": double backward unless the model has convolutions. Measured on the CPU
# (bench/bench_hessian.py, 1 000 MNIST-1D samples, equal HVPs): on an MLP double backward is
# 1.2x faster than forward-over-reverse, on a CNN1d 1.3x slower (the vmapped double backward of
# a convolution is the slow part there).
CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def resolve_mode(model: nn.Module, mode: str) -> str:
    """The HVP mode ``"auto"`` stands for on ``model``; other modes are checked and returned."""
    if mode not in HVP_MODES:
        raise ValueError(f"unknown HVP mode {mode!r}; allowed: {', '.join(HVP_MODES)}")
    if mode != "auto":
        return mode
    has_conv = any(isinstance(m, CONV_TYPES) for m in model.modules())
    return "forward_over_reverse" if has_conv else "double_backward"
# Memory of the double-backward products in floats per sample, in units of a = the activations
# of one sample's forward pass (activations_per_sample, input included). Measured with
# saved-tensor hooks and the CPU profiler (64 samples, each family of ddscope.models at a small
# width): the kept graph holds 0.8-2.1·a (the forward's saved activations plus what the backward
# saved for its own derivative; ViT highest), its build peaks at about as much, and the batched
# backward through it peaks at 0.2-1.1·a per probe. Rounded up for allocator slack:
GRAPH_FLOATS = 3  # one batch's kept graph (theta leaf + g), per sample
PROBE_FLOATS = 2  # the batched backward through it, per sample and probe


def flat_params(model: nn.Module, params: Sequence[str] | None = None) -> tuple[list[str], Tensor]:
    """Names of the differentiated parameters and their values as one flat vector (dim,).

    ``params=None`` takes every parameter with ``requires_grad``; otherwise the given names.
    """
    named = dict(model.named_parameters())
    names = [n for n, p in named.items() if p.requires_grad] if params is None else list(params)
    unknown = [n for n in names if n not in named]
    if unknown:
        raise ValueError(f"unknown parameter names {unknown}; the model has {list(named)}")
    return names, torch.cat([named[n].detach().reshape(-1) for n in names])


def flat_forward(model: nn.Module, names: Sequence[str]) -> Callable[[Tensor, Tensor], Tensor]:
    """``fn(flat, x)`` = f_θ(x) with θ[names] = ``flat`` (the other parameters and the buffers as
    they are): the model as a function of one flat parameter vector, for torch.func."""
    named = dict(model.named_parameters())
    shapes = [named[n].shape for n in names]
    numels = [math.prod(s) for s in shapes]
    fixed = {n: p.detach() for n, p in named.items() if n not in set(names)}
    buffers = {n: b.detach() for n, b in model.named_buffers()}

    def fn(flat: Tensor, x: Tensor) -> Tensor:
        tensors = {n: t.view(s) for n, t, s in zip(names, flat.split(numels), shapes)}
        return functional_call(model, {**fixed, **buffers, **tensors}, (x,))

    return fn


def flat_loss_fn(model: nn.Module, names: Sequence[str], reduction_n: int,
                 loss: Loss = "cross_entropy") -> Callable[[Tensor, Tensor, Tensor], Tensor]:
    """``fn(flat, x, y)`` = Σ_{n in batch} ℓ(f_θ(x_n), y_n) / reduction_n with θ[names] = flat
    (ℓ = ``loss``, :mod:`ddscope.metrics.losses`; cross-entropy by default).

    Dividing each batch's *sum* by the total sample count weights every sample 1/N, so the
    batch losses add up to the exact mean whatever the batch sizes.
    """
    forward = flat_forward(model, names)
    ell = loss_fn(loss)

    def fn(flat: Tensor, x: Tensor, y: Tensor) -> Tensor:
        return ell(forward(flat, x), y, "sum") / reduction_n

    return fn


def _activation_floats(model: nn.Module, x: Tensor) -> int:
    """a: the numbers one sample's forward pass writes, input included (the unit of the memory
    estimates), counted in eval mode so BatchNorm's running statistics are left alone."""
    with eval_mode(model):
        return activations_per_sample(model, x) + x[0].numel()


def _batch_graph(loss: Callable[[Tensor, Tensor, Tensor], Tensor], theta: Tensor, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """(leaf, g): a fresh leaf copy of θ and this batch's gradient g = ∇_θ loss(θ, x, y) with its
    graph kept (``create_graph=True``), so that each Hv = ∂(gᵀv)/∂θ is one more backward pass."""
    leaf = theta.clone().requires_grad_()
    with torch.enable_grad():
        g = torch.autograd.grad(loss(leaf, x, y), leaf, create_graph=True)[0]
    return leaf, g


def loss_hvp(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    *,
    params: Sequence[str] | None = None,
    vmap_chunk: int | None = OPTIONS["hess_vmap"],
    mode: str = "auto",
    loss: Loss = "cross_entropy",
) -> tuple[Callable[[Tensor], Tensor], int]:
    """Hessian-vector products of the mean ``loss`` (cross-entropy by default; ``"mse"`` or a
    callable, :mod:`ddscope.metrics.losses`) over all samples of ``batches``.

    Hv = Σ_b (1/N) ∇²_θ Σ_{n∈b} L_n · v, N = total sample count (an uneven last batch is
    weighted exactly).

    ``mode="double_backward"`` (Pearlmutter 1994 as PyHessian does it): per batch the
    gradient g = ∇_θ L_b is computed once with its graph kept, and HV = ∂(gᵀV)/∂θ is a backward
    pass through that graph, batched over the columns of V (``is_grads_batched``, i.e. vmap over
    the backward). The graphs of all batches are built on the first product and kept for every
    later one (Hutch++: 3 calls, Lanczos: one per iteration) while they fit the memory budget
    (:data:`HVP_CPU_BYTES` on the CPU, a quarter of the free memory on CUDA) at
    :data:`GRAPH_FLOATS` floats per sample and activation plus one batch's product (below);
    otherwise each call rebuilds each batch's graph and frees it. If the batched backward fails
    (an op without a vmap batching rule), products are taken one probe at a time from then on.

    ``mode="forward_over_reverse"``: Hv = ∂/∂ε ∇L(θ + εv) |₀, ``torch.func.jvp`` of
    ``torch.func.grad`` vmapped over probes; recomputes forward and backward for every call.

    Args:
        model: evaluated in eval mode at its current parameters (snapshotted now).
        batches: (x, y) pairs; kept in memory and reused by every product.
        params: names of the parameters to differentiate (``None``: all with requires_grad;
            the others are held fixed).
        vmap_chunk: probes per batched pass when the matvec gets several columns; memory grows
            as vmap_chunk × (one batch's backward through the gradient graph, ~2·a floats per
            sample; forward-over-reverse: ~4·a), ``None``: all at once.
        mode: ``"double_backward"``, ``"forward_over_reverse"`` (equal up to rounding) or
            ``"auto"`` (default): double backward unless the model has convolutions
            (:func:`resolve_mode`; the faster of the two on the CPU, bench/bench_hessian.py).

    Returns:
        ``(matvec, dim)``: ``matvec`` maps v (dim,) -> Hv (dim,) or V (dim, m) -> HV (dim, m).
    """
    mode = resolve_mode(model, mode)
    batches = [(x, y) for x, y in batches if len(y)]  # an empty batch adds nothing (and breaks jvp)
    names, theta = flat_params(model, params)
    total = sum(len(y) for _, y in batches)
    if total == 0:
        raise ValueError("loss_hvp needs at least one sample")
    loss = flat_loss_fn(model, names, total, loss)
    if mode == "forward_over_reverse":
        return _forward_over_reverse(model, batches, loss, theta, vmap_chunk), theta.numel()
    return _double_backward(model, batches, loss, theta, vmap_chunk), theta.numel()


def _forward_over_reverse(model, batches, loss, theta: Tensor, vmap_chunk: int | None) -> Callable[[Tensor], Tensor]:
    grad_fn = grad(loss)

    def hvp(v: Tensor) -> Tensor:  # (dim,) -> (dim,)
        out = torch.zeros_like(theta)
        for x, y in batches:
            out = out + jvp(lambda flat: grad_fn(flat, x, y), (theta,), (v,))[1]
        return out

    def matvec(V: Tensor) -> Tensor:
        V = V.to(theta)
        with eval_mode(model), math_attention(), torch.no_grad():
            if V.dim() == 1:
                return hvp(V)
            try:
                return vmap(hvp, in_dims=1, out_dims=1, chunk_size=vmap_chunk)(V)
            except RuntimeError:  # an op without a batching rule: one probe at a time
                return torch.stack([hvp(V[:, i]) for i in range(V.shape[1])], dim=1)

    return matvec


def _double_backward(model, batches, loss, theta: Tensor, vmap_chunk: int | None) -> Callable[[Tensor], Tensor]:
    nonempty = [(x, y) for x, y in batches if len(y)]
    x0 = nonempty[0][0]
    a = _activation_floats(model, x0)
    size = x0.element_size()
    total = sum(len(y) for _, y in nonempty)
    biggest = max(len(y) for _, y in nonempty)
    graphs_bytes = GRAPH_FLOATS * a * total * size + len(nonempty) * 2 * theta.numel() * size
    product_bytes = PROBE_FLOATS * a * biggest * size * (vmap_chunk or 1)  # vmap_chunk=None counted as 1
    keep = graphs_bytes + product_bytes <= memory_budget(x0, HVP_CPU_BYTES)
    cache: list[tuple[Tensor, Tensor]] = []
    batched = [True]  # False once a batched backward has failed

    def one_at_a_time(leaf: Tensor, g: Tensor, V: Tensor) -> Tensor:
        return torch.stack([torch.autograd.grad(g, leaf, V[:, i], retain_graph=True)[0] for i in range(V.shape[1])], dim=1)

    def products(leaf: Tensor, g: Tensor, V: Tensor) -> Tensor:  # V (dim, m) -> this batch's HV (dim, m)
        step = vmap_chunk or V.shape[1]
        if V.shape[1] == 1 or step == 1 or not batched[0]:
            return one_at_a_time(leaf, g, V)
        try:
            return torch.cat([_batched_backward(g, leaf, V[:, i : i + step]) for i in range(0, V.shape[1], step)], dim=1)
        except RuntimeError:  # an op without a batching rule: one probe at a time from now on
            batched[0] = False
            return one_at_a_time(leaf, g, V)

    def matvec(V: Tensor) -> Tensor:
        V = V.to(theta)
        vector = V.dim() == 1
        V = V[:, None] if vector else V
        out = torch.zeros_like(V)
        with eval_mode(model), math_attention():
            if keep and not cache:
                cache.extend(_batch_graph(loss, theta, x, y) for x, y in nonempty)
            for i, (x, y) in enumerate(nonempty):
                leaf, g = cache[i] if keep else _batch_graph(loss, theta, x, y)
                out = out + products(leaf, g, V)
                del leaf, g  # rebuild path: this batch's graph is freed here
        return out[:, 0] if vector else out

    return matvec


def _batched_backward(g: Tensor, leaf: Tensor, V: Tensor) -> Tensor:
    """(∂g/∂θ) V for the columns of V (dim, m) in one backward pass vmapped over the columns."""
    return torch.autograd.grad(g, leaf, grad_outputs=V.T, is_grads_batched=True, retain_graph=True)[0].T


HVP_CPU_BYTES = 256 * 2**20


def auto_hess_batch(model: nn.Module, x: Tensor, probes: int | None, *, mode: str = "auto") -> int:
    """Samples per Hessian-vector-product batch: as many as fit a memory budget (256 MiB on the
    CPU, a quarter of the free memory on CUDA), with a from
    :func:`~ddscope.metrics.jacobian.activations_per_sample` (input included) and ``probes``
    columns per batched pass. ``"double_backward"``: the kept gradient graph,
    :data:`GRAPH_FLOATS`·a floats per sample, plus :data:`PROBE_FLOATS`·a per sample and probe
    for the batched backward through it; ``"forward_over_reverse"``: about 4·a per sample and
    probe — the forward, its tangent, the backward and its tangent. One batch whenever it fits:
    the per-batch passes are the cost on small models (bench/bench_hessian.py)."""
    mode = resolve_mode(model, mode)
    m = max(probes or 1, 1)
    floats = GRAPH_FLOATS + PROBE_FLOATS * m if mode == "double_backward" else 4 * m
    per_sample = floats * _activation_floats(model, x) * x.element_size()
    return int(min(len(x), max(16, memory_budget(x, HVP_CPU_BYTES) // max(per_sample, 1))))


@dataclass(frozen=True)
class TraceResult:
    """tr(H) and how it was obtained: ``method`` is ``"ggn"`` (exact: tr(H) = tr(GGN), verified,
    :mod:`ddscope.metrics.ggn`), ``"hutchpp"``, ``"hutchinson"`` or ``"exact"`` (dim products);
    ``layers`` = ``{module path: its diagonal block's trace}`` (``"ggn"`` only, else empty);
    ``refusal`` = why ``"auto"`` did not use the exact formula (``None`` when it did); ``se`` =
    the standard error of an estimate (0 when exact)."""

    value: float
    method: str
    layers: dict[str, float] = field(default_factory=dict)
    refusal: str | None = None
    se: float = 0.0  # standard error of a stochastic estimate (0 for "ggn" and "exact")

    @property
    def exact(self) -> bool:
        return self.method in ("ggn", "exact")


def hess_trace(model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], **kwargs) -> float:
    """tr(H) = Δ_θ L, the Laplacian of the mean training loss; :func:`hess_trace_detail`'s value."""
    return hess_trace_detail(model, batches, **kwargs).value


def hess_trace_detail(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    *,
    method: str = "auto",
    num_matvecs: int = OPTIONS["hess_matvecs"],
    generator: torch.Generator | None = None,
    params: Sequence[str] | None = None,
    vmap_chunk: int | None = OPTIONS["hess_vmap"],
    mode: str = "auto",
    loss: Loss = "cross_entropy",
    grad_chunk: int = OPTIONS["grad_chunk"],
) -> TraceResult:
    """tr(H) = Δ_θ L, the Laplacian of the mean training loss (``loss``, as in :func:`loss_hvp`).

    ``"auto"`` (default): ``"ggn"`` when the network is piecewise linear in each parameter
    (:func:`~ddscope.metrics.ggn.exact_trace_refusal` is ``None``), else ``"hutchpp"``;
    ``"ggn"``: exact, tr(H) = tr(GGN) = (1/N) Σ_n Σ_k s_nk ‖∇_θ(v_nkᵀ f(x_n))‖² by C per-sample
    gradient passes of ``grad_chunk`` samples, with per-layer traces (raises ValueError on a
    network where it does not hold); ``"hutchpp"``: Hutch++ (Meyer et al. 2021), exact once
    ⌊num_matvecs/3⌋ ≥ dim; ``"hutchinson"``: Rademacher Hutchinson (1989), standard error
    √(2(‖H‖_F²−Σ H_ii²)/m); ``"exact"``: Σ_i e_iᵀ H e_i with dim products (tiny models only).
    ``generator=None`` draws probes from a fresh generator seeded 0; ``params``,
    ``vmap_chunk`` and ``mode`` (how the products are taken) as in :func:`loss_hvp`.

    Exactness is verified, not inferred: ``"ggn"`` is used only when the graph test passes *and*
    :func:`ggn_mismatch` finds every parameter tensor's Hessian block equal to its Gauss–Newton
    block on one batch; otherwise ``refusal`` says why and an estimator runs. Whenever the
    parameter count is at most ``num_matvecs`` the trace is computed exactly (``"exact"``, dim
    products: no dearer than the estimate). Estimates carry their standard error ``se``.
    """
    if method not in TRACE_METHODS:
        raise ValueError(f"unknown trace method {method!r}; allowed: {', '.join(TRACE_METHODS)}")
    resolve_mode(model, mode)  # checked whichever method runs
    batches = [(x, y) for x, y in batches if len(y)]
    refusal = None
    if method in ("auto", "ggn") and batches:
        refusal = exact_trace_refusal(model, tuple(batches[0][0].shape[1:]))
        if refusal is None:
            with _only_params(model, params):
                refusal = ggn_mismatch(model, *batches[0], params=params, loss=loss)
        if method == "ggn" and refusal is not None:
            raise ValueError(f"hess_trace method 'ggn' is exact only where tr(H) = tr(GGN) (piecewise-linear networks): {refusal}")
        if refusal is None:
            x = torch.cat([b[0] for b in batches])
            y = torch.cat([b[1] for b in batches])
            with _only_params(model, params):
                value, layers = ggn_trace(model, x, y, loss=loss, chunk_size=grad_chunk)
            return TraceResult(value, "ggn", layers)
        method = "hutchpp"
    matvec, dim = loss_hvp(model, batches, params=params, vmap_chunk=vmap_chunk, mode=mode, loss=loss)
    ref = next(iter(model.parameters()))
    if method == "exact" or dim <= num_matvecs:  # dim products cost no more than the estimate
        eye = torch.eye(dim, dtype=ref.dtype, device=ref.device)
        value = float(sum(torch.trace(matvec(eye[:, i : i + 256])[i : i + 256]) for i in range(0, dim, 256)))
        return TraceResult(value, "exact", refusal=refusal)
    estimator = hutchpp_trace if method == "hutchpp" else hutchinson_trace
    value, se = estimator(matvec, dim, num_matvecs, generator=generator, dtype=ref.dtype, device=ref.device,
                          return_se=True)
    return TraceResult(value, method, refusal=refusal, se=se)


# Relative agreement of H v and G v asked of the exact-trace check, by dtype: for a network where
# tr(H) = tr(GGN) the two products are equal up to the rounding of two different evaluation
# orders (measured: ~1e-6 relative in float32 on ReLU nets), while the failures this check exists
# for (tied weights, parametrisations, a division by a parameter) differ by percents.
GGN_CHECK_RTOL = {torch.float64: 1e-8, torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 1e-2}
GGN_CHECK_SAMPLES = 16  # samples of the one batch the check uses (a nonzero block shows on any)
GGN_CHECK_FLOATS = 2**25  # entries of the probe matrix held at once (128 MiB in float32)


def gauss_newton_matvec(model: nn.Module, x: Tensor, y: Tensor, *, params: Sequence[str] | None = None,
                        loss: Loss = "cross_entropy") -> tuple[Callable[[Tensor], Tensor], int]:
    """G v = (1/N) Σ_n J_nᵀ A_n J_n v on the batch (x, y): J v by forward mode, A_n from
    :func:`~ddscope.metrics.ggn.output_hessian_factors`, Jᵀ(·) by reverse mode; eval mode."""
    names, theta = flat_params(model, params)
    forward = flat_forward(model, names)
    n = len(x)

    def f(flat: Tensor) -> Tensor:
        return forward(flat, x).reshape(n, -1)

    with eval_mode(model), torch.no_grad():
        V, s = output_hessian_factors(f(theta), y, loss)  # (N, K, C), (N, K)

    def matvec(v: Tensor) -> Tensor:
        with eval_mode(model), math_attention():
            try:
                with torch.no_grad():
                    _, jv = jvp(f, (theta,), (v,))
            except RuntimeError:  # an op without a forward-mode rule: the double-backward JVP
                _, jv = torch.autograd.functional.jvp(f, theta, v)
            av = torch.einsum("nkc,nk,nk->nc", V, s, torch.einsum("nkc,nc->nk", V, jv.detach()))
            with torch.enable_grad():
                leaf = theta.clone().requires_grad_()
                out = f(leaf)
                return torch.autograd.grad(out, leaf, av)[0] / n

    return matvec, theta.numel()


def ggn_mismatch(model: nn.Module, x: Tensor, y: Tensor, *, params: Sequence[str] | None = None,
                 loss: Loss = "cross_entropy", generator: torch.Generator | None = None) -> str | None:
    """``None`` when every parameter tensor's diagonal block of H equals that of the Gauss–Newton
    matrix G on the batch (x, y), else where and by how much it does not: the run-time proof that
    tr(GGN) is tr(H) on this model and data, whatever its graph looked like.

    H − G = (1/N) Σ_n Σ_c (∂ℓ/∂f_c) ∇²_θ f_c. For a network affine in each parameter tensor and
    piecewise linear downstream, each tensor's own block of ∇²_θ f_c is zero (off-diagonal
    blocks between two layers are not: f is multilinear across layers), so the check takes one
    random probe v_t per parameter tensor t, supported on t, and compares the t-block of H v_t
    and G v_t within :data:`GGN_CHECK_RTOL`. A tied weight, a parametrisation or a division by a
    parameter makes some block nonzero and is caught (almost surely, by a random probe).
    Uses :data:`GGN_CHECK_SAMPLES` samples; one batched HVP and one GGN product per tensor."""
    x, y = x[:GGN_CHECK_SAMPLES], y[:GGN_CHECK_SAMPLES]
    names, _ = flat_params(model, params)
    named = dict(model.named_parameters())
    sizes = [named[n].numel() for n in names]
    hvp, dim = loss_hvp(model, [(x, y)], params=params, loss=loss, vmap_chunk=8, mode="double_backward")
    gvp, _ = gauss_newton_matvec(model, x, y, params=params, loss=loss)
    ref = next(iter(model.parameters()))
    rtol = GGN_CHECK_RTOL.get(ref.dtype, 1e-4)
    g = default_generator(generator)
    offsets = [0]
    for size in sizes:
        offsets.append(offsets[-1] + size)
    # probes in batches of columns, at most GGN_CHECK_FLOATS numbers of V at once (ResNet-18: 62
    # tensors × 11 M parameters would not fit as one dense V)
    step = max(1, min(8, GGN_CHECK_FLOATS // max(dim, 1)))
    worst, where = 0.0, ""
    for first in range(0, len(names), step):
        cols = range(first, min(first + step, len(names)))
        V = torch.zeros(dim, len(cols), dtype=ref.dtype, device=ref.device)
        for c, t in enumerate(cols):
            a, b = offsets[t], offsets[t + 1]
            V[a:b, c] = torch.randn(b - a, generator=g, device=g.device, dtype=torch.float64).to(ref)
        HV = hvp(V).detach()
        for c, t in enumerate(cols):
            a, b = offsets[t], offsets[t + 1]
            full = gvp(V[:, c]).detach()
            hv, gv = HV[a:b, c], full[a:b]
            scale = float(HV[:, c].norm() + full.norm())  # the curvature's size, off-diagonal blocks included
            if scale > 0 and float((hv - gv).norm()) / scale > worst:
                worst, where = float((hv - gv).norm()) / scale, names[t]
    if worst > rtol:
        return (f"the Hessian's block of parameter '{where}' differs from the Gauss-Newton block by {worst:.2g} "
                "(relative) on a random probe, so tr(H) != tr(GGN) here")
    return None


@contextlib.contextmanager
def _only_params(model: nn.Module, params: Sequence[str] | None):
    """``requires_grad`` off for the parameters outside ``params`` (all kept when ``None``)."""
    if params is None:
        yield
        return
    named = dict(model.named_parameters())
    unknown = [n for n in params if n not in named]
    if unknown:
        raise ValueError(f"unknown parameter names {unknown}; the model has {list(named)}")
    flags = {n: p.requires_grad for n, p in named.items()}
    try:
        for n, p in named.items():
            p.requires_grad_(n in set(params))
        yield
    finally:
        for n, p in named.items():
            p.requires_grad_(flags[n])


def hess_top(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    *,
    num_iters: int = OPTIONS["lanczos_iters"],
    tol: float = 1e-8,
    generator: torch.Generator | None = None,
    params: Sequence[str] | None = None,
    mode: str = "auto",
    loss: Loss = "cross_entropy",
) -> float:
    """λ_max(H) of the mean ``loss`` (as in :func:`loss_hvp`) by Lanczos with full reorthogonalisation (exact once num_iters ≥ dim), stopping
    early when the Ritz residual is ≤ tol·λ.

    ``generator=None`` draws the start vector from a fresh generator seeded 0; ``params`` and
    ``mode`` as in :func:`loss_hvp` (one product per iteration, so the double-backward default
    builds each batch's gradient graph once when the graphs fit in memory).
    """
    matvec, dim = loss_hvp(model, batches, params=params, mode=mode, loss=loss)
    ref = next(iter(model.parameters()))
    return lanczos_top_eig(matvec, dim, num_iters, tol=tol, generator=generator, dtype=ref.dtype, device=ref.device)
