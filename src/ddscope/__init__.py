"""ddscope: double descent through the smoothness of the learned function."""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import quiet_errors  # noqa: E402 — light (no torch): scripts call it first


def load(run_dir):
    """The tidy table of a run directory (or its ``store.sqlite``) as a pandas DataFrame: one row
    per (trial, epoch, metric) with the trial's config axes as columns. Imported lazily so that
    ``import ddscope`` stays cheap."""
    from .sweep.table import load as _load

    return _load(run_dir)


def __getattr__(name: str):
    """``ddscope.sweep(config, overrides, out)`` and ``ddscope.Tracker`` (:mod:`ddscope.api`),
    imported on first use. ``ddscope.sweep`` is the subpackage, made callable (``ddscope/sweep``)."""
    if name == "sweep":
        import importlib

        return importlib.import_module(".sweep", __name__)
    if name == "Tracker":
        from .api import Tracker

        return Tracker
    raise AttributeError(f"module 'ddscope' has no attribute {name!r}")


__all__ = ["Tracker", "__version__", "load", "quiet_errors", "sweep"]
