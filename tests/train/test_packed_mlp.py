"""Packed width groups: same results as separate run_trial calls, inert padding, divergence."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ddscope.train.packed import PackedMLP, Pool, plan_pools
from ddscope.config import ModelConfig
from ddscope.models import make_model
from ddscope.train import run_group, run_trial

from .conftest import assert_same_records, tiny


def _members(widths, seed=0, d=40, classes=10):
    out = []
    for w in widths:
        torch.manual_seed(seed + w)
        out.append(make_model(ModelConfig(width=w), (d,), classes))
    return out


def test_pools_merge_narrow_widths_only():
    widths = [2, 3, 4, 6, 8, 11, 16, 23, 32, 45, 64, 91, 128, 181, 256, 300]
    pools = plan_pools(widths, d=40, depth=2, classes=10)
    assert sorted(i for p in pools for i in p) == list(range(16))
    assert len(pools[0]) >= 5 and all(len(p) == 1 for p in pools if max(widths[i] for i in p) >= 128)


def test_hand_written_backward_equals_autograd():
    # float64, depths 1-3, a padded pool and members alone, an uneven loss weighting per member.
    for depth in (1, 2, 3):
        torch.manual_seed(depth)
        models = [make_model(ModelConfig(width=w, depth=depth), (40,), 10).double() for w in (2, 5, 7, 64, 200)]
        packed = PackedMLP(models)
        assert packed.groups[0] == [0, 1, 2] and len(packed.groups) >= 2
        x, y = torch.randn(33, 40, dtype=torch.float64), torch.randint(0, 10, (33,))
        weight = torch.randn(5, dtype=torch.float64)
        fast = packed.losses(x, y)
        (g_fast,) = torch.autograd.grad((fast * weight).sum(), packed.flat)
        ref = F.cross_entropy(packed(x).transpose(1, 2), y.expand(5, -1), reduction="none").mean(1)
        (g_ref,) = torch.autograd.grad((ref * weight).sum(), packed.flat)
        torch.testing.assert_close(fast, ref, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(g_fast, g_ref, rtol=1e-10, atol=1e-12)
        covered = [torch.zeros_like(g_fast, dtype=torch.bool) for _ in models]
        for j, m in enumerate(models):  # and each member's own loss and gradient
            loss = F.cross_entropy(m(x), y)
            torch.testing.assert_close(fast[j], loss, rtol=1e-12, atol=1e-12)
            params = list(m.parameters())
            grads = torch.autograd.grad(loss * weight[j], params)
            for p, g in zip(params, grads):  # element by element, at the member's own entries of flat
                assert p.untyped_storage().data_ptr() == packed.flat.untyped_storage().data_ptr()
                offset = (p.data_ptr() - packed.flat.data_ptr()) // p.element_size()
                torch.testing.assert_close(g_fast.as_strided(p.shape, p.stride(), offset), g, rtol=1e-10, atol=1e-12)
                covered[j].as_strided(p.shape, p.stride(), offset).fill_(True)
        # every entry of the flat gradient is some member's, or padding with a zero gradient
        owned = torch.stack(covered).any(0)
        assert torch.count_nonzero(g_fast[~owned]) == 0 and owned.sum() == sum(
            sum(p.numel() for p in m.parameters()) for m in models)


def test_members_are_views_and_padding_stays_zero():
    widths = [2, 5, 7, 64]  # one zero-padded pool of three, one member alone
    models = _members(widths)
    packed = PackedMLP(models)
    assert [len(g) for g in packed.groups] == [3, 1]
    opt = torch.optim.Adam(packed.parameters(), lr=0.05, weight_decay=0.1)
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        x, y = torch.randn(32, 40, generator=g), torch.randint(0, 10, (32,), generator=g)
        loss = F.cross_entropy(packed(x).transpose(1, 2), y.expand(len(widths), -1), reduction="none").mean(1).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    x = torch.randn(16, 40, generator=g)
    with torch.no_grad():
        out = packed(x)
        for j, m in enumerate(models):  # each member's own module reads the trained weights
            torch.testing.assert_close(m(x), out[j], rtol=1e-5, atol=1e-5)
    pool = packed.pools[0]
    assert isinstance(pool, Pool)
    for i, k in enumerate(widths[:3]):
        W0, W1, WC = (W[i] for W in pool.weights)
        b0, b1, _ = (b[i] for b in pool.biases)
        pads = [W0[k:], W1[k:], W1[:, k:], WC[:, k:], b0[k:], b1[k:]]
        assert all(bool((t == 0).all()) for t in pads)


def test_group_equals_separate_trials():
    cfgs = [tiny(**{"model.width": w}) for w in (2, 4, 64, 200)]  # a pool, and two alone
    calls = []
    results = run_group(cfgs, progress=lambda e, n: calls.append((e, n)))
    assert calls == [(e, 3) for e in range(4)]
    for cfg, got in zip(cfgs, results):
        want = run_trial(cfg)
        assert got.trial_id == want.trial_id and got.status == want.status == "done"
        assert got.noisy_mask == want.noisy_mask
        for key in ("params", "interp_epoch", "n_train", "n_noisy"):
            assert got.summary[key] == want.summary[key]
        assert_same_records(got, want)
        assert got.summary["group_size"] == 4


def test_diverging_members_fail_the_others_go_on():
    # lr 3000: run_trial diverges for widths 8 and 64 at epoch 1, width 2 survives (dead ReLUs).
    cfgs = [tiny(**{"model.width": w, "optim.lr": 3000.0}) for w in (2, 8, 64)]
    results = run_group(cfgs)
    for cfg, got in zip(cfgs, results):
        want = run_trial(cfg)
        assert got.status == want.status
        if want.status == "failed":
            assert got.error == want.error and got.error.startswith("diverged: loss became nan at epoch 1")
            assert got.summary["failed_epoch"] == want.summary["failed_epoch"]
        else:
            assert cfg.model.width == 2
            assert_same_records(got, want)
    assert [r.status for r in results] == ["done", "failed", "failed"]


def test_group_crash_fails_every_member(monkeypatch):
    from ddscope.train import packed as packed_mlp

    def boom(*a, **k):
        raise RuntimeError("packing exploded")

    monkeypatch.setattr(packed_mlp, "PackedMLP", boom)
    cfgs = [tiny(**{"model.width": w}) for w in (2, 4)]
    results = run_group(cfgs)
    assert [r.trial_id for r in results] == [c.trial_id for c in cfgs]
    assert all(r.status == "failed" and "packing exploded" in r.error for r in results)
