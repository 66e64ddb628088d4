"""MNIST and Fashion-MNIST from their published IDX files (never downloaded at run time).

Expected layout, each file either raw or gzipped (``.gz``, as published)::

    <root>/mnist/train-images-idx3-ubyte[.gz]   <root>/fashion-mnist/train-images-idx3-ubyte[.gz]
    <root>/mnist/train-labels-idx1-ubyte[.gz]   <root>/fashion-mnist/train-labels-idx1-ubyte[.gz]
    <root>/mnist/t10k-images-idx3-ubyte[.gz]    <root>/fashion-mnist/t10k-images-idx3-ubyte[.gz]
    <root>/mnist/t10k-labels-idx1-ubyte[.gz]    <root>/fashion-mnist/t10k-labels-idx1-ubyte[.gz]

IDX format (LeCun et al., "Gradient-based learning applied to document recognition", 1998;
Xiao, Rasul & Vollgraf, "Fashion-MNIST", 2017): a big-endian int32 magic number whose third
byte is the element type (0x08 = unsigned byte) and fourth the number of dimensions (images
0x00000803 = 2051, labels 0x00000801 = 2049), one big-endian int32 per dimension, then the
elements in C order. Both data sets: 60 000 training and 10 000 test images of 28x28, 10 classes.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from .source import Dataset, standardise

UBYTE = 0x08
MAGIC_IMAGES = (UBYTE << 8) | 3  # 2051
MAGIC_LABELS = (UBYTE << 8) | 1  # 2049
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
# data-set name -> (folder under data.root, display name, where the files are published)
SETS = {
    "mnist": ("mnist", "MNIST", "https://yann.lecun.com/exdb/mnist/ (mirror: https://ossci-datasets.s3.amazonaws.com/mnist/)"),
    "fashion_mnist": ("fashion-mnist", "Fashion-MNIST", "https://github.com/zalandoresearch/fashion-mnist"),
}


class MalformedFile(Exception):
    """An IDX file whose bytes do not match its header; turned into a UserError by the caller."""


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file; gzipped when ``path`` ends in ``.gz``."""
    array = np.ascontiguousarray(array)
    if array.dtype != np.uint8:
        raise TypeError(f"write_idx writes unsigned bytes only, got dtype {array.dtype}")
    header = ((UBYTE << 8) | array.ndim).to_bytes(4, "big")
    header += b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    blob = header + array.tobytes()
    path = Path(path)
    path.write_bytes(gzip.compress(blob) if path.suffix == ".gz" else blob)


def read_idx(path: str | Path, ndim: int) -> np.ndarray:
    """Read an unsigned-byte IDX file of ``ndim`` dimensions (gzipped if ``.gz``).

    Raises:
        MalformedFile: bad gzip stream, wrong magic number, or a size that does not match the header.
    """
    path = Path(path)
    try:
        blob = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise MalformedFile(f"unreadable ({e})") from None
    head = 4 + 4 * ndim
    if len(blob) < head:
        raise MalformedFile(f"only {len(blob)} bytes, shorter than the {head}-byte header")
    magic = int.from_bytes(blob[:4], "big")
    expected = (UBYTE << 8) | ndim
    if magic != expected:
        raise MalformedFile(f"magic number {magic}, expected {expected}")
    shape = tuple(int.from_bytes(blob[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    size = math.prod(shape)
    if len(blob) - head != size:
        raise MalformedFile(f"header says {'x'.join(map(str, shape))} = {size} bytes of data, found {len(blob) - head}")
    # frombuffer views the immutable bytes; copy so torch.from_numpy gets a writable array
    return np.frombuffer(blob, dtype=np.uint8, offset=head).reshape(shape).copy()


def _find(folder: Path, stem: str, title: str, url: str) -> Path:
    for path in (folder / stem, folder / f"{stem}.gz"):
        if path.is_file():
            return path
    raise UserError(f"{title} file not found: expected {folder / stem} (or .gz); the IDX files are published at {url}")


def read_raw(root: str | Path, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x_train, y_train, x_test, y_test)``: uint8 images (N, 1, H, W) as stored, int64 labels.

    ``name`` is ``"mnist"`` or ``"fashion_mnist"``; files are looked up in ``<root>/<folder>/``.
    Missing or malformed files raise a one-line :class:`UserError` naming the file.
    """
    sub, title, url = SETS[name]
    folder = Path(root) / sub
    arrays = {}
    for key, stem in FILES.items():
        path = _find(folder, stem, title, url)
        try:
            arrays[key] = read_idx(path, ndim=3 if key.endswith("images") else 1)
        except MalformedFile as e:
            raise UserError(f"{title} file {path} is corrupted: {e}; re-download it from {url}") from None
    for split in ("train", "test"):
        x, y = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if x.shape[0] != y.shape[0]:
            raise UserError(
                f"{title} {split} files in {folder} disagree: {x.shape[0]} images but {y.shape[0]} labels; re-download them from {url}"
            )
        if y.size and y.max() >= 10:
            raise UserError(f"{title} {split} labels in {folder} contain class {y.max()}, expected 0..9; re-download them from {url}")
    # (N, H, W) -> (N, 1, H, W): one grey channel
    return (
        arrays["train_images"][:, None],
        arrays["train_labels"].astype(np.int64),
        arrays["test_images"][:, None],
        arrays["test_labels"].astype(np.int64),
    )




def load(root: str | Path, name: str) -> Dataset:
    """MNIST or Fashion-MNIST as float32 (N, 1, 28, 28), standardised by the training set."""
    x_train, y_train, x_test, y_test = read_raw(root, name)
    xt, xs = standardise(x_train, x_test)
    return Dataset(name, xt, torch.from_numpy(y_train), xs, torch.from_numpy(y_test), num_classes=10)


def load_mnist(cfg) -> Dataset:
    """The catalogue's loader: MNIST from ``data.root``."""
    return load(cfg.root, "mnist")


def load_fashion_mnist(cfg) -> Dataset:
    """The catalogue's loader: Fashion-MNIST from ``data.root``."""
    return load(cfg.root, "fashion_mnist")


__all__ = ["load", "load_fashion_mnist", "load_mnist", "read_raw", "read_idx", "write_idx", "MalformedFile", "MAGIC_IMAGES", "MAGIC_LABELS", "FILES"]
