"""Theorem 2: per-sample gradients against a loop, LHS ≤ MID per sample for MLPs, dense terms."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ddscope.metrics import reference as R
from ddscope.metrics.theorem import per_sample_grad_sq, theorem2, theorem2_per_sample

KEYS = ("thm2_lhs", "thm2_mid", "thm2_rhs", "thm2_lhs_le_mid", "thm2_mid_le_rhs", "loss_max", "x_min",
        "theta1_norm", "input_grad_sq_mean")


@pytest.mark.parametrize("name", ["mlp", "conv1d", "conv2d", "residual"])
def test_per_sample_grad_sq_matches_loop(nets, name):
    build, shape, classes = nets.all[name]
    model = build()
    x, y = nets.data(shape, classes, 7)
    want = R.per_sample_grads_loop(model, x, y).square().sum(1)
    torch.testing.assert_close(per_sample_grad_sq(model, x, y, chunk_size=3), want, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("frozen", ["", "0.weight", "2.bias", "0.bias"])
def test_linear_shortcut_equals_vmap_and_loop(nets, monkeypatch, frozen):
    # ‖δ_n‖²‖a_n‖² per Linear layer: same numbers as vmap(grad) and the per-sample loop.
    from ddscope.metrics import persample as T

    model = nets.mlp(6, (8, 5), 4)
    if frozen:
        model.get_parameter(frozen).requires_grad_(False)
    x, y = nets.data((6,), 4, 9)
    assert T._trained_linears(model) is not None
    fast = per_sample_grad_sq(model, x, y, chunk_size=4)
    want = R.per_sample_grads_loop(model, x, y).square().sum(1)
    torch.testing.assert_close(fast, want, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(sum(T._per_sample_grad_sq_vmap(model, x, y, 4).values()), want, rtol=1e-10, atol=1e-14)
    calls = []
    monkeypatch.setattr(T, "_per_sample_grad_sq_vmap", lambda *a: calls.append(1))
    per_sample_grad_sq(model, x, y)
    assert not calls  # the shortcut was taken
    assert T._trained_linears(nets.all["conv1d"][0]()) is None


def test_linear_called_twice_falls_back_to_vmap(nets):
    class Twice(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(4, 4).double()

        def forward(self, x):
            return self.lin(torch.relu(self.lin(x)))

    model = Twice()
    x, y = nets.data((4,), 4, 6)
    want = R.per_sample_grads_loop(model, x, y).square().sum(1)
    torch.testing.assert_close(per_sample_grad_sq(model, x, y), want, rtol=1e-10, atol=1e-14)


def test_frozen_parameters_are_left_out(nets):
    model = nets.mlp(6, (8,), 4)
    model[0].weight.requires_grad_(False)
    x, y = nets.data((6,), 4, 5)
    want = R.per_sample_grads_loop(model, x, y).square().sum(1)  # the loop skips frozen parameters too
    torch.testing.assert_close(per_sample_grad_sq(model, x, y), want, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("d,widths,classes", [(6, (3,), 4), (5, (16, 16), 3), (8, (4, 32, 4), 10)])
def test_lhs_le_mid_for_every_sample_of_an_mlp(nets, seed, d, widths, classes):
    model = nets.mlp(d, widths, classes, seed=seed)
    x, y = nets.data((d,), classes, 40, seed=seed + 10)
    x = x * torch.rand(40, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)) * 3  # spread of ‖x_n‖
    terms = theorem2_per_sample(model, x, y)
    assert torch.all(terms["lhs"] <= terms["mid"] * (1 + 1e-12))
    # and the LHS terms are the brute-force ones: x_min²/σ_max(W¹)² · ‖∇_x L_n‖²
    grad_x = R.dense_jacobian(model, x, output="loss", y=y)[:, 0]
    x_min = float(x.norm(dim=1).min())
    sigma = float(torch.linalg.svdvals(model[0].weight)[0])
    torch.testing.assert_close(terms["lhs"], x_min**2 / sigma**2 * grad_x.square().sum(1), rtol=1e-10, atol=1e-15)
    assert terms["x_min"] == pytest.approx(x_min) and terms["theta1_norm"] == pytest.approx(sigma, rel=1e-12)


@pytest.mark.parametrize("name", ["mlp", "conv1d", "conv2d"])
def test_theorem2_matches_dense(nets, name):
    build, shape, classes = nets.all[name]
    model = build()
    if name == "conv2d":  # keep the dense Hessian small
        for p in list(model.parameters())[:-4]:
            p.requires_grad_(False)
    x, y = nets.data(shape, classes, 9)
    want = R.theorem2_dense(model, x, y)
    dim = sum(p.numel() for p in model.parameters() if p.requires_grad)
    got = theorem2(model, x, y, hutch_matvecs=3 * dim, chunk_size=4)  # Hutch++ exact at 3·dim products
    assert set(got) == set(KEYS) | {"thm2_rhs_se"}
    assert got["thm2_rhs_se"] == 0  # the trace was exact (dim ≤ products, or tr(GGN))
    for key in KEYS:
        if isinstance(want[key], bool):
            assert got[key] is want[key], key
        else:
            assert got[key] == pytest.approx(want[key], rel=1e-8), key


def test_theorem2_uses_the_given_trace(nets):
    model = nets.mlp()
    x, y = nets.data((6,), 4, 8)
    got = theorem2(model, x, y, hess_trace_value=0.0)
    assert got["thm2_rhs"] == 0.0 and got["thm2_mid_le_rhs"] is False  # MID > 0 = RHS
    got = theorem2(model, x, y, hess_trace_value=1e6)
    assert got["thm2_rhs"] == pytest.approx(2 * got["loss_max"] * 1e6)


def test_first_layer_must_be_linear_or_conv():
    model = nn.Sequential(nn.BatchNorm1d(4), nn.Linear(4, 3)).double()
    x = torch.randn(5, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"needs θ¹ to be a Linear or Conv layer; the input flows first into '0' "
                                         r"\(BatchNorm1d\)"):
        theorem2_per_sample(model, x, torch.zeros(5, dtype=torch.long))


def test_theta1_is_the_first_parametrised_op_the_input_flows_into():
    """Regression: a ViT whose root module owns the position embedding got "needs a Linear or
    Conv first layer, got TinyViT"; θ¹ is its patch-embedding Conv2d."""
    from ddscope.metrics.lipschitz import conv_operator_norm
    from ddscope.metrics.theorem import first_layer_norm

    from ..usermodels import SmallCNN, TinyViT

    torch.manual_seed(0)
    vit = TinyViT(dim=8, in_ch=1, side=8).double()
    assert first_layer_norm(vit, (1, 8, 8)) == pytest.approx(conv_operator_norm(vit.embed, (1, 8, 8)), rel=1e-10)
    cnn = SmallCNN(channels=3, in_ch=1, side=8).double()
    assert first_layer_norm(cnn, (1, 8, 8)) == pytest.approx(conv_operator_norm(cnn.conv1, (1, 8, 8)), rel=1e-10)

    class Functional(nn.Module):  # F.linear on a parameter, after a translation
        def __init__(self):
            super().__init__()
            self.shift = nn.Parameter(torch.randn(4, dtype=torch.float64))
            self.w = nn.Parameter(torch.randn(3, 4, dtype=torch.float64))

        def forward(self, x):
            return nn.functional.linear(x + self.shift, self.w)

    f = Functional()
    assert first_layer_norm(f, (4,)) == pytest.approx(torch.linalg.matrix_norm(f.w.detach(), 2).item(), rel=1e-12)


def test_flags_and_state_restored(nets):
    model = nets.conv2d().train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = nets.data((2, 8, 8), 5, 4)
    theorem2(model, x, y, hutch_matvecs=6)
    assert all(m.training for m in model.modules())
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
