"""Hessian-vector products, trace and top eigenvalue against the dense torch.func.hessian.

The default products are double backward through each batch's kept gradient graph (cached across
calls while it fits the memory budget, else rebuilt per call; one probe at a time when the batched
backward fails); ``mode="forward_over_reverse"`` is the torch.func alternative. Both are tested."""

from __future__ import annotations

import math

import pytest
import torch

from ddscope.metrics import reference as R
from ddscope.metrics import hessian as HM
from ddscope.metrics.hessian import HVP_MODES, auto_hess_batch, hess_top, hess_trace, loss_hvp


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


# --- double backward (the default) and forward-over-reverse ---------------------------------------


def _count_builds(monkeypatch) -> list[int]:
    """Count the per-batch gradient graphs the double-backward path builds."""
    calls = [0]
    build = HM._batch_graph

    def counting(*args, **kwargs):
        calls[0] += 1
        return build(*args, **kwargs)

    monkeypatch.setattr(HM, "_batch_graph", counting)
    return calls


def _no_cache(monkeypatch) -> None:
    """A zero memory budget: every matvec call rebuilds each batch's graph."""
    monkeypatch.setattr(HM, "memory_budget", lambda x, cpu_bytes=0: 0)


def _flat_index(model, names) -> torch.Tensor:
    """Positions of the parameters ``names`` in the flat vector of all parameters."""
    index, start = {}, 0
    for n, p in model.named_parameters():
        index[n] = torch.arange(start, start + p.numel())
        start += p.numel()
    return torch.cat([index[n] for n in names])


