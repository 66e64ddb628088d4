"""Double-descent summary rules (threshold, classical optimum, peak) and representative widths."""

from __future__ import annotations

import pandas as pd
import pytest

from ddscope.report.summary import (
    classical_optimum,
    dd_peak,
    dd_summary,
    interp_threshold,
    representative_widths,
    theorem2_table,
)
from ddscope.runs.store import Store
from ddscope.report.table import final_table

from .synthetic import synthetic_store


@pytest.fixture
def final(tmp_path):
    store = Store.open(synthetic_store(tmp_path))
    try:
        return final_table(store)
    finally:
        store.close()


def test_dd_summary_with_a_peak(final):
    s = dd_summary(final, 0.2)
    assert s["widths"] == [2, 4, 8, 16, 32, 64, 128] and s["n_seeds"] == [3, 3]
    assert s["interp_width"] == 16
    assert s["best_narrower_width"] == 4 and s["best_narrower_err"] == pytest.approx(0.40)
    assert s["test_peak_width"] == 16 and s["test_peak_err"] == pytest.approx(0.60)
    assert s["widest_err"] == pytest.approx(0.25) and s["widest_train_err"] == 0.0
    assert s["double_descent"] is True
    assert s["peak/dist_rel/all"] == 32 and s["grid_steps/dist_rel/all"] == 1


def test_dd_summary_without_a_peak(final):
    s = dd_summary(final, 0.0)
    assert s["interp_width"] == 8 and s["best_narrower_width"] == 4
    assert s["test_peak_width"] is None and s["double_descent"] is False
    # Without a noise level it summarises the lowest one.
    assert dd_summary(final)["condition"] == "noise 0 %"


def test_peak_rules_on_small_curves():
    w = [1.0, 2.0, 4.0, 8.0, 16.0]
    s = lambda v: pd.Series(v, index=w)
    # Under-fit nets have the highest error; the peak is the one beyond the classical optimum.
    test = s([0.9, 0.5, 0.7, 0.6, 0.4])
    assert interp_threshold(s([0.5, 0.2, 0.0, 0.0, 0.0])) == 4
    assert classical_optimum(test, 4.0) == 2 and dd_peak(test, 4.0) == 4
    # Monotone falling test error: no peak.
    assert dd_peak(s([0.9, 0.7, 0.5, 0.4, 0.3]), 4.0) is None
    # Nothing interpolates: the optimum is over all widths.
    assert interp_threshold(s([0.5, 0.4, 0.3, 0.2, 0.1])) is None
    assert classical_optimum(test, None) == 16 and dd_peak(test, None) is None
    # Threshold at the narrowest width: optimum = narrowest, peak anywhere above it.
    assert dd_peak(s([0.3, 0.5, 0.4, 0.35, 0.2]), 1.0) == 2


def test_representative_widths(final):
    assert representative_widths(final, 0.2) == {"under": 4, "critical": 16, "over": 64, "widest": 128}
    # No peak at noise 0: the threshold (8) stands for the critical regime.
    assert representative_widths(final, 0.0) == {"under": 4, "critical": 8, "over": 32, "widest": 128}
    flat = pd.DataFrame({"status": "done", "model.width": [2, 4, 8, 16], "err/train": 0.5, "err/test": 0.5})
    assert representative_widths(flat) == {"narrowest": 2, "middle": 8, "widest": 16}


def test_theorem2_table_counts_held_inequalities():
    final = pd.DataFrame({"status": "done", "model.width": [4, 4, 8], "data.noise": 0.1, "seed": [0, 1, 0],
                          "thm2_lhs": [1.0, 3.0, 1.0], "thm2_mid": [2.0, 2.0, 2.0], "thm2_rhs": [5.0, 5.0, 1.0],
                          "thm2_lhs_le_mid": [1.0, 0.0, 1.0], "thm2_mid_le_rhs": [1.0, 1.0, 0.0]})
    t = theorem2_table(final)
    assert list(t["width"]) == [4, 8] and list(t["n"]) == [2, 1]
    assert t["LHS"].tolist() == [2.0, 1.0]
    assert t["LHS ≤ MID held"].tolist() == ["1/2", "1/1"] and t["MID ≤ RHS held"].tolist() == ["2/2", "0/1"]
    assert theorem2_table(final.drop(columns=["thm2_mid"])).empty
