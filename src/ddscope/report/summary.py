"""Headline numbers of a width sweep, per label-noise level: the interpolation threshold, the
classical optimum, the double-descent peak of the test error, and representative widths.

Definitions (all on the mean over seeds of the final-epoch values, done trials only):

- interpolation threshold ``w_I``: the narrowest width whose mean train error on the (noisy)
  training labels is ≤ :data:`INTERP_TOL` (0: every seed fits every label, as ``interp_epoch``);
- classical optimum ``w_C``: the width of the lowest test error among widths narrower than
  ``w_I`` (all widths when none interpolates; the narrowest width when ``w_I`` is the narrowest);
- test-error peak ``w_P``: the width of the highest test error at or beyond ``w_C``; there is no
  peak (``None``) when the test error never rises above its value at ``w_C``. Under-fit nets,
  narrower than ``w_C``, have large test error for another reason and are not the peak;
- a double descent: ``w_P`` exists and its test error is above that of the widest net.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

INTERP_TOL = 0.0


def done_rows(final: pd.DataFrame) -> pd.DataFrame:
    return final[final["status"] == "done"] if "status" in final else final


def at_noise(final: pd.DataFrame, noise) -> pd.DataFrame:
    """Rows of one label-noise level (all rows when ``noise`` is None)."""
    if noise is None or "data.noise" not in final:
        return final
    return final[final["data.noise"] == noise]


def curve(final: pd.DataFrame, metric: str, noise=None) -> pd.DataFrame:
    """Mean, std (ddof 1; 0 for one seed) and n over seeds of ``metric`` per width, done trials
    of one noise level, NaN values left out. Columns ``model.width, mean, std, n``."""
    cols = ["model.width", "mean", "std", "n"]
    if metric not in final.columns or "model.width" not in final.columns:
        return pd.DataFrame(columns=cols)
    d = at_noise(done_rows(final), noise)
    v = pd.to_numeric(d[metric], errors="coerce")
    d = pd.DataFrame({"model.width": d["model.width"].astype(float), "v": v}).dropna()
    if d.empty:
        return pd.DataFrame(columns=cols)
    out = d.groupby("model.width")["v"].agg(["mean", "std", "count"]).reset_index()
    out = out.rename(columns={"count": "n"})
    out["std"] = out["std"].fillna(0.0)
    return out[cols].sort_values("model.width").reset_index(drop=True)


def mean_by_width(final: pd.DataFrame, metric: str, noise=None) -> pd.Series:
    """Mean over seeds of ``metric`` indexed by width (sorted)."""
    c = curve(final, metric, noise)
    return pd.Series(c["mean"].to_numpy(float), index=c["model.width"].to_numpy(float), dtype=float)


def peak_width(s: pd.Series) -> float | None:
    """Width of the largest finite value of a measure (first one on ties)."""
    s = s[np.isfinite(s.to_numpy(float))] if len(s) else s
    return None if s.empty else float(s.idxmax())


def interp_threshold(train: pd.Series, tol: float = INTERP_TOL) -> float | None:
    """Narrowest width whose mean train error is ≤ ``tol``."""
    hit = train[train <= tol]
    return float(hit.index[0]) if len(hit) else None


def classical_optimum(test: pd.Series, interp_width: float | None) -> float | None:
    """Width of the lowest test error among widths narrower than the interpolation threshold."""
    if test.empty:
        return None
    under = test if interp_width is None else test[test.index < interp_width]
    return float(test.index[0]) if under.empty else float(under.idxmin())


def dd_peak(test: pd.Series, interp_width: float | None) -> float | None:
    """Width of the double-descent peak of the test error (module docstring), or None."""
    opt = classical_optimum(test, interp_width)
    if opt is None:
        return None
    beyond = test[test.index >= opt]
    if not (beyond > test[opt]).any():
        return None
    return float(beyond.idxmax())


def grid_steps(widths: list[float], a: float | None, b: float | None) -> int | None:
    """Signed number of grid points from width ``b`` to width ``a`` (a right of b: positive)."""
    if a is None or b is None or a not in widths or b not in widths:
        return None
    return widths.index(a) - widths.index(b)


def dd_summary(final: pd.DataFrame, noise=None) -> dict:
    """Double-descent summary for one noise level (the lowest one when not given).

    Keys: ``noise``, ``widths``, ``n_seeds`` (min and max per width), ``interp_width`` (w_I),
    ``interp_tol``, ``best_narrower_width`` / ``best_narrower_err`` (w_C and its test error),
    ``test_peak_width`` / ``test_peak_err`` (w_P), ``widest_err``, ``widest_train_err``,
    ``double_descent``; and ``peak/<metric>`` with ``grid_steps/<metric>`` (from w_P) for the
    complexity measures in the table. ``{}`` without test errors; a ``note`` with < 3 widths.
    """
    final = done_rows(final)
    if final.empty or "err/test" not in final:
        return {}
    if noise is None and "data.noise" in final and final["data.noise"].nunique() > 1:
        noise = min(final["data.noise"].dropna().unique())
    c = curve(final, "err/test", noise)
    test = mean_by_width(final, "err/test", noise)
    train = mean_by_width(final, "err/train", noise)
    out: dict = {"noise": None if noise is None else float(noise)}
    if len(test) < 3:
        out["note"] = f"{len(test)} width(s) with a finished trial: a double descent needs at least 3"
        return out
    widths = [float(w) for w in test.index]
    w_i = interp_threshold(train)
    w_c = classical_optimum(test, w_i)
    w_p = dd_peak(test, w_i)
    out.update(
        widths=widths,
        n_seeds=[int(c["n"].min()), int(c["n"].max())],
        interp_width=w_i,
        interp_tol=INTERP_TOL,
        best_narrower_width=w_c,
        best_narrower_err=None if w_c is None else float(test[w_c]),
        test_peak_width=w_p,
        test_peak_err=None if w_p is None else float(test[w_p]),
        widest_err=float(test.iloc[-1]),
        widest_train_err=float(train.iloc[-1]) if len(train) else None,
    )
    out["double_descent"] = bool(w_p is not None and out["test_peak_err"] > out["widest_err"])
    for metric in [m for m in final.columns if m.startswith(("jac_spec_rms/", "lip_upper", "hess_", "dist_rel/all"))]:
        mp = peak_width(mean_by_width(final, metric, noise))
        if mp is not None:
            out[f"peak/{metric}"] = mp
            out[f"grid_steps/{metric}"] = grid_steps(widths, mp, w_p)
    return out


def representative_widths(final: pd.DataFrame, noise=None) -> dict[str, float]:
    """Widths that stand for the regimes, chosen from the data (ordered, distinct):
    ``under`` = w_C, ``critical`` = w_P (else w_I), ``over`` = halfway in the grid from the
    critical width to the widest, ``widest``. Without a critical width: the narrowest, the
    middle and the widest width of the grid."""
    s = dd_summary(final, noise)
    widths = s.get("widths") or [float(w) for w in mean_by_width(final, "err/train", noise).index]
    if not widths:
        return {}
    crit = s.get("test_peak_width") or s.get("interp_width")
    if crit is None:
        picks = [("narrowest", widths[0]), ("middle", widths[len(widths) // 2]), ("widest", widths[-1])]
    else:
        under = s.get("best_narrower_width")
        ic, iw = widths.index(crit), len(widths) - 1
        picks = [("under", under)] if under is not None and under < crit else []
        picks += [("critical", crit), ("over", widths[(ic + iw + 1) // 2]), ("widest", widths[-1])]
    out: dict[str, float] = {}
    for role, w in picks:
        if w not in out.values():
            out[role] = w
    return out


def theorem2_table(final: pd.DataFrame) -> pd.DataFrame:
    """Per (noise, width): mean LHS, MID, RHS of Theorem 2 at the last epoch, and in how many of
    the n seeds each inequality held. Empty without Theorem 2 values."""
    d = done_rows(final)
    if "thm2_mid" not in d or pd.to_numeric(d["thm2_mid"], errors="coerce").isna().all():
        return pd.DataFrame()
    keys = [k for k in ("data.noise", "model.width") if k in d]
    rows = []
    for key, g in d.groupby(keys):
        key = key if isinstance(key, tuple) else (key,)
        row = {k.split(".")[-1]: v for k, v in zip(keys, key)}
        row["n"] = len(g)
        for col, name in (("thm2_lhs", "LHS"), ("thm2_mid", "MID"), ("thm2_rhs", "RHS")):
            row[name] = pd.to_numeric(g.get(col), errors="coerce").mean() if col in g else np.nan
        for col, name in (("thm2_lhs_le_mid", "LHS ≤ MID held"), ("thm2_mid_le_rhs", "MID ≤ RHS held")):
            v = pd.to_numeric(g[col], errors="coerce").dropna() if col in g else pd.Series(dtype=float)
            row[name] = f"{int((v > 0.5).sum())}/{len(v)}" if len(v) else "—"
        rows.append(row)
    return pd.DataFrame(rows)
