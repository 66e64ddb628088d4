"""Your own code named in a config: ``"package.module:function"`` for ``model.name`` and
``data.name``. Naming a module in a config imports and runs that module's code, as ``python -c
"import package.module"`` would.

The module is imported by its dotted name; the current working folder is put on ``sys.path``
(where ``python -m`` would find it), so a ``mymodels.py`` beside the config works from the CLI,
in spawned workers (they inherit ``sys.path``) and in ``ddscope measure``. On a Ray cluster the
module must be importable on every node.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from collections.abc import Callable

from .errors import UserError

_SPEC = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")


def is_import_spec(name: str) -> bool:
    """Whether ``name`` has the form ``package.module:function``."""
    return bool(_SPEC.match(name))


def load_callable(spec: str, key: str) -> Callable:
    """The function ``spec`` names; :class:`UserError` naming ``key`` when it cannot be imported."""
    if not is_import_spec(spec):
        raise UserError(f"config key '{key}': '{spec}' is not of the form package.module:function")
    module, _, attr = spec.partition(":")
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        mod = importlib.import_module(module)
    except Exception as e:  # noqa: BLE001 — any error while importing the user's module is theirs to fix
        lines = str(e).strip().splitlines()
        raise UserError(f"config key '{key}': cannot import module '{module}' ({type(e).__name__}: "
                        f"{lines[0] if lines else ''}); it must be installed, on PYTHONPATH or in the current "
                        "folder") from None
    fn = getattr(mod, attr, None)
    if not callable(fn):
        raise UserError(f"config key '{key}': module '{module}' has no function '{attr}'")
    return fn


__all__ = ["is_import_spec", "load_callable"]
