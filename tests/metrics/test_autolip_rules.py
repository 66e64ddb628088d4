"""Soundness of every AutoLip rule (``ddscope.metrics.autolip.RULES`` and the module rules) against
dense Jacobians, and a fuzz test over random graphs of the supported operations.

A rule is sound when the bound it gives is ≥ ‖J(x)‖₂ at every point; for a linear map (or a
selection) the bound should also be tight — equal to the map's norm — so each linear case checks
both. Points: Gaussian draws at three scales and adversarial points (the ascent of
:func:`~ddscope.metrics.ascent.lipschitz_lower` from the largest norms found).
"""

from __future__ import annotations

import math
import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ddscope.metrics import reference as R
from ddscope.metrics.activations import FUNCTIONAL, activation_constant
from ddscope.metrics.ascent import lipschitz_lower
from ddscope.metrics.jacobian import jacobian_norms
from ddscope.metrics.lipschitz import lipschitz_upper


class Fn(nn.Module):
    """A model that is the function ``fn`` (with optional submodules / parameters)."""

    def __init__(self, fn, **mods):
        super().__init__()
        self.fn = fn
        for k, v in mods.items():
            setattr(self, k, v)

    def forward(self, x):
        return self.fn(self, x)


def _max_norm(model, shape, n=24, seed=0) -> float:
    """The largest ‖J(x)‖₂ over random points at three scales and the ascent from the top ones."""
    g = torch.Generator().manual_seed(seed)
    xs = torch.cat([torch.randn(n, *shape, generator=g, dtype=torch.float64) * s for s in (0.1, 1.0, 5.0)])
    norms = R.jacobian_norms_dense(model, xs).spec
    flat = xs.flatten(1)
    lo, hi = flat.min(0).values.reshape(shape), flat.max(0).values.reshape(shape)
    low = lipschitz_lower(model, xs[norms.topk(3).indices], lo, hi, steps=8, method="exact")
    return max(float(norms.max()), low.value)


def _sound(model, shape, *, tight: bool = False, constants=None) -> float:
    model = model.double().eval()
    bound = lipschitz_upper(model, shape, constants=constants).value
    measured = _max_norm(model, shape)
    assert measured <= bound * (1 + 1e-9), (measured, bound)
    if tight:
        assert bound == pytest.approx(measured, rel=1e-7), (measured, bound)
    return bound


# ---- linear maps and selections: sound and tight ---------------------------------------------------

LINEAR = {
    # the DeepSets layer: ‖I + (1/n)11ᵀ‖₂ = 2 (the mean broadcast back over the set)
    "x + mean keepdim": (lambda m, x: x + x.mean(1, keepdim=True), (5, 3)),
    "x - sum keepdim": (lambda m, x: x - x.sum(-1, keepdim=True), (4,)),
    "broadcast to a wider axis": (lambda m, x: x[:, :, None] + torch.zeros(1, 1, 3, dtype=x.dtype), (4,)),
    "scalar times a broadcast": (lambda m, x: 2.0 * x.unsqueeze(-1).expand(-1, -1, 3), (4,)),
    "constant tensor times x": (lambda m, x: x[:, :, None] * torch.tensor([1.0, -3.0, 0.5], dtype=x.dtype), (4,)),
    "expand": (lambda m, x: x[:, None, :].expand(-1, 4, -1), (3,)),
    "expand_as": (lambda m, x: x[:, :1].expand_as(x), (4,)),
    "repeat": (lambda m, x: x.repeat(1, 3), (4,)),
    "repeat_interleave": (lambda m, x: x.repeat_interleave(2, dim=1), (4,)),
    "tile": (lambda m, x: torch.tile(x, (1, 2)), (4,)),
    "duplicated index": (lambda m, x: x[:, [0, 0, 0, 1]], (4,)),
    "index_select": (lambda m, x: torch.index_select(x, 1, torch.tensor([2, 2, 0])), (4,)),
    "gather": (lambda m, x: torch.gather(x, 1, torch.tensor([[1, 1, 3]]).expand(x.shape[0], -1)), (4,)),
    "slice and step": (lambda m, x: x[:, ::2], (5,)),
    "flip and roll": (lambda m, x: torch.roll(torch.flip(x, [1]), 1, 1), (5,)),
    "cat with itself": (lambda m, x: torch.cat([x, x, x[:, :2]], 1), (4,)),
    "stack": (lambda m, x: torch.stack([x, -x], 1), (4,)),
    "chunk then add": (lambda m, x: sum(x.chunk(2, dim=1)), (4,)),
    "residual sum": (lambda m, x: x + m.lin(x), (4,)),
    "mean over all": (lambda m, x: x.mean((1, 2)), (3, 4)),
    "sum over a dim": (lambda m, x: x.sum(1), (3, 4)),
    "reflect pad": (lambda m, x: F.pad(x, (2, 2), mode="reflect"), (1, 6)),
    "replicate pad": (lambda m, x: F.pad(x, (1, 3), mode="replicate"), (1, 5)),
    "zero pad module": (lambda m, x: m.pad(x), (1, 3, 3)),
    "nearest upsample x2": (lambda m, x: F.interpolate(x, scale_factor=2, mode="nearest"), (1, 3, 3)),
    "nearest upsample to 7": (lambda m, x: F.interpolate(x, size=7, mode="nearest"), (1, 3)),
    "bilinear upsample": (lambda m, x: F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False), (2, 3, 3)),
    "bicubic upsample": (lambda m, x: F.interpolate(x, size=(5, 5), mode="bicubic", align_corners=True), (1, 3, 3)),
    "Upsample linear module": (lambda m, x: m.up(x), (2, 5)),
    "ConvTranspose1d": (lambda m, x: m.ct1(x), (2, 5)),
    "ConvTranspose2d stride 2": (lambda m, x: m.ct2(x), (2, 3, 3)),
    "F.conv_transpose2d": (lambda m, x: F.conv_transpose2d(x, m.ct2.weight, None, stride=2, padding=1,
                                                           output_padding=1), (2, 3, 3)),
    "pixel_shuffle": (lambda m, x: F.pixel_shuffle(x, 2), (4, 2, 2)),
    "transpose and linear": (lambda m, x: m.lin(x.transpose(1, 2)).transpose(1, 2), (4, 3)),
    "matmul by a constant on the left": (lambda m, x: m.A @ x, (4, 3)),
    "divide by a buffer": (lambda m, x: x / m.scale, (4,)),
}


