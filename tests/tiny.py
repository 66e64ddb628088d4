"""The one definition of a tiny, fast trial for the tests, as a config or as CLI overrides.

A plain module rather than a conftest, so that test modules in every folder import it by one name.
"""

from __future__ import annotations

import json

from ddscope.config import MetricsConfig, TrialConfig, set_key

# The default preset made tiny: 1 000 MNIST-1D samples (250 train / 750 test), batch 50 (5 steps
# per epoch), 3 epochs, the cheap metric groups on 32 points per split at 0, 1 middle epoch and
# the last.
TINY: dict = {
    "data.num_samples": 1000,
    "optim.batch_size": 50,
    "optim.epochs": 3,
    "metrics.num_log_epochs": 2,
    "metrics.jac_samples": 32,
    "metrics.groups": ["jacobian", "distance"],
    "metrics.sparse_groups": [],
}

# The costly groups made cheap, where a test only needs their values to exist.
CHEAP_COSTLY: dict = {
    "metrics.hess_samples": 32,
    "metrics.hess_matvecs": 6,
    "metrics.lanczos_iters": 4,
    "metrics.path_pairs": 6,
    "metrics.path_k": 3,
    "metrics.num_sparse_epochs": 1,
    "metrics.vol_samples": 4,
    "metrics.vol_k": 1,
}


# Every metric group on its default schedule (the tiny trial measures only the cheap ones).
EVERY_GROUP: dict = {"metrics.groups": list(MetricsConfig().groups),
                     "metrics.sparse_groups": list(MetricsConfig().sparse_groups)}


def tiny(**kw) -> TrialConfig:
    """The tiny trial with dotted-key overrides, e.g. ``tiny(**{"model.width": 8})``."""
    return set_key(TrialConfig(), {**TINY, **kw})


def overrides(settings: dict | None = None, **kw) -> list[str]:
    """``key=value`` overrides (TOML values) for ``load_sweep`` and ``--set``: the tiny trial
    (or ``settings``) updated by ``kw``; a list value is a grid axis of the sweep."""
    return [f"{k}={json.dumps(v)}" for k, v in {**(TINY if settings is None else settings), **kw}.items()]


class Killed(BaseException):
    """Stands for SIGKILL inside a test: nothing after the raise runs, the run returns no result."""


def stop_at(epoch: int):
    """A progress callback that kills the run after ``epoch`` (its checkpoints written)."""

    def progress(e, total):
        if e == epoch:
            raise Killed

    return progress


def sets(items) -> list[str]:
    """``["--set", item, ...]`` for the CLI."""
    out = []
    for s in items:
        out += ["--set", s]
    return out


__all__ = ["CHEAP_COSTLY", "EVERY_GROUP", "TINY", "Killed", "stop_at", "overrides", "sets", "tiny"]
