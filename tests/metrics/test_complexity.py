"""The generalisation-measure zoo against brute force on tiny float64 networks: dense matrices
for spectral norms, literal path enumeration for the path norm, per-sample gradient loops for
Fisher–Rao, numpy for margins, an independent grid search for the PAC-Bayes σ'."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ddscope.metrics import measure, snapshot_params
from ddscope.metrics.complexity import (
    complexity_measures,
    fisher_rao_norm,
    margins,
    norm_measures,
    path_norm,
    spectral_norm,
)
from ddscope.metrics.sharpness import pacbayes_sigma, sharpness_measures
from ddscope.metrics.reference import conv_operator_norm_dense, dense_matrix, per_sample_grads_loop

from .conftest import conv1d_net, conv2d_net, mlp


def _perturb(model: nn.Module, scale: float = 0.3, seed: int = 1) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model


def _dense_layers(model: nn.Module, input_shape):
    """(dense matrix A_l without bias, bias vector expanded to the output, W_l, W_l's kind) per weight layer."""
    out, shape = [], tuple(input_shape)
    for m in model:
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            W = m.weight.detach()
            fn = (lambda X, m=m, W=W: F.linear(X, W)) if isinstance(m, nn.Linear) else \
                (lambda X, m=m, W=W: m._conv_forward(X, W, None))
            A = dense_matrix(fn, shape)
            with torch.no_grad():
                y = fn(torch.zeros(1, *shape, dtype=torch.float64))
                b = torch.zeros_like(y) if m.bias is None else (m(torch.zeros(1, *shape, dtype=torch.float64)) - y)
            out.append((A, b.reshape(-1), m))
            shape = tuple(y.shape[1:])
        elif isinstance(m, nn.AvgPool1d):
            A = dense_matrix(m, shape)
            out.append((A, torch.zeros(A.shape[0], dtype=torch.float64), m))
            shape = tuple(m(torch.zeros(1, *shape, dtype=torch.float64)).shape[1:])
        elif isinstance(m, nn.Flatten):
            shape = (math.prod(shape),)
    return out


@pytest.mark.parametrize("build,shape", [(lambda: mlp(seed=3), (6,)), (lambda: conv1d_net(seed=4), (2, 12))])
def test_norm_measures_match_dense_matrices(build, shape):
    init = build()
    model = _perturb(build())
    init_state = snapshot_params(init)
    got = norm_measures(model, shape, init_state)
    spec, fro, dfro, dspec, bft = [], [], [], [], []
    cur = tuple(shape)
    for m in model:
        if isinstance(m, (nn.Linear, nn.Conv1d)):
            name = next(n for n, mm in model.named_modules() if mm is m)
            W, W0 = m.weight.detach(), init_state[f"{name}.weight"]
            if isinstance(m, nn.Linear):
                s, d = torch.linalg.svdvals(W)[0].item(), torch.linalg.svdvals(W - W0)[0].item()
            else:
                s = conv_operator_norm_dense(m, cur)
                other = nn.Conv1d(m.in_channels, m.out_channels, m.kernel_size, stride=m.stride, padding=m.padding,
                                  dilation=m.dilation, bias=False).double()
                other.weight.data.copy_(W - W0)
                d = conv_operator_norm_dense(other, cur)
            M, D = W.reshape(len(W), -1), (W - W0).reshape(len(W), -1)
            spec.append(s**2)
            dspec.append(d**2)
            fro.append(sum(float(v) ** 2 for v in M.flatten()))
            dfro.append(sum(float(v) ** 2 for v in D.flatten()))
            bft.append((sum(math.sqrt(sum(float(v) ** 2 for v in row)) for row in D) / s) ** (2 / 3))
        with torch.no_grad():
            cur = tuple(m(torch.zeros(1, *cur, dtype=torch.float64)).shape[1:])
    assert got["cm_spec_prod"] == pytest.approx(math.prod(spec), rel=1e-6)
    assert got["cm_spec_sum"] == pytest.approx(sum(spec), rel=1e-6)
    assert got["cm_fro_prod"] == pytest.approx(math.prod(fro), rel=1e-12)
    assert got["cm_fro_sum"] == pytest.approx(sum(fro), rel=1e-12)
    assert got["cm_dist_fro"] == pytest.approx(sum(dfro), rel=1e-12)
    assert got["cm_dist_spec"] == pytest.approx(sum(dspec), rel=1e-6)
    assert got["cm_bft"] == pytest.approx(math.prod(math.sqrt(s) for s in spec) * sum(bft) ** 1.5, rel=1e-6)
    assert got["cm_params"] == sum(p.numel() for p in model.parameters())
    # without θ⁰: no distance, and BFT's reference matrices are 0
    bare = norm_measures(model, shape)
    assert "cm_dist_fro" not in bare and bare["cm_bft"] > 0


def test_path_norm_enumerates_every_path_of_a_tiny_mlp():
    model = _perturb(mlp(d=3, widths=(4, 3), classes=2, seed=5))
    (W1, b1), (W2, b2), (W3, b3) = [(m.weight.detach(), m.bias.detach()) for m in model if isinstance(m, nn.Linear)]
    total = 0.0
    for c in range(2):
        total += float(b3[c]) ** 2
        for k in range(3):
            total += float(W3[c, k] * b2[k]) ** 2
            for j in range(4):
                total += float(W3[c, k] * W2[k, j] * b1[j]) ** 2
                for i in range(3):
                    total += float(W3[c, k] * W2[k, j] * W1[j, i]) ** 2
    assert path_norm(model, (3,)) == pytest.approx(total, rel=1e-12)


def test_path_norm_of_a_conv_net_through_its_dense_matrices():
    """Paths through a conv layer are paths through its dense matrix (each input-output pair is
    joined by at most one kernel weight), so Σ paths ∏ w² = 𝟙ᵀ … (A∘A) 𝟙 plus the bias paths;
    the average pooling's fixed coefficients enter as they are (f_{θ∘θ}(𝟙), Jiang et al.)."""
    model = _perturb(conv1d_net(seed=6))
    v = torch.ones(2 * 12, dtype=torch.float64)
    for A, b, m in _dense_layers(model, (2, 12)):
        v = (A if isinstance(m, nn.AvgPool1d) else A * A) @ v + b * b
    assert path_norm(model, (2, 12)) == pytest.approx(float(v.sum()), rel=1e-10)


@pytest.mark.parametrize("bad", [lambda: conv2d_net(), lambda: nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)),
                                 lambda: nn.Sequential(nn.Conv1d(1, 2, 3), nn.MaxPool1d(2), nn.Flatten(), nn.Linear(4, 2))])
