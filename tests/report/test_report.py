"""build_report end to end on synthetic stores: complete, partly finished, empty."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd

from ddscope.report import build_report, epochs, figures
from ddscope.runs.store import Store
from ddscope.train import TrialResult

from .synthetic import SWEEP, WIDTHS, finish, synthetic_store, trial_config, trial_id

FIGURES = ("double_descent", "smoothness", "over_epochs", "epoch_heatmaps", "interpolation", "theorem2",
           "curvature", "distance", "ranking")


def test_full_report_files_and_numbers(tmp_path):
    page = build_report(synthetic_store(tmp_path), tmp_path / "rep")
    out = page.parent
    assert page.name == "index.html"
    for name in ("final_table.csv", "tidy.csv", "evidence.csv", "evidence.md", "summary.json"):
        assert (out / name).exists(), name
    # No Theorem 2 values in this store: every other figure, as PNG and PDF.
    for name in FIGURES:
        if name != "theorem2":
            assert (out / f"{name}.png").stat().st_size > 5000 and (out / f"{name}.pdf").exists(), name
    ev = pd.read_csv(out / "evidence.csv")
    r = ev[(ev["condition"] == "noise 20 %") & (ev["measure"] == "dist_rel/all") & (ev["region"] == "all")].iloc[0]
    assert (r["peak_width"], r["test_peak_width"], r["interp_width"], r["steps_to_test_peak"]) == (32, 16, 16, 1)
    s = json.loads((out / "summary.json").read_text())
    assert s["double_descent"]["noise 20 %"]["test_peak_width"] == 16
    assert s["double_descent"]["noise 0 %"]["double_descent"] is False
    assert s["representative_widths"]["noise 20 %"] == {"under": 4, "critical": 16, "over": 64, "widest": 128}
    assert s["counts"]["done"] == 42 and s["figures"]["theorem2"] is None
    html = (out / "index.html").read_text()
    assert html.count("data:image/png;base64") == len(FIGURES) - 1
    for text in ("Evidence table", "Spearman", "Kendall", "noise 20 %", "Sweep config", "torch", "scipy"):
        assert text in html, text
    # Only what this store lacks is listed as missing.
    assert "Metric group &#x27;theorem2&#x27;" in html and "Metric group &#x27;hessian&#x27;" not in html
    assert "evidence.csv" in html and "| measure |" in (out / "evidence.md").read_text()


def test_partial_store_says_what_is_missing(tmp_path):
    """Pending trials, a failed trial, a width with fewer seeds, metric groups never measured."""
    run = tmp_path / "run"
    store = Store.create(run / "store.sqlite", {**SWEEP, "metrics": {"groups": ["jacobian", "hessian"]}})
    trials = [(w, 0.2, s) for w in WIDTHS for s in (0, 1)]
    store.add_trials((trial_id(*t), trial_config(*t)) for t in trials)
    for w, n, s in trials:
        if (w, s) in ((128, 0), (128, 1), (8, 1)):
            continue  # width 128 pending; width 8 seed 1 fails below
        finish(store, w, n, s, groups=("jacobian",))
    store.finish(TrialResult(trial_id=trial_id(8, 0.2, 1), config=trial_config(8, 0.2, 1), status="failed",
                             records=[(0, "err/train", 0.9), (1, "err/train", float("nan"))],
                             error="diverged: loss became nan at epoch 1 (step 3)", summary={"failed_epoch": 1}))
    store.close()
    page = build_report(run)
    assert page == run / "report" / "index.html"
    html = page.read_text()
    for text in (
        "The sweep is not finished: 2 trial(s) pending",
        "Failed trial (width 8, noise 0.2, seed 1): diverged: loss became nan at epoch 1",
        "Fewer done seeds than planned at noise 20 %, width 8: 1 of 2",
        "Metric group &#x27;hessian&#x27; (trace and top eigenvalue of the training loss&#x27;s Hessian: hess_trace, ",
        "hess_top): enabled, but no trial has recorded it yet",
        "Metric group &#x27;distance&#x27; (distance from initialisation: dist_abs/&lt;layer&gt;, dist_rel/&lt;layer&gt;, "
        "dist_abs/all, dist_rel/all): not enabled",
        "Figure &#x27;Curvature&#x27; not drawn",
        "Failed trials",
    ):
        assert text in html, text
    out = page.parent
    for name in ("double_descent", "smoothness", "over_epochs", "epoch_heatmaps", "interpolation"):
        assert (out / f"{name}.png").exists(), name
    for name in ("curvature", "distance", "theorem2"):
        assert not (out / f"{name}.png").exists(), name
    s = json.loads((out / "summary.json").read_text())
    assert any("pending" in m for m in s["missing"]) and s["figures"]["curvature"] is None
    ev = pd.read_csv(out / "evidence.csv")
    assert set(ev["measure"]) == {"jac_spec_rms/train"} and set(ev["n_seeds"]) == {"1–2"}
    assert ev.set_index("region")["n_widths"].to_dict() == {"all": 6, "from w_C": 5}  # width 128 pending; w_C = 4


def test_store_with_nothing_done(tmp_path):
    run = tmp_path / "run"
    store = Store.create(run / "store.sqlite", SWEEP)
    store.add_trials((trial_id(w, 0.2, 0), trial_config(w, 0.2, 0)) for w in WIDTHS)
    store.close()
    html = build_report(run, tmp_path / "rep").read_text()
    assert "No trial is done yet" in html and "7 trial(s) pending" in html
    assert "data:image/png" not in html
    assert (tmp_path / "rep" / "evidence.csv").exists() and (tmp_path / "rep" / "summary.json").exists()


def test_figures_are_none_without_data():
    empty = pd.DataFrame({"status": pd.Series(dtype=str), "model.width": pd.Series(dtype=float)})
    for fn in (figures.double_descent, figures.smoothness, figures.theorem2, figures.curvature, figures.distance):
        assert fn(empty) is None, fn.__name__
    tidy = pd.DataFrame(columns=["trial_id", "epoch", "metric", "value", "status", "model.width", "data.noise", "seed"])
    assert epochs.over_epochs(tidy, {}) is None and epochs.epoch_heatmaps(tidy) is None


def test_training_never_imports_matplotlib():
    code = "import sys, ddscope.train, ddscope.runs.runner, ddscope.report.table; sys.exit('matplotlib' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_one_width_and_no_noise_axis(tmp_path):
    """Configs without data.noise and a single width: no double-descent summary, no error."""
    run = tmp_path / "run"
    store = Store.create(run / "store.sqlite", {"sweep": {"name": "one"}})
    for seed in (0, 1):
        recs = [(e, "err/train", 0.5 - 0.1 * e) for e in range(4)] + [(e, "err/test", 0.6) for e in range(4)]
        recs += [(3, "jac_spec_rms/train", 2.0 + seed)]
        store.finish(TrialResult(trial_id=f"t{seed}", config={"seed": seed, "model": {"name": "mlp", "width": 8}},
                                 status="done", records=recs, summary={"interp_epoch": None}))
    store.close()
    html = build_report(run).read_text()
    assert "1 width(s) with a finished trial: a double descent needs at least 3" in html
    assert "No done trial interpolated" in html and "data:image/png;base64" in html


def test_the_report_says_each_step_to_a_progress_callback(tmp_path):
    from ddscope.report import build_report

    from .synthetic import synthetic_store

    run = synthetic_store(tmp_path)
    heard: list[str] = []
    build_report(run, progress=heard.append)
    steps = [h.rsplit(" (", 1)[0] for h in heard]
    assert steps[0] == "reading the store" and steps[-1] == "the figures"
    assert any(s.startswith("the measure ranking") for s in steps) and all(h.endswith(" s)") for h in heard)


def test_the_headline_figures_come_before_the_long_tables_and_notes_are_not_missing_items(tmp_path):
    from ddscope.report import build_report
    from ddscope.report.plots import subtitle

    from .synthetic import synthetic_store

    run = synthetic_store(tmp_path)
    page = build_report(run).read_text()
    heads = [page.index(f"<h2>{h}</h2>") for h in ("Summary", "Double descent", "The Lipschitz constant, bracketed",
                                                  "Evidence table", "Final table (one row per trial)")]
    assert heads == sorted(heads)
    assert "<details><summary>What each measure is</summary>" in page
    missing = page.split("What is missing")[1].split("</div>")[0] if "What is missing" in page else ""
    assert "sampled estimate" not in missing
    assert subtitle([0.1], [1, 1, 1]).startswith("one seed per point (no spread)")
    assert subtitle([0.1], [3, 3]).startswith("mean ± std over seeds, n = 3 seeds")
