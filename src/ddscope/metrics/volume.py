"""Sharpness over volumes around training points (Gamba et al., TMLR 2023; docs/design.md §6).

For training points x_n with their training labels y_n (the noisy ones where a label was
corrupted) and a sampler of :mod:`.neighbourhood` — K balls or K geodesic paths per point —
:func:`volume_measures` returns, with g the chosen output map (``logits``, ``softmax``,
``log_softmax`` or the per-sample ``loss``, the paper's main one) and ℓ the trial's loss:

- ``vol_jac_spec_rms`` = (E ‖∂g/∂x(z)‖₂²)^½ and ``vol_jac_fro_rms`` = (E ‖∂g/∂x(z)‖_F²)^½,
- ``vol_loss`` = E ℓ(f(z), y_n) and ``vol_acc`` = E 1[argmax f(z) = y_n] — how much of the
  neighbourhood still predicts the training label (for a noisy point: the noisy one),

where E is the mean over the points z of the balls (Monte-Carlo integration over the volume), or,
for paths, the mean over paths of (1/ℓ) ∫ · ds along each polygonal path (trapezoid rule over its
arc length, :func:`~ddscope.metrics.neighbourhood.path_average`). Along paths also, by finite
differences of g between consecutive anchors a_i (h_i = ‖a_{i+1} − a_i‖):

- ``vol_tangent_jac`` = the rms of ‖g(a_{i+1}) − g(a_i)‖ / h_i, weighted by h_i: the directional
  derivative along the path;
- ``vol_tangent_hess`` = the rms over interior anchors of
  ‖2 ((g(a_{i+1}) − g(a_i)) / h_i − (g(a_i) − g(a_{i−1})) / h_{i−1}) / (h_{i−1} + h_i)‖, the second
  derivative along the path (paths of three anchors or more).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..catalogue import OPTIONS
from .jacobian import eval_mode, jacobian_norms, output_of
from .losses import Loss, loss_fn
from .neighbourhood import Sampler, draw, path_average

FORWARD_CHUNK = 4096  # points per forward pass for the losses, accuracies and output values


def _forward(model: nn.Module, z: Tensor, y: Tensor, output: str, loss: Loss) -> tuple[Tensor, Tensor, Tensor]:
    """(per-point loss (P,), 1 where the prediction is the label (P,), g(z) (P, C'))."""
    ell = loss_fn(loss)
    losses, hits, values = [], [], []
    with torch.no_grad(), eval_mode(model):
        for s in range(0, len(z), FORWARD_CHUNK):
            zz, yy = z[s : s + FORWARD_CHUNK], y[s : s + FORWARD_CHUNK]
            logits = model(zz)
            losses.append(ell(logits, yy))
            hits.append((logits.reshape(len(zz), -1).argmax(1) == yy).to(logits.dtype))
            values.append(output_of(logits, output, yy, loss))  # g from the same forward pass
    return torch.cat(losses), torch.cat(hits), torch.cat(values)


def volume_measures(model: nn.Module, x: Tensor, y: Tensor, sampler: Sampler, *, k: int = OPTIONS["vol_k"],
                    output: str = OPTIONS["vol_output"], loss: Loss = OPTIONS["loss"],
                    generator: torch.Generator | None = None, chunk_size: int | None = None) -> dict[str, float]:
    """The volume quantities of the module docstring for the points ``x`` (N, *shape) with labels
    ``y`` (N,), over ``sampler``'s K balls or paths per point."""
    if len(x) == 0:
        raise ValueError("volume_measures needs at least one point")
    gen = generator if generator is not None else torch.Generator(device="cpu").manual_seed(0)
    pts = draw(sampler, x, k, gen)  # (N, K, *shape) or (N, K, A, *shape)
    lead = pts.shape[: 3 if sampler.is_path else 2]
    z = pts.reshape(-1, *x.shape[1:])  # (P, *shape)
    yz = y.repeat_interleave(len(z) // len(x))  # (P,) every point's z carry its label
    norms = jacobian_norms(model, z, y=yz, output=output, loss=loss, chunk_size=chunk_size, generator=gen)
    spec2, fro2 = norms.spec.square().reshape(lead), norms.fro.square().reshape(lead)
    losses, hits, values = _forward(model, z, yz, output, loss)
    losses, hits = losses.reshape(lead), hits.reshape(lead)
    if not sampler.is_path:
        return {"vol_jac_spec_rms": float(spec2.mean().sqrt()), "vol_jac_fro_rms": float(fro2.mean().sqrt()),
                "vol_loss": float(losses.mean()), "vol_acc": float(hits.mean())}
    out = {"vol_jac_spec_rms": float(path_average(spec2, pts).mean().sqrt()),
           "vol_jac_fro_rms": float(path_average(fro2, pts).mean().sqrt()),
           "vol_loss": float(path_average(losses, pts).mean()), "vol_acc": float(path_average(hits, pts).mean())}
    g = values.reshape(*lead, -1)  # (N, K, A, C')
    flat = pts.reshape(*lead, -1)  # (N, K, A, D)
    h = (flat[..., 1:, :] - flat[..., :-1, :]).norm(dim=-1)  # (N, K, A − 1)
    safe = h.clamp_min(torch.finfo(h.dtype).tiny)
    slope = (g[..., 1:, :] - g[..., :-1, :]) / safe.unsqueeze(-1)  # (N, K, A − 1, C')
    w = h / h.sum(-1, keepdim=True).clamp_min(torch.finfo(h.dtype).tiny)  # length weights per path
    out["vol_tangent_jac"] = float((w * slope.norm(dim=-1).square()).sum(-1).mean().sqrt())
    if lead[-1] >= 3:
        curve = 2 * (slope[..., 1:, :] - slope[..., :-1, :]) / (h[..., 1:] + h[..., :-1]).clamp_min(
            torch.finfo(h.dtype).tiny).unsqueeze(-1)  # (N, K, A − 2, C')
        out["vol_tangent_hess"] = float(curve.norm(dim=-1).square().mean().sqrt())
    return out


__all__ = ["FORWARD_CHUNK", "volume_measures"]