# Compositions where the triangle inequality or max|c|·√k is not attained: sound, not tight.
LOOSE = {"residual sum", "chunk then add", "x - sum keepdim", "constant tensor times x"}


def _mods():
    torch.manual_seed(0)
    return dict(lin=nn.Linear(4, 4), pad=nn.ZeroPad2d((1, 0, 2, 1)), up=nn.Upsample(scale_factor=3, mode="linear"),
                ct1=nn.ConvTranspose1d(2, 3, 3, stride=2, padding=1, output_padding=1),
                ct2=nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1, output_padding=1))


@pytest.mark.parametrize("name", sorted(LINEAR))
def test_linear_rules_are_sound_and_tight(name):
    fn, shape = LINEAR[name]
    model = Fn(fn, **_mods())
    model.register_buffer("A", torch.randn(4, 4))
    model.register_buffer("scale", torch.tensor([0.5, 2.0, 4.0, 1.0]))
    # a composition of a linear map's rules is tight only when one rule carries all of it; the
    # residual sum and the transposed Linear are bounds ‖I‖ + ‖W‖ and ‖W‖, tight for the latter only
    _sound(model, shape, tight=name not in LOOSE)


def test_the_deepsets_layer_is_no_longer_under_bounded():
    bound = _sound(Fn(lambda m, x: x + x.mean(1, keepdim=True)), (6, 4), tight=True)
    assert bound == pytest.approx(2.0)


# ---- activations: one constant per function, module and functional forms alike --------------------

ACTIVATIONS = ["relu", "relu6", "hardtanh", "tanh", "sigmoid", "softsign", "tanhshrink", "logsigmoid", "softplus",
               "softshrink", "celu", "elu", "selu", "leaky_relu", "hardsigmoid", "hardswish", "silu", "mish", "gelu",
               "softmax", "softmin", "log_softmax"]


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_every_activation_is_sound_and_its_module_and_function_agree(name):
    fn = getattr(F, name)
    args = {"softmax": (1,), "softmin": (1,), "log_softmax": (1,), "elu": (1.7,), "leaky_relu": (-1.5,)}.get(name, ())
    functional = Fn(lambda m, x: fn(x, *args))
    module = FUNCTIONAL[name](args, {})
    as_module = Fn(lambda m, x: m.act(x), act=module)
    b_fn = _sound(functional, (5,))
    b_mod = _sound(as_module, (5,))
    assert b_fn == b_mod == activation_constant(module, (5,))
    # elementwise constants are the sup of |φ'|: a fine grid never exceeds them and comes close
    if name not in ("softmax", "softmin", "log_softmax"):
        t = torch.linspace(-8, 8, 200001, dtype=torch.float64, requires_grad=True)
        slope = torch.autograd.grad(module(t).sum(), t)[0].abs().max().item()
        assert slope <= b_fn * (1 + 1e-9) and slope >= b_fn * (1 - 1e-3), (slope, b_fn)


