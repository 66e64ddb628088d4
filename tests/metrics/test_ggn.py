"""Exact tr(H) = tr(GGN) for piecewise-linear networks, against the dense float64 Hessian; the
refusals where it does not hold; per-layer traces against the dense diagonal blocks."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ddscope.metrics import reference as R
from ddscope.metrics import measure
from ddscope.metrics.ggn import exact_trace_refusal, ggn_trace, output_hessian_factors
from ddscope.metrics.hessian import flat_params, hess_trace, hess_trace_detail
from ddscope.models import MODELS


def _family(name: str, width: int, shape: tuple[int, ...], classes: int, seed: int = 0, **kw) -> nn.Module:
    torch.manual_seed(seed)
    model = MODELS[name](width, shape, classes, **kw).double()
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():  # non-trivial eval-mode BatchNorm
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g, dtype=torch.float64) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g, dtype=torch.float64) + 0.5)
            m.weight.data.uniform_(0.5, 1.5, generator=g)
            m.bias.data.uniform_(-0.3, 0.3, generator=g)
    return model


FAMILIES = {
    # name: (builder, input shape, classes)
    "mlp-family": (lambda: _family("mlp", 5, (6,), 3, depth=3), (6,), 3),
    "cnn1d": (lambda: _family("cnn1d", 2, (1, 16), 3), (1, 16), 3),
    "convnet-bn": (lambda: _family("convnet", 1, (1, 8, 8), 3, batchnorm=True), (1, 8, 8), 3),
    "mcnn-maxpool": (lambda: _family("mcnn", 1, (1, 8, 8), 3), (1, 8, 8), 3),
}


def _dense_hessian(model: nn.Module, per_sample, x, y) -> torch.Tensor:
    names, theta = flat_params(model)
    named = dict(model.named_parameters())
    shapes = [named[n].shape for n in names]

    def total(flat):
        parts = dict(zip(names, [t.view(s) for t, s in zip(flat.split([math.prod(s) for s in shapes]), shapes)]))
        buffers = dict(model.named_buffers())
        return per_sample(functional_call(model, {**parts, **buffers}, (x,)), y).mean()

    model.eval()
    return torch.func.hessian(total)(theta)


def _ce(out, y):
    return F.cross_entropy(out, y, reduction="none")


@pytest.mark.parametrize("name", ["mlp", "conv1d", "conv2d", "residual"])
def test_ggn_trace_equals_the_dense_hessian_trace(nets, name):
    build, shape, classes = nets.all[name]
    model = build()
    x, y = nets.data(shape, classes, 9)
    H = R.dense_hessian(model, [(x, y)])
    assert exact_trace_refusal(model, shape) is None
    value, layers = ggn_trace(model, x, y, chunk_size=4)
    assert value == pytest.approx(float(torch.trace(H)), rel=1e-12)
    # the default method is the exact one here, and says so
    got = hess_trace_detail(model, [(x[:5], y[:5]), (x[5:], y[5:])])
    assert got.method == "ggn" and got.value == pytest.approx(float(torch.trace(H)), rel=1e-12)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_ggn_trace_on_the_model_families(name):
    build, shape, classes = FAMILIES[name]
    model = build()
    g = torch.Generator().manual_seed(3)
    x = torch.randn(7, *shape, generator=g, dtype=torch.float64)
    y = torch.randint(0, classes, (7,), generator=g)
    assert exact_trace_refusal(model, shape) is None
    H = _dense_hessian(model, _ce, x, y)
    assert hess_trace(model, [(x, y)]) == pytest.approx(float(torch.trace(H)), rel=1e-11)


def test_per_layer_traces_are_the_diagonal_blocks(nets):
    model = nets.conv2d()  # conv, BatchNorm, pools, linear head
    x, y = nets.data((2, 8, 8), 5, 8)
    H = R.dense_hessian(model, [(x, y)])
    value, layers = ggn_trace(model, x, y)
    start, want = 0, {}
    for name, p in model.named_parameters():
        block = torch.diagonal(H)[start : start + p.numel()].sum()
        start += p.numel()
        layer = name.rsplit(".", 1)[0]
        want[layer] = want.get(layer, 0.0) + float(block)
    assert list(layers) == list(want)
    for k in want:
        assert layers[k] == pytest.approx(want[k], rel=1e-10, abs=1e-14)
    assert value == pytest.approx(sum(want.values()), rel=1e-12)


def _huber(out, y):
    return F.huber_loss(out, F.one_hot(y, out.shape[1]).double(), reduction="none").sum(1)


def _mse_ref(out, y):
    return (out - F.one_hot(y, out.shape[1]).double()).square().mean(1)


@pytest.mark.parametrize("loss, ref", [("mse", _mse_ref), (_huber, _huber)], ids=["mse", "callable"])
def test_ggn_trace_of_other_losses(nets, loss, ref):
    model = nets.residual()
    x, y = nets.data((2, 6, 6), 3, 6)
    H = _dense_hessian(model, ref, x, y)
    assert hess_trace(model, [(x, y)], loss=loss) == pytest.approx(float(torch.trace(H)), rel=1e-10)


def test_confident_predictions_keep_their_precision(nets):
    # p_c ≈ 1 − 1e-9: 1 − p_c computed from the other classes, not by cancellation
    model = nets.mlp(6, (8,), 4)
    with torch.no_grad():
        model[-1].weight.mul_(40.0)
    x, y = nets.data((6,), 4, 6)
    H = R.dense_hessian(model, [(x, y)])
    exact = float(torch.trace(H))
    assert exact > 0
    assert ggn_trace(model, x, y)[0] == pytest.approx(exact, rel=1e-9)


def test_output_hessian_factors_rebuild_the_loss_hessian():
    g = torch.Generator().manual_seed(0)
    out = torch.randn(5, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 4, (5,), generator=g)
    for loss, ref in (("cross_entropy", _ce), ("mse", _mse_ref), (_huber, _huber)):
        V, s = output_hessian_factors(out, y, loss)
        A = torch.einsum("nk,nkc,nkd->ncd", s, V, V)
        for n in range(5):
            want = torch.func.hessian(lambda o: ref(o[None], y[n : n + 1])[0])(out[n])
            torch.testing.assert_close(A[n], want, rtol=1e-12, atol=1e-14)


class _Twice(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        return self.lin(torch.relu(self.lin(x)))


class _Gated(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.out = nn.Linear(4, 4), nn.Linear(4, 3)

    def forward(self, x):
        h = self.a(x)
        return self.out(h * h)  # quadratic in a's parameters


class _Scaled(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.out = nn.Linear(4, 4), nn.Linear(4, 3)

    def forward(self, x):
        return self.out(torch.relu(self.a(x)) * 0.5 + x)  # a constant scale and a shortcut: still exact


REFUSED = {
    "gelu": (lambda: nn.Sequential(nn.Linear(4, 5), nn.GELU(), nn.Linear(5, 3)), "GELU"),
    "tanh-function": (lambda: _Functional(torch.tanh), "tanh"),
    "layernorm": (lambda: nn.Sequential(nn.Linear(4, 5), nn.LayerNorm(5), nn.ReLU(), nn.Linear(5, 3)), "LayerNorm"),
    "shared-weights": (_Twice, "tied or shared weights"),
    "product": (_Gated, "multiplies two"),
}


class _Functional(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.a, self.out, self.fn = nn.Linear(4, 5), nn.Linear(5, 3), fn

    def forward(self, x):
        return self.out(self.fn(self.a(x)))


@pytest.mark.parametrize("name", list(REFUSED))
def test_refused_where_it_does_not_hold_and_hutchpp_runs_instead(name):
    build, why = REFUSED[name]
    torch.manual_seed(0)
    model = build().double()
    reason = exact_trace_refusal(model, (4,))
    assert reason is not None and why in reason
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (6,), generator=g)
    H = R.dense_hessian(model, [(x, y)])
    got = hess_trace_detail(model, [(x, y)], num_matvecs=3 * H.shape[0])  # dim ≤ products: the exact trace
    assert got.method == "exact" and got.exact and got.se == 0 and got.refusal == reason and got.layers == {}
    assert got.value == pytest.approx(float(torch.trace(H)), rel=1e-8)
    est = hess_trace_detail(model, [(x, y)], num_matvecs=H.shape[0] - 1)  # fewer products: Hutch++ with its error
    assert est.method == "hutchpp" and not est.exact and est.refusal == reason and est.se > 0
    # and tr(GGN) really differs from tr(H) on these networks: the refusal is needed
    if name != "shared-weights":
        assert abs(ggn_trace(model, x, y)[0] - float(torch.trace(H))) > 1e-6 * abs(float(torch.trace(H)))
    with pytest.raises(ValueError, match="piecewise-linear"):
        hess_trace(model, [(x, y)], method="ggn")


def test_a_constant_scale_and_a_shortcut_stay_exact():
    torch.manual_seed(0)
    model = _Scaled().double()
    assert exact_trace_refusal(model, (4,)) is None
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (6,), generator=g)
    assert hess_trace(model, [(x, y)]) == pytest.approx(float(torch.trace(R.dense_hessian(model, [(x, y)]))), rel=1e-12)


def test_vit_falls_back():
    torch.manual_seed(0)
    model = MODELS["vit"](8, (1, 8, 8), 3).double()
    assert "not piecewise linear" in exact_trace_refusal(model, (1, 8, 8))


def test_measure_records_the_estimator_and_the_layers(nets):
    model = nets.conv1d()
    x, y = nets.data((2, 12), 5, 10)
    got = measure(model, {"train": (x, y)}, metrics=["hessian"], input_shape=(2, 12), options={"hess_samples": None})
    exact = float(torch.trace(R.dense_hessian(model, [(x, y)])))
    assert got["hess_trace"] == pytest.approx(exact, rel=1e-12) and got["hess_trace_exact"] == 1.0
    layers = {k: v for k, v in got.items() if k.startswith("hess_trace/")}
    assert set(layers) == {"hess_trace/0", "hess_trace/2", "hess_trace/6"}
    assert sum(layers.values()) == pytest.approx(exact, rel=1e-12)
    forced = measure(model, {"train": (x, y)}, metrics=["hessian"], input_shape=(2, 12),
                     options={"hess_samples": None, "hess_method": "hutchpp", "hess_matvecs": 9})
    assert forced["hess_trace_exact"] == 0.0 and not any(k.startswith("hess_trace/") for k in forced)
