"""Tables from the store, for pandas users, the report and export (CSV / Parquet).

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


def varying_keys(flats: list[dict]) -> list[str]:
    """The flattened config keys whose values differ between the trials, in config order."""
    return [k for k in (flats[0] if flats else {}) if len({repr(f.get(k)) for f in flats}) > 1]


def axes(store: Store, flats: list[dict] | None = None) -> list[str]:
    """The base axes plus every config key that differs between the sweep's trials."""
    flats = [_flatten(t["config"]) for t in store.trials()] if flats is None else flats
    return list(BASE_AXES) + [k for k in varying_keys(flats) if k not in BASE_AXES]


# Axes that replicate a trial (seeds of the initialisation and of the data draw): pooled into
# mean ± std. Every other varying axis is a *condition*, kept apart in every figure and table.
REPLICATE_AXES = ("seed", "data.seed")
# The x-axis of the report: width, or the training-set size when width is fixed (sample-wise
# double descent).
X_AXES = ("model.width", "data.n_train")


def x_axis(varying: list[str]) -> str:
    """``model.width`` unless it is fixed while ``data.n_train`` varies."""
    return "data.n_train" if "data.n_train" in varying and "model.width" not in varying else "model.width"


def condition_keys(flats: list[dict], varying: list[str], x: str) -> list[str]:
    """``data.noise`` plus every varying config key that is neither a replicate nor the x-axis."""
    keys = ["data.noise"] if flats and "data.noise" in flats[0] else []
    return keys + [k for k in varying if k not in keys and k != x and k not in REPLICATE_AXES
                   and not k.startswith(("checkpoint.", "device"))]


def condition_label(key: str, value) -> str:
    short = key.split(".")[-1]
    if key == "data.noise" and isinstance(value, (int, float)):
        return f"noise {100 * float(value):g} %"
    return f"{short} {value:g}" if isinstance(value, float) else f"{short} {value}"


def _order(v):
    return (0, float(v), "") if isinstance(v, (int, float)) and not isinstance(v, bool) else (1, 0.0, repr(v))


def trials_frame(store: Store) -> pd.DataFrame:
    """One row per trial: id, state, axes, params, interp_epoch, wall_s, error."""
    trials = store.trials()  # read once: the axes, the conditions and the rows all come from it
    flats = [_flatten(t["config"]) for t in trials]
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


def tidy(store: Store) -> pd.DataFrame:
    """Long table: trial_id, axes..., epoch, metric, value."""
    recs = pd.DataFrame(list(store.records()), columns=["trial_id", "epoch", "metric", "value"])
    trials = trials_frame(store).drop(columns=["error", "wall_s", "trainer", "skipped_groups", "metric_notes"])
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
    return out.sort_values(["condition_index", "x", "seed"]).reset_index(drop=True)


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
