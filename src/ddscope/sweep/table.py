"""Tables from the store, for pandas users, the report and export (CSV / Parquet).

- :func:`tidy` — one row per (trial, epoch, metric), with the trial's config axes as columns.
- :func:`final_table` — one row per trial: its axes, parameter count, state, final errors and
  losses, interpolation epoch and the last value of every other metric.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .store import Store

# Config keys that always appear as columns, whether or not the sweep varies them.
BASE_AXES = ("model.name", "model.width", "data.name", "data.noise", "seed")


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def axes(store: Store) -> list[str]:
    """The base axes plus every config key that differs between the sweep's trials."""
    flat = [_flatten(t["config"]) for t in store.trials()]
    varying = []
    if flat:
        for k in flat[0]:
            vals = {repr(f.get(k)) for f in flat}
            if len(vals) > 1 and k not in BASE_AXES:
                varying.append(k)
    return list(BASE_AXES) + varying


def trials_frame(store: Store) -> pd.DataFrame:
    """One row per trial: id, state, axes, params, interp_epoch, wall_s, error."""
    cols = axes(store)
    columns = ["trial_id", "status", *cols, "params", "n_train", "interp_epoch", "wall_s", "error"]
    rows = []
    for t in store.trials():
        flat = _flatten(t["config"])
        s = t["summary"]
        rows.append(
            {
                "trial_id": t["trial_id"],
                "status": t["status"],
                **{c: flat.get(c) for c in cols},
                "params": s.get("params"),
                "n_train": s.get("n_train"),
                "interp_epoch": s.get("interp_epoch"),
                "wall_s": s.get("wall_s"),
                "error": t["error"],
            }
        )
    return pd.DataFrame(rows, columns=columns)  # the columns even with no trial (a store just made)


def tidy(store: Store) -> pd.DataFrame:
    """Long table: trial_id, axes..., epoch, metric, value."""
    recs = pd.DataFrame(list(store.records()), columns=["trial_id", "epoch", "metric", "value"])
    trials = trials_frame(store).drop(columns=["error", "wall_s"])
    return recs.merge(trials, on="trial_id", how="left")


def final_table(store: Store) -> pd.DataFrame:
    """One row per trial with the last recorded value of each metric (wide)."""
    trials = trials_frame(store)
    recs = pd.DataFrame(list(store.records()), columns=["trial_id", "epoch", "metric", "value"])
    if recs.empty:
        return trials
    last = recs.sort_values("epoch").groupby(["trial_id", "metric"]).tail(1)
    wide = last.pivot(index="trial_id", columns="metric", values="value").reset_index()
    wide = wide.drop(columns=[c for c in ("interp_epoch",) if c in wide.columns])
    out = trials.merge(wide, on="trial_id", how="left")
    return out.sort_values([c for c in ("data.noise", "model.width", "seed") if c in out.columns]).reset_index(drop=True)


def load(run_dir: str | Path) -> pd.DataFrame:
    """The tidy table of a run directory (or store file) as a pandas DataFrame."""
    store = Store.open(run_dir)
    try:
        return tidy(store)
    finally:
        store.close()


def export(run_dir: str | Path, out: str | Path, fmt: str = "csv") -> Path:
    """Write the tidy table as CSV or Parquet (Parquet needs pyarrow)."""
    df = load(run_dir)
    out = Path(out)
    if fmt == "csv":
        df.to_csv(out, index=False)
    elif fmt == "parquet":
        try:
            df.to_parquet(out, index=False)
        except ImportError:
            from ..errors import UserError

            raise UserError("Parquet export needs pyarrow: pip install 'ddscope[parquet]'") from None
    else:
        from ..errors import UserError

        raise UserError(f"unknown export format '{fmt}'; allowed: csv, parquet")
    return out
