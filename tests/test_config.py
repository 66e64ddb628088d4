import pytest

from ddscope.config import TrialConfig, apply_overrides, load_sweep, parse_override, set_key, sweep_from_dict
from ddscope.errors import UserError


def test_default_preset_expands_widths():
    s = load_sweep("mnist1d-mlp")
    widths = [t.model.width for t in s.trials()]
    assert widths == sorted(widths) and widths[0] == 2 and widths[-1] == 300
    assert len(set(t.trial_id for t in s.trials())) == len(widths)


def test_grid_is_cartesian_product_with_stable_ids():
    s = load_sweep("mnist1d-mlp", ["model.width=[4,8]", "seed=[0,1,2]", "data.noise=[0.0,0.2]"])
    trials = s.trials()
    assert len(trials) == 12
    assert {(t.model.width, t.seed, t.data.noise) for t in trials} == {
        (w, sd, n) for w in (4, 8) for sd in (0, 1, 2) for n in (0.0, 0.2)
    }
    again = load_sweep("mnist1d-mlp", ["model.width=[4,8]", "seed=[0,1,2]", "data.noise=[0.0,0.2]"])
    assert [t.trial_id for t in trials] == [t.trial_id for t in again.trials()]


def test_trial_id_depends_on_content_not_device():
    a = TrialConfig()
    assert a.trial_id == TrialConfig().trial_id
    assert set_key(a, {"model.width": 65}).trial_id != a.trial_id
    assert set_key(a, {"device": "auto"}).trial_id == a.trial_id


def test_tuple_fields_take_lists_as_values():
    s = load_sweep("mnist1d-mlp", ["metrics.groups=['jacobian','distance']", "model.width=8"])
    assert s.base.metrics.groups == ("jacobian", "distance")
    assert "metrics.groups" not in s.grid


def test_override_parsing():
    assert parse_override("optim.lr=0.1") == ("optim.lr", 0.1)
    assert parse_override("optim.name=adam") == ("optim.name", "adam")
    assert parse_override("model.width=[1, 2]") == ("model.width", [1, 2])
    assert parse_override("data.augment=true") == ("data.augment", True)


@pytest.mark.parametrize(
    "override, needle",
    [
        ("model.widht=3", "model.widht"),
        ("model.width=0", "model.width"),
        ("model.width=-4", "model.width"),
        ("data.noise=1.0", "data.noise"),
        ("data.noise=-0.1", "data.noise"),
        ("model.width='wide'", "model.width"),
        ("optim.lr=0", "optim.lr"),
        ("data.noise_kind=random", "data.noise_kind"),
        ("model.name=transformerxl", "model.name"),
        ("metrics.groups=['jacobian','magic']", "metrics.groups"),
        ("optim.epochs=2.5", "optim.epochs"),
    ],
)
def test_bad_values_name_the_key(override, needle):
    with pytest.raises(UserError) as e:
        load_sweep("mnist1d-mlp", [override])
    msg = str(e.value)
    assert needle in msg and "\n" not in msg


def test_bad_value_inside_grid_is_caught():
    with pytest.raises(UserError, match="model.width"):
        load_sweep("mnist1d-mlp", ["model.width=[4, 0, 8]"])


def test_unknown_section_and_preset():
    with pytest.raises(UserError, match="section"):
        sweep_from_dict({"modle": {"width": 3}})
    with pytest.raises(UserError, match="unknown preset"):
        load_sweep("no-such-preset")


def test_round_trip_through_dict():
    c = set_key(TrialConfig(), {"model.width": 7, "metrics.groups": ["jacobian", "hessian"]})
    assert TrialConfig.from_dict(c.to_dict()) == c


def test_apply_overrides_does_not_mutate():
    d = {"model": {"width": 3}}
    apply_overrides(d, ["model.width=5"])
    assert d == {"model": {"width": 3}}
