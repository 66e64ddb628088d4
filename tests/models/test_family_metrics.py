"""Every model family runs every metric group of the suite, in eval mode, on a CIFAR-shaped input
(the MNIST-1D families on their signal), after a real optimisation step."""

import math

import pytest
import torch
import torch.nn.functional as F

from ddscope.config import METRIC_GROUPS, ModelConfig
from ddscope.metrics import snapshot_params
from ddscope.metrics.suite import measure
from ddscope.models import make_model

CASES = [
    ("mlp", (40,), {}), ("cnn1d", (40,), {}), ("convnet", (3, 32, 32), {"batchnorm": True}),
    ("mcnn", (3, 32, 32), {}), ("resnet18", (3, 32, 32), {"batchnorm": True}), ("vit", (3, 32, 32), {"depth": 1}),
]
OPTIONS = {"jac_samples": 6, "path_pairs": 2, "path_k": 3, "hess_samples": 6, "hess_matvecs": 6,
           "lanczos_iters": 3, "lip_iters": 8, "hess_batch": 6, "grad_chunk": 6}


@pytest.mark.parametrize("name,shape,kw", CASES, ids=[c[0] for c in CASES])
def test_family_runs_every_metric(name, shape, kw):
    torch.manual_seed(0)
    model = make_model(ModelConfig(name=name, width=2 if name != "vit" else 8, **kw), shape, 10)
    init = snapshot_params(model)
    x, y = torch.randn(12, *shape), torch.arange(12) % 10
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    model.train()
    F.cross_entropy(model(x), y).backward()  # forward/backward in train mode (BatchNorm updates)
    opt.step()
    split = {"train": (x, y), "test": (x[:6], y[:6])}
    out = measure(model, split, metrics=METRIC_GROUPS, input_shape=shape, init_state=init, options=OPTIONS)
    assert model.training  # the suite restores the training flag
    for key in ("jac_spec_rms/train", "jac_fro_rms/test", "jac_spec_rms/path_same", "hess_trace", "hess_top",
                "thm2_lhs", "thm2_mid", "thm2_rhs", "dist_rel/all"):
        assert math.isfinite(out[key]), key
    assert out["dist_abs/all"] > 0
    assert out["jac_fro_rms/train"] >= out["jac_spec_rms/train"] * (1 - 1e-6)
    if name == "vit":
        assert math.isinf(out["lip_upper"])  # LayerNorm and attention are not globally Lipschitz
    else:
        assert out["lip_upper"] >= out["jac_spec_max/train"] * (1 - 1e-4)
