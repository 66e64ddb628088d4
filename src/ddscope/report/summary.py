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
- a double descent (:func:`verdict`): the widest nets fit their training labels and ``w_P``
  stands above both the classical optimum and the widest net by more than the seeds' spread
  (at least :data:`MIN_MARGIN`); otherwise the summary says why there is no evidence.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import catalogue
from .conditions import condition_label

INTERP_TOL = 0.0
FIT_TOL = 0.01  # the widest nets must fit all but 1 % of their training labels for a verdict
MIN_MARGIN = 0.01  # a peak must stand this far (or the seeds' spread) above both sides


def with_axes(final: pd.DataFrame) -> pd.DataFrame:
    """``final`` with the ``x`` and ``condition`` columns of ``ddscope.report.table``, derived
    from ``model.width`` and ``data.noise`` for a table made without them (by hand, in tests)."""
    if "x" not in final and "model.width" in final:
        final = final.assign(x=final["model.width"])
    if "condition" not in final and "data.noise" in final:
        levels = sorted(final["data.noise"].dropna().unique())
        final = final.assign(condition=final["data.noise"].map(lambda v: None if pd.isna(v) else condition_label("data.noise", v)),
                             condition_index=final["data.noise"].map(lambda v: levels.index(v) if v in levels else -1))
    return final


def x_axis_of(final: pd.DataFrame) -> str:
    """The config key on the table's x-axis (``x_axis`` column; width when there is none)."""
    return str(final["x_axis"].dropna().iloc[0]) if "x_axis" in final and final["x_axis"].notna().any() else "model.width"


def conditions(final: pd.DataFrame) -> list:
    """The conditions of the table in grid order (``[None]`` when it has none): label-noise
    levels and every other non-seed grid axis (``ddscope.report.table``), each kept apart."""
    final = with_axes(final)
    if "condition" not in final or final["condition"].dropna().empty:
        return [None]
    d = final.dropna(subset=["condition"])
    if "condition_index" in d:
        d = d.sort_values("condition_index", kind="stable")
    return list(dict.fromkeys(d["condition"]))


def done_rows(final: pd.DataFrame) -> pd.DataFrame:
    final = with_axes(final)
    return final[final["status"] == "done"] if "status" in final else final


def at_noise(final: pd.DataFrame, noise) -> pd.DataFrame:
    """Rows of one condition, given by its label or, for a plain label-noise level, by the
    rate (all rows when ``noise`` is None)."""
    final = with_axes(final)
    if noise is None:
        return final
    if isinstance(noise, (int, float)) and not isinstance(noise, bool) and "data.noise" in final:
        return final[final["data.noise"] == noise]
    return final[final["condition"] == noise] if "condition" in final else final


def curve(final: pd.DataFrame, metric: str, noise=None) -> pd.DataFrame:
    """Mean, std (ddof 1; 0 for one seed) and n over seeds of ``metric`` per width, done trials
    of one noise level, NaN values left out. Columns ``model.width, mean, std, n``."""
    cols = ["x", "mean", "std", "n"]
    if metric not in final.columns or "x" not in final.columns:
        return pd.DataFrame(columns=cols)
    d = at_noise(done_rows(final), noise)
    v = pd.to_numeric(d[metric], errors="coerce")
    d = pd.DataFrame({"x": d["x"].astype(float), "v": v}).dropna()
    if d.empty:
        return pd.DataFrame(columns=cols)
    out = d.groupby("x")["v"].agg(["mean", "std", "count"]).reset_index()
    out = out.rename(columns={"count": "n"})
    out["std"] = out["std"].fillna(0.0)
    return out[cols].sort_values("x").reset_index(drop=True)


def mean_by_width(final: pd.DataFrame, metric: str, noise=None) -> pd.Series:
    """Mean over seeds of ``metric`` indexed by width (sorted)."""
    c = curve(final, metric, noise)
    return pd.Series(c["mean"].to_numpy(float), index=c["x"].to_numpy(float), dtype=float)


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
    if noise is None and "condition" in final and final["condition"].nunique() > 1:
        noise = conditions(final)[0]
    c = curve(final, "err/test", noise)
    test = mean_by_width(final, "err/test", noise)
    train = mean_by_width(final, "err/train", noise)
    out: dict = {"condition": noise}
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
    out["double_descent"], out["verdict"] = verdict(out, c)
    for metric in [m for m in catalogue.measures(final.columns) if m in final.columns]:
        mp = peak_width(mean_by_width(final, metric, noise))
        if mp is not None:
            out[f"peak/{metric}"] = mp
            out[f"grid_steps/{metric}"] = grid_steps(widths, mp, w_p)
    return out


