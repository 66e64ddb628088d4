"""Which trials train together: packed width groups, stacked seed/noise groups, singletons."""

from __future__ import annotations

import pytest

from ddscope.train import group_kind, group_trials
from ddscope.train.plan import trial_cost
from ddscope.config import TrialConfig, load_sweep, set_key


def _sweep(**grid):
    base = TrialConfig()
    return [set_key(base, dict(zip(grid, combo))) for combo in _product(*grid.values())]


def _product(*axes):
    out = [()]
    for axis in axes:
        out = [prev + (v,) for prev in out for v in axis]
    return out


def _ids(groups):
    return [[c.trial_id for c in g] for g in groups]


def test_mlp_width_sweep_packs_per_seed():
    cfgs = _sweep(**{"seed": [0, 1], "model.width": [2, 8, 32]})
    groups = group_trials(cfgs)
    assert _ids(groups) == [[c.trial_id for c in cfgs[:3]], [c.trial_id for c in cfgs[3:]]]
    assert all(group_kind(g) == "packed" for g in groups)


def test_same_width_seed_and_noise_draws_stack():
    cfgs = _sweep(**{"model.name": ["cnn1d"], "model.width": [4, 8], "seed": [0, 1], "data.noise": [0.1, 0.2]})
    groups = group_trials(cfgs)
    assert len(groups) == 2 and all(group_kind(g) == "stacked" for g in groups)
    assert {c.model.width for c in groups[0]} == {4} and len(groups[0]) == 4
    mlp_noise = _sweep(**{"model.width": [16], "data.seed": [0, 1, 2]})
    assert [group_kind(g) for g in group_trials(mlp_noise)] == ["stacked"]


def test_other_differences_stay_apart():
    cfgs = _sweep(**{"model.name": ["cnn1d"], "optim.lr": [0.01, 0.1], "model.width": [4, 8]})
    assert [len(g) for g in group_trials(cfgs)] == [1, 1, 1, 1]
    with pytest.raises(ValueError):
        group_kind(cfgs[:2])


def test_switched_off_gives_singletons():
    cfgs = load_sweep("mnist1d-mlp").trials()
    assert _ids(group_trials(cfgs, enabled=False)) == [[c.trial_id] for c in cfgs]


def test_max_group_and_workers_split_by_cost():
    cfgs = load_sweep("mnist1d-mlp").trials()  # 16 widths, one packed group
    assert len(group_trials(cfgs)) == 1
    for kw in ({"max_group": 5}, {"workers": 2}, {"workers": 3, "max_group": 8}):
        groups = group_trials(cfgs, **kw)
        flat = [c.trial_id for g in groups for c in g]
        assert sorted(flat) == sorted(c.trial_id for c in cfgs)  # every trial exactly once
        assert all(len(g) <= kw.get("max_group", 16) for g in groups)
        assert len(groups) >= kw.get("workers", 1)
        pos = {c.trial_id: i for i, c in enumerate(cfgs)}
        assert all([pos[c.trial_id] for c in g] == sorted(pos[c.trial_id] for c in g) for g in groups)
    loads = [sum(trial_cost(c) for c in g) for g in group_trials(cfgs, workers=2)]
    assert max(loads) <= 1.2 * min(loads)


def test_every_config_key_is_declared_for_every_group_trainer():
    """A setting added to the config must be declared for each group trainer (varies, same, or
    the values it supports): otherwise the group step could silently ignore it."""
    from ddscope.config import all_keys
    from ddscope.train.plan import SAME, SUPPORTS, VARIES

    for kind, table in SUPPORTS.items():
        assert set(table) == set(all_keys()), kind
        assert all(rule in (VARIES, SAME) or isinstance(rule, tuple) for rule in table.values()), kind
    assert [k for k, r in SUPPORTS["packed"].items() if r == VARIES] == ["model.width"]
    assert SUPPORTS["packed"]["model.name"] == ("mlp",) and SUPPORTS["packed"]["seed"] == SAME


def test_a_setting_a_group_trainer_was_not_told_about_trains_alone(monkeypatch):
    import ddscope.train.plan as plan

    cfgs = _sweep(**{"model.width": [2, 8, 32]})
    assert [len(g) for g in group_trials(cfgs)] == [3]
    for kind in plan.SUPPORTS:  # as if optim.amp were new: no trainer has declared it
        monkeypatch.setitem(plan.SUPPORTS, kind, {k: r for k, r in plan.SUPPORTS[kind].items() if k != "optim.amp"})
    assert [len(g) for g in group_trials(cfgs)] == [1, 1, 1]
    with pytest.raises(ValueError, match="does not support"):
        group_kind(cfgs)


def test_values_outside_a_trainers_list_are_not_grouped():
    cfgs = _sweep(**{"model.name": ["convnet"], "model.width": [2, 4], "data.name": ["digits"]})
    assert not any(group_kind(g) == "packed" for g in group_trials(cfgs) if len(g) > 1)
    assert [len(g) for g in group_trials(cfgs)] == [1, 1]  # widths differ: not stackable either
