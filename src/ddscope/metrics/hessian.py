"""Curvature of the training loss in parameter space: trace and top eigenvalue of the Hessian.

H = ∇²_θ L(θ), L = (1/N) Σ_n CE(f_θ(x_n), y_n) over all samples of all batches. tr(H) is the
Laplacian Δ L in Theorem 2 of Gamba et al. (poster "On the Lipschitz Constant of Deep Networks
and Double Descent"; TMLR 2023). Neither H nor any dense matrix is formed: Hessian-vector
products are forward-over-reverse, Hv = ∂/∂ε ∇L(θ + εv) |₀ (``torch.func.jvp`` of
``torch.func.grad``; Pearlmutter 1994), and the estimators of ``ddscope.estimators`` turn them
into tr(H) (Hutchinson 1989; Hutch++, Meyer et al. 2021) and λ_max(H) (Lanczos 1950).

Parameters are flattened in ``model.named_parameters()`` order; the model runs in eval mode
(BatchNorm on running statistics, buffers passed through ``functional_call``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, jvp, vmap

from ddscope.estimators import hutchinson_trace, hutchpp_trace, lanczos_top_eig
from ddscope.metrics.jacobian import eval_mode

TRACE_METHODS = ("hutchpp", "hutchinson", "exact")


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


def flat_loss_fn(model: nn.Module, names: Sequence[str], reduction_n: int) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
    """``loss(flat, x, y)`` = Σ_{n in batch} CE(f_θ(x_n), y_n) / reduction_n with θ[names] = flat.

    Dividing each batch's *sum* by the total sample count weights every sample 1/N, so the
    batch losses add up to the exact mean whatever the batch sizes.
    """
    named = dict(model.named_parameters())
    shapes = [named[n].shape for n in names]
    numels = [math.prod(s) for s in shapes]
    fixed = {n: p.detach() for n, p in named.items() if n not in set(names)}
    buffers = {n: b.detach() for n, b in model.named_buffers()}

    def loss(flat: Tensor, x: Tensor, y: Tensor) -> Tensor:
        tensors = {n: t.view(s) for n, t, s in zip(names, flat.split(numels), shapes)}
        out = functional_call(model, {**fixed, **buffers, **tensors}, (x,))
        return F.cross_entropy(out.reshape(len(x), -1), y, reduction="sum") / reduction_n

    return loss


def loss_hvp(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    *,
    params: Sequence[str] | None = None,
    vmap_chunk: int | None = 8,
) -> tuple[Callable[[Tensor], Tensor], int]:
    """Hessian-vector products of the mean cross-entropy over all samples of ``batches``.

    Hv = Σ_b (1/N) ∇²_θ Σ_{n∈b} L_n · v, N = total sample count (an uneven last batch is
    weighted exactly).

    Args:
        model: evaluated in eval mode at its current parameters (snapshotted now).
        batches: (x, y) pairs; kept in memory and reused by every product.
        params: names of the parameters to differentiate (``None``: all with requires_grad;
            the others are held fixed).
        vmap_chunk: probes per vmapped pass when the matvec gets several columns; memory grows
            as vmap_chunk × (one batch's forward-over-reverse pass), ``None``: all at once.

    Returns:
        ``(matvec, dim)``: ``matvec`` maps v (dim,) -> Hv (dim,) or V (dim, m) -> HV (dim, m).
    """
    batches = list(batches)
    names, theta = flat_params(model, params)
    total = sum(len(y) for _, y in batches)
    if total == 0:
        raise ValueError("loss_hvp needs at least one sample")
    loss = flat_loss_fn(model, names, total)
    grad_fn = grad(loss)

    def hvp(v: Tensor) -> Tensor:  # (dim,) -> (dim,)
        out = torch.zeros_like(theta)
        for x, y in batches:
            out = out + jvp(lambda flat: grad_fn(flat, x, y), (theta,), (v,))[1]
        return out

    def matvec(V: Tensor) -> Tensor:
        V = V.to(theta)
        with eval_mode(model), torch.no_grad():
            if V.dim() == 1:
                return hvp(V)
            try:
                return vmap(hvp, in_dims=1, out_dims=1, chunk_size=vmap_chunk)(V)
            except RuntimeError:  # an op without a batching rule: one probe at a time
                return torch.stack([hvp(V[:, i]) for i in range(V.shape[1])], dim=1)

    return matvec, theta.numel()


HVP_CPU_BYTES = 256 * 2**20


def auto_hess_batch(model: nn.Module, x: Tensor, probes: int | None) -> int:
    """Samples per Hessian-vector-product batch: as many as fit a memory budget (256 MiB on the
    CPU, a quarter of the free memory on CUDA) at about 4·a floats per sample and probe — the
    forward, its tangent, the backward and its tangent — with a from
    :func:`~ddscope.metrics.jacobian.activations_per_sample`. One batch whenever it fits: the
    per-batch passes are the cost on small models (bench/bench_hessian.py)."""
    from ddscope.metrics.jacobian import activations_per_sample, memory_budget

    per_sample = 4 * (activations_per_sample(model, x) + x[0].numel()) * x.element_size() * max(probes or 1, 1)
    return int(min(len(x), max(16, memory_budget(x, HVP_CPU_BYTES) // max(per_sample, 1))))


def hess_trace(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    *,
    method: str = "hutchpp",
    num_matvecs: int = 100,
    generator: torch.Generator | None = None,
    params: Sequence[str] | None = None,
    vmap_chunk: int | None = 8,
) -> float:
    """tr(H) = Δ_θ L, the Laplacian of the mean training loss.

    ``"hutchpp"``: Hutch++ (Meyer et al. 2021), exact once ⌊num_matvecs/3⌋ ≥ dim;
    ``"hutchinson"``: Rademacher Hutchinson (1989), standard error √(2(‖H‖_F²−Σ H_ii²)/m);
    ``"exact"``: Σ_i e_iᵀ H e_i with dim products (tiny models only; ignores num_matvecs).
    ``generator=None`` draws probes from a fresh generator seeded 0; ``params`` and
    ``vmap_chunk`` as in :func:`loss_hvp`.
    """
    if method not in TRACE_METHODS:
        raise ValueError(f"unknown trace method {method!r}; allowed: {', '.join(TRACE_METHODS)}")
    matvec, dim = loss_hvp(model, batches, params=params, vmap_chunk=vmap_chunk)
    ref = next(iter(model.parameters()))
    if method == "exact":
        eye = torch.eye(dim, dtype=ref.dtype, device=ref.device)
        return float(sum(torch.trace(matvec(eye[:, i : i + 256])[i : i + 256]) for i in range(0, dim, 256)))
    estimator = hutchpp_trace if method == "hutchpp" else hutchinson_trace
    return estimator(matvec, dim, num_matvecs, generator=generator, dtype=ref.dtype, device=ref.device)


def hess_top(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    *,
    num_iters: int = 30,
    tol: float = 1e-8,
    generator: torch.Generator | None = None,
    params: Sequence[str] | None = None,
) -> float:
    """λ_max(H) by Lanczos with full reorthogonalisation (exact once num_iters ≥ dim), stopping
    early when the Ritz residual is ≤ tol·λ.

    ``generator=None`` draws the start vector from a fresh generator seeded 0.
    """
    matvec, dim = loss_hvp(model, batches, params=params)
    ref = next(iter(model.parameters()))
    return lanczos_top_eig(matvec, dim, num_iters, tol=tol, generator=generator, dtype=ref.dtype, device=ref.device)
