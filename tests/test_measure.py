"""``ddscope measure CHECKPOINT``: rebuilds the model from the stored config, measures it on the
trial's own data (the same numbers as during training), prints a table or JSON; a corrupted
checkpoint is one line and exit 2."""

import json
import math

import pytest

from ddscope.measure import measure_checkpoint
from ddscope.train import run_trial
from .clirun import cli_inline
from .tiny import CHEAP_COSTLY, tiny

GROUPS = ["jacobian", "lipschitz", "distance"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("trial")
    cfg = tiny(**{**CHEAP_COSTLY, "optim.epochs": 4, "model.width": 12, "metrics.epochs": [0, 2, 4],
                  "metrics.groups": GROUPS, "metrics.hess_samples": 64, "metrics.hess_matvecs": 8,
                  "metrics.lanczos_iters": 8, "metrics.path_pairs": 8, "checkpoint.epochs": [2]})
    result = run_trial(cfg, ckpt_dir=str(folder))
    assert result.status == "done"
    return folder, result




def test_measuring_a_checkpoint_gives_the_numbers_stored_in_training(trained):
    folder, result = trained
    out = measure_checkpoint(folder / "epoch_00002.pt", GROUPS, device="cpu")
    stored = {m: v for e, m, v in result.records if e == 2 and m.split("/")[0] not in ("loss", "err")}
    assert out["epoch"] == 2 and out["init"] == "init.pt"
    assert out["values"] == stored  # same function, same seeds, same weights: bit for bit


def test_cli_measure_json_has_every_group_on_every_split(trained, capsys):
    folder, _ = trained
    code, text, _ = cli_inline(capsys, "measure", str(folder / "final.pt"), "--json", "--samples", "32", "--device", "cpu")
    assert code == 0
    out = json.loads(text)
    v = out["values"]
    assert out["epoch"] == 4
    for split in ("train", "train_clean", "train_noisy", "test", "path_same", "path_any"):
        assert math.isfinite(v[f"jac_spec_rms/{split}"]), split
    for key in ("lip_upper", "hess_trace", "hess_top", "thm2_lhs", "thm2_mid", "thm2_rhs", "dist_rel/all"):
        assert key in v, key  # one key of each group: jacobian, paths (above), lipschitz, hessian, ...
    assert v["lip_upper"] >= v["jac_spec_max/train"]  # the bound holds on the measured points
    assert v["dist_rel/all"] > 0


def test_cli_measure_prints_a_table(trained, capsys):
    folder, _ = trained
    code, text, _ = cli_inline(capsys, "measure", str(folder / "init.pt"), "--groups", "jacobian", "--groups", "lipschitz",
                         "--device", "cpu")
    assert code == 0
    for needle in ("epoch 0", "jac_spec_rms", "train_noisy", "test", "lip_upper"):
        assert needle in text, needle


def test_cli_measure_refuses_a_truncated_checkpoint(trained, tmp_path, capsys):
    folder, _ = trained
    bad = tmp_path / "final.pt"
    bad.write_bytes((folder / "final.pt").read_bytes()[:1000])
    (tmp_path / "final.pt.sha256").write_bytes((folder / "final.pt.sha256").read_bytes())
    code, text, err = cli_inline(capsys, "measure", str(bad))
    assert code == 2 and text == ""
    assert err.strip().splitlines() == [f"ddscope: error: checkpoint {bad} is corrupted: checksum mismatch"]


def test_measure_names_the_checkpoints_own_trial(trained, capsys):
    """Regression: the id was computed after --samples/--output/splits had been set on the
    config, so it named another trial and could not be joined with ``ddscope.load``."""
    folder, result = trained
    out = measure_checkpoint(folder / "final.pt", ["distance"], samples=16, output="softmax", device="cpu")
    assert out["trial_id"] == result.trial_id
    code, text, _ = cli_inline(capsys, "measure", str(folder / "final.pt"), "--json", "--groups", "distance",
                               "--samples", "16", "--device", "cpu")
    assert code == 0 and json.loads(text)["trial_id"] == result.trial_id
    code, text, _ = cli_inline(capsys, "measure", str(folder / "final.pt"), "--groups", "distance", "--device", "cpu")
    assert code == 0 and f"trial {result.trial_id}" in " ".join(text.split())  # rich wraps the title
