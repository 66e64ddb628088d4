"""Every grid axis other than the seeds is kept apart in the report (regression: a sweep over
seed=[0,1] × data.n_train=[300,1000] was reported as "n = 4 seeds", its bands mixing the sample
sizes), a sample-size axis is the x-axis when the width is fixed, and the double-descent verdict
needs trained nets and a peak that stands out (regression: a 1-epoch sweep at chance level got
"double descent: yes")."""

from __future__ import annotations

import json

import pandas as pd

from ddscope.report import build_report
from ddscope.report.evidence import evidence_table
from ddscope.report.summary import dd_summary
from ddscope.runs.store import Store
from ddscope.report.table import final_table
from ddscope.train import TrialResult

WIDTHS = [4, 8, 16, 32, 64]
# test error per width, per n_train: the two sample sizes have different curves
TEST = {100: [0.50, 0.62, 0.55, 0.45, 0.40], 400: [0.30, 0.28, 0.40, 0.25, 0.20]}


def _store(run, trials):
    """trials: (config dict, test error, train error, n_train actually used)."""
    store = Store.create(run / "store.sqlite", {"sweep": {"name": "t"}})
    for i, (cfg, test, train, n) in enumerate(trials):
        store.finish(TrialResult(trial_id=f"t{i}", config=cfg, status="done",
                                 records=[(5, "err/test", test), (5, "err/train", train),
                                          (5, "jac_spec_rms/train", 10 * test)],
                                 summary={"params": 10, "n_train": n, "wall_s": 1.0}))
    store.close()
    return run


def _cfg(width, n_train, seed, noise=0.1):
    return {"seed": seed, "model": {"name": "mlp", "width": width},
            "data": {"name": "mnist1d", "noise": noise, "n_train": n_train}}


def test_a_sample_size_axis_is_kept_apart_from_the_seeds(tmp_path):
    trials = [(_cfg(w, n, s), TEST[n][i] + 0.01 * s, 0.0, n) for n in TEST for i, w in enumerate(WIDTHS) for s in (0, 1)]
    run = _store(tmp_path / "run", trials)
    store = Store.open(run)
    final = final_table(store)
    store.close()
    assert sorted(final["condition"].unique()) == ["noise 10 %, n_train 100", "noise 10 %, n_train 400"]
    s = dd_summary(final, "noise 10 %, n_train 100")
    assert s["n_seeds"] == [2, 2] and s["test_peak_width"] == 8  # 2 seeds, not 4; n = 100's own peak
    assert dd_summary(final, "noise 10 %, n_train 400")["test_peak_width"] == 16
    ev = evidence_table(final, n_boot=20)
    assert set(ev["condition"]) == {"noise 10 %, n_train 100", "noise 10 %, n_train 400"}
    assert set(ev["n_seeds"].astype(str)) == {"2"}
    page = build_report(run)
    summary = json.loads((run / "report" / "summary.json").read_text())
    assert summary["conditions"] == ["noise 10 %, n_train 100", "noise 10 %, n_train 400"]
    assert summary["double_descent"]["noise 10 %, n_train 100"]["n_seeds"] == [2, 2]
    html = page.read_text()
    assert "n_train" in html.split("Final table")[1]  # the final table keeps the axis as a column
    from ddscope.report import figures

    fig = figures.double_descent(final)
    assert fig.axes[0].get_title() == "Double descent — mean ± std over seeds, n = 2 seeds"  # not n = 4
    assert len(fig.axes[0].lines) >= 4  # test and train curves for each of the two conditions


def test_sample_wise_double_descent_puts_the_training_set_size_on_the_x_axis(tmp_path):
    sizes = [50, 100, 200, 400, 800]
    test = [0.40, 0.55, 0.45, 0.30, 0.25]
    run = _store(tmp_path / "run", [(_cfg(32, n, 0), t, 0.0, n) for n, t in zip(sizes, test)])
    store = Store.open(run)
    final = final_table(store)
    store.close()
    assert set(final["x_axis"]) == {"data.n_train"} and final["x"].tolist() == sizes
    s = dd_summary(final)
    assert s["widths"] == sizes and s["test_peak_width"] == 100 and s["double_descent"] is True
    build_report(run)
    assert json.loads((run / "report" / "summary.json").read_text())["x_axis"] == "data.n_train"


def _final(test, train, std=None):
    std = std or [0.0] * len(test)
    rows = []
    for i, (w, t, tr) in enumerate(zip(WIDTHS, test, train)):
        for sign in ((-1, 1) if std[i] else (0,)):
            rows.append({"status": "done", "model.width": w, "data.noise": 0.1, "seed": sign,
                         "err/test": t + sign * std[i] / 2 ** 0.5, "err/train": tr})
    return pd.DataFrame(rows)


def test_no_verdict_of_double_descent_on_untrained_nets():
    s = dd_summary(_final([0.87, 0.91, 0.89, 0.88, 0.88], [0.86, 0.85, 0.85, 0.84, 0.85]))  # one epoch
    assert s["double_descent"] is False and "do not fit their training labels" in s["verdict"]


def test_a_peak_inside_the_margin_or_the_seed_spread_is_no_double_descent():
    train = [0.3, 0.1, 0.0, 0.0, 0.0]
    s = dd_summary(_final([0.40, 0.50, 0.43, 0.30, 0.205], train))
    assert s["double_descent"] is True and s["test_peak_width"] == 8
    s = dd_summary(_final([0.40, 0.405, 0.401, 0.401, 0.401], train))  # 0.005 above the sides, one seed
    assert s["double_descent"] is False and "stands only" in s["verdict"]
    # 0.05 above the widest net, but the seeds spread by 0.05 (peak) + 0.03 (widest)
    s = dd_summary(_final([0.40, 0.50, 0.43, 0.45, 0.45], train, std=[0.02, 0.05, 0.01, 0.03, 0.03]))
    assert s["double_descent"] is False and "the seeds' spread" in s["verdict"] and "the widest net" in s["verdict"]
    s = dd_summary(_final([0.40, 0.60, 0.43, 0.45, 0.45], train, std=[0.02, 0.02, 0.01, 0.01, 0.01]))
    assert s["double_descent"] is True and s["n_seeds"] == [2, 2]
