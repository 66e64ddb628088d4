"""measure(): the flat metric dictionary the training loop stores, against the direct calls."""

from __future__ import annotations

import pytest
import torch

from ddscope.metrics import (
    METRIC_GROUPS,
    aggregate,
    distance_from_init,
    jacobian_norms,
    lipschitz_upper,
    measure,
    path_jacobian_norms,
    snapshot_params,
)
from ddscope.metrics.hessian import hess_top, hess_trace
from ddscope.metrics.theorem import theorem2

JAC_KEYS = ("jac_spec_rms", "jac_spec_mean", "jac_spec_max", "jac_fro_rms")


@pytest.fixture
def setup(nets):
    model = nets.mlp(6, (8, 8), 4)
    init = snapshot_params(model)
    with torch.no_grad():
        model[0].weight.mul_(1.5)
    x, y = nets.data((6,), 4, 30)
    splits = {"train": (x[:20], y[:20]), "train_clean": (x[:15], y[:15]), "train_noisy": (x[15:20], y[15:20]),
              "test": (x[20:], y[20:]), "empty": (x[:0], y[:0])}
    return model, splits, init


def test_all_groups_match_the_direct_calls(setup):
    model, splits, init = setup
    dim = sum(p.numel() for p in model.parameters())
    opts = {"path_pairs": 5, "path_k": 3, "hess_method": "exact", "lanczos_iters": dim, "output": "log_softmax"}
    got = measure(model, splits, metrics=METRIC_GROUPS, input_shape=(6,), init_state=init, options=opts,
                  generator=torch.Generator().manual_seed(0))
    assert all(type(v) is float for v in got.values())
    for name in ("train", "train_clean", "train_noisy", "test"):
        want = aggregate(jacobian_norms(model, splits[name][0], output="log_softmax"))
        for k in JAC_KEYS:
            assert got[f"{k}/{name}"] == pytest.approx(want[k], rel=1e-10)
    assert not any(k.endswith("/empty") for k in got)  # empty splits give no keys
    x, y = splits["train"]
    for name in ("path_same", "path_any"):
        assert all(f"{k}/{name}" in got for k in JAC_KEYS)
    bound = lipschitz_upper(model, (6,))
    assert got["lip_upper"] == pytest.approx(bound.value, rel=1e-12)
    assert {k for k in got if k.startswith("lip_layer/")} == {f"lip_layer/{p}" for p, _, _ in bound.layers}
    batches = [(x, y)]
    assert got["hess_trace"] == pytest.approx(hess_trace(model, batches, method="exact"), rel=1e-10)
    assert got["hess_top"] == pytest.approx(hess_top(model, batches, num_iters=dim), rel=1e-8)  # exact at dim steps
    thm = theorem2(model, x, y, hess_trace_value=got["hess_trace"])
    for k, v in thm.items():
        assert got[k] == pytest.approx(float(v), rel=1e-10), k
    assert got["thm2_rhs"] == pytest.approx(2 * got["loss_max"] * got["hess_trace"], rel=1e-12)  # trace reused
    assert got["thm2_lhs_le_mid"] == 1.0
    for k, v in distance_from_init(model, init).items():
        assert got[k] == pytest.approx(v, rel=1e-12)
    assert got["dist_abs/0"] > 0 and got["dist_abs/2"] == 0.0


def test_deterministic_and_subsampled(setup):
    model, splits, _ = setup
    kw = dict(metrics=("jacobian", "paths"), input_shape=(6,), options={"jac_samples": 4, "path_pairs": 3, "path_k": 2})
    a = measure(model, splits, generator=torch.Generator().manual_seed(1), **kw)
    b = measure(model, splits, generator=torch.Generator().manual_seed(1), **kw)
    assert a == b
    full = aggregate(jacobian_norms(model, splits["train"][0]))
    sub = a["jac_spec_max/train"]
    assert sub <= full["jac_spec_max"] + 1e-12  # a subset's max never exceeds the full max
    assert measure(model, splits, **kw) == measure(model, splits, **kw)  # generator=None: seeded 0


def test_hessian_subset_and_exact_method(setup):
    model, splits, _ = setup
    got = measure(model, splits, metrics=("hessian",), input_shape=(6,),
                  options={"hess_samples": 8, "hess_method": "exact", "hess_batch": 3}, generator=torch.Generator().manual_seed(2))
    idx = torch.randperm(20, generator=torch.Generator().manual_seed(2))[:8]
    x, y = splits["train"][0][idx], splits["train"][1][idx]
    assert got["hess_trace"] == pytest.approx(hess_trace(model, [(x, y)], method="exact"), rel=1e-10)


def test_errors(setup):
    model, splits, _ = setup
    with pytest.raises(ValueError, match="allowed: jacobian, paths"):
        measure(model, splits, metrics=("jacobians",), input_shape=(6,))
    with pytest.raises(ValueError, match="unknown option.*allowed"):
        measure(model, splits, metrics=("jacobian",), input_shape=(6,), options={"jac_sample": 3})
    with pytest.raises(ValueError, match="init_state"):
        measure(model, splits, metrics=("distance",), input_shape=(6,))
    with pytest.raises(ValueError, match="'train' split"):
        measure(model, {"test": splits["test"]}, metrics=("paths",), input_shape=(6,))


def test_path_keys_use_path_jacobian_norms(setup):
    model, splits, _ = setup
    x, y = splits["train"]
    got = measure(model, {"train": (x, y)}, metrics=("paths",), input_shape=(6,), options={"path_pairs": 4, "path_k": 3},
                  generator=torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    same = path_jacobian_norms(model, x, y, n_pairs=4, k=3, same_class=True, generator=g)
    anyc = path_jacobian_norms(model, x, y, n_pairs=4, k=3, same_class=False, generator=g)
    for k in JAC_KEYS:
        assert got[f"{k}/path_same"] == pytest.approx(same[k], rel=1e-12)
        assert got[f"{k}/path_any"] == pytest.approx(anyc[k], rel=1e-12)
