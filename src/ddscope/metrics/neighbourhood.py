"""Neighbourhoods of training points: the samplers of the ``volume`` metric group.

Gamba, Englesson, Björkman & Azizpour, *Deep Double Descent via Smooth Interpolation* (TMLR 2023)
measure the smoothness of the learned function not only at a training point x but over a volume
around it, spanned by weak augmentations of x (docs/design.md §6). Two kinds of sampler:

- a **ball** sampler ``name@s`` draws, for each point, K augmentations a_k = A(x, s) and one
  radius t_k ~ U(0, 1] each, and returns the points x + t_k (a_k − x): Monte-Carlo samples of the
  star-shaped volume that the augmentation directions span around x;
- a **path** sampler ``name@s1,s2,...`` (two or more increasing strengths) returns, for each point,
  K geodesic paths through the anchors x → A(x, s1) → A(x, s2) → …, each path drawn with one
  random state (the same direction of shift at every strength), so that a path is a chain of
  ever stronger versions of one augmentation of x. Quantities are integrated along the polygon
  through the anchors by the trapezoid rule over its length (:func:`path_average`).

Augmentations ``A(x, strength, generator) -> x'`` act on a batch x (N, *shape) of samples:

- ``shift``: a circular shift by ``strength`` pixels along the last axis of a 1-D signal (L,) or
  (C, L) — left or right at random — and along one of the two spatial axes of an image (C, H, W)
  — up, down, left or right at random (the paper's "1-px shifts", "4-px shifts").
- ``erase``: remove the ``strength`` smallest components of each channel: of an image channel its
  smallest singular values (the SVD of the H × W matrix: rank − k remains), of a 1-D signal its
  smallest-magnitude Fourier coefficients (of the real FFT's L // 2 + 1; ddscope's choice for
  signals, where a singular value decomposition needs an arbitrary reshaping). Deterministic.
- ``package.module:function``: your own, called as ``function(x, strength, generator)`` on a batch.

A sampler's label in the store keys: ``<name><s>`` for a ball (``shift1``, ``erase5``) and
``<name>_path<s1>-<sK>`` for a path (``shift_path1-4``); a function's name stands for ``<name>``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..imports import is_import_spec, load_callable
from ..samplers import SAMPLER_FAMILIES, Sampler, check_sampler, parse_sampler, parse_samplers

Augment = Callable[[Tensor, float, torch.Generator], Tensor]


def shift(x: Tensor, strength: float, generator: torch.Generator) -> Tensor:
    """Circular shift of every sample of ``x`` (N, *shape) by ``strength`` pixels in a random
    direction (±1 along the signal axis; up, down, left or right in an image)."""
    s = int(round(strength))
    n = x.shape[0]
    if x.dim() - 1 >= 3:  # images (N, C, H, W): 4 directions
        d = torch.randint(0, 4, (n,), generator=generator, device=generator.device).tolist()
        axes = (x.dim() - 2, x.dim() - 1)
        out = torch.empty_like(x)
        for direction in range(4):
            rows = [i for i, v in enumerate(d) if v == direction]
            if rows:
                idx = torch.tensor(rows, device=x.device)
                out[idx] = torch.roll(x[idx], s if direction % 2 == 0 else -s, dims=axes[direction // 2])
        return out
    sign = torch.randint(0, 2, (n,), generator=generator, device=generator.device).to(x.device)  # (N,)
    right, left = torch.roll(x, s, dims=-1), torch.roll(x, -s, dims=-1)
    keep = sign.reshape(n, *([1] * (x.dim() - 1))).bool()
    return torch.where(keep, right, left)


def erase(x: Tensor, strength: float, generator: torch.Generator | None = None) -> Tensor:
    """Each channel of every sample of ``x`` with its ``strength`` smallest components removed:
    singular values of an image channel (N, C, H, W), Fourier coefficients (by magnitude) of a
    signal (N, L) or (N, C, L)."""
    k = int(round(strength))
    if x.dim() - 1 >= 3:
        u, s, vh = torch.linalg.svd(x, full_matrices=False)  # s: (N, C, min(H, W)), descending
        s = s.clone()
        if k:
            s[..., s.shape[-1] - k:] = 0
        return (u * s.unsqueeze(-2)) @ vh
    length = x.shape[-1]
    f = torch.fft.rfft(x, dim=-1)  # (N, [C,] L//2 + 1)
    if k:
        small = f.abs().argsort(dim=-1)[..., :k]
        f = f.scatter(-1, small, torch.zeros_like(small, dtype=f.dtype))
    return torch.fft.irfft(f, n=length, dim=-1).to(x.dtype)


FAMILIES: dict[str, Augment] = {"shift": shift, "erase": erase}  # names: ddscope.samplers.SAMPLER_FAMILIES


def augment_of(sampler: Sampler) -> Augment:
    """The augmentation function of ``sampler``: a built-in one, or the user's, imported."""
    if sampler.function is not None:
        return sampler.function
    if is_import_spec(sampler.family):
        return load_callable(sampler.family, "metrics.vol_samplers")
    return FAMILIES[sampler.family]


