"""AutoLip over the fx graph: equal to the module walk on every ddscope family, a true upper bound
(never below a measured ‖J(x)‖₂) on models written the way users write them, and one clear error
for an operation it cannot bound."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ddscope.config import ModelConfig
from ddscope.metrics.jacobian import jacobian_norms
from ddscope.metrics.lipschitz import leaf_lipschitz, lipschitz_upper, walk_lipschitz
from ddscope.models import MODELS, make_model

from ..usermodels import (BasicBlock, Bottleneck, DenseNet, ScaledResidual, ShapeUser, SmallCNN, TinyResNet, TinyViT,
                          Wrapped)

SHAPES = {"mlp": (40,), "cnn1d": (40,)}  # image families: (3, 16, 16)


def _randomise_bn(model: nn.Module, gen: torch.Generator) -> None:
    """Running statistics and affine parameters away from their initial 0 / 1, so BatchNorm's
    constant is not 1."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen, dtype=m.running_mean.dtype))
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen, dtype=m.running_var.dtype) + 0.3)
            m.weight.data.copy_(torch.randn(m.weight.shape, generator=gen, dtype=m.weight.dtype))


@pytest.mark.parametrize("batchnorm", [False, True])
@pytest.mark.parametrize("family", sorted(MODELS))
def test_autolip_equals_the_module_walk_on_every_family(family, batchnorm):
    shape = SHAPES.get(family, (3, 16, 16))
    torch.manual_seed(0)
    model = make_model(ModelConfig(name=family, width=8 if family == "vit" else 3, batchnorm=batchnorm), shape, 10)
    _randomise_bn(model, torch.Generator().manual_seed(1))
    auto = lipschitz_upper(model, shape)
    walk = walk_lipschitz(model, shape, lambda p, m, s: leaf_lipschitz(p, m, s))
    assert auto.method == "autolip"
    if math.isinf(walk.value):
        assert math.isinf(auto.value)  # the ViT: attention and LayerNorm
    else:
        assert auto.value == pytest.approx(walk.value, rel=1e-12)
        # the leaf layers' constants, by module path, are the walk's
        leaves = {p: v for p, t, v in walk.layers if t != "Residual"}
        assert {p: v for p, _, v in auto.layers if p in leaves} == pytest.approx(leaves, rel=1e-12)


def _points(shape, n: int, gen) -> torch.Tensor:
    """Random points at several scales, and sparse 'data-like' ones (a few large entries)."""
    scales = torch.logspace(-2, 1, n, dtype=torch.float64)
    x = torch.randn(n, *shape, generator=gen, dtype=torch.float64) * scales.view(-1, *[1] * len(shape))
    sparse = (torch.rand(n, *shape, generator=gen, dtype=torch.float64) > 0.8).double() * 3.0
    return torch.cat([x, sparse])


USER_MODELS = {
    "torchvision BasicBlock ResNet": (lambda: TinyResNet(BasicBlock, width=3, in_ch=3), (3, 8, 8)),
    "torchvision Bottleneck ResNet": (lambda: TinyResNet(Bottleneck, width=2, in_ch=3), (3, 8, 8)),
    "DenseNet concatenation": (lambda: DenseNet(growth=3, layers=3, in_ch=1), (1, 8, 8)),
    "class CNN, functional ops": (lambda: SmallCNN(channels=3, in_ch=1, side=8), (1, 8, 8)),
    "scaled residual MLP": (lambda: ScaledResidual(d=12, width=10), (12,)),
    "wrapped Sequential, Dropout": (lambda: Wrapped(d=12, width=10), (12,)),
    "len(x) and x.shape in forward": (lambda: ShapeUser(channels=3, in_ch=1, side=6), (1, 6, 6)),
}


@pytest.mark.parametrize("name", sorted(USER_MODELS))
def test_autolip_is_a_finite_true_upper_bound_on_user_models(name):
    build, shape = USER_MODELS[name]
    torch.manual_seed(0)
    model = build().double()
    _randomise_bn(model, torch.Generator().manual_seed(2))
    model.eval()
    bound = lipschitz_upper(model, shape)
    assert bound.method == "autolip" and math.isfinite(bound.value) and bound.value > 0
    x = _points(shape, 150, torch.Generator().manual_seed(3))  # 300 points
    spec = jacobian_norms(model, x, method="exact").spec
    assert spec.max().item() <= bound.value * (1 + 1e-9), (spec.max().item(), bound.value)
    assert spec.max().item() > 1e-6 * bound.value  # the bound is not vacuous by orders of magnitude


