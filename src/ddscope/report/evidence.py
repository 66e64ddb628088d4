"""The evidence table: does a complexity measure follow the test error across widths?

For each measure and label-noise level, on the per-width means over seeds of the final-epoch
values (done trials only):

- Spearman's ρ (Pearson correlation of average ranks) and Kendall's τ_b (ties corrected:
  τ_b = (C − D) / √((n₀ − n₁)(n₀ − n₂)), n₀ = W(W−1)/2 pairs, n₁ / n₂ pairs tied in the measure /
  the test error) between the measure and the test error over the W widths, with p-values
  (scipy.stats);
- both over all widths (``region`` "all") and over the widths from the classical optimum w_C on
  (``region`` "from w_C": the critical and over-parameterised regime, where the claim that
  smoothness mirrors the test error is made; under-fit nets are smooth *and* bad);
- a percentile bootstrap interval over seeds: each replicate redraws, independently per width,
  that width's trials with replacement (a trial's measure and test error stay paired), and
  recomputes both correlations on the resampled means. One seed per width gives no interval;
- where the measure peaks (its largest mean), against the test-error peak and the
  interpolation threshold of :mod:`.summary`, also as signed steps along the width grid.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy import stats

from .. import catalogue
from .summary import (
    conditions,
    at_noise,
    classical_optimum,
    dd_peak,
    done_rows,
    grid_steps,
    interp_threshold,
    mean_by_width,
    peak_width,
)

COLUMNS = [
    "condition", "region", "min_width", "measure", "n_widths", "n_seeds", "spearman", "spearman_lo", "spearman_hi", "spearman_p",
    "kendall", "kendall_lo", "kendall_hi", "kendall_p", "peak_width", "peak_at_edge", "test_peak_width",
    "interp_width", "steps_to_test_peak", "steps_to_interp",
]


def spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's ρ of each row pair of ``x, y`` (B, W); NaN for a constant row."""
    rx = stats.rankdata(x, axis=-1)
    ry = stats.rankdata(y, axis=-1)
    rx = rx - rx.mean(-1, keepdims=True)
    ry = ry - ry.mean(-1, keepdims=True)
    den = np.sqrt((rx**2).sum(-1) * (ry**2).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (rx * ry).sum(-1) / np.where(den > 0, den, 1.0), np.nan)


def kendall_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kendall's τ_b of each row pair of ``x, y`` (B, W); NaN when one row is constant."""
    w = x.shape[-1]
    iu = np.triu_indices(w, k=1)
    sx = np.sign(x[..., :, None] - x[..., None, :])[..., iu[0], iu[1]]  # (B, W(W−1)/2)
    sy = np.sign(y[..., :, None] - y[..., None, :])[..., iu[0], iu[1]]
    n0 = len(iu[0])
    den = np.sqrt((n0 - (sx == 0).sum(-1)) * (n0 - (sy == 0).sum(-1)).astype(float))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (sx * sy).sum(-1) / np.where(den > 0, den, 1.0), np.nan)


