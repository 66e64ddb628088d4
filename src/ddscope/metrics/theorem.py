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
from torch.func import functional_call, grad, vmap

from ddscope.metrics.hessian import hess_trace
from ddscope.metrics.jacobian import eval_mode, jacobian_norms
from ddscope.metrics.autolip import first_linear_map
from ddscope.metrics.lipschitz import conv_operator_norm, linear_map_norm, record_input_shapes
from ddscope.metrics.losses import Loss, loss_fn


def per_sample_grad_sq(model: nn.Module, x: Tensor, y: Tensor, *, chunk_size: int = 256,
                       loss: Loss = "cross_entropy") -> Tensor:
    """‖∇_θ L_n‖² for every sample, (N,), over all parameters with requires_grad, L_n = ℓ(f(x_n), y_n).

    When every trained parameter belongs to an ``nn.Linear`` called once per forward on a
    (B, in) input (an MLP), ∇_W L_n = δ_n a_nᵀ and ∇_b L_n = δ_n with a_n the layer's input and
    δ_n = ∂L_n/∂(W a_n + b), so ‖∇_W L_n‖² = ‖δ_n‖²‖a_n‖² (Goodfellow 2015, "Efficient per-example
    gradient computations"): one forward and one backward pass per chunk. Otherwise
    ``vmap(grad(L_n))`` over the samples of a chunk with ``functional_call``. Eval mode either
    way, so each sample's loss depends on that sample only.
    """
    linears = _trained_linears(model)
    if linears is not None:
        with eval_mode(model):
            parts = []
            for s in range(0, len(x), chunk_size):
                part = _linear_grad_sq(model, linears, x[s : s + chunk_size], y[s : s + chunk_size], loss)
                if part is None:  # a layer called twice or on a non-(B, in) input: the shortcut does not apply
                    break
                parts.append(part)
            else:
                return torch.cat(parts) if parts else x.new_zeros(0)
    return _per_sample_grad_sq_vmap(model, x, y, chunk_size, loss)


def _trained_linears(model: nn.Module) -> list[nn.Linear] | None:
    """The modules owning parameters with requires_grad, if all of them are ``nn.Linear``."""
    owners = [m for m in model.modules() if any(p.requires_grad for p in m.parameters(recurse=False))]
    if not owners or any(type(m) is not nn.Linear for m in owners):
        return None
    return owners


def _linear_grad_sq(model: nn.Module, linears: list[nn.Linear], x: Tensor, y: Tensor, loss: Loss) -> Tensor | None:
    """Σ_layers ‖δ_n‖²‖a_n‖² (+ ‖δ_n‖² for a trained bias) for one chunk, (B,); ``None`` when a
    layer is not called exactly once on a (B, in) input (then the caller falls back to vmap)."""
    seen: dict[nn.Module, list[tuple[Tensor, Tensor]]] = {m: [] for m in linears}

    def hook(module, args, out):
        seen[module].append((args[0], out))

    handles = [m.register_forward_hook(hook) for m in linears]
    try:
        with torch.enable_grad():
            # Summed, not averaged: the gradient at sample n's layer output is then δ_n of L_n.
            total = loss_fn(loss)(model(x), y, "sum")
    finally:
        for h in handles:
            h.remove()
    calls = [seen[m] for m in linears]
    if any(len(c) != 1 or c[0][0].dim() != 2 or c[0][0].shape[0] != len(x) for c in calls):
        return None
    deltas = torch.autograd.grad(total, [c[0][1] for c in calls])  # δ (B, out) per layer
    sq = x.new_zeros(len(x))
    for m, c, delta in zip(linears, calls, deltas):
        d2 = delta.detach().square().sum(1)
        if m.weight.requires_grad:
            sq = sq + d2 * c[0][0].detach().square().sum(1)
        if m.bias is not None and m.bias.requires_grad:
            sq = sq + d2
    return sq


def _per_sample_grad_sq_vmap(model: nn.Module, x: Tensor, y: Tensor, chunk_size: int,
                             loss: Loss = "cross_entropy") -> Tensor:
    """‖∇_θ L_n‖² by ``vmap(grad(L_n))`` over the samples of each chunk (any model)."""
    named = dict(model.named_parameters())
    params = {n: p.detach() for n, p in named.items() if p.requires_grad}
    fixed = {n: p.detach() for n, p in named.items() if not p.requires_grad}
    fixed.update({n: b.detach() for n, b in model.named_buffers()})
    ell = loss_fn(loss)

    def loss_one(params: dict[str, Tensor], xn: Tensor, yn: Tensor) -> Tensor:
        out = functional_call(model, {**fixed, **params}, (xn.unsqueeze(0),))
        return ell(out, yn.unsqueeze(0), "sum")

    per_sample = vmap(grad(loss_one), in_dims=(None, 0, 0))
    result = []
    with eval_mode(model), torch.no_grad():
        for start in range(0, len(x), chunk_size):
            grads = per_sample(params, x[start : start + chunk_size], y[start : start + chunk_size])
            result.append(sum(g.flatten(1).square().sum(1) for g in grads.values()))  # (B,)
    return torch.cat(result) if result else x.new_zeros(0)


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


def theorem2_per_sample(model: nn.Module, x: Tensor, y: Tensor, *, chunk_size: int = 256,
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
    hess_trace_value: float | None = None,
    hutch_matvecs: int = 100,
    chunk_size: int = 256,
    hess_batch: int | None = None,
    generator: torch.Generator | None = None,
    loss: Loss = "cross_entropy",
) -> dict[str, float | bool]:
    """The three sides of Theorem 2 on the data set (x, y).

    Keys: ``thm2_lhs`` = x_min²/‖θ¹‖₂² · ``input_grad_sq_mean``, ``thm2_mid`` = (1/N) Σ ‖∇_θ L_n‖²,
    ``thm2_rhs`` = 2 · ``loss_max`` · tr(H), the two comparisons ``thm2_lhs_le_mid``,
    ``thm2_mid_le_rhs``, and ``loss_max``, ``x_min``, ``theta1_norm``, ``input_grad_sq_mean``.

    Args:
        hess_trace_value: tr(H) on the same data if already computed; otherwise Hutch++ with
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
        hess_trace_value = hess_trace(model, batches, method="hutchpp", num_matvecs=hutch_matvecs, generator=generator,
                                      loss=loss)
    lhs = float(terms["lhs"].mean())
    mid = float(terms["mid"].mean())
    loss_max = float(losses.max())
    rhs = 2.0 * loss_max * float(hess_trace_value)
    return {
        "thm2_lhs": lhs,
        "thm2_mid": mid,
        "thm2_rhs": rhs,
        "thm2_lhs_le_mid": lhs <= mid,
        "thm2_mid_le_rhs": mid <= rhs,
        "loss_max": loss_max,
        "x_min": terms["x_min"],
        "theta1_norm": terms["theta1_norm"],
        "input_grad_sq_mean": float(terms["input_grad_sq"].mean()),
    }
