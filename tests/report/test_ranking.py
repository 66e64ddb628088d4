"""The measure ranking over a sweep's nets: which nets enter, which axes are used, the scores of
measures with known relations to the test error, the bootstrap, the regions, and the report."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from ddscope.report import build_report
from ddscope.report.protocols import kendall_tau
from ddscope.report.ranking import axes_of, measures_of, nets_table, ranking_markdown, ranking_table, scores
from ddscope.runs.store import Store
from ddscope.report.table import final_table, tidy

from .synthetic import SEEDS, TRAIN, WIDTHS, synthetic_store


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    run = synthetic_store(tmp_path_factory.mktemp("rank"))
    store = Store.open(run)
    try:
        return run, final_table(store), tidy(store)
    finally:
        store.close()


def _row(rank, measure, target="test", region="all"):
    r = rank[(rank["measure"] == measure) & (rank["target"] == target) & (rank["region"] == region)]
    assert len(r) == 1, (measure, target, region)
    return r.iloc[0]


def test_the_training_criterion_excludes_underfit_nets(tables):
    _, final, _ = tables
    rank = ranking_table(final, n_boot=0)
    # train error 0 from width 16 (noise 0.2) and width 8 (noise 0.0) on: 4 + 5 widths × 3 seeds enter
    fitted = sum(t <= 0.01 for n in (0.0, 0.2) for t in TRAIN[n]) * len(SEEDS)
    assert (rank["n_excluded"] == len(WIDTHS) * 2 * len(SEEDS) - fitted).all()
    assert _row(rank, "jac_spec_rms/train")["n_nets"] == fitted
    everything = ranking_table(final, criterion=None, n_boot=0)
    assert (everything["n_excluded"] == 0).all() and _row(everything, "jac_spec_rms/train")["n_nets"] == 42


def test_known_relations_score_as_they_must(tables):
    _, final, _ = tables
    rank = ranking_table(final, n_boot=30)
    mono, anti = _row(rank, "jac_spec_rms/train"), _row(rank, "lip_upper")  # 10·exp(test error), 1 / test error
    # τ_a: pairs of nets with the same test error (across the noise levels) count 0
    nets = nets_table(final)
    test = nets[pd.to_numeric(nets["err/train"]) <= 0.01]["err/test"].round(12).to_numpy()
    n = len(test)
    tied = sum(test[i] == test[j] for i in range(n) for j in range(i + 1, n))
    assert tied > 0
    assert mono["tau"] == pytest.approx(1 - tied / (n * (n - 1) / 2))
    assert anti["tau"] == pytest.approx(-mono["tau"])
    # within one noise level and seed no test errors tie: ψ = ±1 on every axis
    assert mono["psi"] == pytest.approx(1.0) and anti["psi"] == pytest.approx(-1.0)
    # the signs of Δmeasure carry all of V_g — in either direction
    assert mono["cmi_0"] == pytest.approx(1.0) and anti["cmi_0"] == pytest.approx(1.0)
    assert mono["sign_worst"] == pytest.approx(0.0) and anti["sign_mean"] == pytest.approx(1.0)
    assert mono["n_env"] > 0
    # environments per hyper-parameter axis (seeds are the samples, not an axis)
    assert set(mono["sign_by_axis"]) == {"model.width", "data.noise"}
    assert all(worst == 0.0 for worst, _, _ in mono["sign_by_axis"].values())
    assert sum(n for _, _, n in anti["sign_by_axis"].values()) == anti["n_env"]
    # every score has its interval, the CMI at each |S| too
    assert mono["cmi_0_lo"] <= mono["cmi_0"] + 1e-12 and not math.isnan(mono["cmi_1_hi"])
    # seeds fix the order within a condition (spread < gaps): no replicate finds a sign error; a
    # seed drawn twice ties with itself along the seed axis, which only lowers Ψ's lower end
    assert (mono["sign_worst_lo"], mono["sign_worst_hi"]) == (0.0, 0.0)
    assert mono["psi_lo"] <= mono["psi"] and mono["psi_hi"] == pytest.approx(1.0)
    # on fitted nets the gap is the test error: the same scores
    assert _row(rank, "jac_spec_rms/train", target="gap")["tau"] == pytest.approx(mono["tau"])
    # sorted by Ψ, largest first
    t = rank[(rank["region"] == "all") & (rank["target"] == "test")]
    assert list(t["psi"].dropna()) == sorted(t["psi"].dropna(), reverse=True)


def test_scores_match_the_protocols_on_the_selected_nets(tables):
    _, final, _ = tables
    nets = nets_table(final)
    nets = nets[pd.to_numeric(nets["err/train"]) <= 0.01]
    sc = scores(nets, "hess_trace", "test", axes_of(nets))
    ref = kendall_tau(nets["hess_trace"].to_numpy(float), nets["err/test"].to_numpy(float))
    assert sc["tau"] == pytest.approx(ref)
    assert set(sc["psi_by_axis"]) == {"model.width", "data.noise", "seed"}


def test_measures_and_axes(tables):
    _, final, _ = tables
    ms = measures_of(final)
    assert ms[:2] == ["jac_spec_rms/train", "lip_upper"] and "params" in ms
    assert "err/test" not in ms and "dist_rel/net.0" not in ms
    assert axes_of(nets_table(final)) == ["model.width", "data.noise", "seed"]


def test_over_parameterised_region_starts_at_the_test_peak(tables):
    _, final, _ = tables
    rank = ranking_table(final, criterion=None, n_boot=0)
    # noise 0.2: peak at 16 -> widths 16..128 (4); noise 0.0: no peak, from its threshold 8 (5 widths)
    assert _row(rank, "jac_spec_rms/train", region="over-parameterised")["n_nets"] == (4 + 5) * len(SEEDS)


def test_epochs_all_adds_the_epoch_axis(tables):
    _, final, long = tables
    nets = nets_table(final, long, epochs="all")
    assert "epoch" in axes_of(nets)
    rank = ranking_table(final, long, epochs="all", criterion=None, n_boot=0)
    r = _row(rank, "jac_spec_rms/train")
    assert r["n_nets"] == 42 * 4  # the Jacobian's four epochs per trial
    assert "epoch" in r["psi_by_axis"]
    with pytest.raises(ValueError, match="epochs"):
        nets_table(final, long, epochs="some")


def test_one_seed_has_no_interval(tables):
    _, final, _ = tables
    rank = ranking_table(final[final["seed"] == 0], n_boot=20)
    r = _row(rank, "jac_spec_rms/train")
    assert math.isnan(r["tau_lo"]) and not math.isnan(r["tau"])


def test_the_report_shows_the_ranking(tables, tmp_path):
    run, _, _ = tables
    page = build_report(run, tmp_path / "rep")
    html = page.read_text()
    assert "Which measure tracks generalisation?" in html and "sign-error worst" in html
    rank = pd.read_csv(tmp_path / "rep" / "ranking.csv")
    assert {"tau", "psi", "cmi_0", "sign_worst"} <= set(rank.columns) and len(rank)
    md = (tmp_path / "rep" / "ranking.md").read_text()
    assert md.startswith("**all nets, target: generalisation gap") and "jac_spec_rms/train" in md
    assert (tmp_path / "rep" / "ranking.png").exists()
    assert ranking_markdown(rank.iloc[:0]).startswith("(no ranking")


def test_no_net_meets_the_criterion(tables):
    _, final, _ = tables
    underfit = final[pd.to_numeric(final["err/train"]) > 0.01]
    assert ranking_table(underfit).empty
    assert not ranking_table(underfit, criterion=1.0, n_boot=0).empty


def test_a_table_without_training_errors_has_no_ranking(tables):
    """A Tracker run that logged test errors only: no gap, no criterion — an empty table, not a KeyError."""
    _, final, _ = tables
    assert ranking_table(final.drop(columns=["err/train"])).empty


def test_the_cli_passes_the_ranking_options(tables, tmp_path, capsys, monkeypatch):
    import json

    from ddscope.report import ranking
    from tests.clirun import cli_inline

    monkeypatch.setattr(ranking, "N_BOOT", 10)  # the options are under test, not the intervals

    run, _, _ = tables
    code, _, err = cli_inline(capsys, "report", str(run), "--out", str(tmp_path / "a"))
    assert code == 0, err
    r = json.loads((tmp_path / "a" / "summary.json").read_text())["ranking"]
    assert (r["epochs"], r["criterion"], r["excluded"]) == ("final", 0.01, 42 - 27)
    code, _, err = cli_inline(capsys, "report", str(run), "--out", str(tmp_path / "b"), "--criterion", "1",
                              "--rank-epochs", "all")
    assert code == 0, err
    r = json.loads((tmp_path / "b" / "summary.json").read_text())["ranking"]
    assert (r["epochs"], r["criterion"], r["excluded"]) == ("all", 1.0, 0)
    code, _, err = cli_inline(capsys, "report", str(run), "--criterion", "2")
    assert code == 2 and "criterion" in err
