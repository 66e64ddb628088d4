"""The allowed values of every config key and the range checks of a trial config.

The bottom layer with :mod:`ddscope.config` (which re-exports these names): it imports only the
catalogue (the names of groups, families, sources and splits) and the error type.
"""

from __future__ import annotations

import math

from . import catalogue
from .catalogue import HESS_METHODS, JAC_OUTPUTS, SPLITS, TRAIN_LOSSES
from .errors import UserError
from .imports import is_import_spec
from .samplers import parse_samplers

NOISE_KINDS = ("uniform", "flip")
OPTIMIZERS = ("sgd", "adam")
DEVICES = ("cpu", "cuda", "auto")
SUBSETS = ("random", "balanced")
MNIST1D_MIN_SAMPLES = 20  # two per class: at least one training and one test sample each


def check_ranges(c) -> None:
    """Raise :class:`UserError` naming the first key of the trial config ``c`` whose value is out
    of range (one line: the key, the value, what is allowed)."""
    def bad(key, msg):
        raise UserError(f"config key '{key}': {msg}")

    if c.model.width <= 0:
        bad("model.width", f"must be a positive integer, got {c.model.width}")
    if c.model.depth <= 0:
        bad("model.depth", f"must be a positive integer, got {c.model.depth}")
    if not 0.0 <= c.data.noise < 1.0:
        bad("data.noise", f"must be in [0, 1), got {c.data.noise}")
    if c.data.noise_kind not in NOISE_KINDS:
        bad("data.noise_kind", f"must be one of {', '.join(NOISE_KINDS)}, got '{c.data.noise_kind}'")
    if c.data.subset not in SUBSETS:
        bad("data.subset", f"must be one of {', '.join(SUBSETS)}, got '{c.data.subset}'")
    if c.data.n_train < 0:
        bad("data.n_train", f"must be >= 0 (0 = all), got {c.data.n_train}")
    if c.data.val_size < 0:
        bad("data.val_size", f"must be >= 0, got {c.data.val_size}")
    if c.data.num_samples < MNIST1D_MIN_SAMPLES:
        bad("data.num_samples", f"must be >= {MNIST1D_MIN_SAMPLES} (MNIST-1D draws num_samples // 10 per class), "
                                f"got {c.data.num_samples}")
    if not 0.0 < c.data.train_split < 1.0:
        bad("data.train_split", f"must be in (0, 1), got {c.data.train_split}")
    if c.optim.name not in OPTIMIZERS:
        bad("optim.name", f"must be one of {', '.join(OPTIMIZERS)}, got '{c.optim.name}'")
    if not c.optim.lr > 0:
        bad("optim.lr", f"must be > 0, got {c.optim.lr}")
    if c.optim.batch_size <= 0:
        bad("optim.batch_size", f"must be a positive integer, got {c.optim.batch_size}")
    if c.optim.epochs <= 0:
        bad("optim.epochs", f"must be a positive integer, got {c.optim.epochs}")
    if c.optim.warmup_epochs < 0:
        bad("optim.warmup_epochs", f"must be >= 0, got {c.optim.warmup_epochs}")
    if c.optim.weight_decay < 0:
        bad("optim.weight_decay", f"must be >= 0, got {c.optim.weight_decay}")
    if not 0.0 <= c.optim.momentum < 1.0:
        bad("optim.momentum", f"must be in [0, 1), got {c.optim.momentum}")
    if c.optim.loss not in TRAIN_LOSSES:
        bad("optim.loss", f"must be one of {', '.join(TRAIN_LOSSES)}, got '{c.optim.loss}'")
    if not 0.0 <= c.optim.label_smoothing < 1.0:
        bad("optim.label_smoothing", f"must be in [0, 1), got {c.optim.label_smoothing}")
    if c.optim.label_smoothing and c.optim.loss != "cross_entropy":
        bad("optim.label_smoothing", f"smooths the cross-entropy; optim.loss is '{c.optim.loss}'")
    if c.device not in DEVICES:
        bad("device", f"must be one of {', '.join(DEVICES)}, got '{c.device}'")
    for key in ("groups", "sparse_groups"):
        for g in getattr(c.metrics, key):
            if g not in catalogue.GROUPS:
                bad(f"metrics.{key}", f"unknown group '{g}'; allowed: {', '.join(catalogue.GROUPS)}")
    for s in c.metrics.splits:
        if s not in SPLITS:
            bad("metrics.splits", f"unknown split '{s}'; allowed: {', '.join(SPLITS)}")
    if c.metrics.output not in JAC_OUTPUTS:
        bad("metrics.output", f"must be one of {', '.join(JAC_OUTPUTS)}, got '{c.metrics.output}'")
    if c.metrics.hess_method not in HESS_METHODS:
        bad("metrics.hess_method", f"must be one of {', '.join(HESS_METHODS)}, got '{c.metrics.hess_method}'")
    for name, value in c.metrics.lip_constants.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            bad(f"metrics.lip_constants.{name}", f"must be a finite number >= 0 (a Lipschitz constant), got {value!r}")
    if c.metrics.vol_output not in JAC_OUTPUTS:
        bad("metrics.vol_output", f"must be one of {', '.join(JAC_OUTPUTS)}, got '{c.metrics.vol_output}'")
    if c.metrics.vol_k < 1:
        bad("metrics.vol_k", f"must be >= 1 (balls or paths per training point), got {c.metrics.vol_k}")
    if c.metrics.vol_samples < 0:
        bad("metrics.vol_samples", f"must be >= 0 (0 = every training point), got {c.metrics.vol_samples}")
    try:  # the grammar here; whether a sampler fits the data's shape is checked with the data (preflight)
        parse_samplers(c.metrics.vol_samplers)
    except ValueError as e:
        bad("metrics.vol_samplers", str(e))
    if any(e < 0 for e in c.metrics.epochs):
        bad("metrics.epochs", "epochs must be >= 0")
    if any(e < 0 for e in c.checkpoint.epochs):
        bad("checkpoint.epochs", "epochs must be >= 0")
    if c.checkpoint.every_epochs < 0:
        bad("checkpoint.every_epochs", f"must be >= 0 (0 = off), got {c.checkpoint.every_epochs}")
    if c.checkpoint.every_minutes < 0:
        bad("checkpoint.every_minutes", f"must be >= 0 (0 = off), got {c.checkpoint.every_minutes}")
    for key in ("jac_samples", "hess_samples", "path_pairs", "path_k", "hess_matvecs", "lanczos_iters",
                "num_log_epochs", "num_sparse_epochs", "num_eval_epochs"):
        v = getattr(c.metrics, key)
        if v < 0 or (key in ("path_k",) and v < 2):
            bad(f"metrics.{key}", f"out of range: {v}")
    # Names of model families and data sources (the catalogue's); "package.module:function" names
    # the user's own factory (imported when a trial builds it).
    if c.model.name not in catalogue.FAMILIES and not is_import_spec(c.model.name):
        bad("model.name", f"unknown model '{c.model.name}'; allowed: {', '.join(sorted(catalogue.FAMILIES))}, or "
                          "'package.module:function' (your factory)")
    if c.data.name not in catalogue.SOURCES and not is_import_spec(c.data.name):
        bad("data.name", f"unknown data set '{c.data.name}'; allowed: {', '.join(sorted(catalogue.SOURCES))}, or "
                         "'package.module:function' (your loader)")
    if c.data.name == "npz" and not c.data.path:
        bad("data.path", "data.name = \"npz\" needs data.path, the .npz file with x_train, y_train, x_test, y_test")
