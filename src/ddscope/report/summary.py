"""Headline numbers of a width sweep: where test error peaks, whether it is a double descent,
where each complexity measure peaks, and where the nets start to interpolate."""

from __future__ import annotations

import numpy as np
import pandas as pd


def _mean_by_width(final: pd.DataFrame, metric: str) -> pd.Series:
    d = final.dropna(subset=[metric]) if metric in final else final.iloc[0:0]
    if d.empty:
        return pd.Series(dtype=float)
    return d.groupby("model.width")[metric].mean().sort_index()


def peak_width(s: pd.Series, skip_first: bool = True) -> float | None:
    """Width of the largest value, ignoring the narrowest width (under-fit nets have large
    test error for the wrong reason: they are not at the interpolation threshold)."""
    if s.empty:
        return None
    t = s.iloc[1:] if skip_first and len(s) > 2 else s
    return float(t.idxmax())


def dd_summary(final: pd.DataFrame, noise=None) -> dict:
    """Double-descent summary for one noise level (the first one if not given).

    Keys: ``test_peak_width``, ``test_peak_err``, ``best_narrower_err`` (min test error among
    narrower widths), ``widest_err``, ``double_descent`` (peak above both), ``interp_width``
    (narrowest width with 0 train error), ``widest_train_err``, and per measure ``peak/<metric>``
    with ``grid_steps/<metric>`` between its peak and the test-error peak.
    """
    if final.empty or "err/test" not in final:
        return {}
    if "data.noise" in final and final["data.noise"].nunique() > 1:
        noise = sorted(final["data.noise"].unique())[0] if noise is None else noise
        final = final[final["data.noise"] == noise]
    test = _mean_by_width(final, "err/test")
    train = _mean_by_width(final, "err/train")
    if len(test) < 3:
        return {"note": "fewer than 3 widths: no double-descent summary"}
    widths = list(test.index)
    pw = peak_width(test)
    i = widths.index(pw)
    narrower = test.iloc[:i]
    out = {
        "noise": None if noise is None else float(noise),
        "widths": [float(w) for w in widths],
        "test_peak_width": pw,
        "test_peak_err": float(test[pw]),
        "best_narrower_err": float(narrower.min()) if len(narrower) else None,
        "best_narrower_width": float(narrower.idxmin()) if len(narrower) else None,
        "widest_err": float(test.iloc[-1]),
        "widest_train_err": float(train.iloc[-1]) if len(train) else None,
    }
    out["double_descent"] = bool(
        len(narrower) > 0 and out["test_peak_err"] > out["best_narrower_err"] and out["test_peak_err"] > out["widest_err"]
        and pw != widths[-1]
    )
    zero = train[train == 0.0]
    out["interp_width"] = float(zero.index[0]) if len(zero) else None
    for metric in [c for c in final.columns if c.startswith(("jac_", "lip_upper", "hess_", "thm2_", "dist_rel/all"))]:
        s = _mean_by_width(final, metric)
        if s.empty or not np.isfinite(s.to_numpy(float)).any():
            continue
        mp = peak_width(s)
        out[f"peak/{metric}"] = mp
        out[f"grid_steps/{metric}"] = abs(widths.index(mp) - i) if mp in widths else None
    return out
