"""Your own data: a NumPy ``.npz`` file (``data.name = "npz"``, ``data.path``) or a function
(``data.name = "package.module:function"``) returning the same arrays.

Arrays: ``x_train`` (N, ...) and ``x_test`` (M, ...) of any shape (converted to float32),
``y_train`` (N,) and ``y_test`` (M,) integer class labels ≥ 0, and optionally ``x_val``, ``y_val``
(used as the validation split when ``data.val_size`` is 0). The number of classes is the largest
label + 1. Label noise, ``n_train`` subsets and every metric then work as on the built-in sources.
A missing file or array, mismatched lengths or non-integer labels are a :class:`UserError`
naming the key.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from ..config import DataConfig
from ..errors import UserError
from ..imports import load_callable
from .source import Dataset

REQUIRED = ("x_train", "y_train", "x_test", "y_test")
# Classes a label may name: the output layer and every one-hot tensor have this many columns,
# so a label of 2**40 would ask for terabytes. Far above any classification data set.
MAX_CLASSES = 100_000


def _labels(y, name: str, where: str) -> torch.Tensor:
    y = np.asarray(y)
    if y.ndim != 1:
        raise UserError(f"{where}: '{name}' must be one label per sample (N,), got shape {y.shape}")
    if y.dtype == bool or not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)):
        raise UserError(f"{where}: '{name}' must hold integer class labels, got dtype {y.dtype}")
    if np.issubdtype(y.dtype, np.floating):
        if y.size and not (np.all(np.isfinite(y)) and np.all(y == np.round(y))):
            raise UserError(f"{where}: '{name}' must hold integer class labels, got dtype {y.dtype} with "
                            "fractional or non-finite values")
    # range first, in the array's own type: a cast would wrap uint64 and overflow 1e30 silently
    if y.size and y.min() < 0:
        raise UserError(f"{where}: '{name}' has a negative label ({y.min().item()!r}); labels are 0 .. C-1")
    if y.size and y.max() >= MAX_CLASSES:
        raise UserError(f"{where}: '{name}' has a label of {y.max().item()!r}; labels are 0 .. C-1 with C at most "
                        f"{MAX_CLASSES} (renumber the classes 0, 1, …)")
    return torch.from_numpy(y.astype(np.int64))


def from_arrays(arrays: Mapping, name: str, where: str) -> Dataset:
    """A :class:`Dataset` from user arrays, checked; ``where`` names the key for the errors."""
    missing = [k for k in REQUIRED if k not in arrays]
    if missing:
        raise UserError(f"{where}: missing array(s) {', '.join(missing)}; needs {', '.join(REQUIRED)} "
                        "(and optionally x_val, y_val)")
    parts = {}
    for split in ("train", "test", "val"):
        if (f"x_{split}" in arrays) != (f"y_{split}" in arrays):
            raise UserError(f"{where}: x_{split} and y_{split} come together (one without the other is ignored "
                            "nowhere: give both or neither)")
        if f"x_{split}" not in arrays and split == "val":
            continue
        x = np.asarray(arrays[f"x_{split}"])
        if x.ndim < 2 or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
            raise UserError(f"{where}: 'x_{split}' must be numeric samples (N, ...), got shape {x.shape}, "
                            f"dtype {x.dtype}")
        if np.iscomplexobj(x):
            raise UserError(f"{where}: 'x_{split}' is complex ({x.dtype}); give real inputs (e.g. the real and "
                            "imaginary parts as two channels)")
        if x.shape[0] and np.prod(x.shape[1:]) == 0:
            raise UserError(f"{where}: 'x_{split}' has samples of shape {x.shape[1:]} with no features")
        if x.size and not np.all(np.isfinite(x)):
            bad = int(np.count_nonzero(~np.isfinite(x)))
            raise UserError(f"{where}: 'x_{split}' holds {bad} NaN or infinite value(s); every input must be finite")
        y = _labels(arrays[f"y_{split}"], f"y_{split}", where)
        if len(x) != len(y):
            raise UserError(f"{where}: x_{split} has {len(x)} samples but y_{split} has {len(y)}")
        parts[split] = (torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), y)
    shapes = {s: tuple(x.shape[1:]) for s, (x, _) in parts.items()}
    if len(set(shapes.values())) > 1:
        raise UserError(f"{where}: the splits' samples differ in shape: {shapes}")
    classes = 1 + max(int(y.max()) for _, y in parts.values() if len(y))
    val = parts.get("val")
    return Dataset(name=name, x_train=parts["train"][0], y_train=parts["train"][1], x_test=parts["test"][0],
                   y_test=parts["test"][1], num_classes=classes,
                   x_val=None if val is None else val[0], y_val=None if val is None else val[1])


def load_npz(cfg: DataConfig) -> Dataset:
    path = Path(cfg.path)
    where = f"config key 'data.path' ({path})"
    if not path.is_file():
        raise UserError(f"config key 'data.path': {path} not found (data.name = \"npz\" reads a NumPy .npz file)")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except Exception as e:  # noqa: BLE001 — a file numpy cannot read
        raise UserError(f"{where}: not a readable .npz file ({type(e).__name__}: {e})") from None
    return from_arrays(arrays, f"npz:{path.name}", where)


def load_function(cfg: DataConfig) -> Dataset:
    """``data.name = "package.module:function"``: ``function(data_config)`` returns the arrays."""
    where = f"config key 'data.name' ({cfg.name})"
    fn = load_callable(cfg.name, "data.name")
    try:
        arrays = fn(cfg)
    except UserError:
        raise
    except KeyboardInterrupt:
        raise
    except BaseException as e:  # noqa: BLE001 — the user's loader: any error (sys.exit included) is theirs to fix
        lines = str(e).strip().splitlines()
        raise UserError(f"{where}: the data function raised {type(e).__name__}"
                        f"{': ' + lines[0] if lines else ''}") from None
    if not isinstance(arrays, Mapping):
        raise UserError(f"{where}: the function must return a mapping of arrays ({', '.join(REQUIRED)}), "
                        f"got {type(arrays).__name__}")
    return from_arrays(arrays, cfg.name, where)


__all__ = ["REQUIRED", "from_arrays", "load_function", "load_npz"]
