"""Trace and eigenvalue estimators against torch.trace / eigvalsh of dense float64 matrices."""

from __future__ import annotations

import math

import pytest
import torch

from ddscope.estimators import (
    batched_lanczos_top_eig,
    batched_power_iteration,
    hutchinson_trace,
    hutchpp_trace,
    lanczos_top_eig,
    power_iteration,
)

DIM = 40


def _psd(dim: int = DIM, decay: float = 0.8, seed: int = 0) -> torch.Tensor:
    """Random PSD matrix with eigenvalues decay^i (a Hessian-like decaying spectrum)."""
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
    return Q @ torch.diag(decay ** torch.arange(dim, dtype=torch.float64)) @ Q.T


def _sym(dim: int = DIM, shift: float = 0.0, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    M = torch.randn(dim, dim, generator=g, dtype=torch.float64)
    return (M + M.T) / 2 + shift * torch.eye(dim, dtype=torch.float64)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_hutchinson_within_four_standard_errors_and_error_shrinks():
    A = _sym(shift=1.0)
    exact = float(torch.trace(A))
    var_one = 2 * (float(A.square().sum()) - float(A.diagonal().square().sum()))  # Rademacher variance, m = 1
    errors = {}
    for m in (10, 100, 1000):
        ests = [hutchinson_trace(A, num_matvecs=m, generator=_gen(s)) for s in range(20)]
        for e in ests:
            assert abs(e - exact) <= 4 * math.sqrt(var_one / m)
        errors[m] = sum(abs(e - exact) for e in ests) / len(ests)
    assert errors[1000] < errors[100] < errors[10]


def test_hutchinson_is_exact_for_diagonal_matrices():
    """Rademacher probes have z_i² = 1, so the estimator has zero variance on a diagonal."""
    A = torch.diag(torch.arange(1.0, 11.0, dtype=torch.float64))
    assert hutchinson_trace(A, num_matvecs=1, generator=_gen(0)) == pytest.approx(55.0, rel=1e-14)


def test_hutchpp_exact_with_enough_products_and_better_than_hutchinson():
    A = _psd()
    exact = float(torch.trace(A))
    # ⌊m/3⌋ >= dim: the sketch spans the space, the estimate is exact up to rounding
    assert hutchpp_trace(A, num_matvecs=3 * DIM, generator=_gen(0)) == pytest.approx(exact, rel=1e-12)
    errs = {m: sum(abs(hutchpp_trace(A, num_matvecs=m, generator=_gen(s)) - exact) for s in range(20)) / 20 for m in (9, 30, 90)}
    assert errs[90] < errs[30] < errs[9]
    hutch = sum(abs(hutchinson_trace(A, num_matvecs=30, generator=_gen(s)) - exact) for s in range(20)) / 20
    assert errs[30] < hutch / 2  # decaying spectrum: the low-rank part removes most variance
    assert errs[30] < 0.05 * exact


def test_closure_and_dense_give_the_same_estimate_and_blocks_do_not_matter():
    A = _psd()
    dense = hutchpp_trace(A, num_matvecs=30, generator=_gen(3))
    closure = hutchpp_trace(lambda V: A @ V, DIM, 30, generator=_gen(3), dtype=torch.float64)
    blocked = hutchpp_trace(lambda V: A @ V, DIM, 30, generator=_gen(3), dtype=torch.float64, block_size=4)
    assert dense == closure == pytest.approx(blocked, rel=1e-12)
    assert hutchinson_trace(A, num_matvecs=7) == hutchinson_trace(A, num_matvecs=7)  # default generator seeded 0


def test_lanczos_matches_eigvalsh():
    for A in (_sym(seed=1), _sym(shift=-20.0, seed=2), _psd(seed=3)):  # indefinite, negative definite, PSD
        top = float(torch.linalg.eigvalsh(A)[-1])
        assert lanczos_top_eig(A, num_iters=DIM) == pytest.approx(top, rel=1e-10)
        assert lanczos_top_eig(A, num_iters=10) <= top + 1e-10  # a Ritz value never exceeds λ_max


def test_lanczos_low_rank_breaks_down_exactly():
    g = _gen(4)
    B = torch.randn(DIM, 3, generator=g, dtype=torch.float64)
    A = B @ B.T  # rank 3: the Krylov space is invariant after at most 4 steps
    calls = []
    top = lanczos_top_eig(lambda V: calls.append(1) or A @ V, DIM, 30, dtype=torch.float64)
    assert top == pytest.approx(float(torch.linalg.eigvalsh(A)[-1]), rel=1e-10)
    assert len(calls) <= 5


def test_batched_lanczos_and_power_iteration():
    mats = torch.stack([_psd(12, decay=0.6, seed=s) * (s + 1) for s in range(5)])  # (5, 12, 12)
    top = torch.linalg.eigvalsh(mats)[:, -1]

    def matvec(Q):  # (5, 12) -> (5, 12), each row its own matrix
        return (mats @ Q[..., None])[..., 0]

    lan = batched_lanczos_top_eig(matvec, 5, 12, 12, tol=0.0, dtype=torch.float64)
    torch.testing.assert_close(lan, top, rtol=1e-10, atol=0)
    pw = batched_power_iteration(matvec, 5, 12, 500, tol=1e-15, dtype=torch.float64)
    assert torch.all(pw <= top * (1 + 1e-12))
    torch.testing.assert_close(pw, top, rtol=1e-8, atol=0)  # gap 0.6: error ~0.36^k


def test_power_iteration_dominant_eigenvalue():
    A = _psd(decay=0.7)
    assert power_iteration(A, num_iters=300, tol=1e-15) == pytest.approx(float(torch.linalg.eigvalsh(A)[-1]), rel=1e-10)
    few = power_iteration(A, num_iters=2, tol=0.0)
    assert few < float(torch.linalg.eigvalsh(A)[-1])


def test_bad_arguments():
    A = _psd()
    with pytest.raises(ValueError, match=">= 3"):
        hutchpp_trace(A, num_matvecs=2)
    with pytest.raises(ValueError, match="dim is required"):
        hutchinson_trace(lambda V: V, num_matvecs=3)
    with pytest.raises(ValueError, match="square"):
        lanczos_top_eig(torch.zeros(3, 4))


def test_default_generator_is_one_stream_for_both_hutchpp_probe_sets():
    """Regression: ``generator=None`` built a fresh seed-0 generator for every draw, so Hutch++'s
    sketch probes S were the first columns of its Hutchinson probes G and the estimate was badly
    biased. ``None`` must mean exactly one generator seeded 0."""
    A = _psd(dim=60, decay=0.95)
    assert hutchpp_trace(A, num_matvecs=30) == hutchpp_trace(A, num_matvecs=30, generator=_gen(0))
    assert hutchinson_trace(A, num_matvecs=30) == hutchinson_trace(A, num_matvecs=30, generator=_gen(0))


def test_hutchpp_default_generator_on_the_reported_net():
    """The user's report: Sequential(Linear(20,32), ReLU, Linear(32,5)) on 200 random points gave
    tr(H) ≈ −0.64 (exact 7.73) with 30 products under the default generator."""
    from ddscope.metrics.hessian import hess_trace

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(20, 32), torch.nn.ReLU(), torch.nn.Linear(32, 5)).double()
    x = torch.randn(200, 20, dtype=torch.float64)
    y = torch.randint(0, 5, (200,))
    exact = hess_trace(net, [(x, y)], method="exact")
    for m in (30, 60, 99):
        est = hess_trace(net, [(x, y)], method="hutchpp", num_matvecs=m)
        assert abs(est - exact) < 0.2 * exact, (m, est, exact)
