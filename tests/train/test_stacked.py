"""Stacked seed/noise groups: vmapped steps equal separate ones for every family; BatchNorm."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call, vmap

from ddscope.train.plan import STACKED_FAMILIES
from ddscope.train.stacked import Stack
from ddscope.config import ModelConfig
from ddscope.models import make_model
from ddscope.train import run_group, run_trial

from .conftest import assert_same_records, tiny

SHAPES = {"mlp": (40,), "cnn1d": (40,)}  # image families: digits-sized (1, 8, 8)


@pytest.mark.parametrize("family", sorted(STACKED_FAMILIES))
def test_vmapped_train_step_equals_separate_steps(family):
    shape = SHAPES.get(family, (1, 8, 8))
    cfg = ModelConfig(name=family, width=8 if family == "vit" else 2, batchnorm=True)
    models, refs = [], []
    for seed in (0, 1, 2):
        torch.manual_seed(seed)
        models.append(make_model(cfg, shape, 10))
        torch.manual_seed(seed)
        refs.append(make_model(cfg, shape, 10))
    stack = Stack(models)
    with torch.device("meta"):
        base = make_model(cfg, shape, 10)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(3, 16, *shape, generator=g), torch.randint(0, 10, (3, 16), generator=g)
    params, buffers = stack.state()
    out = vmap(lambda p, b, xx: functional_call(base.train(), (p, b), (xx,)))(params, buffers, x)
    F.cross_entropy(out.transpose(1, 2), y, reduction="none").mean(1).sum().backward()
    for j, ref in enumerate(refs):
        F.cross_entropy(ref.train()(x[j]), y[j]).backward()
        for (name, p), stacked in zip(ref.named_parameters(), stack.params):
            torch.testing.assert_close(stacked.grad[j], p.grad, rtol=1e-4, atol=1e-5, msg=name)
        for (name, b), mine in zip(ref.named_buffers(), models[j].buffers()):  # running stats, per member
            torch.testing.assert_close(mine, b, rtol=1e-5, atol=1e-6, msg=name)


def test_seed_and_noise_group_equals_separate_trials():
    cfgs = [tiny(**{"model.width": 8, "seed": s, "data.seed": ds, "data.noise": nz})
            for s, ds, nz in ((0, 0, 0.15), (1, 0, 0.15), (0, 1, 0.3))]
    for cfg, got in zip(cfgs, run_group(cfgs)):
        want = run_trial(cfg)
        assert got.status == want.status == "done" and got.noisy_mask == want.noisy_mask
        assert got.summary["params"] == want.summary["params"]
        assert (got.summary["trainer"], want.summary["trainer"]) == ("stacked", "trial")
        assert_same_records(got, want)


def test_batchnorm_convnet_with_augmentation_equals_separate_trials():
    over = {"data.name": "digits", "model.name": "convnet", "model.width": 2, "model.batchnorm": True,
            "data.augment": True, "optim.epochs": 1, "optim.batch_size": 128}
    cfgs = [tiny(**over, seed=s) for s in (0, 1)]
    for cfg, got in zip(cfgs, run_group(cfgs)):
        assert_same_records(got, run_trial(cfg), abs_=1e-3)


def test_diverging_seed_fails_the_other_goes_on():
    # lr 1000, width 16: run_trial diverges for seed 0 and not for seed 1.
    cfgs = [tiny(**{"model.width": 16, "optim.lr": 1000.0, "seed": s}) for s in (0, 1)]
    got = run_group(cfgs)
    want = [run_trial(c) for c in cfgs]
    assert [r.status for r in got] == [r.status for r in want] == ["failed", "done"]
    assert got[0].error == want[0].error and got[0].error.startswith("diverged: loss became nan")
    assert_same_records(got[1], want[1])
