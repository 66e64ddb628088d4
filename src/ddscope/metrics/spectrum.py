"""The Hessian's top eigenvalues and spectral density by stochastic Lanczos quadrature.

Ghorbani, Krishnan & Xiao, "An Investigation into Neural Net Optimization via Hessian Eigenvalue
Density", ICML 2019 (as PyHessian does it, Yao et al. 2020). For a unit probe v, k Lanczos steps
on H from v give a tridiagonal T_k = Σ_j θ_j u_j u_jᵀ; the Gauss quadrature rule with nodes θ_j
and weights τ_j = (u_j)₁² is exact for polynomials of degree < 2k:

    vᵀ p(H) v = Σ_j τ_j p(θ_j),   so   (1/P) ∫ p(t) φ(t) dt ≈ E_v[vᵀ p(H) v] = tr p(H) / P

with φ(t) = (1/P) Σ_i δ(t − λ_i) the spectral density (P parameters, v uniform on the sphere).
Averaged over probes and smoothed by a Gaussian of width σ it is the density plotted;
the largest Ritz values of the first probe are the top-k eigenvalues (exact once k steps ≥ P).
Products are the Hessian-vector products of :func:`ddscope.metrics.hessian.loss_hvp`, batched
over the probes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..catalogue import OPTIONS
from ddscope.estimators import default_generator
from ddscope.metrics.hessian import loss_hvp
from ddscope.metrics.losses import Loss


@dataclass(frozen=True)
class Spectrum:
    """``top`` (k,) the largest eigenvalues, descending; ``nodes`` / ``weights`` (probes, steps)
    the quadrature of each probe (a probe whose Krylov space closed early has zero weights in
    its tail)."""

    top: Tensor
    nodes: Tensor
    weights: Tensor


def lanczos_quadrature(matvec, dim: int, probes: int, steps: int, *, generator: torch.Generator | None = None,
                       dtype=torch.float64, device=None) -> tuple[Tensor, Tensor, list[Tensor]]:
    """Nodes and weights (probes, steps) of the Lanczos quadrature from ``probes`` Gaussian unit
    vectors, with full reorthogonalisation (twice), and each probe's Ritz values (its
    tridiagonal's eigenvalues up to breakdown). ``matvec``: V (dim, m) -> H V."""
    gen = default_generator(generator)
    steps = min(steps, dim)
    q = torch.randn(dim, probes, generator=gen, device=gen.device).to(dtype=dtype, device=device)
    q = q / q.norm(dim=0, keepdim=True)
    basis = [q]
    alphas, betas = [], []
    alive = torch.ones(probes, dtype=torch.bool, device=q.device)
    length = torch.full((probes,), steps, dtype=torch.long)
    scale = torch.zeros(probes, dtype=dtype, device=q.device)
    for j in range(steps):
        w = matvec(q)
        alpha = (q * w).sum(0)
        Q = torch.stack(basis, 0)  # (j+1, dim, probes)
        for _ in range(2):
            w = w - torch.einsum("kp,kdp->dp", torch.einsum("kdp,dp->kp", Q, w), Q)
        beta = w.norm(dim=0)
        scale = torch.maximum(scale, alpha.abs() + beta)
        alphas.append(torch.where(alive, alpha, torch.zeros_like(alpha)))
        if j == steps - 1:
            break
        stop = alive & (beta <= 1e3 * torch.finfo(dtype).eps * scale.clamp_min(torch.finfo(dtype).tiny))
        length[stop.cpu()] = j + 1
        alive = alive & ~stop
        betas.append(torch.where(alive, beta, torch.zeros_like(beta)))
        q = torch.where(alive[None], w / beta.clamp_min(torch.finfo(dtype).tiny)[None], torch.zeros_like(w))
        basis.append(q)
        if not bool(alive.any()):
            break
    k = len(alphas)
    nodes = torch.zeros(probes, steps, dtype=dtype)
    weights = torch.zeros(probes, steps, dtype=dtype)
    ritz: list[Tensor] = []
    A = torch.stack(alphas, 1).cpu()  # (probes, k)
    B = torch.stack(betas, 1).cpu() if betas else torch.zeros(probes, 0, dtype=dtype)
    for p in range(probes):
        n = int(min(length[p], k))
        T = torch.diag(A[p, :n]) + torch.diag(B[p, : n - 1], 1) + torch.diag(B[p, : n - 1], -1)
        theta, U = torch.linalg.eigh(T)
        nodes[p, :n], weights[p, :n] = theta, U[0].square()
        ritz.append(theta.flip(0))
    return nodes, weights, ritz


