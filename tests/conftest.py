"""Shared fixtures: one torch thread, a private data cache, the tiny trial as overrides."""

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


@pytest.fixture
def tiny_overrides():
    """The tiny trial (tests/tiny.py) as ``key=value`` overrides of a preset."""
    from .tiny import overrides

    return overrides()