def is_measure(key: str) -> bool:
    """Whether ``key`` is one of the catalogue's measures; flags and standard errors
    (``hess_trace_exact``, ``lip_upper_tight_eclipse``, ``hess_trace_se``) are not: they say how
    a measure was obtained, so they have no peak and are never ranked."""
    return key in catalogue.measures([key])


def verdict(s: dict, test_curve: pd.DataFrame) -> tuple[bool, str]:
    """Whether ``s`` (a :func:`dd_summary`) shows a double descent, and why (not).

    It needs (1) nets that fit their (noisy) training labels at the widest width — train error
    ≤ :data:`FIT_TOL`, else the sweep did not train to interpolation and says nothing about the
    second descent; (2) a test-error peak w_P beyond the classical optimum that stands above
    *both* sides — the test error at w_C and at the widest width — by more than the margin
    max(:data:`MIN_MARGIN`, std(w_P) + std(side)) over seeds (with one seed, the stated margin)."""
    if s.get("widest_train_err") is None or s["widest_train_err"] > FIT_TOL:
        te = s.get("widest_train_err")
        return False, (f"no evidence: the widest nets do not fit their training labels (train error "
                       f"{'—' if te is None else f'{te:.3f}'} > {FIT_TOL:g}); train longer or wider")
    w_p, w_c = s["test_peak_width"], s["best_narrower_width"]
    if w_p is None:
        return False, "the test error never rises above the classical optimum's"
    std = test_curve.set_index("x")["std"].astype(float)
    widest = float(test_curve["x"].iloc[-1])
    for side, err, what in ((w_c, s["best_narrower_err"], "the classical optimum"),
                            (widest, s["widest_err"], "the widest net")):
        margin = max(MIN_MARGIN, float(std.get(w_p, 0.0)) + float(std.get(side, 0.0)))
        if s["test_peak_err"] - err <= margin:
            return False, (f"the test-error peak {s['test_peak_err']:.3f} at {w_p:g} stands only "
                           f"{s['test_peak_err'] - err:.3f} above {what} ({err:.3f} at {side:g}); it needs more "
                           f"than {margin:.3f} (the seeds' spread, at least {MIN_MARGIN:g})")
    return True, (f"test-error peak {s['test_peak_err']:.3f} at {w_p:g} above the classical optimum "
                  f"({s['best_narrower_err']:.3f}) and the widest net ({s['widest_err']:.3f}), which fits its labels")


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


def with_bracket(final: pd.DataFrame) -> pd.DataFrame:
    """The table with the bracket's gaps: ``lip_gap`` = lip_upper_tight / lip_lower and
    ``lip_gap_product`` = lip_upper / lip_lower (where both are recorded)."""
    out = final.copy()
    if "lip_lower" in out:
        lower = pd.to_numeric(out["lip_lower"], errors="coerce")
        for name, upper in (("lip_gap", "lip_upper_tight"), ("lip_gap_product", "lip_upper")):
            if upper in out:
                out[name] = pd.to_numeric(out[upper], errors="coerce") / lower.where(lower > 0)
    return out


def theorem2_table(final: pd.DataFrame) -> pd.DataFrame:
    """Per (condition, width): mean LHS, MID, RHS of Theorem 2 at the last epoch, and in how many of
    the n seeds each inequality held. Empty without Theorem 2 values."""
    d = done_rows(final)
    if "thm2_mid" not in d or pd.to_numeric(d["thm2_mid"], errors="coerce").isna().all():
        return pd.DataFrame()
    keys = [k for k in ("condition", "x") if k in d]
    names = {"condition": "condition", "x": "width" if x_axis_of(d) == "model.width" else "n_train"}
    rows = []
    for key, g in d.groupby(keys, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        row = {names[k]: v for k, v in zip(keys, key)}
        row["n"] = len(g)
        for col, name in (("thm2_lhs", "LHS"), ("thm2_mid", "MID"), ("thm2_rhs", "RHS")):
            row[name] = pd.to_numeric(g.get(col), errors="coerce").mean() if col in g else np.nan
        for col, name in (("thm2_lhs_le_mid", "LHS ≤ MID held"), ("thm2_mid_le_rhs", "MID ≤ RHS held")):
            v = pd.to_numeric(g[col], errors="coerce").dropna() if col in g else pd.Series(dtype=float)
            row[name] = f"{int((v > 0.5).sum())}/{len(v)}" if len(v) else "—"
        rows.append(row)
    return pd.DataFrame(rows)
