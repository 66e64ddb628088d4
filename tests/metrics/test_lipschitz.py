"""Lipschitz upper bound: per-layer norms against dense matrices, the bound against Jacobians."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ddscope.metrics import reference as R
from ddscope.metrics.jacobian import jacobian_norms, path_points
from ddscope.metrics.lipschitz import conv_operator_norm, lipschitz_upper, max_pool_lipschitz
from ddscope.models import MODELS

CONV_CASES = [
    # (dims, c_in, c_out, kernel, input spatial, kwargs)
    (1, 2, 3, 3, (11,), dict()),
    (1, 2, 3, 5, (12,), dict(stride=2, padding=2)),
    (1, 4, 2, 3, (10,), dict(dilation=3, padding=1)),
    (1, 4, 6, 3, (9,), dict(groups=2, stride=3, padding=1)),
    (1, 2, 2, 3, (8,), dict(padding=1, padding_mode="circular")),
    (2, 2, 3, 3, (6, 6), dict()),
    (2, 2, 3, 3, (7, 5), dict(stride=2, padding=1)),
    (2, 3, 2, 3, (8, 8), dict(stride=(2, 1), padding=2, dilation=2)),
    (2, 4, 4, 3, (5, 5), dict(groups=4, padding=1)),
    (2, 2, 3, 1, (6, 6), dict(stride=2)),
    (2, 2, 2, 3, (6, 6), dict(padding=1, padding_mode="reflect")),
]


@pytest.mark.parametrize("dims,c_in,c_out,kernel,spatial,kw", CONV_CASES)
def test_conv_operator_norm_matches_dense_matrix(dims, c_in, c_out, kernel, spatial, kw):
    torch.manual_seed(0)
    conv = (nn.Conv1d if dims == 1 else nn.Conv2d)(c_in, c_out, kernel, **kw).double()
    shape = (c_in, *spatial)
    assert conv_operator_norm(conv, shape) == pytest.approx(R.conv_operator_norm_dense(conv, shape), rel=1e-8)


def test_conv_norm_depends_on_the_input_shape():
    """The same kernel has different operator norms on different input sizes (never ‖reshaped kernel‖)."""
    torch.manual_seed(1)
    conv = nn.Conv2d(2, 2, 3, padding=1).double()
    small, large = conv_operator_norm(conv, (2, 2, 2)), conv_operator_norm(conv, (2, 12, 12))
    assert small == pytest.approx(R.conv_operator_norm_dense(conv, (2, 2, 2)), rel=1e-8)
    assert large == pytest.approx(R.conv_operator_norm_dense(conv, (2, 12, 12)), rel=1e-8)
    assert abs(small - large) > 1e-3 * large
    with pytest.raises(ValueError, match="does not fit"):
        conv_operator_norm(conv, (3, 8, 8))


@pytest.mark.parametrize("name", ["conv1d", "conv2d", "residual"])
def test_bound_matches_dense_walk(nets, name):
    build, shape, _ = nets.all[name]
    model = build()
    got, want = lipschitz_upper(model, shape, method="walk"), R.lipschitz_upper_dense(model, shape)
    assert lipschitz_upper(model, shape).value == pytest.approx(want.value, rel=1e-8)  # AutoLip: the same value
    assert got.value == pytest.approx(want.value, rel=1e-8)
    assert [(p, t) for p, t, _ in got.layers] == [(p, t) for p, t, _ in want.layers]
    for (_, _, a), (_, _, b) in zip(got.layers, want.layers):
        assert a == pytest.approx(b, rel=1e-8)


@pytest.mark.parametrize("widths", [(3,), (8, 8), (16, 4, 8)])
def test_mlp_bound_is_product_of_spectral_norms(nets, widths):
    model = nets.mlp(6, widths, 4)
    want = math.prod(float(torch.linalg.svdvals(m.weight)[0]) for m in model if isinstance(m, nn.Linear))
    got = lipschitz_upper(model, (6,))
    assert want <= got.value <= want * (1 + 1e-8)  # certified: the float64 SVD times (1 + rounding margin)
    assert [t for _, t, _ in got.layers] == ["Linear", "ReLU"] * len(widths) + ["Linear"]


def test_residual_layers_combine_shortcut_and_branch(nets):
    model = nets.residual()
    layers = {p: v for p, _, v in lipschitz_upper(model, (2, 6, 6), method="walk").layers}
    # identity shortcut: 1 + conv · bn · relu · conv, then post ReLU (1)
    assert layers["2"] == pytest.approx(1 + layers["2.branch.0"] * layers["2.branch.1"] * layers["2.branch.3"], rel=1e-12)
    # projection shortcut: ‖conv1x1‖·‖bn‖ + ‖branch‖
    assert layers["3"] == pytest.approx(
        layers["3.shortcut.0"] * layers["3.shortcut.1"] + layers["3.branch.0"] * layers["3.branch.2"], rel=1e-12)


def _max_jacobian(model, shape, classes, seed=0):
    """max ‖J(x)‖₂ over 300 random points at three scales and 160 same-/any-class path points."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(300, *shape, generator=g, dtype=torch.float64) * torch.tensor([0.1, 1.0, 10.0]).repeat(100).view(
        300, *[1] * len(shape)).double()
    y = torch.randint(0, classes, (300,), generator=g)
    paths = [path_points(x[:100], y[:100], n_pairs=20, k=4, same_class=s, generator=g)[0] for s in (True, False)]
    return float(jacobian_norms(model, torch.cat([x, *paths]), method="exact").spec.max())


