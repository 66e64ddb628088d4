"""The Lipschitz bracket: ECLipsE-Fast between every activation pattern's norm and the product
bound; lip_lower's witnesses are real points whose dense ‖J‖₂ is the value; the order
jac_spec_max ≤ lip_lower ≤ lip_upper_tight ≤ lip_upper on every family."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from ddscope.metrics import reference as R
from ddscope.metrics import measure
from ddscope.metrics.ascent import lipschitz_lower
from ddscope.metrics.jacobian import jacobian_norms
from ddscope.metrics.lipschitz import lipschitz_upper
from ddscope.metrics.tight import eclipse_fast, lipschitz_upper_tight, mlp_chain


def _mlp(d, widths, classes, act=nn.ReLU, seed=0, bn=False):
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for w in widths:
        layers += [nn.Linear(d, w)] + ([nn.BatchNorm1d(w)] if bn else []) + [act()]
        d = w
    layers.append(nn.Linear(d, classes))
    net = nn.Sequential(*layers).double().eval()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm1d):
            m.running_var.uniform_(0.3, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    return net


def _max_over_patterns(weights: list[torch.Tensor]) -> float:
    """max over all 0/1 diagonal D_i of ‖W_l D_{l−1} ⋯ D_1 W_1‖₂, by enumeration."""
    hidden = [W.shape[0] for W in weights[:-1]]
    best = 0.0
    for pats in itertools.product(*[itertools.product([0.0, 1.0], repeat=h) for h in hidden]):
        M = weights[0]
        for W, p in zip(weights[1:], pats):
            M = W @ torch.diag(torch.tensor(p, dtype=torch.float64)) @ M
        best = max(best, float(torch.linalg.matrix_norm(M, 2)))
    return best


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("widths", [(3,), (4, 4), (2, 5, 3), (7, 7), (14,)])
def test_eclipse_between_every_activation_pattern_and_the_product(seed, widths):
    net = _mlp(5, widths, 3, seed=seed)
    weights = mlp_chain(net, (5,))
    assert [tuple(W.shape) for W in weights] == [tuple(m.weight.shape) for m in net if isinstance(m, nn.Linear)]
    tight = eclipse_fast(weights)
    product = math.prod(float(torch.linalg.matrix_norm(W, 2)) for W in weights)
    assert _max_over_patterns(weights) <= tight <= product * (1 + 1e-9)


def test_eclipse_with_folded_batchnorm_tanh_and_leaky_relu():
    for act in (nn.Tanh, lambda: nn.LeakyReLU(0.2), nn.Sigmoid):
        net = _mlp(4, (6, 5), 3, act=act, bn=True, seed=3)
        weights = mlp_chain(net, (4,))
        assert len(weights) == 3
        tight = lipschitz_upper_tight(net, (4,))
        assert _max_over_patterns(weights) <= tight <= lipschitz_upper(net, (4,)).value * (1 + 1e-9)
        x = torch.randn(300, 4, dtype=torch.float64) * 3
        assert float(R.jacobian_norms_dense(net, x).spec.max()) <= tight


def test_one_layer_is_its_norm_and_other_models_get_none(nets):
    lin = nn.Sequential(nn.Flatten(), nn.Linear(6, 3)).double()
    assert lipschitz_upper_tight(lin, (6,)) == pytest.approx(float(torch.linalg.matrix_norm(lin[1].weight, 2)), rel=1e-8)
    for name in ("conv1d", "conv2d", "residual"):
        build, shape, _ = nets.all[name]
        assert lipschitz_upper_tight(build(), shape) is None
    gelu = nn.Sequential(nn.Linear(4, 5), nn.GELU(), nn.Linear(5, 2)).double()  # slope outside [0, 1]
    assert lipschitz_upper_tight(gelu, (4,)) is None


@pytest.mark.parametrize("seed", range(4))
def test_lip_lower_witness_is_a_real_point_inside_the_box(seed):
    net = _mlp(5, (24, 24), 4, seed=seed)
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(150, 5, generator=g, dtype=torch.float64) * 2 - 1
    spec = jacobian_norms(net, x).spec
    top = spec.topk(6).indices
    lo, hi = x.min(0).values, x.max(0).values
    low = lipschitz_lower(net, x[top], lo, hi, start_values=spec[top], steps=20)
    assert low.value >= float(spec.max())  # the starts' values are witnesses
    assert bool((low.point >= lo - 1e-12).all() and (low.point <= hi + 1e-12).all())
    dense = float(R.jacobian_norms_dense(net, low.point[None]).spec[0])
    assert low.value == pytest.approx(dense, rel=1e-9)  # the value is ‖J‖₂ at the witness
    assert low.distance == pytest.approx(float((low.point - low.start).norm()), rel=1e-12)
    assert low.value <= lipschitz_upper_tight(net, (5,))


def test_lip_lower_climbs_above_the_sampled_maximum():
    gains = []
    for seed in range(5):
        net = _mlp(5, (32, 32), 4, seed=seed)
        x = torch.rand(200, 5, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2 - 1
        spec = jacobian_norms(net, x).spec
        top = spec.topk(8).indices
        low = lipschitz_lower(net, x[top], x.min(0).values, x.max(0).values, start_values=spec[top])
        gains.append(low.value / float(spec.max()))
    assert sum(g > 1.01 for g in gains) >= 3, gains


@pytest.mark.parametrize("name", ["mlp", "conv1d", "conv2d", "residual"])
def test_measure_orders_the_bracket(nets, name):
    build, shape, classes = nets.all[name]
    model = build()
    x, y = nets.data(shape, classes, 40)
    out = measure(model, {"train": (x[:30], y[:30]), "test": (x[30:], y[30:])}, metrics=["jacobian", "paths", "lipschitz"],
                  input_shape=shape, options={"path_pairs": 5, "path_k": 3, "lip_lower_steps": 5})
    spec_max = max(out["jac_spec_max/train"], out["jac_spec_max/test"], out["jac_spec_max/path_same"],
                   out["jac_spec_max/path_any"])
    assert spec_max <= out["lip_lower"] <= out["lip_upper_tight"] <= out["lip_upper"]
    assert out["lip_upper_lanczos"] <= out["lip_upper"] and out["lip_lower_dist"] >= 0
    assert out["lip_upper_tight_eclipse"] == float(name == "mlp")
    if name == "mlp":
        assert out["lip_upper_tight"] < out["lip_upper"]
    # without data the upper bounds are still there
    bare = measure(model, {}, metrics=["lipschitz"], input_shape=shape)
    assert "lip_lower" not in bare and bare["lip_upper"] == pytest.approx(out["lip_upper"], rel=1e-12)
