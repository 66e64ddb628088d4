"""Per-sample squared gradient norms ‖∇_θ ℓ_n‖², in total and per parameter tensor.

Theorem 2's middle term (1/N) Σ_n ‖∇_θ L_n‖² and the exact trace of the Gauss–Newton matrix
(:mod:`ddscope.metrics.ggn`: ‖∇_θ (vᵀ f_θ(x_n))‖² for C vectors v per sample) are both sums of
these. Two ways, same numbers:

* every trained parameter belongs to an ``nn.Linear`` called once on a (B, in) input (an MLP):
  ∇_W ℓ_n = δ_n a_nᵀ and ∇_b ℓ_n = δ_n, with a_n the layer's input and δ_n = ∂ℓ_n/∂(W a_n + b),
  so ‖∇_W ℓ_n‖² = ‖δ_n‖²‖a_n‖² (Goodfellow 2015, "Efficient per-example gradient
  computations"): one forward and one backward pass per chunk;
* otherwise ``vmap(grad(ℓ_n))`` over the samples of a chunk with ``functional_call``.

Eval mode either way, so each sample's loss depends on that sample only.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from ddscope.catalogue import OPTIONS
from ddscope.metrics.jacobian import eval_mode
from ddscope.metrics.losses import Loss, loss_fn


def per_sample_grad_sq(model: nn.Module, x: Tensor, y: Tensor, *, chunk_size: int = OPTIONS["grad_chunk"],
                       loss: Loss = "cross_entropy") -> Tensor:
    """‖∇_θ L_n‖² for every sample, (N,), over all parameters with requires_grad, L_n = ℓ(f(x_n), y_n)."""
    parts = per_sample_grad_sq_by_param(model, x, y, chunk_size=chunk_size, loss=loss)
    return sum(parts.values()) if parts else x.new_zeros(len(x))


def per_sample_grad_sq_by_param(model: nn.Module, x: Tensor, y: Tensor, *, chunk_size: int = OPTIONS["grad_chunk"],
                                loss: Loss = "cross_entropy") -> dict[str, Tensor]:
    """``{parameter name: ‖∇_{θ_name} L_n‖² (N,)}`` over the parameters with requires_grad.

    ``y`` is whatever ``loss`` takes as targets, one row per sample (labels, or the vectors v
    of a callable loss ``(out, v) -> (out·v).sum(1)``); it is chunked with x.
    """
    linears = _trained_linears(model)
    if linears is not None:
        with eval_mode(model):
            parts: list[dict[str, Tensor]] = []
            for s in range(0, len(x), chunk_size):
                part = _linear_grad_sq(model, linears, x[s : s + chunk_size], y[s : s + chunk_size], loss)
                if part is None:  # a layer called twice or on a non-(B, in) input: the shortcut does not apply
                    break
                parts.append(part)
            else:
                return _concat(parts, x)
    return _per_sample_grad_sq_vmap(model, x, y, chunk_size, loss)


def _concat(parts: list[dict[str, Tensor]], x: Tensor) -> dict[str, Tensor]:
    if not parts:
        return {}
    return {name: torch.cat([p[name] for p in parts]) for name in parts[0]}


def _trained_linears(model: nn.Module) -> list[nn.Linear] | None:
    """The modules owning parameters with requires_grad, if all of them are ``nn.Linear``."""
    owners = [m for m in model.modules(remove_duplicate=False)
              if any(p.requires_grad for p in m.parameters(recurse=False))]
    if not owners or any(type(m) is not nn.Linear for m in owners):
        return None
    # A parameter shared by two layers (tied weights) gets the sum of both layers' gradients, whose
    # square is not the sum of their squares: only the generic per-sample path is right then.
    ids = [id(p) for m in owners for p in m.parameters(recurse=False)]
    if len(ids) != len(set(ids)) or len(set(map(id, owners))) != len(owners):
        return None
    return owners


def _linear_grad_sq(model: nn.Module, linears: list[nn.Linear], x: Tensor, y: Tensor,
                    loss: Loss) -> dict[str, Tensor] | None:
    """``{name: ‖δ_n‖²‖a_n‖² (weight) or ‖δ_n‖² (bias)}`` for one chunk, each (B,); ``None`` when
    a layer is not called exactly once on a (B, in) input (then the caller falls back to vmap)."""
    seen: dict[nn.Module, list[tuple[Tensor, Tensor]]] = {m: [] for m in linears}
    paths = {m: name for name, m in model.named_modules()}

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
    out: dict[str, Tensor] = {}
    for m, c, delta in zip(linears, calls, deltas):
        prefix = f"{paths[m]}." if paths[m] else ""
        d2 = delta.detach().square().sum(1)
        if m.weight.requires_grad:
            out[prefix + "weight"] = d2 * c[0][0].detach().square().sum(1)
        if m.bias is not None and m.bias.requires_grad:
            out[prefix + "bias"] = d2
    return out


def _per_sample_grad_sq_vmap(model: nn.Module, x: Tensor, y: Tensor, chunk_size: int,
                             loss: Loss = "cross_entropy") -> dict[str, Tensor]:
    """``{name: ‖∇_name L_n‖²}`` by ``vmap(grad(L_n))`` over the samples of each chunk (any model)."""
    named = dict(model.named_parameters())
    params = {n: p.detach() for n, p in named.items() if p.requires_grad}
    fixed = {n: p.detach() for n, p in named.items() if not p.requires_grad}
    fixed.update({n: b.detach() for n, b in model.named_buffers()})
    ell = loss_fn(loss)

    def loss_one(params: dict[str, Tensor], xn: Tensor, yn: Tensor) -> Tensor:
        out = functional_call(model, {**fixed, **params}, (xn.unsqueeze(0),))
        return ell(out, yn.unsqueeze(0), "sum")

    per_sample = vmap(grad(loss_one), in_dims=(None, 0, 0))
    parts = []
    with eval_mode(model), torch.no_grad():
        for start in range(0, len(x), chunk_size):
            grads = per_sample(params, x[start : start + chunk_size], y[start : start + chunk_size])
            # reshape, not flatten(1): a 0-d parameter's per-sample gradient is (B,)
            parts.append({n: g.reshape(len(g), -1).square().sum(1) for n, g in grads.items()})  # (B,) each
    return _concat(parts, x)


__all__ = ["per_sample_grad_sq", "per_sample_grad_sq_by_param"]
