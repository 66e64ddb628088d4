"""SLQ and top-k eigenvalues against the dense Hessian's spectrum on tiny float64 nets."""

from __future__ import annotations

import pytest
import torch

from ddscope.metrics import reference as R
from ddscope.metrics import measure
from ddscope.metrics.spectrum import (hess_spectrum, lanczos_quadrature, quadrature_from_metrics, spectral_density,
                                      spectrum_metrics)


@pytest.mark.parametrize("name", ["mlp", "conv1d"])
def test_top_k_and_nodes_are_the_dense_eigenvalues(nets, name):
    build, shape, classes = nets.all[name]
    model = build()
    x, y = nets.data(shape, classes, 12)
    H = R.dense_hessian(model, [(x, y)])
    evals = torch.linalg.eigvalsh(H)
    dim = H.shape[0]
    s = hess_spectrum(model, [(x, y)], top_k=4, probes=2, steps=dim + 5, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(s.top, evals.flip(0)[:4], rtol=1e-8, atol=1e-10)
    for p in range(2):  # every node with weight is an eigenvalue, and the weights sum to 1
        w = s.weights[p]
        assert float(w.sum()) == pytest.approx(1.0, rel=1e-10)
        for node in s.nodes[p][w > 1e-12]:
            assert float((evals - node).abs().min()) < 1e-7 * float(evals.abs().max())


def test_quadrature_matches_the_moments_of_the_dense_matrix():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(30, 30, generator=g, dtype=torch.float64)
    A = (A + A.T) / 2
    for steps in (5, 12):
        nodes, weights, _ = lanczos_quadrature(lambda V: A @ V, 30, 1, steps, generator=torch.Generator().manual_seed(3))
        v = torch.randn(30, 1, generator=torch.Generator().manual_seed(3)).to(torch.float64)  # the same draw
        v = v / v.norm()
        for power in range(2 * steps):  # Gauss quadrature: exact below degree 2k
            want = float(v.T @ torch.linalg.matrix_power(A, power) @ v)
            got = float((weights[0] * nodes[0] ** power).sum())
            assert got == pytest.approx(want, rel=1e-7, abs=1e-9 * float(A.norm()) ** power)


def test_density_integrates_to_one_and_averages_the_spectrum():
    g = torch.Generator().manual_seed(1)
    evals = torch.linspace(-1, 3, 40, dtype=torch.float64)
    Q, _ = torch.linalg.qr(torch.randn(40, 40, generator=g, dtype=torch.float64))
    A = Q @ torch.diag(evals) @ Q.T
    nodes, weights, _ = lanczos_quadrature(lambda V: A @ V, 40, 200, 40, generator=torch.Generator().manual_seed(2))
    grid = torch.linspace(-3, 5, 4001, dtype=torch.float64)
    phi = spectral_density(nodes, weights, grid, sigma=0.1)
    assert float(torch.trapezoid(phi, grid)) == pytest.approx(1.0, rel=1e-6)
    mean = float(torch.trapezoid(phi * grid, grid))
    assert mean == pytest.approx(float(evals.mean()), abs=0.05)  # E[vᵀAv] = tr(A)/P, 200 probes


def test_spectrum_group_round_trips_through_the_store_keys(nets):
    model = nets.mlp()
    x, y = nets.data((6,), 4, 10)
    out = measure(model, {"train": (x, y)}, metrics=["spectrum"], input_shape=(6,),
                  options={"spec_probes": 2, "spec_steps": 200, "hess_samples": None})
    evals = torch.linalg.eigvalsh(R.dense_hessian(model, [(x, y)])).flip(0)
    assert [out[f"hess_eig/{i}"] for i in range(1, 6)] == pytest.approx(evals[:5].tolist(), rel=1e-8, abs=1e-10)
    nodes, weights = quadrature_from_metrics(out)
    assert nodes.shape[0] == 2 and float(weights.sum()) == pytest.approx(2.0, rel=1e-10)
    again = spectrum_metrics(type("S", (), {"top": evals[:5], "nodes": nodes, "weights": weights})())
    assert {k: v for k, v in again.items() if k.startswith("hess_slq")} == {k: v for k, v in out.items()
                                                                               if k.startswith("hess_slq")}
