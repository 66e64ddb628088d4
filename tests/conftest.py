"""Shared fixtures: a private data cache and tiny, fast trial configs."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    """Tiny models run fastest on one intra-op thread (no spin-waiting between two cores)."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    """Generated MNIST-1D goes to a per-session folder, never the user's cache."""
    path = tmp_path_factory.mktemp("ddscope-cache")
    old = os.environ.get("DDSCOPE_CACHE")
    os.environ["DDSCOPE_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("DDSCOPE_CACHE", None)
    else:
        os.environ["DDSCOPE_CACHE"] = old


# Overrides that make the default preset tiny: 1 000 MNIST-1D samples (250 train / 750 test).
TINY = [
    "data.num_samples=1000",
    "optim.epochs=3",
    "optim.batch_size=50",
    "metrics.num_log_epochs=2",
    "metrics.jac_samples=64",
]


@pytest.fixture
def tiny_overrides():
    return list(TINY)
