"""optim.loss and optim.label_smoothing: the training step, the recorded losses and every metric
that takes a loss use the trial's; cross-entropy keeps every trial id; groups train as lone
trials do; bad values are refused."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ddscope.config import TrialConfig, set_key
from ddscope.errors import UserError
from ddscope.metrics import measure
from ddscope.metrics.hessian import hess_trace_detail
from ddscope.metrics.losses import LabelSmoothing, batch_losses, loss_fn, trial_loss
from ddscope.train import run_group, run_trial
from ddscope.train.plan import group_kind

from .conftest import assert_same_records, tiny


def test_cross_entropy_keeps_every_trial_id_and_another_loss_is_another_trial():
    base = TrialConfig()
    assert set_key(base, {"optim.loss": "cross_entropy", "optim.label_smoothing": 0.0}).trial_id == base.trial_id
    ids = {set_key(base, u).trial_id for u in ({}, {"optim.loss": "mse"}, {"optim.label_smoothing": 0.1})}
    assert len(ids) == 3


@pytest.mark.parametrize("updates, match", [({"optim.loss": "hinge"}, "optim.loss"),
                                            ({"optim.label_smoothing": 1.0}, r"\[0, 1\)"),
                                            ({"optim.label_smoothing": -0.1}, r"\[0, 1\)"),
                                            ({"optim.loss": "mse", "optim.label_smoothing": 0.1}, "smooths")])
def test_bad_losses_are_refused(updates, match):
    with pytest.raises(UserError, match=match):
        set_key(TrialConfig(), updates)


def test_the_losses_are_their_definitions():
    g = torch.Generator().manual_seed(0)
    out, y = torch.randn(7, 4, generator=g, dtype=torch.float64), torch.tensor([0, 1, 2, 3, 0, 1, 2])
    eps = 0.2
    target = (1 - eps) * F.one_hot(y, 4).double() + eps / 4
    assert torch.allclose(LabelSmoothing(eps)(out, y), -(target * out.log_softmax(1)).sum(1))
    assert torch.allclose(loss_fn("mse")(out, y), ((out - F.one_hot(y, 4).double()) ** 2).mean(1))
    stacked = torch.randn(3, 7, 4, generator=g, dtype=torch.float64)
    ys = y.expand(3, -1)
    for loss in ("cross_entropy", "mse", LabelSmoothing(0.1)):
        want = torch.stack([loss_fn(loss)(stacked[m], ys[m]) for m in range(3)])
        assert torch.allclose(batch_losses(stacked, ys, loss), want)
    assert trial_loss("cross_entropy", 0.0) == "cross_entropy" and trial_loss("cross_entropy", 0.1) == LabelSmoothing(0.1)


@pytest.mark.parametrize("updates", [{"optim.loss": "mse", "optim.lr": 0.2}, {"optim.label_smoothing": 0.1}],
                         ids=["mse", "label smoothing"])
def test_a_stacked_group_trains_as_lone_trials_do_under_another_loss(updates):
    cfgs = [tiny(**{"model.width": 8, "seed": s, **updates}) for s in (0, 1)]
    assert group_kind(cfgs) == "stacked"
    with pytest.raises(ValueError, match="cannot train together"):  # the packed step is the cross-entropy's
        group_kind([tiny(**{"model.width": w, **updates}) for w in (4, 8)])
    for cfg, got in zip(cfgs, run_group(cfgs)):
        want = run_trial(cfg)
        assert got.status == want.status == "done"
        assert_same_records(got, want)


def test_the_recorded_loss_and_the_metrics_use_the_trials_loss(tmp_path):
    """loss/train is the mean MSE of the trained net; hess_trace and theorem2 are the MSE's."""
    from ddscope.checkpoint import load_checkpoint, load_weights
    from ddscope.data import prepare
    from ddscope.models import make_model

    cfg = tiny(**{"model.width": 8, "optim.loss": "mse", "optim.lr": 0.2, "checkpoint.epochs": [2],
                  "metrics.groups": ["hessian", "theorem2"], "metrics.hess_samples": 40})
    folder = tmp_path / "trial"
    result = run_trial(cfg, ckpt_dir=folder)
    assert result.status == "done", result.error
    data = prepare(cfg.data)
    model = make_model(cfg.model, data.input_shape, data.num_classes)
    load_weights(model, load_checkpoint(folder / "final.pt"), folder / "final.pt")
    model.eval()
    last = cfg.optim.epochs
    rec = {m: v for e, m, v in result.records if e == last}
    with torch.no_grad():
        mse = float(loss_fn("mse")(model(data.x_train), data.y_train).mean())
        ce = float(F.cross_entropy(model(data.x_train), data.y_train))
    assert rec["loss/train"] == pytest.approx(mse, rel=1e-5) and abs(mse - ce) > 1e-3
    assert "hess_trace" in rec and "thm2_mid" in rec


def test_label_smoothing_keeps_the_exact_hessian_trace():
    """tr(GGN) with the smoothed targets equals the dense Hessian's trace on a ReLU net. (It also
    equals the plain cross-entropy's: the logits' Hessian is diag(p) − ppᵀ for any targets that
    sum to 1, and on such a net only that term has a trace; the MSE's differs.)"""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 3)).double()
    x, y = torch.randn(12, 5, dtype=torch.float64), torch.arange(12) % 3
    loss = LabelSmoothing(0.2)
    ggn = hess_trace_detail(model, [(x, y)], method="ggn", loss=loss)
    dense = hess_trace_detail(model, [(x, y)], method="exact", loss=loss)
    plain = hess_trace_detail(model, [(x, y)], method="exact")
    mse = hess_trace_detail(model, [(x, y)], method="exact", loss="mse")
    assert ggn.value == pytest.approx(dense.value, rel=1e-9)
    assert dense.value == pytest.approx(plain.value, rel=1e-9)
    assert abs(mse.value - plain.value) > 1e-3
    out = measure(model, {"train": (x, y)}, metrics=["hessian"], input_shape=(5,), loss=loss,
                  options={"hess_samples": None})
    assert out["hess_trace"] == pytest.approx(dense.value, rel=1e-9) and out["hess_trace_exact"] == 1.0