@pytest.mark.parametrize("name", ["mlp", "conv1d", "conv2d", "residual"])
def test_bound_exceeds_every_measured_jacobian(nets, name):
    build, shape, classes = nets.all[name]
    for seed in range(2):
        model = build(seed=seed)
        assert lipschitz_upper(model, shape).value >= _max_jacobian(model, shape, classes, seed)


def _randomise_bn(model):
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_var.uniform_(0.25, 2.0)
            m.running_mean.uniform_(-1, 1)
            m.weight.data.uniform_(0.5, 2.0)
    return model


@pytest.mark.parametrize("family,width,shape,kw", [
    ("mlp", 5, (6,), dict(depth=2)),
    ("cnn1d", 2, (12,), {}),
    ("convnet", 1, (2, 8, 8), dict(batchnorm=True)),
    ("mcnn", 1, (2, 8, 8), {}),
    ("resnet18", 1, (2, 8, 8), dict(batchnorm=True)),
])
def test_bound_on_the_model_families(family, width, shape, kw):
    torch.manual_seed(0)
    model = _randomise_bn(MODELS[family](width, shape, 3, **kw).double())
    assert lipschitz_upper(model, shape).value >= _max_jacobian(model, shape, 3)


def test_pools_exact_norms():
    # non-overlapping 2x2 average: each output averages 4 disjoint inputs -> 1/sqrt(4)
    pool = nn.Sequential(nn.AvgPool2d(2))
    assert 0.5 <= lipschitz_upper(pool, (3, 6, 6)).value <= 0.5 * (1 + 1e-8)
    # global average over 16 pixels -> 1/sqrt(16)
    assert 0.25 <= lipschitz_upper(nn.Sequential(nn.AdaptiveAvgPool2d(1)), (2, 4, 4)).value <= 0.25 * (1 + 1e-8)
    # overlapping windows: computed from the dense matrix, not assumed
    for p, shape in [(nn.AvgPool1d(3, stride=1), (1, 7)), (nn.AvgPool2d(3, stride=2, padding=1), (1, 7, 7)),
                     (nn.AdaptiveAvgPool2d((3, 2)), (1, 7, 5))]:
        assert lipschitz_upper(p, shape).value == pytest.approx(R.operator_norm_dense(p, shape), rel=1e-8)


@pytest.mark.parametrize("pool,shape,cover", [
    (nn.MaxPool2d(2), (1, 6, 6), 1),
    (nn.MaxPool2d(3, stride=1, padding=1), (1, 5, 5), 9),
    (nn.MaxPool2d(3, stride=2), (1, 7, 7), 4),
    (nn.MaxPool1d(3, stride=2, padding=1, dilation=2), (1, 11), None),
    (nn.MaxPool2d(2, stride=2, ceil_mode=True), (1, 5, 5), 1),
    (nn.AdaptiveMaxPool2d((3, 2)), (1, 7, 5), None),
])
def test_max_pool_constant(pool, shape, cover):
    got = max_pool_lipschitz(pool, shape)
    assert got == pytest.approx(math.sqrt(R.max_pool_coverage_dense(pool, shape)))
    if cover is not None:  # counted by hand
        assert got == pytest.approx(math.sqrt(cover))
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(500, *shape, generator=g, dtype=torch.float64) for _ in range(2))
    ratio = (pool(a) - pool(b)).flatten(1).norm(dim=1) / (a - b).flatten(1).norm(dim=1)
    assert float(ratio.max()) <= got


