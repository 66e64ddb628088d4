"""A sweep of your own model factory on your own .npz data, through the CLI and two spawned pool
workers: it runs, reports, and ``ddscope measure`` rebuilds the model from its checkpoints; a
factory or data file that cannot work is exit 2 with one line before anything is written."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest

from ..clirun import cli
from .helpers_sweep import store_rows

MODULE = '''
import math
from torch import nn

def mlp(cfg, input_shape, num_classes):
    """A user's factory: width from the config, the number of hidden layers from [model.options]."""
    layers, d = [nn.Flatten()], math.prod(input_shape)
    for _ in range(cfg.options.get("hidden", 1)):
        layers += [nn.Linear(d, cfg.width), nn.ReLU()]
        d = cfg.width
    return nn.Sequential(*layers, nn.Linear(d, num_classes))

def wrong_classes(cfg, input_shape, num_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), num_classes + 1))

def not_a_module(cfg, input_shape, num_classes):
    return "a string"

class Cumsum(nn.Module):
    def forward(self, x):
        return x.flatten(1).cumsum(1)  # no Lipschitz constant known to AutoLip

def odd(cfg, input_shape, num_classes):
    return nn.Sequential(Cumsum(), nn.Linear(math.prod(input_shape), num_classes))
'''

CONFIG = '''
[sweep]
name = "mine"

[data]
name = "npz"
path = "blobs.npz"
noise = 0.1

[model]
name = "mymodels:mlp"
width = [6, 12]
options = {{ hidden = 2 }}

[optim]
epochs = 4
batch_size = 20
lr = 0.05

[metrics]
groups = ["jacobian", "lipschitz", "distance"]
sparse_groups = ["hessian", "theorem2"]
num_log_epochs = 2
num_sparse_epochs = 1
hess_samples = 24
hess_matvecs = 6
lanczos_iters = 4
{extra}
'''


def _write(tmp_path, extra: str = "", **arrays):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 120)
    x = rng.normal(size=(120, 2, 4)) + y[:, None, None]
    data = {"x_train": x[:90], "y_train": y[:90], "x_test": x[90:], "y_test": y[90:]}
    data.update(arrays)
    np.savez(tmp_path / "blobs.npz", **{k: v for k, v in data.items() if v is not None})
    (tmp_path / "mymodels.py").write_text(textwrap.dedent(MODULE))
    (tmp_path / "mine.toml").write_text(CONFIG.format(extra=extra))


def test_own_factory_on_npz_data_sweeps_reports_and_measures(tmp_path):
    _write(tmp_path)
    r = cli("sweep", "mine.toml", "--out", "run", "--workers", "2", cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "run" / "report" / "index.html").is_file()
    rows = store_rows(tmp_path / "run")
    assert len(rows) == 2 and {t["status"] for t in rows} == {"done"}
    assert {t["config"]["model"]["name"] for t in rows} == {"mymodels:mlp"}
    assert all(t["summary"]["params"] == (8 * w + w) + (w * w + w) + (3 * w + 3)
               for t in rows for w in [t["config"]["model"]["width"]])  # two hidden layers: the options reached it
    tid = rows[0]["trial_id"]
    m = cli("measure", f"run/trials/{tid}/final.pt", "--json", cwd=tmp_path)
    assert m.returncode == 0, m.stderr
    out = json.loads(m.stdout)
    assert out["trial_id"] == tid and out["skipped"] == {}
    for key in ("jac_spec_rms/train", "lip_upper", "hess_trace", "thm2_mid", "dist_rel/all"):
        assert key in out["values"], key
    assert out["values"]["lip_upper"] >= out["values"]["jac_spec_max/train"]


@pytest.mark.parametrize("change, why", [
    ({"model": "nomodule:mlp"}, "config key 'model.name': cannot import module 'nomodule' (ModuleNotFoundError"),
    ({"model": "mymodels:nothing"}, "config key 'model.name': module 'mymodels' has no function 'nothing'"),
    ({"model": "mymodels:wrong_classes"}, "config key 'model.name': mymodels:wrong_classes returns outputs of shape "
                                          "(2, 4) for 2 samples; it must return (N, 3) logits"),
    ({"model": "mymodels:not_a_module"}, "returned str, not an nn.Module"),
    ({"model": "nodots"}, "config key 'model.name': unknown model 'nodots'"),
    ({"arrays": {"y_test": None}}, "config key 'data.path' (blobs.npz): missing array(s) y_test"),
    ({"arrays": {"y_train": np.linspace(0, 1, 90)}}, "'y_train' must hold integer class labels"),
], ids=["no module", "no function", "wrong outputs", "not a module", "bad name", "missing array", "float labels"])
def test_a_factory_or_data_that_cannot_work_is_exit_2_before_anything_is_written(tmp_path, change, why):
    _write(tmp_path, **change.get("arrays", {}))
    if "model" in change:
        text = (tmp_path / "mine.toml").read_text().replace('"mymodels:mlp"', json.dumps(change["model"]))
        (tmp_path / "mine.toml").write_text(text)
    r = cli("sweep", "mine.toml", "--out", "run", cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("ddscope: error: ") and why in lines[0], r.stderr
    assert not (tmp_path / "run").exists()


def test_a_group_that_cannot_run_on_the_users_model_is_skipped_and_said(tmp_path):
    _write(tmp_path)
    text = (tmp_path / "mine.toml").read_text().replace('"mymodels:mlp"', '"mymodels:odd"')
    (tmp_path / "mine.toml").write_text(text)
    r = cli("sweep", "mine.toml", "--out", "run", "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rows = store_rows(tmp_path / "run")
    assert {t["status"] for t in rows} == {"done"}
    html = (tmp_path / "run" / "report" / "index.html").read_text()
    assert "lipschitz&#x27; could not run on 2 trial(s)&#x27; model: ValueError: lipschitz_upper" in html
    for t in rows:  # the other groups were measured; the trial says which one was not, and why
        assert list(t["summary"]["skipped_groups"]) == ["lipschitz"]
        assert "'cumsum'" in t["summary"]["skipped_groups"]["lipschitz"]
    m = cli("measure", f"run/trials/{rows[0]['trial_id']}/final.pt", cwd=tmp_path)
    assert m.returncode == 0, m.stderr
    assert "ddscope: metric group 'lipschitz' skipped: ValueError: lipschitz_upper: no Lipschitz constant" in m.stderr
    assert "jac_spec_rms" in m.stdout and "hess_trace" in m.stdout
