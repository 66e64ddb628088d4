"""ddscope: double descent through the smoothness of the learned function."""

from __future__ import annotations

from .version import __version__  # noqa: E402

from .errors import quiet_errors  # noqa: E402 — light (no torch): scripts call it first


def load(run_dir):
    """The tidy table of a run directory (or its ``store.sqlite``) as a pandas DataFrame: one row
    per (trial, epoch, metric) with the trial's config axes as columns. Imported lazily so that
    ``import ddscope`` stays cheap."""
    from .report.table import load as _load

    return _load(run_dir)


def sweep(config="mnist1d-mlp", overrides=None, out=None, **options):
    """Run a sweep and return its run directory: :func:`ddscope.api.sweep` (imported on first
    use, so that ``import ddscope`` stays cheap)."""
    from .api import sweep as _sweep

    return _sweep(config, overrides, out, **options)


def __getattr__(name: str):
    """``ddscope.Tracker`` (:mod:`ddscope.api`), imported on first use."""
    if name == "Tracker":
        from .api import Tracker

        return Tracker
    raise AttributeError(f"module 'ddscope' has no attribute {name!r}")


__all__ = ["Tracker", "__version__", "load", "quiet_errors", "sweep"]