class _Custom(nn.Module):
    def forward(self, x):
        return x * 2


class _Fn(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def test_unsupported_layer_names_path_and_type():
    model = nn.Sequential(nn.Linear(4, 4), nn.Sequential(nn.ReLU(), _Custom()), nn.Linear(4, 2))
    with pytest.raises(ValueError, match=r"'1\.1'.*_Custom.*supported: .*Linear"):
        lipschitz_upper(model, (4,), method="walk")
    # AutoLip traces through it: x · 2 has constant 2.
    lins = [torch.linalg.matrix_norm(model[i].weight.detach(), 2).item() for i in (0, 2)]
    assert lipschitz_upper(model, (4,)).value == pytest.approx(2 * lins[0] * lins[1], rel=1e-6)
    with pytest.raises(ValueError, match="running statistics"):
        lipschitz_upper(nn.Sequential(nn.BatchNorm1d(4, track_running_stats=False)), (4,))
    # a slope above 1 is a constant above 1, not a refusal (the functional form agrees)
    assert lipschitz_upper(nn.Sequential(nn.LeakyReLU(2.0)), (4,)).value == 2.0
    assert lipschitz_upper(_Fn(lambda x: F.leaky_relu(x, 2.0)), (4,)).value == 2.0


def test_layernorm_and_attention_make_the_bound_infinite():
    model = nn.Sequential(nn.Linear(4, 4), nn.Sequential(nn.ReLU(), nn.LayerNorm(4)), nn.Linear(4, 2))
    bound = lipschitz_upper(model, (4,))
    assert math.isinf(bound.value)
    assert ("1.1", "LayerNorm", math.inf) in bound.layers

    class Attn(nn.Module):
        lipschitz_unbounded = "test"

        def __init__(self):
            super().__init__()
            self.inner = nn.Linear(4, 4)

        def forward(self, x):
            return self.inner(x)

    bound = lipschitz_upper(nn.Sequential(nn.Linear(4, 4), Attn()), (4,))
    assert math.isinf(bound.value) and bound.layers[-1] == ("1", "Attn", math.inf)


class _TwoStage(nn.Module):
    """A custom container that tells the bound in which order its parts run."""

    def __init__(self):
        super().__init__()
        self.head, self.body = nn.Linear(3, 2), nn.Sequential(nn.Linear(5, 3), nn.ReLU())

    def forward(self, x):
        return self.head(self.body(x))

    def lipschitz_parts(self):
        return [self.body, self.head]


def test_lipschitz_parts():
    torch.manual_seed(0)
    model = _TwoStage().double()
    bound = lipschitz_upper(model, (5,))
    want = float(torch.linalg.svdvals(model.body[0].weight)[0] * torch.linalg.svdvals(model.head.weight)[0])
    assert want <= bound.value <= want * (1 + 1e-8)
    assert [p for p, _, _ in bound.layers] == ["body.0", "body.1", "head"]


class _StrayParts(_TwoStage):
    def lipschitz_parts(self):
        return [self.body, nn.Linear(3, 2)]  # a fresh module, not one of the model's


def test_lipschitz_parts_that_are_not_submodules_are_named():
    """Regression: a part that is not a submodule raised ``KeyError: 140169281084688``."""
    with pytest.raises(ValueError, match=r"lipschitz_parts\(\) of '' \(_StrayParts\) returned Linear, which is not a submodule"):
        lipschitz_upper(_StrayParts(), (5,), method="walk")


def test_training_flags_and_state_untouched(nets):
    model = nets.conv2d().train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    lipschitz_upper(model, (2, 8, 8))
    assert all(m.training for m in model.modules())
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_constant_is_its_largest_slope(approximate):
    """Regression: the tanh form's constant was typed in as 1.13 (true 1.1289931…)."""
    from ddscope.metrics.lipschitz import leaf_lipschitz

    x = torch.linspace(-6, 6, 400_001, dtype=torch.float64, requires_grad=True)
    (slope,) = torch.autograd.grad(torch.nn.functional.gelu(x, approximate=approximate).sum(), x)
    value = leaf_lipschitz("act", nn.GELU(approximate=approximate), (1,))
    assert value == pytest.approx(float(slope.max()), rel=1e-9)
