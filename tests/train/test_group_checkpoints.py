"""Grouped trials keep per-trial checkpoints: θ⁰, resume points and final weights in the same
files as a lone trial, one member per file. A group stopped mid-training resumes from them and
ends bit-identical to a run that was never stopped; a checkpoint written in a group resumes alone;
``ddscope measure`` works on every member's final weights."""

from __future__ import annotations

import pytest
import torch

from ddscope.checkpoint import load_checkpoint
from ddscope.measure import measure_checkpoint
from ddscope.models import make_model
from ddscope.train import run_group, run_trial

from ..tiny import Killed
from ..tiny import stop_at as _stop_at
from .conftest import assert_same_records, tiny

# Adam with warm-up (moments, step count and the LR schedule must come back) and SGD with momentum
# and weight decay; a resume point every 2 epochs of 6.
OPTIMS = {
    "adam": {"optim.name": "adam", "optim.lr": 0.003, "optim.warmup_epochs": 2},
    "sgd": {"optim.momentum": 0.9, "optim.weight_decay": 1e-3, "optim.lr": 0.05},
}
EVERY = {"optim.epochs": 6, "checkpoint.every_epochs": 2, "checkpoint.every_minutes": 0.0}


def _group(kind: str, optim: str) -> list:
    over = {**OPTIMS[optim], **EVERY}
    if kind == "packed":  # widths 2 and 3 share a pool (padding), 48 is alone
        return [tiny(**{**over, "model.width": w}) for w in (2, 3, 48)]
    return [tiny(**{**over, "model.width": 8, "seed": s, "data.noise": nz}) for s, nz in ((0, 0.15), (1, 0.15), (0, 0.3))]


def _names(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".sha256"))


@pytest.mark.parametrize("optim", sorted(OPTIMS))
@pytest.mark.parametrize("kind", ["packed", "stacked"])
def test_group_stopped_mid_training_resumes_bit_identical(tmp_path, kind, optim):
    cfgs = _group(kind, optim)
    want = run_group(cfgs)  # never stopped, no checkpoints
    dirs = [tmp_path / c.trial_id for c in cfgs]
    with pytest.raises(Killed):
        run_group(cfgs, _stop_at(5), [str(d) for d in dirs])
    for d in dirs:  # θ⁰ and the epoch-4 resume point (epoch 2's was pruned once epoch 4's existed)
        assert _names(d) == ["epoch_00004.pt", "init.pt"]
    got = run_group(cfgs, None, [str(d) for d in dirs])
    for g, w in zip(got, want):
        assert g.status == w.status == "done" and g.summary["trainer"] == kind
        assert g.summary["resumed_from_epoch"] == 4
        assert g.records == w.records  # bit for bit: every state came back exactly
    for d in dirs:
        assert _names(d) == ["final.pt", "init.pt"]


def test_a_member_checkpoint_is_a_lone_trials_file(tmp_path):
    cfgs = _group("packed", "sgd")
    dirs = [tmp_path / c.trial_id for c in cfgs]
    with pytest.raises(Killed):
        run_group(cfgs, _stop_at(5), [str(d) for d in dirs])
    for cfg, d in zip(cfgs, dirs):
        state = load_checkpoint(d / "epoch_00004.pt")
        torch.manual_seed(0)
        lone = make_model(cfg.model, (40,), 10)
        want = lone.state_dict()
        assert state["trial_id"] == cfg.trial_id
        assert {k: v.shape for k, v in state["model"].items()} == {k: v.shape for k, v in want.items()}
        for t in state["model"].values():  # its own weights only, not the group's packed buffer
            assert t.untyped_storage().nbytes() == t.numel() * t.element_size()
        opt = torch.optim.SGD(lone.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
        opt.load_state_dict(state["optimizer"])  # a lone trial's optimiser takes it as it is
        for p in lone.parameters():
            assert opt.state[p]["momentum_buffer"].shape == p.shape
    # ... and the lone trainer resumes from it, to the group's numbers up to float summation order.
    uninterrupted = run_group(cfgs)
    for cfg, d, want in zip(cfgs, dirs, uninterrupted):
        got = run_trial(cfg, ckpt_dir=str(d))
        assert got.summary["resumed_from_epoch"] == 4 and got.summary["trainer"] == "trial"
        assert_same_records(got, want)


def test_a_dead_member_rolls_the_group_back_to_an_epoch_all_share(tmp_path):
    # lr 3000: widths 8 and 64 diverge at epoch 1 and save nothing after init.pt, width 2 survives.
    cfgs = [tiny(**{**EVERY, "model.width": w, "optim.lr": 3000.0}) for w in (2, 8, 64)]
    want = run_group(cfgs)
    dirs = [str(tmp_path / c.trial_id) for c in cfgs]
    with pytest.raises(Killed):
        run_group(cfgs, _stop_at(5), dirs)
    got = run_group(cfgs, None, dirs)
    assert [r.status for r in got] == ["done", "failed", "failed"]
    for g, w in zip(got, want):
        assert g.records == w.records and g.error == w.error
        assert g.summary["resumed_from_epoch"] == 0  # the latest epoch every member has: init.pt


def test_measure_works_on_every_members_final_weights(tmp_path):
    cfgs = _group("stacked", "sgd")
    dirs = [tmp_path / c.trial_id for c in cfgs]
    results = run_group(cfgs, None, [str(d) for d in dirs])
    for cfg, d, res in zip(cfgs, dirs, results):
        got = measure_checkpoint(d / "final.pt", ["jacobian", "distance"])
        assert got["trial_id"] == cfg.trial_id and got["init"] == "init.pt"
        stored = {m: v for e, m, v in res.records if e == cfg.optim.epochs}
        common = [k for k in got["values"] if k in stored]
        assert len(common) >= 8
        for k in common:  # the member's view of the stacked tensors vs its contiguous copy
            assert got["values"][k] == pytest.approx(stored[k], rel=1e-5, abs=1e-7), k