@pytest.mark.parametrize("cached", [True, False], ids=["cached", "rebuilt"])
def test_double_backward_matvec_equals_dense(problem, monkeypatch, cached):
    model, batches, H = problem
    if not cached:
        _no_cache(monkeypatch)
    builds = _count_builds(monkeypatch)
    dim = H.shape[0]
    V = torch.randn(dim, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for chunk in (8, 2, None):  # one block, uneven blocks (2, 2, 1), all at once
        matvec, _ = loss_hvp(model, batches, vmap_chunk=chunk, mode="double_backward")
        torch.testing.assert_close(matvec(V), H @ V, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(matvec(V[:, 0]), H @ V[:, 0], rtol=1e-9, atol=1e-12)  # a single vector
        torch.testing.assert_close(matvec(V[:, 1:2]), H @ V[:, 1:2], rtol=1e-9, atol=1e-12)  # one column
    # 3 batches; 3 loss_hvp closures with 3 calls each: built once per closure, or on every call
    assert builds[0] == (3 * 3 if cached else 3 * 3 * 3)


def test_cached_and_rebuilt_graphs_agree(problem, monkeypatch):
    model, batches, H = problem
    dim = H.shape[0]
    gen = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    builds = _count_builds(monkeypatch)
    db = {"mode": "double_backward"}  # "auto" would pick forward-over-reverse for the conv net
    cached = (hess_trace(model, batches, method="hutchpp", num_matvecs=30, generator=gen(), **db),
              hess_top(model, batches, num_iters=10, generator=gen(), **db))
    assert builds[0] == 3 + 3  # Hutch++'s 3 calls and Lanczos's 10 share one build per batch
    _no_cache(monkeypatch)
    builds[0] = 0
    rebuilt = (hess_trace(model, batches, method="hutchpp", num_matvecs=30, generator=gen(), **db),
               hess_top(model, batches, num_iters=10, generator=gen(), **db))
    assert builds[0] == 3 * 3 + 3 * 10
    assert rebuilt == pytest.approx(cached, rel=1e-12)
    for mode in HVP_MODES:  # the same probes in both modes: equal up to rounding
        got = hess_trace(model, batches, method="hutchpp", num_matvecs=30, generator=gen(), mode=mode)
        assert got == pytest.approx(cached[0], rel=1e-10)
    assert hess_trace(model, batches, method="hutchpp", num_matvecs=3 * dim) == pytest.approx(float(torch.trace(H)), rel=1e-8)


def test_double_backward_falls_back_to_one_probe_at_a_time(problem, monkeypatch):
    model, batches, H = problem
    V = torch.randn(H.shape[0], 5, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    batched = loss_hvp(model, batches, mode="double_backward")[0](V)
    raised = [0]
    grad = torch.autograd.grad

    def no_batching_rule(*args, **kwargs):
        if kwargs.get("is_grads_batched"):
            raised[0] += 1
            raise RuntimeError("Batching rule not implemented (simulated)")
        return grad(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", no_batching_rule)
    matvec, _ = loss_hvp(model, batches, vmap_chunk=2, mode="double_backward")
    got = matvec(V)
    assert raised[0] == 1  # tried once, then one probe at a time for every batch and call
    torch.testing.assert_close(got, batched, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(got, H @ V, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(matvec(V[:, :3]), H @ V[:, :3], rtol=1e-9, atol=1e-12)
    assert raised[0] == 1


@pytest.mark.parametrize("mode", HVP_MODES)
def test_exact_trace_and_top_in_both_modes(problem, mode):
    model, batches, H = problem
    dim = H.shape[0]
    assert hess_trace(model, batches, method="exact", mode=mode) == pytest.approx(float(torch.trace(H)), rel=1e-10)
    top = float(torch.linalg.eigvalsh(H)[-1])
    assert hess_top(model, batches, num_iters=dim, mode=mode) == pytest.approx(top, rel=1e-8)


def test_forward_over_reverse_still_works(problem):
    model, batches, H = problem
    matvec, dim = loss_hvp(model, batches, mode="forward_over_reverse")
    V = torch.randn(dim, 5, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    torch.testing.assert_close(matvec(V), H @ V, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(matvec(V[:, 0]), H @ V[:, 0], rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="allowed"):
        loss_hvp(model, batches, mode="reverse_over_reverse")
    with pytest.raises(ValueError, match="allowed"):
        hess_trace(model, batches, mode="dense")


@pytest.mark.parametrize("mode", HVP_MODES)
@pytest.mark.parametrize("cached", [True, False], ids=["cached", "rebuilt"])
def test_batchnorm_eval_and_parameter_subset(nets, monkeypatch, mode, cached):
    """Conv + BatchNorm run in train mode: products use the running statistics, leave the
    flags and buffers as they were, and a params subset is the matching block of the dense H."""
    model = nets.conv2d()
    x, y = nets.data((2, 8, 8), 5, 11)
    H = R.dense_hessian(model.eval(), [(x, y)])  # every parameter, eval-mode BatchNorm
    names = ["1.weight", "1.bias", "4.bias", "8.weight"]  # BatchNorm affine, a conv bias, the head
    idx = _flat_index(model, names)
    model.train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    if not cached:
        _no_cache(monkeypatch)
    matvec, dim = loss_hvp(model, _batches(x, y, (5, 4, 2)), params=names, vmap_chunk=3, mode=mode)
    assert dim == len(idx)
    Hs = H[idx][:, idx]
    V = torch.randn(dim, 7, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    torch.testing.assert_close(matvec(V), Hs @ V, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(matvec(V[:, 0]), Hs @ V[:, 0], rtol=1e-9, atol=1e-12)
    assert all(m.training for m in model.modules())
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_auto_mode_picks_double_backward_without_convolutions(nets):
    from ddscope.metrics.hessian import resolve_mode

    assert resolve_mode(nets.mlp(), "auto") == "double_backward"
    assert resolve_mode(nets.conv1d(), "auto") == "forward_over_reverse"
    assert resolve_mode(nets.conv2d(), "auto") == "forward_over_reverse"
    assert resolve_mode(nets.conv2d(), "double_backward") == "double_backward"
    with pytest.raises(ValueError, match="allowed"):
        resolve_mode(nets.mlp(), "dense")


def test_auto_hess_batch_by_mode(nets):
    model = nets.conv2d()
    x = torch.zeros(1, 2, 8, 8, dtype=torch.float64).expand(100_000, 2, 8, 8)  # only shape and dtype matter
    db = auto_hess_batch(model, x, 8, mode="double_backward")
    assert auto_hess_batch(model, x, 8) == auto_hess_batch(model, x, 8, mode="forward_over_reverse")  # a conv net
    # 3 + 2·8 floats per activation and sample against 4·8
    assert db > auto_hess_batch(model, x, 8, mode="forward_over_reverse")
    with pytest.raises(ValueError, match="allowed"):
        auto_hess_batch(model, x, 8, mode="dense")


@pytest.mark.parametrize("mode", ["double_backward", "forward_over_reverse"])
def test_an_empty_batch_among_the_batches_adds_nothing(nets, mode):
    """Regression: forward-over-reverse products raised a raw torch error on an empty batch."""
    model = nets.mlp(6, (8,), 4)
    x, y = nets.data((6,), 4, 10)
    H = R.dense_hessian(model, [(x, y)])
    matvec, dim = loss_hvp(model, [(x[:6], y[:6]), (x[:0], y[:0]), (x[6:], y[6:])], mode=mode)
    V = torch.randn(dim, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    torch.testing.assert_close(matvec(V), H @ V, rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="at least one sample"):
        loss_hvp(model, [(x[:0], y[:0])], mode=mode)
