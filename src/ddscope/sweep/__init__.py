"""Sweeps: the store, the driver, executors, progress, status, tables.

The package is also the function ``ddscope.sweep(config, overrides, out)``
(:func:`ddscope.api.sweep`): ``import ddscope.sweep.runner`` makes ``ddscope.sweep`` this package,
so the package is made callable rather than shadowing one with the other.
"""

from __future__ import annotations

import sys
import types


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        from ..api import sweep

        return sweep(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
