"""Input-Jacobian norms against dense autograd Jacobians + SVD on tiny float64 nets."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ddscope.metrics import reference as R
from ddscope.metrics import jacobian as jac
from ddscope.metrics.jacobian import OUTPUTS, JacNorms, aggregate, jacobian_norms, path_jacobian_norms, path_points

RTOL, ATOL = 1e-9, 1e-12  # exact method vs dense SVD, float64


def _close(a: JacNorms, b: JacNorms, rtol: float = RTOL, atol: float = ATOL) -> None:
    torch.testing.assert_close(a.spec, b.spec, rtol=rtol, atol=atol)
    torch.testing.assert_close(a.fro, b.fro, rtol=rtol, atol=atol)


@pytest.mark.parametrize("output", OUTPUTS)
@pytest.mark.parametrize("d,widths,classes", [(5, (3,), 2), (6, (8, 8), 4), (4, (16, 4, 8), 10)])
def test_exact_matches_dense_mlp(nets, output, d, widths, classes):
    model = nets.mlp(d, widths, classes)
    x, y = nets.data((d,), classes, 9)
    got = jacobian_norms(model, x, output=output, y=y, method="exact", chunk_size=4)
    _close(got, R.jacobian_norms_dense(model, x, output=output, y=y))


@pytest.mark.parametrize("output", OUTPUTS)
def test_narrowing_linear_stem_matches_dense(nets, output):
    # Flatten, then a Linear 24 -> 7: the passes stop at its output and J Jᵀ = U (W Wᵀ) Uᵀ.
    torch.manual_seed(3)
    model = nn.Sequential(nn.Flatten(), nn.Linear(24, 7), nn.ReLU(), nn.Linear(7, 9), nn.ReLU(), nn.Linear(9, 5)).double()
    assert jac.linear_stem(model) is not None
    x, y = nets.data((2, 3, 4), 5, 11)
    got = jacobian_norms(model, x, output=output, y=y, method="exact", chunk_size=4)
    _close(got, R.jacobian_norms_dense(model, x, output=output, y=y))


def test_linear_stem_keeps_float32_range(monkeypatch):
    # First-layer weights ~2e19: W Wᵀ (~5e39 per entry) overflows float32, while J = U W stays
    # ~1e7 because the head is scaled by 1e-13; U Rᵀ (Wᵀ = QR) keeps J's range.
    torch.manual_seed(5)
    model = nn.Sequential(nn.Flatten(), nn.Linear(24, 7), nn.ReLU(), nn.Linear(7, 5))
    with torch.no_grad():
        model[1].weight.mul_(1e20)
        model[3].weight.mul_(1e-13)
    x = torch.randn(6, 24)
    got = jacobian_norms(model, x, method="exact")
    monkeypatch.setattr(jac, "linear_stem", lambda m: None)
    want = jacobian_norms(model, x, method="exact")
    assert torch.isfinite(got.spec).all() and float(got.spec.max()) > 1e5
    _close(got, want, rtol=1e-4, atol=0)


def test_linear_stem_only_for_a_narrowing_first_linear(nets):
    assert jac.linear_stem(nets.mlp(5, (3,), 2)) is not None
    assert jac.linear_stem(nets.mlp(6, (8, 8), 4)) is None  # the first layer widens
    assert jac.linear_stem(nets.all["conv2d"][0]()) is None
    assert jac.linear_stem(nn.Sequential(nn.Linear(5, 3))) is None  # nothing after it


@pytest.mark.parametrize("name", ["conv1d", "conv2d", "residual"])
@pytest.mark.parametrize("output", OUTPUTS)
def test_exact_matches_dense_conv_and_residual(nets, name, output):
    build, shape, classes = nets.all[name]
    model = build()
    x, y = nets.data(shape, classes, 6)
    got = jacobian_norms(model, x, output=output, y=y, method="exact")
    _close(got, R.jacobian_norms_dense(model, x, output=output, y=y))


def test_dense_reference_matches_finite_differences(nets):
    model = nets.conv2d()
    x, y = nets.data((2, 8, 8), 5, 3)
    for output in ("softmax", "loss"):
        J = R.dense_jacobian(model, x, output=output, y=y)
        fd = R.finite_difference_jacobian(model, x, output=output, y=y, eps=1e-6)
        torch.testing.assert_close(J, fd, rtol=1e-5, atol=1e-8)


def test_chunk_size_does_not_change_the_result(nets):
    model = nets.residual()
    x, y = nets.data((2, 6, 6), 3, 7)
    _close(jacobian_norms(model, x, chunk_size=2), jacobian_norms(model, x, chunk_size=100), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("d,classes", [(6, 4), (3, 12)])  # C <= d: Lanczos on J Jᵀ; C > d: on JᵀJ
def test_lanczos_agrees_with_exact(nets, d, classes):
    model = nets.mlp(d, (10, 10), classes)
    x, y = nets.data((d,), classes, 8)
    exact = jacobian_norms(model, x, method="exact")
    # Krylov spaces have dimension <= min(C, d) + 1, so 20 steps make Lanczos exact
    _close(jacobian_norms(model, x, method="lanczos", num_iters=20, tol=1e-10), exact, rtol=1e-8)
    # stopped early, Lanczos still returns Ritz values, which never exceed λ_max
    short = jacobian_norms(model, x, method="lanczos", num_iters=3, tol=0.0)
    assert torch.all(short.spec <= exact.spec * (1 + 1e-12))


def test_lanczos_on_conv_net(nets):
    model = nets.conv2d()
    x, _ = nets.data((2, 8, 8), 5, 5)
    _close(jacobian_norms(model, x, method="lanczos", tol=1e-10), jacobian_norms(model, x, method="exact"), rtol=1e-7)


def test_power_iteration_is_a_lower_bound_within_tolerance(nets):
    model = nets.mlp(6, (12, 12), 8)
    x, _ = nets.data((6,), 8, 8)
    exact = jacobian_norms(model, x, method="exact")
    power = jacobian_norms(model, x, method="power", num_iters=2000, tol=1e-14)
    assert torch.all(power.spec <= exact.spec * (1 + 1e-12))
    torch.testing.assert_close(power.spec, exact.spec, rtol=1e-5, atol=0)
    torch.testing.assert_close(power.fro, exact.fro, rtol=1e-10, atol=0)  # Frobenius is exact


def test_auto_rule(nets, monkeypatch):
    calls = []
    original = jac._iterative_chunk
    monkeypatch.setattr(jac, "_iterative_chunk", lambda *a, **k: calls.append(1) or original(*a, **k))
    small = nets.mlp(6, (8,), 10)
    x, _ = nets.data((6,), 10, 4)
    jacobian_norms(small, x, method="auto")
    assert not calls  # C = 10 <= 32: exact
    big = nets.mlp(600, (8,), 120)  # C = 120 > 32 and C·d = 72000 > 65536: Lanczos
    xb, _ = nets.data((600,), 120, 3)
    got = jacobian_norms(big, xb, method="auto", tol=1e-10)
    assert calls
    _close(got, jacobian_norms(big, xb, method="exact"), rtol=1e-7)


class _OldStyleReLU(torch.autograd.Function):
    """An autograd.Function without setup_context: torch.func cannot transform it."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp_min(0)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * (x > 0)


