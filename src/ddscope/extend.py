"""Extending a run directory's sweep: a second run into the same folder may add grid values, never
change a fixed setting (one run directory, one sweep)."""

from __future__ import annotations

import json
from dataclasses import replace

from .catalogue import is_id_free
from .config import SweepConfig, all_keys, get_key, sweep_from_dict
from .errors import UserError


def extend_sweep(stored: dict, new: SweepConfig, where: str = "the run directory") -> SweepConfig:
    """The sweep ``stored`` (a run directory's sweep config) extended by ``new``: every grid
    axis of either keeps the values of both (stored first). A fixed setting that differs — other
    epochs, another data set — makes the two incomparable: :class:`UserError` naming the key, so
    one run directory never mixes two sweeps under one config."""
    try:
        old = sweep_from_dict(stored, default_name=new.name)
    except UserError as e:
        raise UserError(f"{where} holds a sweep config this ddscope cannot read ({e}); use another --out") from None
    grid: dict[str, tuple] = {}
    for key in all_keys():
        if is_id_free(key):  # never changes a trial's numbers: free to differ between runs
            continue
        a = old.grid.get(key, (get_key(old.base, key),))
        b = new.grid.get(key, (get_key(new.base, key),))
        if key in old.grid or key in new.grid:
            grid[key] = tuple(dict.fromkeys((*a, *b)))
        elif a != b:
            raise UserError(
                f"{where} holds another sweep: '{key}' is {_show(a[0])} there and {_show(b[0])} here; use another "
                f"--out (only grid axes may be extended in place; make '{key}' a list to sweep it)")
    # the new run's own order of axes first, then any axis only the stored sweep had
    order = [k for k in new.grid if k in grid] + [k for k in grid if k not in new.grid]
    return replace(new, grid={k: grid[k] for k in order})


def _show(v) -> str:
    return json.dumps(list(v)) if isinstance(v, tuple) else json.dumps(v)


__all__ = ["extend_sweep"]
