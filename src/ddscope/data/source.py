"""The in-memory form every data source returns."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Dataset:
    """A data set as tensors: inputs (N, *input_shape) float32, labels (N,) int64."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    x_val: torch.Tensor | None = None  # a validation split of its own (user data), used when data.val_size = 0
    y_val: torch.Tensor | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


def standardise(x_train: np.ndarray, x_test: np.ndarray, scale: float = 255.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer images (N, C, H, W) -> float32 / ``scale``, minus the training set's per-channel
    mean, over its per-channel std (the same statistics are applied to the test set)."""
    tr = torch.from_numpy(x_train).float() / scale
    te = torch.from_numpy(x_test).float() / scale
    mean = tr.mean(dim=(0, 2, 3), keepdim=True)  # (1, C, 1, 1)
    std = tr.std(dim=(0, 2, 3), keepdim=True)
    return (tr - mean) / std, (te - mean) / std
