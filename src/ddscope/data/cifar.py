"""CIFAR-10 and CIFAR-100 from the published "python version" archives (never downloaded).

Krizhevsky, "Learning Multiple Layers of Features from Tiny Images", 2009;
https://www.cs.toronto.edu/~kriz/cifar.html. Extract the archives into ``data.root``::

    <root>/cifar-10-batches-py/data_batch_1 .. data_batch_5, test_batch     (key 'labels')
    <root>/cifar-100-python/train, test                                     (key 'fine_labels')

Each file is a Python pickle of a dict with ``data``, a (N, 3072) uint8 array whose rows hold the
1024 red, then green, then blue pixels of a 32x32 image in row-major order, and the labels as a
list of ints. The files were written by Python 2, so they are read with ``encoding="bytes"``
(keys arrive as ``b'data'``); str keys are accepted too. Unpickling is restricted to NumPy arrays
and plain containers: a data file can never run code.

CIFAR-10: 50 000 training / 10 000 test images, 10 classes; CIFAR-100: the same sizes, 100 fine
classes. Images are standardised with the training set's per-channel mean and std.
"""

from __future__ import annotations

import importlib
import pickle
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from .source import Dataset, standardise

URL = "https://www.cs.toronto.edu/~kriz/cifar.html"
# data-set name -> (title, folder, training files, test file, label key, classes, archive)
SETS = {
    "cifar10": (
        "CIFAR-10", "cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), "test_batch",
        "labels", 10, "cifar-10-python.tar.gz",
    ),
    "cifar100": ("CIFAR-100", "cifar-100-python", ("train",), "test", "fine_labels", 100, "cifar-100-python.tar.gz"),
}
PIXELS = 3 * 32 * 32  # values per row of 'data'


class MalformedFile(Exception):
    """A batch file that is not a CIFAR pickle; turned into a UserError by the caller."""


def _numpy_attr(module: str, name: str):
    # NumPy 2 moved numpy.core to numpy._core; pickles name either, depending on who wrote them.
    for mod in (module, module.replace("numpy.core", "numpy._core"), module.replace("numpy._core", "numpy.core")):
        try:
            return getattr(importlib.import_module(mod), name)
        except (ImportError, AttributeError):
            continue
    raise pickle.UnpicklingError(f"cannot resolve {module}.{name}")


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that only resolves what an array-of-bytes batch needs."""

    ALLOWED = frozenset({
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # bytes pickled by Python 3 at protocol < 3
    })

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        if module == "_codecs":
            import codecs

            return codecs.encode
        return _numpy_attr(module, name)


def write_batch(
    path: str | Path, data: np.ndarray, labels, label_key: str = "labels", bytes_keys: bool = True
) -> None:
    """Write a batch file in the published layout (used by tests to build small fixtures).

    ``data`` is (N, 3072) uint8; ``bytes_keys`` mimics the Python 2 originals as read with
    ``encoding="bytes"`` (``b'data'``), otherwise the keys are str.
    """
    data = np.ascontiguousarray(data, dtype=np.uint8)
    d = {
        "batch_label": f"{Path(path).name} (ddscope fixture)".encode(),
        label_key: [int(v) for v in labels],
        "data": data,
        "filenames": [f"img_{i}.png".encode() for i in range(data.shape[0])],
    }
    if bytes_keys:
        d = {k.encode(): v for k, v in d.items()}
    with open(path, "wb") as f:
        pickle.dump(d, f, protocol=2)


def read_batch(path: str | Path, label_key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """``(data, labels)`` of one batch file: uint8 (N, 3072) and int64 (N,).

    Raises:
        MalformedFile: not a pickle of the expected dict, wrong dtype/shape, or labels out of range.
    """
    try:
        with open(path, "rb") as f:
            d = _ArrayUnpickler(f, encoding="bytes").load()
    except Exception as e:  # noqa: BLE001 -- truncation or garbage surfaces as any of a dozen exception types
        raise MalformedFile(f"not a readable pickle ({type(e).__name__}: {e})") from None
    if not isinstance(d, dict):
        raise MalformedFile(f"expected a dict, found {type(d).__name__}")
    d = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in d.items()}
    for key in ("data", label_key):
        if key not in d:
            raise MalformedFile(f"no '{key}' entry (found {', '.join(map(str, d)) or 'none'})")
    data = d["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != PIXELS:
        desc = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise MalformedFile(f"'data' must be a uint8 array of shape (N, {PIXELS}), found {desc}")
    try:
        labels = np.asarray(d[label_key], dtype=np.int64).reshape(-1)
    except (TypeError, ValueError) as e:
        raise MalformedFile(f"'{label_key}' is not a list of integers ({e})") from None
    if labels.shape[0] != data.shape[0]:
        raise MalformedFile(f"{data.shape[0]} images but {labels.shape[0]} labels")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise MalformedFile(f"labels outside 0..{num_classes - 1}")
    return data, labels


def read_raw(root: str | Path, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x_train, y_train, x_test, y_test)``: uint8 images (N, 3, 32, 32) as stored, int64 labels.

    ``name`` is ``"cifar10"`` or ``"cifar100"``. Missing or malformed files raise a one-line
    :class:`UserError` naming the expected path and where the archive is published.
    """
    title, sub, train_files, test_file, label_key, num_classes, archive = SETS[name]
    folder = Path(root) / sub

    def read(stem: str) -> tuple[np.ndarray, np.ndarray]:
        path = folder / stem
        if not path.is_file():
            raise UserError(f"{title} file not found: expected {path}; extract {archive} from {URL} into {root}")
        try:
            data, labels = read_batch(path, label_key, num_classes)
        except MalformedFile as e:
            raise UserError(f"{title} file {path} is corrupted: {e}; re-extract {archive} from {URL}") from None
        return data.reshape(-1, 3, 32, 32), labels  # (N, 3072) -> (N, C, H, W): channel-major rows

    train = [read(stem) for stem in train_files]
    x_test, y_test = read(test_file)
    x_train = np.concatenate([x for x, _ in train])
    y_train = np.concatenate([y for _, y in train])
    return x_train, y_train, x_test, y_test




def load(root: str | Path, name: str) -> Dataset:
    """CIFAR-10/100 as float32 (N, 3, 32, 32), standardised by the training set."""
    x_train, y_train, x_test, y_test = read_raw(root, name)
    xt, xs = standardise(x_train, x_test)
    num_classes = SETS[name][5]
    return Dataset(name, xt, torch.from_numpy(y_train), xs, torch.from_numpy(y_test), num_classes=num_classes)


def load_cifar10(cfg) -> Dataset:
    """The catalogue's loader: CIFAR-10 from ``data.root``."""
    return load(cfg.root, "cifar10")


def load_cifar100(cfg) -> Dataset:
    """The catalogue's loader: CIFAR-100 from ``data.root``."""
    return load(cfg.root, "cifar100")


__all__ = ["load", "load_cifar10", "load_cifar100", "read_raw", "read_batch", "write_batch", "MalformedFile", "URL"]
