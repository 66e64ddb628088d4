"""The run-time proofs behind every exact or certified number, inside ``measure`` and sweeps: each
check is shown to fail (on a model built to break it) and to fall back as documented."""

from __future__ import annotations

import math
import warnings

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ddscope.metrics.hessian as H
import ddscope.metrics.jacobian as J
from ddscope.metrics import reference as R
from ddscope.metrics.hessian import hess_trace_detail
from ddscope.metrics.jacobian import jacobian_norms
from ddscope.metrics.suite import MetricNote, MetricSkipped, measure
from ddscope.metrics.theorem import theorem2
from ddscope.report.summary import dd_summary, is_measure

from ..zoo import ScaledLogits, StandardizedMLP, TiedAutoencoder, build

CHEAP = {"hess_matvecs": 9, "path_pairs": 3, "path_k": 3, "lanczos_iters": 4, "hess_samples": 16, "jac_samples": 16,
         "lip_lower_steps": 3}


def _splits(shape, n=24, seed=0, classes=3):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *shape, generator=g, dtype=torch.float64)
    return {"train": (x, torch.randint(0, classes, (n,), generator=g)), "test": (x[:8], torch.randint(0, classes, (8,), generator=g))}


def test_the_poster_statistic_on_a_standardising_sequential_subclass_is_the_dense_one():
    model = build("standardising Sequential subclass")
    x = _splits((12,))["train"][0]
    got = measure(model, {"train": (x, torch.zeros(len(x), dtype=torch.long))}, metrics=["jacobian"],
                  input_shape=(12,), options={"jac_samples": None})
    want = R.jacobian_norms_dense(model, x).spec
    assert got["jac_spec_max/train"] == pytest.approx(float(want.max()), rel=1e-9)


def test_the_jacobian_probe_catches_a_fast_path_that_is_not_the_models_function(monkeypatch):
    model = StandardizedMLP().double()
    x = torch.randn(5, 12, dtype=torch.float64)
    want = R.jacobian_norms_dense(model, x)
    wrong = nn.Sequential(model[0], model[1], model[2])  # the children, without the forward's scaling
    monkeypatch.setattr(J, "linear_stem", lambda m: (nn.Sequential(), wrong[0], nn.Sequential(*wrong[1:])))
    got = jacobian_norms(model, x, method="exact")  # the probe drops the fast path for the plain one
    torch.testing.assert_close(got.spec, want.spec, rtol=1e-9, atol=0)
    with pytest.raises(ValueError, match="disagrees with plain autograd"):  # no plain path left: an error
        monkeypatch.setattr(J, "probe_mismatch", lambda *a: "forced")
        jacobian_norms(model, x, method="exact")


def test_the_exact_trace_check_can_fail_and_falls_back_to_an_estimate(monkeypatch):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()  # tr(H) != tr(GGN)
    x, y = torch.randn(8, 4, dtype=torch.float64), torch.randint(0, 3, (8,))
    monkeypatch.setattr(H, "exact_trace_refusal", lambda *a: None)  # a graph test with a hole
    got = hess_trace_detail(model, [(x, y)], num_matvecs=30)
    assert got.method == "hutchpp" and "Gauss-Newton block" in got.refusal and got.se > 0
    with pytest.raises(ValueError, match="Gauss-Newton block"):
        hess_trace_detail(model, [(x, y)], method="ggn")


def test_tied_weights_and_parametrisations_are_not_called_exact_in_measure():
    for name in ("tied weights", "weight_norm parametrisation", "spectral_norm parametrisation",
                 "division by a parameter", "one parameter view in two layers"):
        model = build(name)
        with pytest.warns(MetricNote, match="tr\\(GGN\\) was not used"):
            out = measure(model, _splits((6,)), metrics=["hessian"], input_shape=(6,), options=CHEAP)
        assert out["hess_trace_exact"] == 0.0 and out["hess_trace_se"] > 0, name
        assert "tr(GGN) was not used" in out.notes["hessian"]


