"""scikit-learn's bundled handwritten digits: 1 797 grey images of 8x8 pixels, 10 classes.

The copy of the UCI "Optical Recognition of Handwritten Digits" test set that ships inside
scikit-learn (``sklearn.datasets.load_digits``), so it needs no download and no ``data.root``.
Pixels are integers 0..16. Fixed split, independent of any seed: the first 1 347 samples (75 %)
are the training set, the last 450 the test set (the published order interleaves the classes,
so both parts are close to balanced: 133-137 resp. 41-48 per class).

scikit-learn is an optional dependency (``pip install 'ddscope[digits]'``).
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import UserError
from .source import Dataset, standardise

N_TRAIN = 1347
MAX_VALUE = 16  # pixel intensities are counts of set bits in 4x4 blocks: 0..16


def read_raw() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x_train, y_train, x_test, y_test)``: uint8 images (N, 1, 8, 8) in 0..16, int64 labels."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise UserError(
            "data set 'digits' needs scikit-learn: pip install scikit-learn (or 'ddscope[digits]')"
        ) from None
    d = load_digits()
    x = d.images.astype(np.uint8)[:, None]  # (1797, 8, 8) float64 0..16 -> (1797, 1, 8, 8) uint8
    y = d.target.astype(np.int64)
    return x[:N_TRAIN], y[:N_TRAIN], x[N_TRAIN:], y[N_TRAIN:]




def load() -> Dataset:
    """Digits as float32 (N, 1, 8, 8), standardised with the training set's mean and std."""
    x_train, y_train, x_test, y_test = read_raw()
    xt, xs = standardise(x_train, x_test, MAX_VALUE)
    return Dataset("digits", xt, torch.from_numpy(y_train), xs, torch.from_numpy(y_test), num_classes=10)


def load_config(cfg) -> Dataset:
    """The catalogue's loader (the digits take no setting)."""
    return load()


__all__ = ["load", "load_config", "read_raw", "N_TRAIN"]