def test_path_norm_refuses_networks_where_it_is_not_a_sum_over_paths(bad):
    model = bad().double()
    with pytest.raises(ValueError, match="path norm"):
        path_norm(model, (2, 8, 8) if isinstance(model[0], nn.Conv2d) else (4,) if isinstance(model[0], nn.Linear) else (1, 10))


def test_complexity_measures_skip_the_path_norm_only_where_undefined():
    torch.manual_seed(0)
    model = conv2d_net().eval()
    x, y = torch.randn(20, 2, 8, 8, dtype=torch.float64), torch.randint(0, 5, (20,))
    out = complexity_measures(model, x, y, (2, 8, 8), snapshot_params(model))
    assert "cm_path" not in out and "cm_path_margin" not in out
    assert {"cm_spec_prod", "cm_fisher_rao", "cm_margin", "cm_dist_spec"} <= set(out)


@pytest.mark.parametrize("build,shape", [(lambda: mlp(seed=7), (6,)), (lambda: conv2d_net(seed=8), (2, 8, 8))])
def test_fisher_rao_norm_equals_the_per_sample_gradient_loop(build, shape):
    model = _perturb(build())
    g = torch.Generator().manual_seed(0)
    x = torch.randn(13, *shape, generator=g, dtype=torch.float64)
    y = torch.randint(0, 4, (13,), generator=g)
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    dots = per_sample_grads_loop(model, x, y) @ theta
    ref = float(dots.square().mean())
    assert fisher_rao_norm(model, x, y, chunk_size=5) == pytest.approx(ref, rel=1e-10)


def test_margins_and_the_tenth_percentile_against_numpy():
    model = _perturb(mlp(seed=9))
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(57, 6, generator=g, dtype=torch.float64), torch.randint(0, 4, (57,), generator=g)
    logits = model(x).detach().numpy()
    ref = np.array([logits[n, y[n]] - max(logits[n, c] for c in range(4) if c != y[n]) for n in range(57)])
    m = margins(model, x, y, chunk_size=10)
    np.testing.assert_allclose(m.numpy(), ref, rtol=1e-12)
    out = complexity_measures(model, x, y, (6,))
    gamma = float(np.percentile(ref, 10))
    assert out["cm_margin"] == pytest.approx(gamma, rel=1e-12)
    if gamma > 0:
        assert out["cm_inv_margin"] == pytest.approx(1 / gamma**2)
    else:
        assert math.isnan(out["cm_inv_margin"]) and math.isnan(out["cm_spec_margin"])