def test_functional_and_module_forms_give_the_same_bound():
    """F.relu / F.max_pool2d / torch.flatten in a class == the same layers as nn.Sequential."""
    torch.manual_seed(0)
    net = SmallCNN(channels=3, in_ch=1, side=8).double().eval()
    seq = nn.Sequential(net.conv1, nn.ReLU(), nn.MaxPool2d(2), net.conv2, nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                        nn.Dropout(0.1), net.fc)
    a, b = lipschitz_upper(net, (1, 8, 8)), lipschitz_upper(seq, (1, 8, 8))
    assert a.value == pytest.approx(b.value, rel=1e-10)


def test_residual_add_scales_and_concatenation_follow_the_rules():
    """Hand-computed: y = 3·Wx + x  -> ‖3W‖ + 1;  cat(Wx, x) -> √(‖W‖² + 1);  x/4 -> 1/4."""

    class AddScale(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(5, 5, bias=False)

        def forward(self, x):
            return 3 * self.lin(x) + x

    class Cat(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(5, 5)

        def forward(self, x):
            return torch.cat([self.lin(x), x], dim=1) / 4

    torch.manual_seed(0)
    m1, m2 = AddScale().double(), Cat().double()
    w1 = torch.linalg.matrix_norm(m1.lin.weight.detach(), 2).item()
    w2 = torch.linalg.matrix_norm(m2.lin.weight.detach(), 2).item()
    assert 3 * w1 + 1 <= lipschitz_upper(m1, (5,)).value <= (3 * w1 + 1) * (1 + 1e-8)  # certified: never below
    assert math.sqrt(w2**2 + 1) / 4 <= lipschitz_upper(m2, (5,)).value <= math.sqrt(w2**2 + 1) / 4 * (1 + 1e-8)


def test_attention_and_layernorm_are_unbounded():
    model = TinyViT(dim=8, in_ch=1, side=8)
    bound = lipschitz_upper(model, (1, 8, 8))
    assert math.isinf(bound.value)
    assert any(math.isinf(v) for _, _, v in bound.layers)


def test_an_unknown_operation_is_one_error_naming_it_and_how_to_declare_it():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 4)

        def forward(self, x):
            return self.lin(torch.cumsum(x, dim=1))

    with pytest.raises(ValueError, match=r"no Lipschitz constant for 1 operation\(s\): the operation 'cumsum' at graph node 'cumsum'.*"
                                         r"constants=\{'cumsum': L\}"):
        lipschitz_upper(Odd(), (4,))
    # Declared: ‖cumsum‖₂ on R⁴ is the norm of the lower-triangular ones matrix.
    c = torch.linalg.matrix_norm(torch.tril(torch.ones(4, 4)), 2).item()
    model = Odd()
    got = lipschitz_upper(model, (4,), constants={"cumsum": c}).value
    assert got == pytest.approx(c * torch.linalg.matrix_norm(model.lin.weight.detach(), 2).item(), rel=1e-6)


def test_a_module_may_declare_its_constant():
    class Halve(nn.Module):
        lipschitz_constant = 0.5

        def forward(self, x):
            return torch.cumsum(x, 1) * 0  # never traced: its declared constant is used

    model = nn.Sequential(Halve(), nn.Linear(3, 2))
    w = torch.linalg.matrix_norm(model[1].weight.detach(), 2).item()
    assert lipschitz_upper(model, (3,)).value == pytest.approx(0.5 * w, rel=1e-6)


def test_untraceable_models_fall_back_to_the_module_walk():
    class Branchy(nn.Sequential):
        def forward(self, x):
            if x.sum() > 0:  # control flow on the input: fx cannot trace it
                return super().forward(x)
            return super().forward(-x)

    model = Branchy(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    # A Sequential subclass with its own forward computes another function than its children's
    # chain: the walk refuses to read the children (here -x would be harmless; x / 10 would not).
    with pytest.raises(ValueError, match=r"Branchy.*own forward"):
        lipschitz_upper(model, (3,))

    class Declared(Branchy):
        def lipschitz_parts(self):  # the user's statement: the forward is this chain (up to an isometry)
            return list(self)

    model = Declared(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    bound = lipschitz_upper(model, (3,))
    assert bound.method == "walk"
    ws = [torch.linalg.matrix_norm(model[i].weight.detach(), 2).item() for i in (0, 2)]
    assert bound.value == pytest.approx(ws[0] * ws[1], rel=1e-6)
