"""PAC-Bayes sharpness: how much Gaussian weight noise a trained network tolerates.

Jiang et al., "Fantastic Generalization Measures and Where to Find Them" (ICLR 2020, §C.6–C.7;
after Neyshabur et al. 2017 and Keskar et al. 2017). With θ the trained parameters (every
parameter), u a Gaussian perturbation and err the 0-1 error on the training points (labels the
net was fit on), σ' is the largest σ with

    E_u[err(θ + u)] − err(θ) ≤ δ = 0.1,

found by bisection on σ ∈ (0, 2] (``depth`` halvings, the search stopping once the deviation is
within 0.01 of δ, as in the paper's protocol), the expectation over ``draws`` perturbations:

* PAC-Bayes sharpness: u ~ N(0, σ² I); ``cm_pacbayes_flat`` = 1/σ'² [53] and the bound
  ``cm_pacbayes_init`` = ‖θ − θ⁰‖² / (4σ'²) + log(N/σ') + 10 [48] — ‖θ − θ⁰‖ over every
  parameter, biases included (Jiang et al. take the weights), and u perturbs every parameter;
* magnitude-aware: u_i ~ N(0, σ² θ_i² + ε²), ε = 10⁻³; ``cm_pacbayes_mag_flat`` = 1/σ'² [61].

Common random numbers: the ``draws`` standard normal directions z are drawn once and u = σ·z
(or √(σ² θ² + ε²)·z) for every σ, so the expected deviation is one deterministic function of σ
that the bisection brackets (the estimate is reproducible from the generator's seed).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.func import functional_call

from ..catalogue import OPTIONS
from ddscope.metrics.jacobian import eval_mode

DEVIATION = 0.1  # δ: the tolerated rise of the training error (Jiang et al.)
TOLERANCE = 0.01  # the bisection stops once |deviation − δ| is below this
MAG_EPS = 1e-3  # ε of the magnitude-aware perturbation
SIGMA_MAX = 2.0  # the bisection's upper end (Jiang et al.)


def _error(model: nn.Module, params: dict[str, Tensor], buffers: dict[str, Tensor], x: Tensor, y: Tensor,
           chunk_size: int) -> float:
    wrong = 0
    for s in range(0, len(x), chunk_size):
        out = functional_call(model, {**params, **buffers}, (x[s : s + chunk_size],))
        wrong += int((out.reshape(len(out), -1).argmax(1) != y[s : s + chunk_size]).sum())
    return wrong / len(x)


def pacbayes_sigma(model: nn.Module, x: Tensor, y: Tensor, *, magnitude_eps: float | None = None,
                   deviation: float = DEVIATION, draws: int = 10, depth: int = 15, tolerance: float = TOLERANCE,
                   generator: torch.Generator | None = None, chunk_size: int = 4096) -> float:
    """σ' of the module docstring (``magnitude_eps`` set: the magnitude-aware noise).

    Returns the last bisection midpoint (σ' ∈ (0, 2]); ``SIGMA_MAX`` when even σ = 2 keeps the
    deviation below δ."""
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    params = {n: p.detach() for n, p in model.named_parameters()}
    buffers = dict(model.named_buffers())
    # (draws, …) standard normal directions per parameter, drawn once (common random numbers)
    z = {n: torch.randn((draws, *p.shape), generator=gen, device=gen.device, dtype=p.dtype).to(p.device)
         for n, p in params.items()}
    with eval_mode(model), torch.no_grad():
        base = _error(model, params, buffers, x, y, chunk_size)

        def dev(sigma: float) -> float:
            errs = []
            for k in range(draws):
                if magnitude_eps is None:
                    noisy = {n: p + sigma * z[n][k] for n, p in params.items()}
                else:
                    noisy = {n: p + (sigma**2 * p.square() + magnitude_eps**2).sqrt() * z[n][k] for n, p in params.items()}
                errs.append(_error(model, noisy, buffers, x, y, chunk_size))
            return sum(errs) / draws - base

        if dev(SIGMA_MAX) <= deviation:
            return SIGMA_MAX
        lo, hi, sigma = 0.0, SIGMA_MAX, SIGMA_MAX / 2
        for _ in range(depth):
            sigma = (lo + hi) / 2
            d = dev(sigma)
            if abs(d - deviation) < tolerance:
                break
            lo, hi = (lo, sigma) if d > deviation else (sigma, hi)
    return sigma


def sharpness_measures(model: nn.Module, x: Tensor, y: Tensor, init_state: dict[str, Tensor] | None = None, *,
                       draws: int = OPTIONS["sharp_draws"], depth: int = OPTIONS["sharp_depth"], generator: torch.Generator | None = None) -> dict[str, float]:
    """``cm_pacbayes_flat``, ``cm_pacbayes_mag_flat`` and, with θ⁰, ``cm_pacbayes_init`` (module
    docstring) on training inputs ``x`` and the labels ``y`` the net was fit on."""
    sigma = pacbayes_sigma(model, x, y, draws=draws, depth=depth, generator=generator)
    mag = pacbayes_sigma(model, x, y, magnitude_eps=MAG_EPS, draws=draws, depth=depth, generator=generator)
    out = {"cm_pacbayes_sigma": sigma, "cm_pacbayes_flat": 1 / sigma**2,
           "cm_pacbayes_mag_sigma": mag, "cm_pacbayes_mag_flat": 1 / mag**2}
    if init_state is not None:
        with torch.no_grad():
            d2 = sum(float((p.detach() - init_state[n].to(p)).double().square().sum()) for n, p in model.named_parameters())
        out["cm_pacbayes_init"] = d2 / (4 * sigma**2) + math.log(len(x) / sigma) + 10
    return out


__all__ = ["DEVIATION", "MAG_EPS", "pacbayes_sigma", "sharpness_measures"]
