"""Every exact or certified number on user-style models (``tests/zoo.py``), against brute force.

For each model of the zoo, in float64:
  * the batched Jacobian norms equal those of the dense Jacobian (autograd, one sample at a time);
  * the certified upper bound is ≥ every ‖J(x)‖₂ sampled (random points, points 10× outside the
    data's scale) and ascended, or the model is refused with one line naming every operation
    and how to declare it;
  * ``lip_lower`` ≤ the upper bound;
  * a trace called exact equals the dense Hessian's trace, and an estimate carries a standard
    error that covers its distance to the dense trace;
  * Theorem 2's per-sample gradient norms equal a per-sample loop.
"""

from __future__ import annotations

import math

import pytest
import torch

from ddscope.metrics import reference as R
from ddscope.metrics.ascent import lipschitz_lower
from ddscope.metrics.hessian import hess_trace_detail
from ddscope.metrics.jacobian import jacobian_norms, math_attention
from ddscope.metrics.lipschitz import lipschitz_upper
from ddscope.metrics.persample import per_sample_grad_sq

from ..zoo import CLASSES, ZOO, build

NAMES = sorted(ZOO)


def _data(shape, n=6, seed=1, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *shape, generator=g, dtype=torch.float64) * scale
    return x, torch.randint(0, CLASSES, (n,), generator=g)


def test_the_zoo_is_large_enough():
    assert len(ZOO) >= 20


@pytest.mark.parametrize("name", NAMES)
def test_jacobian_norms_equal_the_dense_jacobian(name):
    model = build(name)
    x, _ = _data(ZOO[name][1])
    got = jacobian_norms(model, x, chunk_size=4)
    want = R.jacobian_norms_dense(model, x)
    torch.testing.assert_close(got.spec, want.spec, rtol=1e-8, atol=1e-12)
    torch.testing.assert_close(got.fro, want.fro, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_the_upper_bound_is_above_every_measured_norm_or_the_model_is_refused_in_one_line(name):
    _, shape, expect = ZOO[name]
    model = build(name)
    if expect == "refuse":
        with pytest.raises(ValueError) as info:
            lipschitz_upper(model, shape)
        msg = str(info.value)
        assert "\n" not in msg and "cumsum" in msg and "erf" in msg and "constants=" in msg
        return
    upper = lipschitz_upper(model, shape).value
    if expect == "inf":
        assert math.isinf(upper)
        return
    assert math.isfinite(upper)
    xs = torch.cat([_data(shape, 16, seed=s, scale=sc)[0] for s, sc in ((2, 1.0), (3, 10.0), (4, 0.01))])
    sampled = jacobian_norms(model, xs).spec
    assert float(sampled.max()) <= upper * (1 + 1e-9)
    flat = xs.flatten(1)
    lo, hi = flat.min(0).values.reshape(shape), flat.max(0).values.reshape(shape)
    low = lipschitz_lower(model, xs[sampled.topk(3).indices], lo, hi, steps=10)
    assert float(sampled.max()) <= low.value + 1e-12  # the ascent starts from the largest ones
    assert low.value <= upper * (1 + 1e-9)


def test_refused_operations_can_be_declared_by_function_name():
    model = build("cumsum and erf")
    tril = float(torch.linalg.matrix_norm(torch.tril(torch.ones(6, 6, dtype=torch.float64)), 2))
    upper = lipschitz_upper(model, (6,), constants={"cumsum": tril, "erf": 2 / math.sqrt(math.pi)}).value
    xs = _data((6,), 32, seed=5, scale=3.0)[0]
    assert float(jacobian_norms(model, xs).spec.max()) <= upper


@pytest.mark.parametrize("name", NAMES)
def test_an_exact_trace_is_the_dense_trace_and_an_estimate_carries_its_error(name):
    model = build(name)
    x, y = _data(ZOO[name][1], 5)
    got = hess_trace_detail(model, [(x, y)], num_matvecs=12, generator=torch.Generator().manual_seed(0))
    with math_attention():  # the dense reference differentiates twice through attention too
        want = float(torch.trace(R.dense_hessian(model, [(x, y)])))
    if got.exact:
        assert got.se == 0
        assert got.value == pytest.approx(want, rel=1e-7, abs=1e-9), got.method
    else:
        assert got.refusal and got.se > 0 and math.isfinite(got.se)
        assert abs(got.value - want) <= 6 * got.se  # the error bar is honest (fixed seed)


EXACT = {"standardising Sequential subclass", "DeepSets mean broadcast", "U-Net with ConvTranspose2d",
         "Upsample nearest", "reflection-padded Conv1d", "repeat, in-place residual, duplicated index",
         "BatchNorm MLP", "F.interpolate bilinear", "0-d learned scale", "ResMLP"}  # s·logits, α ⊙ h: linear in each
NOT_EXACT = {"tied weights", "division by a parameter", "one parameter view in two layers",
             "spectral_norm parametrisation", "weight_norm parametrisation",
             "GELU/SiLU/Mish MLP", "pre-activation ResNet, GroupNorm", "MobileNet-style without SE"}


@pytest.mark.parametrize("name", sorted(EXACT | NOT_EXACT))
def test_the_exact_trace_is_used_exactly_where_it_holds(name):
    model = build(name)
    x, y = _data(ZOO[name][1], 5)
    got = hess_trace_detail(model, [(x, y)], num_matvecs=12)
    assert (got.method == "ggn") == (name in EXACT), got.refusal


@pytest.mark.parametrize("name", ["tied weights", "0-d learned scale", "division by a parameter",
                                  "one parameter view in two layers", "standardising Sequential subclass"])
def test_per_sample_gradient_norms_equal_a_loop(name):
    model = build(name)
    x, y = _data(ZOO[name][1], 5)
    want = R.per_sample_grads_loop(model, x, y).square().sum(1)
    torch.testing.assert_close(per_sample_grad_sq(model, x, y), want, rtol=1e-9, atol=1e-12)