def _fitted_mlp(seed: int = 0):
    """A small MLP fit to separable data, so that weight noise raises its training error."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(200, 5, generator=g, dtype=torch.float64)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long() + 2 * (x[:, 2] > 0).long()
    model = mlp(d=5, widths=(16,), classes=4, seed=seed)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(300):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval(), x, y


def _deviation(model, x, y, sigma, z, mag_eps=None):
    """E_k err(θ + u_k) − err(θ) with the same directions z, written out in the test."""
    def err(m):
        return float((m(x).argmax(1) != y).double().mean())

    base = err(model)
    errs = []
    for zk in z:
        noisy = copy.deepcopy(model)
        with torch.no_grad():
            for (name, p), q in zip(model.named_parameters(), noisy.parameters()):
                std = sigma if mag_eps is None else (sigma**2 * p.square() + mag_eps**2).sqrt()
                q.copy_(p + std * zk[name])
        errs.append(err(noisy))
    return sum(errs) / len(errs) - base


@pytest.mark.parametrize("mag_eps", [None, 1e-3])
def test_pacbayes_sigma_lies_where_the_deviation_crosses_the_threshold(mag_eps):
    model, x, y = _fitted_mlp()
    draws = 6
    sigma = pacbayes_sigma(model, x, y, magnitude_eps=mag_eps, draws=draws, depth=20,
                           generator=torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)  # the same directions, drawn as the function draws them
    zs = {n: torch.randn((draws, *p.shape), generator=g, dtype=p.dtype) for n, p in model.named_parameters()}
    z = [{n: v[k] for n, v in zs.items()} for k in range(draws)]
    assert 0 < sigma < 2
    d = _deviation(model, x, y, sigma, z, mag_eps)
    step = 2 * 2.0**-20
    # either within the tolerance of δ = 0.1, or at the bracket's edge where the deviation jumps
    assert abs(d - 0.1) < 0.01 or (_deviation(model, x, y, max(sigma - step, 0), z, mag_eps) <= 0.1
                                   <= _deviation(model, x, y, sigma + step, z, mag_eps))
    # a noisier net (twice σ') deviates by more than δ: σ' is not an arbitrary point
    assert _deviation(model, x, y, min(2 * sigma, 2.0), z, mag_eps) > 0.1


def test_magnitude_aware_sharpness_ignores_a_rescaling_that_keeps_the_function():
    """Scaling a ReLU layer (weights and bias) by α and the next one by 1/α keeps f; the
    magnitude-aware noise scales with each weight, so σ' is unchanged (with ε → 0), while the
    plain PAC-Bayes σ' changes — the reason Jiang et al. include the magnitude-aware form."""
    model, x, y = _fitted_mlp(seed=1)
    scaled = mlp(d=5, widths=(16,), classes=4, seed=1)
    scaled.load_state_dict(model.state_dict())
    with torch.no_grad():
        scaled[0].weight.mul_(4.0)
        scaled[0].bias.mul_(4.0)
        scaled[2].weight.div_(4.0)
    torch.testing.assert_close(scaled(x), model(x))
    kw = dict(draws=4, depth=12)
    a = pacbayes_sigma(model, x, y, magnitude_eps=1e-12, generator=torch.Generator().manual_seed(0), **kw)
    b = pacbayes_sigma(scaled, x, y, magnitude_eps=1e-12, generator=torch.Generator().manual_seed(0), **kw)
    assert a == pytest.approx(b, rel=1e-12)
    p = pacbayes_sigma(model, x, y, generator=torch.Generator().manual_seed(0), **kw)
    q = pacbayes_sigma(scaled, x, y, generator=torch.Generator().manual_seed(0), **kw)
    assert p != pytest.approx(q, rel=1e-3)


def test_sharpness_measures_and_the_pacbayes_bound():
    model, x, y = _fitted_mlp(seed=2)
    init = snapshot_params(mlp(d=5, widths=(16,), classes=4, seed=2))
    out = sharpness_measures(model, x, y, init, draws=4, depth=10, generator=torch.Generator().manual_seed(0))
    s = out["cm_pacbayes_sigma"]
    assert out["cm_pacbayes_flat"] == pytest.approx(1 / s**2)
    d2 = sum(float((p - init[n]).square().sum()) for n, p in model.named_parameters())
    assert out["cm_pacbayes_init"] == pytest.approx(d2 / (4 * s**2) + math.log(len(x) / s) + 10)
    assert out["cm_pacbayes_mag_flat"] == pytest.approx(1 / out["cm_pacbayes_mag_sigma"] ** 2)


