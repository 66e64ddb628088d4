"""Tables from the store, for pandas users, the report and export (CSV / Parquet); the
conditions and the x-axis are the report's (:mod:`.conditions`).

- :func:`tidy` — one row per (trial, epoch, metric), with the trial's config axes as columns.
- :func:`final_table` — one row per trial: its axes, parameter count, state, final errors and
  losses, interpolation epoch and the last value of every other metric.

Both carry ``condition`` (a label of the grid point without its replicate axes and x-axis, e.g.
``noise 15 %, n_train 300``), ``x`` (the report's x value: the width, or the training-set size
when the width is fixed) and ``x_axis`` (which key ``x`` is).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..config import axes_of, flatten, varying_keys
from ..runs.store import Store
from .conditions import condition_keys, condition_label, x_axis

def axes(store: Store, flats: list[dict] | None = None) -> list[str]:
    """The base axes plus every config key that differs between the sweep's trials."""
    return axes_of([flatten(t["config"]) for t in store.trials()] if flats is None else flats)


def _order(v):
    return (0, float(v), "") if isinstance(v, (int, float)) and not isinstance(v, bool) else (1, 0.0, repr(v))


def trials_frame(store: Store) -> pd.DataFrame:
    """One row per trial: id, state, axes, params, interp_epoch, wall_s, error."""
    trials = store.trials()  # read once: the axes, the conditions and the rows all come from it
    flats = [flatten(t["config"]) for t in trials]
    varying = varying_keys(flats)
    cols = axes(store, flats)
    columns = ["trial_id", "status", *cols, "params", "n_train", "n_test", "interp_epoch", "wall_s", "trainer", "error",
               "skipped_groups", "metric_notes", "condition", "condition_index", "x", "x_axis"]
    xa = x_axis(varying)
    ckeys = condition_keys(flats, varying, xa)
    combos = sorted({tuple(f.get(k) for k in ckeys) for f in flats}, key=lambda c: [_order(v) for v in c])
    rows = []
    for t, flat in zip(trials, flats):
        s = t["summary"]
        combo = tuple(flat.get(k) for k in ckeys)
        if xa == "data.n_train":  # the number trained on (n_train = 0 means all of them)
            x = s.get("n_train") or (flat.get("data.n_train") or None)
        else:
            x = flat.get("model.width")
        rows.append(
            {
                "trial_id": t["trial_id"],
                "status": t["status"],
                **{c: flat.get(c) for c in cols},
                "params": s.get("params"),
                "n_train": s.get("n_train"),
                "n_test": s.get("n_test"),  # the test error's sample size (the sign-error's Hoeffding weight)
                "interp_epoch": s.get("interp_epoch"),
                "wall_s": s.get("wall_s"),
                "trainer": s.get("trainer"),
                "error": t["error"],
                "skipped_groups": s.get("skipped_groups") or {},  # group -> why it could not run
                "metric_notes": s.get("metric_notes") or {},  # group -> what ran otherwise than asked
                "condition": ", ".join(condition_label(k, v) for k, v in zip(ckeys, combo)) or "all trials",
                "condition_index": combos.index(combo),
                "x": x,
                "x_axis": xa,
            }
        )
    return pd.DataFrame(rows, columns=columns)  # the columns even with no trial (a store just made)


def _records(store: Store) -> pd.DataFrame:
    return pd.DataFrame(list(store.records()), columns=["trial_id", "epoch", "metric", "value"])


def _tidy(trials: pd.DataFrame, recs: pd.DataFrame) -> pd.DataFrame:
    return recs.merge(trials.drop(columns=["error", "wall_s", "trainer", "skipped_groups", "metric_notes"]),
                      on="trial_id", how="left")


def _final(trials: pd.DataFrame, recs: pd.DataFrame) -> pd.DataFrame:
    if recs.empty:
        return trials
    last = recs.sort_values("epoch").groupby(["trial_id", "metric"]).tail(1)
    wide = last.pivot(index="trial_id", columns="metric", values="value").reset_index()
    wide = wide.drop(columns=[c for c in ("interp_epoch",) if c in wide.columns])
    out = trials.merge(wide, on="trial_id", how="left")
    return out.sort_values(["condition_index", "x", "seed"]).reset_index(drop=True)


def tidy(store: Store) -> pd.DataFrame:
    """Long table: trial_id, axes..., epoch, metric, value."""
    return _tidy(trials_frame(store), _records(store))


def final_table(store: Store) -> pd.DataFrame:
    """One row per trial with the last recorded value of each metric (wide)."""
    return _final(trials_frame(store), _records(store))


def tables(store: Store) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(final_table, tidy)`` from one read of the store's trials and one of its records (the
    report needs both)."""
    trials, recs = trials_frame(store), _records(store)
    return _final(trials, recs), _tidy(trials, recs)


def load(run_dir: str | Path) -> pd.DataFrame:
    """The tidy table of a run directory (or store file) as a pandas DataFrame."""
    store = Store.open(run_dir, readonly=True)
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