def _pairs_by_width(final: pd.DataFrame, measure: str, noise, min_width=None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per width (sorted, ≥ ``min_width``), the paired (measure, test error) values of its done trials."""
    d = at_noise(done_rows(final), noise)
    if min_width is not None:
        d = d[d["x"].astype(float) >= min_width]
    m = pd.to_numeric(d[measure], errors="coerce").to_numpy(float)
    t = pd.to_numeric(d["err/test"], errors="coerce").to_numpy(float)
    w = d["x"].to_numpy(float)
    ok = np.isfinite(m) & np.isfinite(t)
    return [(m[ok & (w == k)], t[ok & (w == k)]) for k in sorted(set(w[ok]))]


def bootstrap_interval(pairs, *, n_boot: int = 1000, level: float = 0.95, seed: int = 0):
    """Percentile intervals ``(ρ_lo, ρ_hi, τ_lo, τ_hi)`` of the correlation of per-width means
    when each width's trials are redrawn with replacement; NaNs with one trial per width."""
    nan4 = (np.nan,) * 4
    if len(pairs) < 3 or max(len(m) for m, _ in pairs) < 2:
        return nan4
    rng = np.random.default_rng(seed)
    mb = np.empty((n_boot, len(pairs)))
    tb = np.empty((n_boot, len(pairs)))
    for j, (m, t) in enumerate(pairs):
        idx = rng.integers(0, len(m), size=(n_boot, len(m)))  # same draw for both: pairs kept
        mb[:, j] = m[idx].mean(1)
        tb[:, j] = t[idx].mean(1)
    q = [50 * (1 - level), 50 * (1 + level)]
    out = []
    for r in (spearman_rows(mb, tb), kendall_rows(mb, tb)):
        out += list(np.nanpercentile(r, q)) if np.isfinite(r).any() else [np.nan, np.nan]
    return tuple(float(v) for v in out)


def correlate(final: pd.DataFrame, measure: str, noise=None, *, min_width=None, n_boot: int = 1000,
              seed: int = 0) -> dict:
    """Rank correlations of ``measure`` with the test error across widths (≥ ``min_width``),
    with bootstrap intervals over seeds."""
    pairs = _pairs_by_width(final, measure, noise, min_width)
    ns = [len(m) for m, _ in pairs]
    out = {"n_widths": len(pairs), "n_seeds": _n_range(ns)}
    keys = ("spearman", "spearman_p", "kendall", "kendall_p", "spearman_lo", "spearman_hi", "kendall_lo", "kendall_hi")
    out.update(dict.fromkeys(keys, np.nan))
    if len(pairs) < 3:
        return out
    mm = np.array([m.mean() for m, _ in pairs])
    tm = np.array([t.mean() for _, t in pairs])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant input: NaN, said in the table
        rho, rp = stats.spearmanr(mm, tm)
        tau, tp = stats.kendalltau(mm, tm)  # τ_b
    lo_r, hi_r, lo_t, hi_t = bootstrap_interval(pairs, n_boot=n_boot, seed=seed)
    out.update(spearman=float(rho), spearman_p=float(rp), kendall=float(tau), kendall_p=float(tp),
               spearman_lo=lo_r, spearman_hi=hi_r, kendall_lo=lo_t, kendall_hi=hi_t)
    return out


def _n_range(ns: list[int]) -> str:
    if not ns:
        return "0"
    return str(min(ns)) if min(ns) == max(ns) else f"{min(ns)}–{max(ns)}"


def measures_in(final: pd.DataFrame) -> list[str]:
    """The catalogue's measures (:func:`ddscope.catalogue.measures`: every metric group's, in its
    order) that the table has at least one value of."""
    d = done_rows(final)
    return [m for m in catalogue.measures(d.columns) if m in d and pd.to_numeric(d[m], errors="coerce").notna().any()]


def evidence_table(final: pd.DataFrame, *, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """One row per (noise level, region, measure): correlations with the test error and peak
    locations (columns :data:`COLUMNS`). Empty without test errors."""
    d = done_rows(final)
    if d.empty or "err/test" not in d:
        return pd.DataFrame(columns=COLUMNS)
    levels = conditions(d)
    rows = []
    for noise in levels or [None]:
        test = mean_by_width(d, "err/test", noise)
        train = mean_by_width(d, "err/train", noise)
        widths = [float(w) for w in test.index]
        w_i = interp_threshold(train)
        w_p = dd_peak(test, w_i)
        w_c = classical_optimum(test, w_i)
        regions = [("all", None)]
        if w_c is not None and widths and w_c > widths[0] and sum(w >= w_c for w in widths) >= 3:
            regions.append(("from w_C", w_c))
        for region, lo in regions:
            for measure in measures_in(d):
                s = mean_by_width(d, measure, noise)
                if s.empty:
                    continue
                pk = peak_width(s if lo is None else s[s.index >= lo])
                rows.append({
                    "condition": noise,
                    "region": region,
                    "min_width": widths[0] if lo is None else lo,
                    "measure": measure,
                    **correlate(d, measure, noise, min_width=lo, n_boot=n_boot, seed=seed),
                    "peak_width": pk,
                    "peak_at_edge": bool(pk is not None and len(s) > 1 and pk in (float(s.index[0]), float(s.index[-1]))),
                    "test_peak_width": w_p,
                    "interp_width": w_i,
                    "steps_to_test_peak": grid_steps(widths, pk, w_p),
                    "steps_to_interp": grid_steps(widths, pk, w_i),
                })
    out = pd.DataFrame(rows, columns=COLUMNS)
    for c in ("steps_to_test_peak", "steps_to_interp"):
        out[c] = out[c].astype("Int64")
    return out