def test_theorem2_works_with_a_0d_parameter_and_tied_weights():
    for model in (ScaledLogits().double(), TiedAutoencoder().double()):
        x, y = torch.randn(7, 6, dtype=torch.float64), torch.randint(0, 3, (7,))
        mid = float(R.per_sample_grads_loop(model, x, y).square().sum(1).mean())
        with torch.no_grad():
            loss_max = float(F.cross_entropy(model(x), y, reduction="none").max())
        rhs = 2 * loss_max * float(torch.trace(R.dense_hessian(model, [(x, y)])))
        got = theorem2(model, x, y, hutch_matvecs=10_000, chunk_size=3)  # dim ≤ products: the exact trace
        assert got["thm2_mid"] == pytest.approx(mid, rel=1e-9)
        assert got["thm2_rhs"] == pytest.approx(rhs, rel=1e-7) and got["thm2_rhs_se"] == 0


class _Liar(nn.Module):
    """Declares a constant below its true one: the certificate must not be stored."""

    lipschitz_constant = 0.01

    def forward(self, x):
        return 3 * x


def test_a_bound_below_a_measured_norm_is_an_error_not_a_certificate():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 6), _Liar(), nn.Linear(6, 3)).double()
    with pytest.warns(MetricSkipped, match="is below the measured"):
        out = measure(model, _splits((6,)), metrics=["jacobian", "lipschitz"], input_shape=(6,), options=CHEAP)
    assert "lip_upper" not in out and "lip_upper_tight" not in out
    assert "lip_lower" in out and "not stored" in out.skipped["lipschitz"]


def test_lip_lower_is_measured_when_the_upper_bound_refuses():
    model = build("cumsum and erf")
    with pytest.warns(MetricSkipped, match="'cumsum'"):
        out = measure(model, _splits((6,)), metrics=["jacobian", "lipschitz"], input_shape=(6,), options=CHEAP)
    assert "lip_upper" not in out and out["lip_lower"] >= out["jac_spec_max/train"] > 0


def test_an_attention_model_keeps_the_complexity_group():
    model = build("multi-head attention")
    init = {k: v.detach().clone() for k, v in model.named_parameters()}
    with warnings.catch_warnings():
        warnings.simplefilter("error", MetricSkipped)
        out = measure(model, _splits((4, 6)), metrics=["complexity"], input_shape=(4, 6), init_state=init,
                      options=CHEAP)
    assert math.isfinite(out["cm_fisher_rao"])


def test_flags_and_standard_errors_have_no_peaks_in_the_summary():
    assert not is_measure("hess_trace_exact") and not is_measure("lip_upper_tight_eclipse")
    assert not is_measure("hess_trace_se") and not is_measure("thm2_rhs_se") and is_measure("hess_trace")
    rows = []
    for w, err, tr in ((2, 0.5, 1.0), (4, 0.3, 2.0), (8, 0.6, 9.0), (16, 0.35, 3.0), (32, 0.3, 1.0)):
        rows.append({"model.width": w, "status": "done", "err/test": err, "err/train": 0.0 if w >= 8 else 0.2,
                     "hess_trace": tr, "hess_trace_exact": float(w != 8), "hess_trace_se": 0.1 * w, "x": w,
                     "condition": "all trials", "seed": 0})
    s = dd_summary(pd.DataFrame(rows))
    assert "peak/hess_trace" in s
    assert not any(k.endswith(("_exact", "_se")) for k in s)


def test_the_tracker_labels_the_noise_its_mask_marks(tmp_path):
    import ddscope

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 5, generator=g), torch.randint(0, 3, (40,), generator=g)
    mask = torch.zeros(40, dtype=torch.bool)
    mask[:6] = True  # 15 %
    tracker = ddscope.Tracker(tmp_path / "run", train=(x, y), test=(x[:10], y[:10]), noisy_mask=mask,
                              labels={"model.width": 4}, groups=[])
    assert tracker.cfg.data.noise == pytest.approx(0.15)