def draw(sampler: Sampler, x: Tensor, k: int, generator: torch.Generator) -> Tensor:
    """The sampler's points around every sample of ``x`` (N, *shape): a ball gives (N, K, *shape)
    points x + t (A(x, s) − x), t ~ U(0, 1]; a path gives (N, K, S + 1, *shape) anchors x, A(x, s1),
    …, A(x, sS), each of the K paths drawn with one random state for all its strengths."""
    if k < 1:
        raise ValueError(f"vol_k must be >= 1 (directions or paths per point), got {k}")
    augment = augment_of(sampler)
    n = x.shape[0]
    big = x.unsqueeze(1).expand(n, k, *x.shape[1:]).reshape(n * k, *x.shape[1:])  # (N·K, *shape)
    if not sampler.is_path:
        a = _checked(augment(big, sampler.strengths[0], generator), big, sampler)
        t = 1 - torch.rand(n * k, generator=generator, device=generator.device).to(x.device, x.dtype)  # (0, 1]
        t = t.reshape(n * k, *([1] * (x.dim() - 1)))
        return (big + t * (a - big)).reshape(n, k, *x.shape[1:])
    state = generator.get_state()
    anchors = [big]
    for s in sampler.strengths:
        generator.set_state(state)  # the same random choices at every strength: one path
        anchors.append(_checked(augment(big, s, generator), big, sampler))
    return torch.stack(anchors, 1).reshape(n, k, len(anchors), *x.shape[1:])


def _checked(out, x: Tensor, sampler: Sampler) -> Tensor:
    if not isinstance(out, Tensor) or out.shape != x.shape:
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"sampler {sampler.spec!r} returned {got} for a batch of shape {tuple(x.shape)}; an "
                         "augmentation must return one sample of the same shape per input sample")
    return out.to(x.dtype)


def path_average(values: Tensor, anchors: Tensor) -> Tensor:
    """The mean of a quantity along each polygonal path, (1/ℓ) ∫₀^ℓ q(γ(s)) ds by the trapezoid
    rule over the path's arc length ℓ: ``values`` (..., S + 1) at the anchors (..., S + 1, *shape);
    a path of length 0 gives the value at its start."""
    flat = anchors.reshape(*values.shape, -1)  # (..., S + 1, D)
    h = (flat[..., 1:, :] - flat[..., :-1, :]).norm(dim=-1)  # (..., S) segment lengths
    total = h.sum(-1)
    integral = (0.5 * (values[..., 1:] + values[..., :-1]) * h).sum(-1)
    return torch.where(total > 0, integral / total.clamp_min(torch.finfo(total.dtype).tiny), values[..., 0])


__all__ = ["FAMILIES", "SAMPLER_FAMILIES", "Sampler", "augment_of", "check_sampler", "draw", "erase", "parse_sampler",
           "parse_samplers", "path_average", "shift"]