class _OldStyleNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(5, 7), nn.Linear(7, 3)

    def forward(self, x):
        return self.b(_OldStyleReLU.apply(self.a(x)))


def test_exact_falls_back_to_autograd_when_torch_func_fails(nets):
    torch.manual_seed(0)
    model = _OldStyleNet().double()
    x, y = nets.data((5,), 3, 6)
    _close(jacobian_norms(model, x, method="exact"), R.jacobian_norms_dense(model, x))
    with pytest.raises(RuntimeError):  # the fallback is needed: torch.func rejects the model
        torch.func.vjp(model, x)


def test_training_flags_parameters_and_buffers_untouched(nets):
    model = nets.conv2d()
    model.train()
    model[1].eval()  # a mixed state must come back exactly
    flags = [m.training for m in model.modules()]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = nets.data((2, 8, 8), 5, 4)
    for method in ("exact", "lanczos", "power"):
        jacobian_norms(model, x, method=method, output="loss", y=y)
    assert [m.training for m in model.modules()] == flags
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_float32_model(nets):
    model = nets.mlp(6, (8, 8), 4)
    x, _ = nets.data((6,), 4, 5)
    dense = R.jacobian_norms_dense(model, x)
    got = jacobian_norms(model.float(), x.float())
    assert got.spec.dtype == torch.float32
    torch.testing.assert_close(got.spec.double(), dense.spec, rtol=1e-5, atol=1e-6)


def test_bad_arguments(nets):
    model = nets.mlp()
    x, _ = nets.data((6,), 4, 3)
    with pytest.raises(ValueError, match="needs the labels"):
        jacobian_norms(model, x, output="loss")
    with pytest.raises(ValueError, match="allowed"):
        jacobian_norms(model, x, output="probabilities")
    with pytest.raises(ValueError, match="allowed"):
        jacobian_norms(model, x, method="svd")


def test_aggregate_formulas():
    norms = JacNorms(spec=torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64), fro=torch.tensor([2.0, 2.0, 4.0], dtype=torch.float64))
    agg = aggregate(norms)
    assert agg["jac_spec_rms"] == pytest.approx((14 / 3) ** 0.5)
    assert agg["jac_spec_mean"] == pytest.approx(2.0)
    assert agg["jac_spec_max"] == 3.0
    assert agg["jac_fro_rms"] == pytest.approx(8**0.5)
    weighted = aggregate(norms, torch.tensor([2.0, 0.0, 2.0]))  # normalised to (1/2, 0, 1/2)
    assert weighted["jac_spec_rms"] == pytest.approx(5**0.5)
    assert weighted["jac_spec_mean"] == pytest.approx(2.0)
    assert weighted["jac_spec_max"] == 3.0  # max ignores weights
    assert weighted["jac_fro_rms"] == pytest.approx(10**0.5)


