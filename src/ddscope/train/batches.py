"""Where training runs and what it sees: the device, the index batches, the augmentation."""

from __future__ import annotations

import torch

from ..config import TrialConfig
from ..data import TrialData
from ..data.augment import augment_batch
from ..errors import UserError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("config key 'device': 'cuda' was asked for but no CUDA device is available; use cpu or auto")
    return torch.device(name)


def augmenter(cfg: TrialConfig, data: TrialData):
    """``augment(x (B, C, H, W), generator) -> x`` when ``data.augment`` applies (images), else None."""
    return augment_batch if cfg.data.augment and data.x_train.dim() == 4 else None


def index_batches(data: TrialData, batch_size: int, order: torch.Generator, augment, device):
    """One epoch of training mini-batches ``(x (B, ...), y (B,))``: a ``randperm`` drawn from
    ``order`` sliced into index batches (no DataLoader), augmented on the device if asked."""
    perm = torch.randperm(data.x_train.shape[0], generator=order).to(device)
    for i in range(0, perm.shape[0], batch_size):
        idx = perm[i : i + batch_size]
        xb, yb = data.x_train[idx], data.y_train[idx]
        if augment is not None:
            xb = augment(xb, order)
        yield xb, yb


__all__ = ["augmenter", "index_batches", "resolve_device"]
