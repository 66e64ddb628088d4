"""Seeded label noise in the two conventions of the double-descent literature.

- ``uniform`` (MNIST-1D, Greydanus 2024; Nakkiran et al. 2020 appendix): each sample independently,
  with probability p, gets a label drawn uniformly from all C classes; it may keep its true label.
- ``flip`` (the CIFAR papers, e.g. Gamba et al. 2023): exactly round(p·N) samples, drawn without
  replacement, get their label shifted by a random offset in 1..C-1 (mod C), so every one is wrong.
"""

from __future__ import annotations

import torch


def apply_label_noise(
    y: torch.Tensor, p: float, kind: str, num_classes: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(y_noisy, mask)``: the noisy labels (N,) and the bool mask (N,) of samples whose
    label was redrawn (``uniform``) or flipped (``flip``)."""
    n = y.shape[0]
    y_noisy = y.clone()
    if kind == "uniform":
        mask = torch.rand(n, generator=generator) < p
        y_noisy[mask] = torch.randint(0, num_classes, (int(mask.sum()),), generator=generator)
    elif kind == "flip":
        k = int(round(p * n))
        idx = torch.randperm(n, generator=generator)[:k]
        mask = torch.zeros(n, dtype=torch.bool)
        mask[idx] = True
        offset = torch.randint(1, num_classes, (k,), generator=generator)
        y_noisy[idx] = (y[idx] + offset) % num_classes
    else:
        raise ValueError(f"unknown noise kind '{kind}'; allowed: uniform, flip")
    return y_noisy, mask