def test_the_groups_run_in_measure_on_their_subsamples():
    model, x, y = _fitted_mlp(seed=3)
    init = snapshot_params(mlp(d=5, widths=(16,), classes=4, seed=3))
    out = measure(model, {"train": (x, y)}, metrics=["complexity", "sharpness"], input_shape=(5,), init_state=init,
                  options={"sharp_samples": 100, "sharp_draws": 3, "sharp_depth": 8})
    assert not out.skipped
    assert out["cm_path"] == pytest.approx(path_norm(model, (5,)))
    assert out["cm_fisher_rao"] == pytest.approx(fisher_rao_norm(model, x, y))
    assert 0 < out["cm_pacbayes_sigma"] <= 2 and "cm_pacbayes_init" in out
    with pytest.raises(ValueError, match="'complexity' needs a 'train' split"):
        measure(model, {"test": (x, y)}, metrics=["complexity"], input_shape=(5,))


def test_a_model_without_weight_layers_is_skipped_with_its_reason():
    class Scale(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Parameter(torch.ones(3, dtype=torch.float64))

        def forward(self, x):
            return x * self.a

    x, y = torch.randn(10, 3, dtype=torch.float64), torch.randint(0, 3, (10,))
    with pytest.warns(UserWarning, match="complexity"):
        out = measure(Scale(), {"train": (x, y)}, metrics=["complexity"], input_shape=(3,))
    assert "no Linear or Conv layer" in out.skipped["complexity"]


def test_rescaling_invariance_breaks_the_plain_norms_not_the_function():
    """Sanity of the definitions on a rescaled pair: the product of spectral norms and the path
    norm are invariant under the α / 1/α rescaling of a bias-free ReLU net; the sums are not."""
    torch.manual_seed(0)
    a = nn.Sequential(nn.Linear(4, 6, bias=False), nn.ReLU(), nn.Linear(6, 3, bias=False)).double()
    b = nn.Sequential(nn.Linear(4, 6, bias=False), nn.ReLU(), nn.Linear(6, 3, bias=False)).double()
    b.load_state_dict(a.state_dict())
    with torch.no_grad():
        b[0].weight.mul_(3.0)
        b[2].weight.div_(3.0)
    na, nb = norm_measures(a, (4,)), norm_measures(b, (4,))
    assert na["cm_spec_prod"] == pytest.approx(nb["cm_spec_prod"], rel=1e-9)
    assert na["cm_fro_prod"] == pytest.approx(nb["cm_fro_prod"], rel=1e-9)
    assert path_norm(a, (4,)) == pytest.approx(path_norm(b, (4,)), rel=1e-12)
    assert na["cm_spec_sum"] != pytest.approx(nb["cm_spec_sum"], rel=1e-3)


def test_margin_normalised_measures_on_a_net_with_positive_margin():
    model, x, y = _fitted_mlp(seed=4)
    out = complexity_measures(model, x, y, (5,), snapshot_params(mlp(d=5, widths=(16,), classes=4, seed=4)))
    logits = model(x).detach().numpy()
    yy = y.numpy()
    ref = np.array([logits[n, yy[n]] - np.delete(logits[n], yy[n]).max() for n in range(len(yy))])
    gamma = float(np.percentile(ref, 10))
    assert gamma > 0 and out["cm_margin"] == pytest.approx(gamma, rel=1e-12)
    assert out["cm_inv_margin"] == pytest.approx(1 / gamma**2)
    assert out["cm_spec_margin"] == pytest.approx(out["cm_spec_prod"] / gamma**2)
    assert out["cm_fro_margin"] == pytest.approx(out["cm_fro_prod"] / gamma**2)
    assert out["cm_path_margin"] == pytest.approx(path_norm(model, (5,)) / gamma**2)
    x_fro = math.sqrt(float((x**2).sum()))
    assert out["cm_bft_margin"] == pytest.approx(out["cm_bft"] * x_fro / (gamma * len(x)))


def test_spectral_norm_of_a_conv3d_and_of_a_kernel_difference_against_dense_matrices():
    torch.manual_seed(2)
    conv = nn.Conv3d(2, 3, 3, stride=2, padding=1).double()
    shape = (2, 5, 4, 4)
    dense = dense_matrix(lambda X: conv._conv_forward(X, conv.weight.detach(), None), shape)
    assert spectral_norm(conv, shape) == pytest.approx(float(torch.linalg.matrix_norm(dense, 2)), rel=1e-6)
    delta = torch.randn_like(conv.weight)
    dense_d = dense_matrix(lambda X: conv._conv_forward(X, delta, None), shape)
    assert spectral_norm(conv, shape, weight=delta) == pytest.approx(float(torch.linalg.matrix_norm(dense_d, 2)),
                                                                     rel=1e-6)