@pytest.mark.parametrize("same_class", [True, False])
def test_path_points_geometry_and_weights(same_class):
    n, k, n_pairs = 30, 5, 40
    g = torch.Generator().manual_seed(3)
    y = torch.randint(0, 4, (n,), generator=g)
    x = torch.stack([torch.arange(n, dtype=torch.float64), torch.randn(n, dtype=torch.float64, generator=g)], 1)
    points, weights = path_points(x, y, n_pairs=n_pairs, k=k, same_class=same_class, generator=torch.Generator().manual_seed(0))
    assert points.shape == (n_pairs * k, 2) and weights.shape == (n_pairs * k,)
    segs = points.view(n_pairs, k, 2)
    i, j = segs[:, 0, 0].round().long(), segs[:, -1, 0].round().long()  # feature 0 is the index
    torch.testing.assert_close(segs[:, 0], x[i])
    torch.testing.assert_close(segs[:, -1], x[j])
    assert torch.all(i != j)
    if same_class:
        assert torch.equal(y[i], y[j])
    t = torch.linspace(0, 1, k, dtype=torch.float64)
    torch.testing.assert_close(segs, (1 - t)[None, :, None] * x[i][:, None] + t[None, :, None] * x[j][:, None])
    w = weights.view(n_pairs, k)
    torch.testing.assert_close(w.sum(1), torch.full((n_pairs,), 1 / n_pairs, dtype=torch.float64))
    torch.testing.assert_close(w[:, 0], w[:, 1] / 2)  # trapezoid: half weight at the endpoints
    torch.testing.assert_close(w[:, -1], w[:, 1] / 2)


def test_same_class_pairs_cover_every_partner():
    y = torch.tensor([0, 0, 0, 1, 1, 2])  # class 2 has no partner and must never be drawn
    points, _ = path_points(torch.arange(6, dtype=torch.float64)[:, None], y, n_pairs=600, k=2, same_class=True,
                            generator=torch.Generator().manual_seed(0))
    pairs = {(int(a), int(b)) for a, b in points.view(600, 2).round().long().tolist()}
    assert pairs == {(a, b) for a in range(3) for b in range(3) if a != b} | {(3, 4), (4, 3)}


@pytest.mark.parametrize("output", ["logits", "loss"])
def test_path_norms_are_trapezoid_integrals_of_dense_norms(nets, output):
    model = nets.conv1d()
    x, y = nets.data((2, 12), 5, 20)
    got = path_jacobian_norms(model, x, y, n_pairs=6, k=4, same_class=True, output=output,
                              generator=torch.Generator().manual_seed(7))
    points, weights = path_points(x, y, n_pairs=6, k=4, same_class=True, generator=torch.Generator().manual_seed(7))
    labels = None
    if output == "loss":  # same-class paths: every point carries the (shared) label of its ends
        ends = points.view(6, 4, -1)[:, 0]
        labels = y[(ends[:, None] - x.flatten(1)[None]).abs().sum(-1).argmin(1)].repeat_interleave(4)
    want = aggregate(R.jacobian_norms_dense(model, points, output=output, y=labels), weights)
    assert got.pop("jac_spec_rms_se") > 0  # the random pairs' standard error (checked in test_verified)
    assert got == pytest.approx(want, rel=1e-9)


def test_auto_chunk_size_follows_memory_per_sample_and_keeps_values():
    from ddscope.metrics.jacobian import MAX_CHUNK, MIN_CHUNK, auto_chunk_size

    torch.manual_seed(0)
    small = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 4)).double()
    big = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(32 * 32 * 32, 4)).double()
    xs, xb = torch.randn(50, 6, dtype=torch.float64), torch.randn(60, 3, 32, 32, dtype=torch.float64)
    c_small, c_big = auto_chunk_size(small, xs, 4), auto_chunk_size(big, xb, 4)
    assert MIN_CHUNK <= c_big < c_small <= MAX_CHUNK and c_big < len(xb)  # several passes below
    # More activations per sample -> fewer samples per pass (roughly inversely).
    assert c_small == MAX_CHUNK or c_small > 10 * c_big
    auto = jacobian_norms(big, xb)  # chunk_size=None: several chunks here
    fixed = jacobian_norms(big, xb, chunk_size=len(xb))
    assert torch.allclose(auto.spec, fixed.spec, rtol=1e-12) and torch.allclose(auto.fro, fixed.fro, rtol=1e-12)
