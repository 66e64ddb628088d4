"""Theorem 2 of Gamba et al.: parameter-space curvature bounds input-space smoothness.

Poster "On the Lipschitz Constant of Deep Networks and Double Descent" (Gamba, Azizpour &
Björkman; Gamba et al., "Deep Double Descent via Smooth Interpolation", TMLR 2023): near a
critical point θ*,

    x_min²/‖θ¹‖₂² · (1/N) Σ_n ‖∇_x L_n‖²   ≤   (1/N) Σ_n ‖∇_θ L_n‖²   ≤   2 L_max tr(H) + o(L)
              LHS                                   MID                         RHS

with x_min = min_n ‖x_n‖₂, θ¹ the first layer as a linear operator, L_max = max_n L_n and
H = ∇²_θ L. The first inequality holds per sample for an MLP: with δ = ∂L_n/∂(θ¹x_n),
∇_x L_n = θ¹ᵀδ and ∇_θ¹ L_n = δ x_nᵀ, so x_min²‖θ¹ᵀδ‖²/‖θ¹‖² ≤ ‖x_n‖²‖δ‖² ≤ ‖∇_θ L_n‖².
The second needs a critical point, so ``thm2_mid_le_rhs`` is a measurement, not a guarantee.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..catalogue import OPTIONS
from ddscope.metrics.hessian import TraceResult, hess_trace_detail
from ddscope.metrics.jacobian import eval_mode, jacobian_norms
from ddscope.metrics.autolip import first_linear_map
from ddscope.metrics.lipschitz import conv_operator_norm, linear_map_norm, record_input_shapes
from ddscope.metrics.losses import Loss, loss_fn
from ddscope.metrics.persample import per_sample_grad_sq


def per_sample_loss(model: nn.Module, batches: list[tuple[Tensor, Tensor]], loss: Loss = "cross_entropy") -> Tensor:
    """L_n = ℓ(f_θ(x_n), y_n) for every sample of the batches, concatenated (N,); eval mode."""
    ell = loss_fn(loss)
    with eval_mode(model), torch.no_grad():
        return torch.cat([ell(model(xb), yb) for xb, yb in batches])


def first_layer_norm(model: nn.Module, input_shape: tuple[int, ...]) -> float:
    """‖θ¹‖₂: operator norm of the first parametrised operation the input flows into.

    Found in the ``torch.fx`` graph (:func:`~ddscope.metrics.autolip.first_linear_map`: a Linear
    or Conv module or its functional form; a parameter added to the input, e.g. a position
    embedding, is skipped); for a model fx cannot trace, the first leaf module with parameters
    called in the forward pass. Linear: the largest singular value of W; Conv1d/Conv2d: the
    operator norm on its actual input shape. Any other first layer raises ValueError.
    """
    try:
        _, op, shape = first_linear_map(model, tuple(input_shape))
    except ValueError:
        raise
    except Exception:  # noqa: BLE001 — fx cannot trace the model: call order of the leaf modules
        return _first_leaf_norm(model, input_shape)
    if isinstance(op, Tensor):
        return float(torch.linalg.matrix_norm(op, 2))
    ref = next(iter(model.parameters()))
    return linear_map_norm(op, shape, dtype=ref.dtype, device=ref.device)


def _first_leaf_norm(model: nn.Module, input_shape: tuple[int, ...]) -> float:
    shapes, order = record_input_shapes(model, tuple(input_shape))
    for module in order:
        if next(module.children(), None) is not None or next(module.parameters(recurse=False), None) is None:
            continue  # containers (the root owning a position embedding included) and parameter-free layers
        if isinstance(module, nn.Linear):
            return float(torch.linalg.matrix_norm(module.weight.detach(), 2))
        if isinstance(module, (nn.Conv1d, nn.Conv2d)):
            return conv_operator_norm(module, shapes[id(module)])
        raise ValueError(f"Theorem 2 needs a Linear or Conv first layer, got {type(module).__name__}")
    raise ValueError("Theorem 2 needs a model with a parameterised first layer")


def theorem2_per_sample(model: nn.Module, x: Tensor, y: Tensor, *, chunk_size: int = OPTIONS["grad_chunk"],
                        loss: Loss = "cross_entropy") -> dict[str, Tensor | float]:
    """Per-sample terms: ``lhs`` (N,) = x_min²/‖θ¹‖² · ‖∇_x L_n‖², ``mid`` (N,) = ‖∇_θ L_n‖²,
    ``input_grad_sq`` (N,) = ‖∇_x L_n‖², and the scalars ``x_min``, ``theta1_norm``.

    For an MLP ``lhs[n] <= mid[n]`` for every n (see the module docstring).
    """
    norms = jacobian_norms(model, x, output="loss", y=y, method="exact", chunk_size=chunk_size, loss=loss)
    input_grad_sq = norms.fro.square()  # C = 1: ‖J‖_F = ‖∇_x L_n‖
    x_min = float(x.flatten(1).norm(dim=1).min())
    theta1 = first_layer_norm(model, tuple(x.shape[1:]))
    return {
        "lhs": x_min**2 / theta1**2 * input_grad_sq,
        "mid": per_sample_grad_sq(model, x, y, chunk_size=chunk_size, loss=loss),
        "input_grad_sq": input_grad_sq,
        "x_min": x_min,
        "theta1_norm": theta1,
    }


def theorem2(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    hess_trace_value: "float | TraceResult | None" = None,
    hutch_matvecs: int = OPTIONS["hess_matvecs"],
    chunk_size: int = OPTIONS["grad_chunk"],
    hess_batch: int | None = None,
    generator: torch.Generator | None = None,
    loss: Loss = "cross_entropy",
) -> dict[str, float | bool]:
    """The three sides of Theorem 2 on the data set (x, y).

    Keys: ``thm2_lhs`` = x_min²/‖θ¹‖₂² · ``input_grad_sq_mean``, ``thm2_mid`` = (1/N) Σ ‖∇_θ L_n‖²,
    ``thm2_rhs`` = 2 · ``loss_max`` · tr(H) and ``thm2_rhs_se`` its standard error (from an
    estimated trace's; 0 when exact), the two comparisons ``thm2_lhs_le_mid``,
    ``thm2_mid_le_rhs``, and ``loss_max``, ``x_min``, ``theta1_norm``, ``input_grad_sq_mean``.

    Args:
        hess_trace_value: tr(H) on the same data if already computed (a number, taken as exact,
            or a :class:`~ddscope.metrics.hessian.TraceResult` with its error); otherwise exact for a
            piecewise-linear network (tr(GGN), :mod:`ddscope.metrics.ggn`), else Hutch++ with
            ``hutch_matvecs`` products over batches of ``hess_batch`` samples.
        chunk_size: samples per pass for the per-sample gradients (memory chunk × #params)
            and the input gradients.
        hess_batch: samples per Hessian-vector-product batch (``None``: ``chunk_size``).
        generator: Hutch++ probes (``None``: seeded 0).
        loss: ℓ of L_n (:mod:`ddscope.metrics.losses`), cross-entropy by default.
    """
    if len(x) == 0:
        raise ValueError("theorem2 needs at least one sample")
    terms = theorem2_per_sample(model, x, y, chunk_size=chunk_size, loss=loss)
    step = hess_batch or chunk_size
    batches = [(x[s : s + step], y[s : s + step]) for s in range(0, len(x), step)]
    losses = per_sample_loss(model, batches, loss)
    if hess_trace_value is None:
        hess_trace_value = hess_trace_detail(model, batches, method="auto", num_matvecs=hutch_matvecs,
                                             generator=generator, loss=loss, grad_chunk=chunk_size)
    trace, se = ((hess_trace_value.value, hess_trace_value.se) if isinstance(hess_trace_value, TraceResult)
                 else (float(hess_trace_value), 0.0))
    lhs = float(terms["lhs"].mean())
    mid = float(terms["mid"].mean())
    loss_max = float(losses.max())
    rhs = 2.0 * loss_max * trace
    return {
        "thm2_lhs": lhs,
        "thm2_mid": mid,
        "thm2_rhs": rhs,
        "thm2_rhs_se": 2.0 * loss_max * se,  # from tr(H)'s standard error (0 when the trace is exact)
        "thm2_lhs_le_mid": lhs <= mid,
        "thm2_mid_le_rhs": mid <= rhs,
        "loss_max": loss_max,
        "x_min": terms["x_min"],
        "theta1_norm": terms["theta1_norm"],
        "input_grad_sq_mean": float(terms["input_grad_sq"].mean()),
    }
