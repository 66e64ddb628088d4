"""Correlations and peak locations of the evidence table against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from ddscope.report.evidence import evidence_table, kendall_rows, spearman_rows
from ddscope.runs.store import Store
from ddscope.report.table import final_table

from .synthetic import synthetic_store


@pytest.fixture
def ev(tmp_path):
    store = Store.open(synthetic_store(tmp_path))
    try:
        final = final_table(store)
    finally:
        store.close()
    return evidence_table(final, n_boot=400)


def _row(ev, noise, measure, region="all"):
    r = ev[(ev["condition"] == f"noise {100 * noise:g} %") & (ev["measure"] == measure) & (ev["region"] == region)]
    assert len(r) == 1, (noise, measure, region)
    return r.iloc[0]


def test_monotone_transform_gives_plus_one_and_anti_gives_minus_one(ev):
    for noise in (0.0, 0.2):
        r = _row(ev, noise, "jac_spec_rms/train")
        assert r["spearman"] == pytest.approx(1.0) and r["kendall"] == pytest.approx(1.0)
        # Seed spread (±0.01) < gaps between widths (≥ 0.01 apart after it): no draw reorders them.
        assert (r["spearman_lo"], r["spearman_hi"]) == pytest.approx((1.0, 1.0))
        assert (r["kendall_lo"], r["kendall_hi"]) == pytest.approx((1.0, 1.0))
        a = _row(ev, noise, "lip_upper")
        assert a["spearman"] == pytest.approx(-1.0) and a["kendall"] == pytest.approx(-1.0)
        assert (a["spearman_lo"], a["kendall_hi"]) == pytest.approx((-1.0, -1.0))
        assert r["n_widths"] == 7 and r["n_seeds"] == "3"


def test_ties_by_hand(ev):
    # Noise 0.2, widths 2..128: test error t = .50 .40 .45 .60 .35 .30 .25, measure m = 1 1 2 3 2 2 1.
    # Ranks of t: 6 4 5 7 3 2 1; average ranks of m: 2 2 5 7 5 5 2 (three 1s share ranks 1-3, three 2s 4-6).
    # Centred (mean rank 4): dt = 2 0 1 3 -1 -2 -3, dm = -2 -2 1 3 1 1 -2;
    # Σ dt·dm = -4+0+1+9-1-2+6 = 9, Σ dt² = 28, Σ dm² = 24  ->  ρ = 9 / √(28·24) = 9 / √672.
    # Kendall: of the 21 pairs, 6 are tied in m (3 + 3) and none in t; concordant minus discordant
    # over the other 15 = 10 - 5 = 5  ->  τ_b = 5 / √((21 - 6)(21 - 0)) = 5 / √315.
    r = _row(ev, 0.2, "hess_trace")
    assert r["spearman"] == pytest.approx(9 / math.sqrt(672))  # 0.3472
    assert r["kendall"] == pytest.approx(5 / math.sqrt(315))  # 0.2817
    # m is the same for every seed and no draw reorders t: the interval is the point.
    assert (r["spearman_lo"], r["spearman_hi"]) == pytest.approx((9 / math.sqrt(672),) * 2)


def test_peak_locations(ev):
    r = _row(ev, 0.2, "dist_rel/all")  # peaks at 32; test error peaks at 16 = the threshold
    assert (r["peak_width"], r["test_peak_width"], r["interp_width"]) == (32, 16, 16)
    assert r["steps_to_test_peak"] == 1 and r["steps_to_interp"] == 1 and not r["peak_at_edge"]
    j = _row(ev, 0.2, "jac_spec_rms/train")
    assert j["peak_width"] == 16 and j["steps_to_test_peak"] == 0
    a = _row(ev, 0.2, "lip_upper")  # 1 / test error: largest at the widest net
    assert a["peak_width"] == 128 and a["peak_at_edge"] and a["steps_to_test_peak"] == 3
    z = _row(ev, 0.0, "dist_rel/all")  # no test-error peak at noise 0: no steps to it
    assert pd.isna(z["test_peak_width"]) and pd.isna(z["steps_to_test_peak"])
    assert z["interp_width"] == 8 and z["steps_to_interp"] == 2


def test_region_from_classical_optimum(ev):
    # Noise 0.2: w_C = 4, so the second region has widths 4..128 (6 of them).
    r = _row(ev, 0.2, "jac_spec_rms/train", "from w_C")
    assert r["min_width"] == 4 and r["n_widths"] == 6 and r["spearman"] == pytest.approx(1.0)
    # Restricted to widths >= 4: t = .40 .45 .60 .35 .30 .25, m = 1 2 3 2 2 1 (hand, as above):
    # ranks t 4 5 6 3 2 1, average ranks m 1.5 4 6 4 4 1.5; dt = .5 1.5 2.5 -.5 -1.5 -2.5,
    # dm = -2 .5 2.5 .5 .5 -2; Σ dt·dm = -1+.75+6.25-.25-.75+5 = 10, Σ dt² = 17.5, Σ dm² = 15.
    h = _row(ev, 0.2, "hess_trace", "from w_C")
    assert h["spearman"] == pytest.approx(10 / math.sqrt(17.5 * 15))  # 0.6172


def test_vectorised_correlations_match_scipy():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 4, size=(200, 9)).astype(float)  # many ties
    y = rng.normal(size=(200, 9))
    y[:20] = np.round(y[:20])  # ties on both sides
    rho = spearman_rows(x, y)
    tau = kendall_rows(x, y)
    for i in range(200):
        ok = np.ptp(x[i]) > 0 and np.ptp(y[i]) > 0
        if ok:
            assert rho[i] == pytest.approx(stats.spearmanr(x[i], y[i])[0])
            assert tau[i] == pytest.approx(stats.kendalltau(x[i], y[i])[0])
        else:
            assert np.isnan(rho[i]) and np.isnan(tau[i])


def test_constant_measure_and_too_few_widths_give_nan_not_errors():
    final = pd.DataFrame({"status": "done", "model.width": [2, 4, 8, 2, 4], "data.noise": 0.1, "seed": [0, 0, 0, 1, 1],
                          "err/test": [0.5, 0.4, 0.3, 0.5, 0.4], "err/train": 0.1, "lip_upper": 1.0,
                          "hess_trace": [1.0, 2.0, np.nan, 1.0, 2.0]})
    ev = evidence_table(final, n_boot=50)
    lip = ev[(ev["measure"] == "lip_upper") & (ev["region"] == "all")].iloc[0]
    assert np.isnan(lip["spearman"]) and np.isnan(lip["kendall"])
    h = ev[(ev["measure"] == "hess_trace") & (ev["region"] == "all")].iloc[0]
    assert h["n_widths"] == 2 and np.isnan(h["spearman"])