def hess_spectrum(model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], *, top_k: int = OPTIONS["spec_top_k"], probes: int = OPTIONS["spec_probes"],
                  steps: int = OPTIONS["spec_steps"], generator: torch.Generator | None = None, loss: Loss = "cross_entropy",
                  vmap_chunk: int | None = OPTIONS["hess_vmap"]) -> Spectrum:
    """Top-``top_k`` eigenvalues and the SLQ quadrature of the mean-loss Hessian (module doc):
    ``probes`` × ``steps`` Hessian-vector products, batched over the probes."""
    matvec, dim = loss_hvp(model, batches, vmap_chunk=vmap_chunk, loss=loss)
    ref = next(iter(model.parameters()))
    dtype = torch.float64 if ref.dtype == torch.float64 else ref.dtype
    nodes, weights, ritz = lanczos_quadrature(lambda V: matvec(V.to(ref.dtype)).to(dtype), dim, probes, steps,
                                              generator=generator, dtype=dtype, device=ref.device)
    return Spectrum(top=ritz[0][:top_k].clone(), nodes=nodes, weights=weights)


def spectral_density(nodes: Tensor, weights: Tensor, grid: Tensor, sigma: float) -> Tensor:
    """φ_σ(t) = (1/probes) Σ_p Σ_j τ_pj 𝒩(t; θ_pj, σ²) on ``grid`` (integrates to 1)."""
    z = (grid[None, None, :] - nodes[..., None]) / sigma
    g = torch.exp(-0.5 * z.square()) / (sigma * math.sqrt(2 * math.pi))
    return (weights[..., None] * g).sum((0, 1)) / nodes.shape[0]


def spectrum_metrics(s: Spectrum) -> dict[str, float]:
    """The store's keys: ``hess_eig/<i>`` (1 = largest), ``hess_slq_node/<p>.<j>``,
    ``hess_slq_weight/<p>.<j>`` (nodes with zero weight left out)."""
    out = {f"hess_eig/{i + 1}": float(v) for i, v in enumerate(s.top)}
    for p in range(s.nodes.shape[0]):
        for j in range(s.nodes.shape[1]):
            if float(s.weights[p, j]) > 0:
                out[f"hess_slq_node/{p}.{j}"] = float(s.nodes[p, j])
                out[f"hess_slq_weight/{p}.{j}"] = float(s.weights[p, j])
    return out


def quadrature_from_metrics(values: dict[str, float]) -> tuple[Tensor, Tensor]:
    """(nodes, weights) (probes, steps) back from :func:`spectrum_metrics`' keys (missing = 0)."""
    keys = [k.split("/", 1)[1] for k in values if k.startswith("hess_slq_node/")]
    if not keys:
        return torch.zeros(0, 0, dtype=torch.float64), torch.zeros(0, 0, dtype=torch.float64)
    pj = [tuple(int(t) for t in k.split(".")) for k in keys]
    P, J = max(p for p, _ in pj) + 1, max(j for _, j in pj) + 1
    nodes, weights = torch.zeros(P, J, dtype=torch.float64), torch.zeros(P, J, dtype=torch.float64)
    for (p, j), k in zip(pj, keys):
        nodes[p, j] = values[f"hess_slq_node/{k}"]
        weights[p, j] = values.get(f"hess_slq_weight/{k}", 0.0)
    return nodes, weights


__all__ = ["Spectrum", "hess_spectrum", "lanczos_quadrature", "quadrature_from_metrics", "spectral_density",
           "spectrum_metrics"]
