"""Losses and errors on a schedule (metrics.num_eval_epochs): fewer records, same numbers,
interp_epoch still exact, trial ids of existing configs unchanged."""

from __future__ import annotations

import math

import pytest

from ddscope.config import ADDED_KEYS, TrialConfig, load_sweep, set_key
from ddscope.train import eval_epochs, metric_epochs, run_group, run_trial

from ..tiny import tiny

# No noise, 250 training points, wide MLPs and Adam: they fit every label within ~10-25 epochs,
# between the points of a 3-point evaluation schedule over 40 epochs.
FIT = {  # the tiny trial, long and wide enough to fit its (noise-free) labels
    "data.noise": 0.0,
    "optim.epochs": 40,
    "optim.name": "adam",
    "optim.lr": 0.003,
    "model.width": 128,
    "metrics.groups": ["distance"],
    "metrics.num_sparse_epochs": 1,
}


def _cfg(**kw) -> TrialConfig:
    return tiny(**{**FIT, **kw})


def test_schedule_holds_zero_last_and_every_metric_epoch():
    m = _cfg(**{"metrics.num_eval_epochs": 5}).metrics
    ev = eval_epochs(40, m)
    assert {0, 40} <= ev
    assert set(metric_epochs(40, 2)) <= ev and set(metric_epochs(40, 5)) <= ev
    assert len(ev) < 15
    assert eval_epochs(40, _cfg().metrics) is None  # 0: every epoch
    pinned = _cfg(**{"metrics.num_eval_epochs": 2, "metrics.epochs": [7, 13]}).metrics
    assert {7, 13} <= eval_epochs(40, pinned)


def _by_key(result):
    return {(e, m): v for e, m, v in result.records}


def test_scheduled_records_equal_the_every_epoch_ones_and_interp_stays_exact():
    full = run_trial(_cfg())
    sched = run_trial(_cfg(**{"metrics.num_eval_epochs": 3}))
    assert full.status == sched.status == "done"
    ev = eval_epochs(40, _cfg(**{"metrics.num_eval_epochs": 3}).metrics)
    ie = full.summary["interp_epoch"]
    # The test can only fail for a wrong interp_epoch if that epoch is off the schedule.
    assert ie is not None and ie not in ev, (ie, sorted(ev))
    assert sched.summary["interp_epoch"] == ie
    assert (40, "interp_epoch", float(ie)) in sched.records
    a, b = _by_key(full), _by_key(sched)
    err_epochs = {e for e, m in b if m == "err/test"}
    assert err_epochs == ev
    assert {e for e, m in a if m == "err/test"} == set(range(41))
    for key, v in b.items():  # training is untouched: identical numbers where both record
        assert a[key] == v or (math.isnan(a[key]) and math.isnan(v)), key  # no noisy labels: NaN
    assert set(b) < set(a)


def test_grouped_members_keep_the_schedule_and_exact_interp():
    widths = (2, 96, 128)
    cfgs = [_cfg(**{"metrics.num_eval_epochs": 3, "model.width": w}) for w in widths]
    ev = eval_epochs(40, cfgs[0].metrics)
    for cfg, got in zip(cfgs, run_group(cfgs)):
        want = run_trial(cfg)
        assert got.status == want.status == "done"
        assert got.summary["interp_epoch"] == want.summary["interp_epoch"]
        assert {e for e, m, _ in got.records if m == "err/train"} == ev
        assert {(e, m) for e, m, _ in got.records} == {(e, m) for e, m, _ in want.records}
    assert any(run_trial(c).summary["interp_epoch"] not in (None, *ev) for c in cfgs[1:])


def test_trial_ids_are_pinned():
    """Literal ids, not a hash rebuilt from the config in the test (that test could not fail):
    a change to the id scheme, a new key leaking into it, or a changed default breaks resuming
    every existing store, and must break this test first."""
    assert TrialConfig().trial_id == "45e7f19fe97b"
    assert set_key(TrialConfig(), {"model.width": 65}).trial_id == "9c790ac4008a"
    assert set_key(TrialConfig(), {"device": "auto", "checkpoint.every_epochs": 5}).trial_id == "45e7f19fe97b"
    # a key added later (ADDED_KEYS) changes the id only when set away from its default
    assert ("metrics", "num_eval_epochs") in ADDED_KEYS
    assert set_key(TrialConfig(), {"metrics.num_eval_epochs": 10}).trial_id == "95f2507bbb2d"
    # the preset's ids changed on purpose when it gained the measure zoo and again when it gained the
    # volume group (sparse_groups): a run directory of an earlier preset is refused as "another
    # sweep" (extend_sweep), never mixed
    assert [t.trial_id for t in load_sweep("mnist1d-mlp").trials()][:3] == ["fdb2c4635ae3", "a33c58bdeb3f",
                                                                              "ca9fc026011e"]
    # the keys added with the volume group and the training losses leave every other id alone
    assert set_key(TrialConfig(), {"metrics.vol_k": 4, "optim.loss": "cross_entropy"}).trial_id == "45e7f19fe97b"


def test_negative_schedule_is_a_user_error():
    from ddscope.errors import UserError

    with pytest.raises(UserError, match="num_eval_epochs"):
        _cfg(**{"metrics.num_eval_epochs": -1})
