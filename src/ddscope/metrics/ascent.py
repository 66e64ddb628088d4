"""A certified lower bound on the global Lipschitz constant: the largest ‖J(x)‖₂ found by ascent.

For any differentiable point x, Lip(f) ≥ ‖J(x)‖₂ (the directional derivative along J's top
right singular vector is a limit of difference quotients), so every point evaluated is a
witness and ``lip_lower`` = max over all of them is certified, whatever the search did. Points
are kept inside the box [lo, hi] spanned by the data (per input coordinate).

The search starts from the points with the largest measured norms (training, test and path
points: their values are witnesses too, so ``lip_lower`` ≥ every ``jac_spec_max``) and climbs
‖J(x)‖₂. For a ReLU network ‖J(x)‖₂ is piecewise constant (its autograd gradient is 0 almost
everywhere), so the ascent follows the gradient of the Gaussian smoothing E_ξ‖J(x + σξ)‖₂,
estimated from ``probes`` antithetic pairs (Nesterov & Spokoiny, "Random gradient-free
minimization of convex functions", 2017), with a step that grows by 1.5 after a gain, stays after
a tie (a random direction where no probe saw a change) and halves after a loss. All coordinates are measured in units of the box's width per coordinate.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..catalogue import OPTIONS
from ddscope.metrics.jacobian import PROBE_RTOL, jacobian_norms


@dataclass(frozen=True)
class LowerBound:
    """``value`` = ‖J(point)‖₂ ≤ Lip(f); ``start`` = the point the search began from,
    ``distance`` = ‖point − start‖₂, ``start_value`` = the norm measured there."""

    value: float
    point: Tensor
    start: Tensor
    distance: float
    start_value: float


def lipschitz_lower(
    model: nn.Module,
    starts: Tensor,
    lo: Tensor,
    hi: Tensor,
    *,
    start_values: Tensor | None = None,
    steps: int = OPTIONS["lip_lower_steps"],
    probes: int = 4,
    sigma: float = 0.02,
    step: float = 0.05,
    generator: torch.Generator | None = None,
    **jac_kw,
) -> LowerBound:
    """Gradient ascent on ‖J(x)‖₂ from every row of ``starts`` (m, *shape) inside [lo, hi]
    (each broadcastable to one sample's shape); see the module docstring.

    Args:
        start_values: ‖J‖₂ already measured at the starts (m,), kept as witnesses as they are
            (``None``: measured here).
        steps: ascent steps; each evaluates m · (2·probes + 1) Jacobians.
        sigma: smoothing radius and ``step`` the initial step length, in box widths per
            coordinate (the step is scaled by √d, so it is a fraction of the box's diagonal).
        jac_kw: :func:`~ddscope.metrics.jacobian.jacobian_norms` options (output, method, ...).
    """
    if len(starts) == 0:
        raise ValueError("lipschitz_lower needs at least one start point")
    gen = generator if generator is not None else torch.Generator(device=starts.device).manual_seed(0)
    shape = starts.shape[1:]
    m, d = len(starts), starts[0].numel()
    lo = lo.to(starts).expand(shape).reshape(1, d)
    width = (hi.to(starts).expand(shape).reshape(1, d) - lo).clamp_min(1e-12)

    def norms(z: Tensor) -> Tensor:  # z (k, d) in box units -> ‖J‖₂ (k,)
        x = (lo + z * width).reshape(len(z), *shape)
        return jacobian_norms(model, x, generator=gen, verify=False, **jac_kw).spec.to(starts)

    z0 = ((starts.reshape(m, d) - lo) / width).clamp(0, 1)
    f0 = norms(z0) if start_values is None else start_values.to(starts).reshape(m)
    z, f = z0.clone(), f0.clone()
    best_z, best_f, best_from = z0.clone(), f0.clone(), torch.arange(m, device=starts.device)
    eta = torch.full((m, 1), step * d**0.5, dtype=starts.dtype, device=starts.device)
    for _ in range(steps):
        xi = torch.randn(m, probes, d, generator=gen, device=gen.device).to(starts)
        plus = (z[:, None] + sigma * xi).clamp(0, 1)
        minus = (z[:, None] - sigma * xi).clamp(0, 1)
        both = norms(torch.cat([plus.reshape(-1, d), minus.reshape(-1, d)]))  # one Jacobian pass for both sides
        fp, fm = both[: m * probes].reshape(m, probes), both[m * probes :].reshape(m, probes)
        g = ((fp - fm)[..., None] * xi).sum(1)  # (m, d) smoothed-gradient direction
        g_norm = g.norm(dim=1, keepdim=True)
        # on a plateau (no probe saw a change) a random direction explores instead
        rand = torch.randn(m, d, generator=gen, device=gen.device).to(starts)
        rand = rand / rand.norm(dim=1, keepdim=True).clamp_min(1e-30)
        direction = torch.where(g_norm > 0, g / g_norm.clamp_min(1e-30), rand)
        cand = (z + eta * direction).clamp(0, 1)
        fc = norms(cand)
        # witnesses: the probes and the candidate
        pool_z = torch.cat([plus, minus, cand[:, None]], 1)  # (m, 2p+1, d)
        pool_f = torch.cat([fp, fm, fc[:, None]], 1)
        k = pool_f.argmax(1)
        top_f = pool_f.gather(1, k[:, None])[:, 0]
        better = top_f > best_f
        best_f = torch.where(better, top_f, best_f)
        best_z = torch.where(better[:, None], pool_z[torch.arange(m), k], best_z)
        gain, keep = fc > f, fc >= f  # a tie walks along the plateau at the same step
        z = torch.where(keep[:, None], cand, z)
        f = torch.where(keep, fc, f)
        eta = torch.where(gain[:, None], eta * 1.5, torch.where(keep[:, None], eta, eta * 0.5)).clamp(max=d**0.5)
    i = int(best_f.argmax())
    point = (lo + best_z[i] * width).reshape(shape)
    start = starts[int(best_from[i])]
    # The witness is re-measured alone and checked against plain autograd (jacobian_norms'
    # probe): the stored lower bound is a norm of this model's Jacobian at this point.
    value = float(jacobian_norms(model, point[None], generator=gen, **jac_kw).spec[0])
    found = float(best_f[i])
    if abs(found - value) <= PROBE_RTOL.get(starts.dtype, 2e-3) * max(value, 1e-30):
        value = max(value, found)  # one norm measured twice, in a batch and alone: equal up to rounding
    return LowerBound(value=value, point=point, start=start,
                      distance=float((point - start).norm()), start_value=float(f0[i]))


__all__ = ["LowerBound", "lipschitz_lower"]
