"""Distance from initialisation: zero at init, exact after a known shift."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ddscope.metrics.distance import distance_from_init, snapshot_params


def test_zero_at_init_and_keys(nets):
    model = nets.residual()
    dist = distance_from_init(model, snapshot_params(model))
    modules = {n.rsplit(".", 1)[0] for n, _ in model.named_parameters()}
    assert set(dist) == {f"dist_{kind}/{m}" for kind in ("abs", "rel") for m in modules | {"all"}}
    assert all(v == 0.0 for v in dist.values())


def test_known_shift(nets):
    model = nets.mlp(6, (8, 8), 4)
    init = snapshot_params(model)
    with torch.no_grad():
        model[2].weight.add_(0.5)  # 8 x 8 entries moved by 0.5
    dist = distance_from_init(model, init)
    shift = 0.5 * math.sqrt(64)
    layer0 = math.sqrt(init["2.weight"].square().sum() + init["2.bias"].square().sum())  # weight + bias grouped
    total0 = math.sqrt(sum(float(v.square().sum()) for v in init.values()))
    assert dist["dist_abs/2"] == pytest.approx(shift, rel=1e-12)
    assert dist["dist_rel/2"] == pytest.approx(shift / layer0, rel=1e-12)
    assert dist["dist_abs/all"] == pytest.approx(shift, rel=1e-12)
    assert dist["dist_rel/all"] == pytest.approx(shift / total0, rel=1e-12)
    for m in ("0", "4"):
        assert dist[f"dist_abs/{m}"] == 0.0 and dist[f"dist_rel/{m}"] == 0.0


def test_snapshot_is_a_copy(nets):
    model = nets.mlp()
    init = snapshot_params(model)
    with torch.no_grad():
        model[0].bias.add_(1.0)
    assert not torch.equal(init["0.bias"], model[0].bias)
    assert distance_from_init(model, init)["dist_abs/0"] == pytest.approx(math.sqrt(model[0].bias.numel()))


def test_top_level_parameters_and_zero_init():
    layer = nn.Linear(3, 2).double()
    with torch.no_grad():
        layer.weight.zero_()
        layer.bias.zero_()
    init = snapshot_params(layer)
    assert distance_from_init(layer, init) == {"dist_abs/root": 0.0, "dist_abs/all": 0.0, "dist_rel/root": 0.0, "dist_rel/all": 0.0}
    with torch.no_grad():
        layer.bias.add_(1.0)
    assert distance_from_init(layer, init)["dist_rel/root"] == math.inf  # moved away from an all-zero start


def test_bad_init_state(nets):
    model = nets.mlp()
    init = snapshot_params(model)
    del init["0.bias"]
    with pytest.raises(ValueError, match="0.bias"):
        distance_from_init(model, init)
    init = snapshot_params(model)
    init["0.weight"] = init["0.weight"][:, :2]
    with pytest.raises(ValueError, match="shape"):
        distance_from_init(model, init)
