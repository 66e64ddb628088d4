"""Measuring models ddscope did not build: every group on user-style models (attention included),
``measure()`` never all-or-nothing, and the ``loss`` argument against dense references."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ddscope.metrics import METRIC_GROUPS
from ddscope.metrics.complexity import MARGIN_MEASURES
from ddscope.metrics.hessian import hess_top, hess_trace
from ddscope.metrics.suite import MetricSkipped, math_attention, measure
from ddscope.metrics.theorem import theorem2

from ..usermodels import BasicBlock, DenseNet, SmallCNN, TinyResNet, TinyViT, Wrapped

CHEAP = {"hess_matvecs": 9, "path_pairs": 3, "path_k": 3, "lanczos_iters": 4, "hess_samples": 16, "jac_samples": 16}
MODELS = {
    "class CNN, functional ops": (lambda: SmallCNN(channels=3, in_ch=1, side=8), (1, 8, 8)),
    "torchvision ResNet": (lambda: TinyResNet(BasicBlock, width=3, in_ch=1), (1, 8, 8)),
    "DenseNet": (lambda: DenseNet(growth=3, layers=2, in_ch=1), (1, 8, 8)),
    "wrapped Sequential with Dropout": (lambda: Wrapped(d=12, width=8), (12,)),
    "ViT with fused attention": (lambda: TinyViT(dim=8, in_ch=1, side=8), (1, 8, 8)),
}


def _splits(shape, n=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, *shape, generator=g), torch.randint(0, 10, (n,), generator=g)
    return {"train": (x, y), "test": (x[:8], y[:8])}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_measure_returns_every_group_on_user_models(name):
    build, shape = MODELS[name]
    torch.manual_seed(0)
    model = build()
    init = {k: v.detach().clone() for k, v in model.named_parameters()}
    with warnings.catch_warnings():
        warnings.simplefilter("error", MetricSkipped)  # no group may be skipped
        out = measure(model, _splits(shape), metrics=METRIC_GROUPS, input_shape=shape, init_state=init, options=CHEAP)
    assert out.skipped == {}
    for key in ("jac_spec_rms/train", "jac_spec_rms/path_same", "lip_upper", "hess_trace", "hess_top", "thm2_mid",
                "dist_rel/all"):
        assert key in out, key
    # margin-normalised measures are NaN by definition where the (untrained) net's margin γ ≤ 0
    undefined = MARGIN_MEASURES if out["cm_margin"] <= 0 else ()
    finite = {k: v for k, v in out.items() if not k.startswith(("lip_upper", "lip_layer")) and k not in undefined}
    assert all(math.isfinite(v) for v in finite.values())
    # the bracket, in order, on every model
    spec_max = max(out[k] for k in out if k.startswith("jac_spec_max/"))
    assert spec_max <= out["lip_lower"] <= out["lip_upper_tight"] <= out["lip_upper"]
    if "ViT" in name:
        assert math.isinf(out["lip_upper"])  # attention and LayerNorm: no global bound
    else:
        assert math.isfinite(out["lip_upper"])


def test_a_group_that_cannot_run_is_skipped_with_its_reason_and_the_others_are_computed():
    class Odd(nn.Module):  # cumsum: AutoLip has no constant for it; the walk cannot walk it
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(6, 10)

        def forward(self, x):
            return self.lin(torch.cumsum(x, dim=1))

    model = Odd()
    init = {k: v.detach().clone() for k, v in model.named_parameters()}
    with pytest.warns(MetricSkipped, match=r"metric group 'lipschitz' skipped: ValueError: .*'cumsum'"):
        out = measure(model, _splits((6,)), metrics=METRIC_GROUPS, input_shape=(6,), init_state=init, options=CHEAP)
    assert list(out.skipped) == ["lipschitz"] and "constants={'cumsum': L}" in out.skipped["lipschitz"]
    assert "lip_upper" not in out
    for key in ("jac_spec_rms/train", "hess_trace", "thm2_mid", "dist_rel/all"):
        assert key in out, key
    # Declared, it runs.
    out = measure(model, _splits((6,)), metrics=["lipschitz"], input_shape=(6,), options={"lip_constants": {"cumsum": 6.0}})
    assert out.skipped == {} and math.isfinite(out["lip_upper"])


def test_an_unknown_loss_is_an_error_not_a_skipped_group():
    model = Wrapped(d=12, width=8)
    with pytest.raises(ValueError, match="unknown loss 'hinge'; allowed: cross_entropy, mse"):
        measure(model, _splits((12,)), metrics=["hessian"], input_shape=(12,), options={"loss": "hinge"})


def test_math_attention_switches_off_the_fused_kernels():
    if not hasattr(torch.nn, "attention"):
        pytest.skip("torch < 2.3: no sdpa_kernel")
    with math_attention():
        assert not torch.backends.cuda.flash_sdp_enabled() and not torch.backends.cuda.mem_efficient_sdp_enabled()
        assert torch.backends.cuda.math_sdp_enabled()


# ----------------------------------------------------------------------------- the loss argument


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()


def _data(n=7):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 4, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g)


def _dense_hessian(model, per_sample, x, y):
    """∇²_θ (1/N) Σ ℓ_n by torch.func.hessian of a loss written out here (not ddscope's)."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def total(flat):
        parts = dict(zip(names, [t.view(s) for t, s in zip(flat.split([math.prod(s) for s in shapes]), shapes)]))
        return per_sample(functional_call(model, parts, (x,)), y).mean()

    return torch.func.hessian(total)(theta)


def _mse_ref(out, y):
    return (out - F.one_hot(y, out.shape[1]).double()).square().mean(1)


def _huber(out, y):  # a user's callable: per-sample losses (B,)
    return F.huber_loss(out, F.one_hot(y, out.shape[1]).double(), reduction="none").sum(1)


@pytest.mark.parametrize("loss, ref", [("mse", _mse_ref), (_huber, _huber)], ids=["mse", "callable"])
def test_hessian_trace_and_top_of_other_losses_equal_the_dense_hessian(loss, ref):
    model = _net()
    x, y = _data()
    H = _dense_hessian(model, ref, x, y)
    batches = [(x[:4], y[:4]), (x[4:], y[4:])]  # an uneven split, weighted exactly
    assert hess_trace(model, batches, method="exact", loss=loss) == pytest.approx(torch.trace(H).item(), rel=1e-10)
    top = torch.linalg.eigvalsh(H)[-1].item()
    assert hess_top(model, batches, num_iters=60, loss=loss) == pytest.approx(top, rel=1e-8)
    # measure(loss=...) passes it on
    got = measure(model, {"train": (x, y)}, metrics=["hessian"], input_shape=(4,), loss=loss,
                  options={"hess_method": "exact", "hess_samples": None})
    assert got["hess_trace"] == pytest.approx(torch.trace(H).item(), rel=1e-10)
    # the default is cross-entropy, and it differs
    ce = _dense_hessian(model, lambda o, t: F.cross_entropy(o, t, reduction="none"), x, y)
    assert hess_trace(model, batches, method="exact") == pytest.approx(torch.trace(ce).item(), rel=1e-10)


def test_theorem2_with_mse_uses_that_loss_everywhere():
    model = _net()
    x, y = _data()
    got = theorem2(model, x, y, loss="mse", hutch_matvecs=300)  # ⌊300/3⌋ >= dim: Hutch++ exact
    H = _dense_hessian(model, _mse_ref, x, y)
    per = _mse_ref(model(x), y).detach()
    assert got["loss_max"] == pytest.approx(per.max().item(), rel=1e-12)
    assert got["thm2_rhs"] == pytest.approx(2 * per.max().item() * torch.trace(H).item(), rel=1e-8)
    grads = []
    for n in range(len(x)):  # MID: per-sample parameter gradients of the MSE, one at a time
        model.zero_grad()
        _mse_ref(model(x[n : n + 1]), y[n : n + 1]).sum().backward()
        grads.append(sum(p.grad.square().sum() for p in model.parameters()).item())
    assert got["thm2_mid"] == pytest.approx(sum(grads) / len(grads), rel=1e-10)


def test_cross_entropy_on_float_targets_names_the_alternatives():
    model = _net()
    x, _ = _data()
    with pytest.raises(ValueError, match="needs integer class labels, got float targets; pass loss='mse' or a callable"):
        hess_trace(model, [(x, torch.rand(len(x), 3, dtype=torch.float64))], num_matvecs=3)
    with pytest.raises(ValueError, match="must return per-sample losses"):
        hess_trace(model, [(x, torch.zeros(len(x), dtype=torch.long))], num_matvecs=3,
                   loss=lambda out, t: out.sum())
