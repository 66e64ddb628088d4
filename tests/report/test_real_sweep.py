"""A real tiny sweep (every metric group, two seeds) through the runner, then its full report."""

from __future__ import annotations

import json

import pandas as pd

from ddscope.config import load_sweep
from ddscope.report import build_report
from ddscope.catalogue import measures
from ddscope.runs.executors import InProcessExecutor
from ddscope.runs.runner import run_sweep

from ..tiny import CHEAP_COSTLY, EVERY_GROUP, overrides

# Every group, the costly ones made cheap: the report only needs their values to exist.
FAST = overrides({**CHEAP_COSTLY, **EVERY_GROUP})


def test_tiny_sweep_full_report(tmp_path, tiny_overrides):
    sweep = load_sweep("mnist1d-mlp", tiny_overrides + FAST + ["model.width=[4,8,16]", "seed=[0,1]"])
    out = run_sweep(sweep, tmp_path, InProcessExecutor(), show_progress=False)
    assert out.counts["done"] == 6
    page = build_report(tmp_path)
    rep = page.parent
    for name in ("double_descent", "smoothness", "over_epochs", "epoch_heatmaps", "interpolation", "theorem2",
                 "curvature", "distance"):
        assert (rep / f"{name}.png").exists() and (rep / f"{name}.pdf").exists(), name
    ev = pd.read_csv(rep / "evidence.csv")
    want = {"jac_spec_rms/train", "jac_spec_rms/test", "jac_spec_rms/path_same", "lip_upper", "hess_trace",
            "hess_top", "thm2_lhs", "thm2_mid", "thm2_rhs", "dist_rel/all", "lip_lower", "lip_upper_tight", "lip_gap"}
    assert want <= set(ev["measure"]) <= set(measures())
    a = ev[ev["region"] == "all"]
    assert (a["n_widths"] == 3).all() and (a["n_seeds"].astype(str) == "2").all()
    ok = a["spearman"].notna()  # a measure may tie across widths; the others have values in [-1, 1]
    assert ok.any() and a.loc[ok, "spearman"].between(-1, 1).all() and a.loc[ok, "kendall"].between(-1, 1).all()
    s = json.loads((rep / "summary.json").read_text())
    assert s["counts"] == {"pending": 0, "running": 0, "done": 6, "failed": 0}
    assert not [m for m in s["missing"] if m.startswith(("Metric group", "Figure"))], s["missing"]
    html = page.read_text()
    assert html.count("data:image/png;base64") == 10 and "Theorem 2 check per width" in html
    assert (rep / "bracket.png").exists() and (rep / "bracket_epochs.png").exists()
    # the bracket, in order, at every epoch of every trial that measured it (the store's own rows)
    tidy = pd.read_csv(rep / "tidy.csv")
    wide = tidy.pivot_table(index=["trial_id", "epoch"], columns="metric", values="value")
    wide = wide[wide["lip_lower"].notna()]
    assert len(wide) >= 6 * 2
    spec_max = wide[[c for c in wide.columns if c.startswith("jac_spec_max/")]].max(axis=1)
    assert (spec_max <= wide["lip_lower"]).all()
    assert (wide["lip_lower"] <= wide["lip_upper_tight"]).all() and (wide["lip_upper_tight"] <= wide["lip_upper"]).all()
    assert (wide["lip_upper_tight"] < wide["lip_upper"]).all()  # ECLipsE-Fast is tighter on these MLPs
    assert (wide["hess_trace_exact"].dropna() == 1).all()  # ReLU MLPs: the exact trace throughout
