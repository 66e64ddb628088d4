"""Hessian-vector products, trace and top eigenvalue against the dense torch.func.hessian."""

from __future__ import annotations

import math

import pytest
import torch

from ddscope import reference as R
from ddscope.metrics.hessian import hess_top, hess_trace, loss_hvp


def _batches(x, y, sizes):
    """Split (x, y) into consecutive batches of the given sizes (uneven on purpose)."""
    out, start = [], 0
    for s in sizes:
        out.append((x[start : start + s], y[start : start + s]))
        start += s
    assert start == len(x)
    return out


@pytest.fixture(params=["mlp", "conv2d"])
def problem(request, nets):
    """(model, uneven batches, dense Hessian of the mean loss over all 17 samples)."""
    build, shape, classes = nets.all[request.param]
    model = build()
    if request.param == "conv2d":  # keep the dense Hessian small: only the last two layers vary
        for p in list(model.parameters())[:-4]:
            p.requires_grad_(False)
    x, y = nets.data(shape, classes, 17)
    batches = _batches(x, y, (7, 7, 3))
    return model, batches, R.dense_hessian(model, [(x, y)])


def test_hvp_equals_dense_hessian_times_v(problem):
    model, batches, H = problem
    matvec, dim = loss_hvp(model, batches)
    assert H.shape == (dim, dim)
    V = torch.randn(dim, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(matvec(V), H @ V, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(matvec(V[:, 0]), H @ V[:, 0], rtol=1e-9, atol=1e-12)


def test_hvp_on_a_parameter_subset(nets):
    model = nets.mlp(6, (8,), 4)
    x, y = nets.data((6,), 4, 10)
    H = R.dense_hessian(model, [(x, y)])  # all of 0.weight, 0.bias, 2.weight, 2.bias
    matvec, dim = loss_hvp(model, _batches(x, y, (6, 4)), params=["2.weight", "2.bias"])
    start = 6 * 8 + 8
    assert dim == 8 * 4 + 4
    V = torch.randn(dim, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    torch.testing.assert_close(matvec(V), H[start:, start:] @ V, rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="unknown parameter"):
        loss_hvp(model, [(x, y)], params=["3.weight"])


def test_trace_methods(problem):
    model, batches, H = problem
    exact = float(torch.trace(H))
    dim = H.shape[0]
    assert hess_trace(model, batches, method="exact") == pytest.approx(exact, rel=1e-10)
    assert hess_trace(model, batches, method="hutchpp", num_matvecs=3 * dim) == pytest.approx(exact, rel=1e-8)
    # Hutchinson with 200 probes: within four standard errors √(2(‖H‖_F² − Σ H_ii²)/m)
    se = math.sqrt(2 * (float(H.square().sum()) - float(H.diagonal().square().sum())) / 200)
    est = hess_trace(model, batches, method="hutchinson", num_matvecs=200, generator=torch.Generator().manual_seed(5))
    assert abs(est - exact) <= 4 * se
    with pytest.raises(ValueError, match="allowed"):
        hess_trace(model, batches, method="dense")


def test_top_eigenvalue(problem):
    model, batches, H = problem
    top = float(torch.linalg.eigvalsh(H)[-1])
    assert hess_top(model, batches, num_iters=H.shape[0]) == pytest.approx(top, rel=1e-8)
    assert hess_top(model, batches, num_iters=5) <= top * (1 + 1e-10)


def test_eval_mode_and_flags_restored(nets):
    """The Hessian uses BatchNorm running statistics even when the model is in train mode."""
    model = nets.conv2d()
    for p in list(model.parameters())[:-2]:
        p.requires_grad_(False)
    x, y = nets.data((2, 8, 8), 5, 6)
    H_eval = R.dense_hessian(model.eval(), [(x, y)])
    model.train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    matvec, dim = loss_hvp(model, [(x, y)])
    V = torch.eye(dim, dtype=torch.float64)
    torch.testing.assert_close(matvec(V), H_eval, rtol=1e-9, atol=1e-12)
    assert all(m.training for m in model.modules())
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