def test_a_hutchpp_estimate_has_an_honest_error_bar_on_a_groupnorm_resnet():
    model = build("pre-activation ResNet, GroupNorm")
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(6, 1, 6, 6, generator=g, dtype=torch.float64), torch.randint(0, 3, (6,), generator=g)
    want = float(torch.trace(R.dense_hessian(model, [(x, y)])))
    misses = 0
    for seed in range(20):
        got = hess_trace_detail(model, [(x, y)], num_matvecs=30, generator=torch.Generator().manual_seed(seed))
        misses += abs(got.value - want) > 2 * got.se
    assert misses <= 5  # ~5 % of a Gaussian's draws lie beyond 2 s.e.; allow for s.e. estimated from the probes


def test_the_report_says_which_traces_are_estimates_and_how_large_their_errors_are():
    from ddscope.report.coverage import estimate_lines

    final = pd.DataFrame({"status": ["done"] * 3, "hess_trace": [10.0, 4.0, 2.0], "hess_trace_se": [0.0, 0.4, 0.1],
                          "thm2_rhs": [1.0, 1.0, 1.0], "thm2_rhs_se": [0.0, 0.0, 0.0]})
    (line,) = estimate_lines(final)
    assert "hess_trace is a sampled estimate on 2 of 3 trial(s)" in line
    assert "7.5% of the value at the median, 10.0% at worst" in line
    assert estimate_lines(final.assign(hess_trace_se=0.0)) == []


def test_a_config_declares_lipschitz_constants_by_type_and_they_reach_measure():
    from ddscope.config import TrialConfig, set_key
    from ddscope.metrics.suite import options_from_config

    base = TrialConfig()
    cfg = set_key(base, {"metrics.lip_constants": {"cumsum": 2.5, "erf": 1.2}})
    assert cfg.trial_id != base.trial_id and set_key(base, {}).trial_id == base.trial_id  # default: ids unchanged
    opts = options_from_config(cfg.metrics)
    assert opts["lip_constants"] == {"cumsum": 2.5, "erf": 1.2}
    out = measure(build("cumsum and erf"), _splits((6,)), metrics=["lipschitz"], input_shape=(6,),
                  options={**CHEAP, "lip_constants": opts["lip_constants"]})
    assert out.skipped == {} and math.isfinite(out["lip_upper"])


def test_path_statistics_carry_the_standard_error_of_their_random_pairs():
    import numpy as np

    from ddscope.metrics.jacobian import path_jacobian_norms, path_pairs

    model = build("GELU/SiLU/Mish MLP")
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(30, 6, generator=g, dtype=torch.float64), torch.randint(0, 3, (30,), generator=g)
    out = path_jacobian_norms(model, x, y, n_pairs=7, k=5, same_class=False, generator=torch.Generator().manual_seed(4))
    i, j = path_pairs(y, 7, same_class=False, generator=torch.Generator().manual_seed(4))
    t = np.linspace(0, 1, 5)
    per_pair = []
    for a, b in zip(i.tolist(), j.tolist()):  # the obvious loop: dense norms, trapezoid rule per pair
        pts = torch.stack([(1 - s) * x[a] + s * x[b] for s in t])
        sq = R.jacobian_norms_dense(model, pts).spec.square().numpy()
        per_pair.append(np.trapezoid(sq, t) if hasattr(np, "trapezoid") else np.trapz(sq, t))
    per_pair = np.array(per_pair)
    assert out["jac_spec_rms"] == pytest.approx(math.sqrt(per_pair.mean()), rel=1e-9)
    want = per_pair.std(ddof=1) / math.sqrt(7) / (2 * math.sqrt(per_pair.mean()))
    assert out["jac_spec_rms_se"] == pytest.approx(want, rel=1e-9)


def test_theorem2_reads_a_parametrised_first_layer_through_its_weight():
    from ddscope.metrics.theorem import first_layer_norm

    model = build("spectral_norm parametrisation")
    W = model[0].weight.detach()  # the parametrised weight the forward uses
    assert first_layer_norm(model, (6,)) == pytest.approx(float(torch.linalg.matrix_norm(W, 2)), rel=1e-9)
