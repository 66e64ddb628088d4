"""MNIST-1D (Greydanus & Steinbach, 2024), generated offline with ``mnist1d.data.make_dataset``.

Never uses the package's download path. The generated arrays are cached on disk, keyed by the
generation arguments, so every trial of a sweep (and every worker process) reads the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch

from .source import Dataset


def cache_dir() -> Path:
    """``$DDSCOPE_CACHE`` or ``~/.cache/ddscope``."""
    return Path(os.environ.get("DDSCOPE_CACHE", Path.home() / ".cache" / "ddscope"))


def generate(num_samples: int = 16000, train_split: float = 0.25, seed: int = 42) -> dict[str, np.ndarray]:
    """Run ``make_dataset`` with the package's default arguments except those given.

    ``make_dataset`` reseeds NumPy's global RNG; its state is restored afterwards so callers'
    randomness is unaffected.
    """
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples, args.train_split, args.seed = num_samples, train_split, seed
    state = np.random.get_state()
    try:
        d = make_dataset(args)
    finally:
        np.random.set_state(state)
    return {k: np.asarray(d[k]) for k in ("x", "y", "x_test", "y_test")}


def load(num_samples: int = 16000, train_split: float = 0.25, seed: int = 42) -> Dataset:
    """MNIST-1D as float32 tensors (N, 40), already centred to unit std by ``make_dataset``."""
    key = json.dumps({"n": num_samples, "split": train_split, "seed": seed, "v": 1}, sort_keys=True)
    path = cache_dir() / f"mnist1d-{hashlib.sha1(key.encode()).hexdigest()[:12]}.npz"
    arrays = None
    if path.exists():
        try:
            with np.load(path) as z:
                arrays = {k: z[k] for k in ("x", "y", "x_test", "y_test")}
        except Exception:  # a torn or foreign file: regenerate it
            arrays = None
    if arrays is None:
        arrays = generate(num_samples, train_split, seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, path)  # atomic: concurrent workers never read half a file
    return Dataset(
        name="mnist1d",
        x_train=torch.from_numpy(arrays["x"].astype(np.float32)),
        y_train=torch.from_numpy(arrays["y"].astype(np.int64)),
        x_test=torch.from_numpy(arrays["x_test"].astype(np.float32)),
        y_test=torch.from_numpy(arrays["y_test"].astype(np.int64)),
        num_classes=10,
    )


def load_config(cfg) -> Dataset:
    """The catalogue's loader: MNIST-1D with ``data.num_samples`` and ``data.train_split``."""
    return load(cfg.num_samples, cfg.train_split)