def test_discontinuous_and_unbounded_maps_give_infinity_not_a_number():
    for fn in (lambda m, x: F.hardshrink(x), lambda m, x: torch.exp(x), lambda m, x: x * x,
               lambda m, x: F.group_norm(x, 2), lambda m, x: F.layer_norm(x, (3,))):
        assert math.isinf(lipschitz_upper(Fn(fn).double(), (4, 3)).value)
    for mod in (nn.GroupNorm(2, 4), nn.LayerNorm(3), nn.InstanceNorm1d(4), nn.Hardshrink()):
        assert math.isinf(lipschitz_upper(Fn(lambda m, x: m.n(x), n=mod).double(), (4, 3)).value)


def test_constants_can_be_declared_by_type_and_every_unknown_is_named_once():
    class Odd(nn.Module):  # a user activation used three times, and two unknown functions
        def forward(self, x):
            return torch.cumsum(x, 1) * 0 + torch.erf(x)

    class MyAct(nn.Module):
        lipschitz_constant = 1.0

        def forward(self, x):
            return torch.clamp(x, -1, 1)

    model = Fn(lambda m, x: m.odd(m.a(m.c(m.b(x)))), odd=Odd(), a=nn.Hardshrink(), b=nn.Softplus(), c=nn.Softplus())
    with pytest.raises(ValueError) as info:
        lipschitz_upper(model.double(), (4,))
    msg = str(info.value)
    assert "\n" not in msg and "2 operation(s)" in msg and "'cumsum'" in msg and "'erf'" in msg
    model = Fn(lambda m, x: m.a(m.b(x)) + m.c(x), a=MyAct(), b=nn.ReLU(), c=nn.Softplus()).double()
    # by type name (a MobileNet declares its Hardswish once, not per node)
    assert lipschitz_upper(model, (4,), constants={"Softplus": 0.5}).value == pytest.approx(1.5)
    assert lipschitz_upper(model, (4,), constants={nn.Softplus: 0.25}).value == pytest.approx(1.25)


def test_a_sequential_subclass_with_its_own_forward_is_bounded_as_its_forward():
    class Standardise(nn.Sequential):
        def forward(self, x):
            return super().forward(x / 0.25)  # the input scaled by 4 before the chain

    torch.manual_seed(0)
    model = Standardise(nn.Linear(4, 3)).double()
    w = float(torch.linalg.matrix_norm(model[0].weight, 2))
    assert lipschitz_upper(model, (4,)).value == pytest.approx(4 * w, rel=1e-8)
    _sound(model, (4,), tight=True)


# ---- fuzz: random graphs of supported operations --------------------------------------------------

def _random_graph(rng: random.Random, d: int):
    """A random forward over (B, d) from a menu of supported operations, with its parameters."""
    lins = nn.ModuleList()
    steps = []
    for _ in range(rng.randint(2, 6)):
        kind = rng.choice(["linear", "act", "mean_bcast", "repeat_half", "index", "cat", "scale", "residual", "pool"])
        if kind in ("linear", "residual"):
            lins.append(nn.Linear(d, d))
        steps.append((kind, len(lins) - 1, rng.choice(ACTIVATIONS[:20]), rng.uniform(-3, 3)))

    def forward(m, x):
        for kind, li, act, c in steps:
            if kind == "linear":
                x = m.lins[li](x)
            elif kind == "residual":
                x = x + 0.5 * m.lins[li](x)
            elif kind == "act":
                x = getattr(F, act)(x)
            elif kind == "mean_bcast":
                x = x - x.mean(1, keepdim=True) * c
            elif kind == "repeat_half":
                x = x[:, : d // 2].repeat(1, 2)
            elif kind == "index":
                x = x[:, [i % d for i in range(1, d + 1)]] + x[:, [0] * d] * 0.1
            elif kind == "cat":
                x = torch.cat([x[:, : d // 2], x[:, d // 2 :] * c], 1)
            elif kind == "scale":
                x = x * c
            elif kind == "pool":
                x = F.avg_pool1d(x[:, None], 2, 1, padding=1)[:, 0, :d]
        return x

    return Fn(forward, lins=lins)


@pytest.mark.parametrize("seed", range(40))
def test_random_graphs_of_supported_operations_are_bounded_soundly(seed):
    rng = random.Random(seed)
    torch.manual_seed(seed)
    model = _random_graph(rng, d=4).double().eval()
    bound = lipschitz_upper(model, (4,)).value
    g = torch.Generator().manual_seed(seed)
    xs = torch.cat([torch.randn(64, 4, generator=g, dtype=torch.float64) * s for s in (0.1, 1.0, 10.0)])
    assert float(jacobian_norms(model, xs, method="exact").spec.max()) <= bound * (1 + 1e-9)
