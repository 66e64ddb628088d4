"""ddscope: double descent through the smoothness of the learned function."""

from __future__ import annotations

__version__ = "0.1.0"


def load(run_dir):
    """The tidy table of a run directory (or its ``store.sqlite``) as a pandas DataFrame: one row
    per (trial, epoch, metric) with the trial's config axes as columns. Imported lazily so that
    ``import ddscope`` stays cheap."""
    from .sweep.table import load as _load

    return _load(run_dir)


__all__ = ["__version__", "load"]
