"""Data sources, subsets, label noise; everything as tensors, batched by index later.

``SOURCES`` maps a data-set name to a loader ``(DataConfig) -> Dataset``. :func:`prepare` turns a
source into the tensors of one trial: optional train subset, validation split, seeded label noise.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import torch

from ..catalogue import SOURCES as CATALOGUE_SOURCES
from ..catalogue import TRACKED, resolve
from ..config import DataConfig
from ..errors import UserError
from ..imports import is_import_spec
from . import user
from .noise import apply_label_noise
from .source import Dataset


# The catalogue's data sources, by name (ddscope.catalogue.SOURCES); "package.module:function"
# names the user's own loader (ddscope.data.user).
SOURCES: dict[str, Callable[[DataConfig], Dataset]] = {name: resolve(s.load) for name, s in CATALOGUE_SOURCES.items()}


@dataclass(frozen=True)
class TrialData:
    """The tensors one trial trains and measures on.

    ``y_train`` holds the (noisy) labels the net is fit on, ``y_train_clean`` the true ones and
    ``noisy_mask`` (N_train,) marks the samples whose training label is wrong.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    y_train_clean: torch.Tensor
    noisy_mask: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    num_classes: int
    name: str

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def to(self, device) -> "TrialData":
        kw = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in self.__dict__.items()}
        return TrialData(**kw)

    def inputs_as(self, dtype: torch.dtype) -> "TrialData":
        """The same data with the inputs in ``dtype`` (a user model built in float64 trains on
        float64 inputs); labels and masks unchanged."""
        if self.x_train.dtype == dtype:
            return self
        kw = {k: (v.to(dtype) if k.startswith("x_") else v) for k, v in self.__dict__.items()}
        return TrialData(**kw)


def load_source(cfg: DataConfig) -> Dataset:
    """Load (and cache per process) the source named by ``cfg.name``.

    The cache key holds only what the sources read (name, folder, MNIST-1D generation
    arguments, a user file or loader and its options), so trials that differ in noise, subset or
    seed share one decoded copy."""
    return _load_source(cfg.name, cfg.root, cfg.num_samples, cfg.train_split, cfg.path, cfg.options)


@functools.lru_cache(maxsize=4)
def _load_source(name: str, root: str, num_samples: int, train_split: float, path: str, options) -> Dataset:
    cfg = DataConfig(name=name, root=root, num_samples=num_samples, train_split=train_split, path=path,
                     options=options)
    if name == TRACKED:  # a ddscope.Tracker trial: its tensors were the user's and are not stored
        raise UserError("this trial was recorded by ddscope.Tracker from tensors of your own training loop; "
                        "its data are not stored, so it cannot be rerun or measured from the config")
    return user.load_function(cfg) if is_import_spec(name) else SOURCES[name](cfg)


def _subset(y: torch.Tensor, n: int, balanced: bool, num_classes: int, g: torch.Generator) -> torch.Tensor:
    """Indices of a random (or class-balanced) subset of size n, in random order."""
    if n >= y.shape[0]:
        return torch.randperm(y.shape[0], generator=g)
    if not balanced:
        return torch.randperm(y.shape[0], generator=g)[:n]
    per, extra = divmod(n, num_classes)
    idx = []
    for c in range(num_classes):
        members = (y == c).nonzero().flatten()
        members = members[torch.randperm(members.shape[0], generator=g)]
        idx.append(members[: per + (1 if c < extra else 0)])
    idx = torch.cat(idx)
    return idx[torch.randperm(idx.shape[0], generator=g)]


def check_sizes(cfg: DataConfig) -> Dataset:
    """Load the source and check that ``cfg`` leaves a training and a test set: raises
    :class:`UserError` naming the key otherwise (a trial that cannot train is bad input, not a
    diverged run). Returns the source."""
    ds = load_source(cfg)
    n = ds.x_train.shape[0]
    if n == 0:
        raise UserError(f"data set {ds.name} has no training samples (config keys 'data.num_samples', "
                        "'data.train_split')")
    if ds.x_test.shape[0] == 0:
        raise UserError(f"data set {ds.name} has no test samples (config keys 'data.num_samples', "
                        "'data.train_split')")
    if cfg.val_size >= n:
        raise UserError(f"config key 'data.val_size': {cfg.val_size} leaves none of the {n} training samples "
                        f"of {ds.name} to train on")
    if cfg.n_train + cfg.val_size > n:
        raise UserError(f"config keys 'data.n_train' + 'data.val_size' = {cfg.n_train + cfg.val_size} exceed the "
                        f"{n} training samples of {ds.name}")
    return ds


def prepare(cfg: DataConfig) -> TrialData:
    """Subset, validation split and label noise, all drawn from ``cfg.seed``."""
    ds = check_sizes(cfg)
    g = torch.Generator().manual_seed(cfg.seed)
    x, y = ds.x_train, ds.y_train
    perm = torch.randperm(x.shape[0], generator=g)
    val_idx, rest = perm[: cfg.val_size], perm[cfg.val_size :]
    own_val = ds.x_val is not None and cfg.val_size == 0  # the user's own validation split
    if cfg.n_train > 0:
        sub = _subset(y[rest], cfg.n_train, cfg.subset == "balanced", ds.num_classes, g)
        train_idx = rest[sub]
    else:
        train_idx = rest.sort().values  # the full training set keeps its published order
    y_clean = y[train_idx]
    y_noisy, _ = apply_label_noise(y_clean, cfg.noise, cfg.noise_kind, ds.num_classes, g)
    # A sample counts as noisy when its training label is wrong: under the ``uniform``
    # convention a redrawn label that happens to equal the true one is clean.
    mask = y_noisy != y_clean
    return TrialData(
        x_train=x[train_idx],
        y_train=y_noisy,
        y_train_clean=y_clean,
        noisy_mask=mask,
        x_test=ds.x_test,
        y_test=ds.y_test,
        x_val=ds.x_val if own_val else x[val_idx],
        y_val=ds.y_val if own_val else y[val_idx],
        num_classes=ds.num_classes,
        name=ds.name,
    )


__all__ = ["SOURCES", "Dataset", "TrialData", "prepare", "check_sizes", "load_source", "apply_label_noise"]
