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

def exits(cfg, input_shape, num_classes):
    import sys
    sys.exit(0)

class Boom(BaseException):
    pass

def base_exception(cfg, input_shape, num_classes):
    raise Boom("a BaseException subclass")

def three_d(cfg, input_shape, num_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), num_classes), nn.Unflatten(1, (1, num_classes)))

class NoParams(nn.Module):
    def forward(self, x):
        return x.flatten(1)[:, :3]

def no_params(cfg, input_shape, num_classes):
    return NoParams()

class BatchWide(nn.Module):
    def __init__(self, d, c):
        super().__init__()
        self.lin = nn.Linear(d, c)

    def forward(self, x):
        import torch
        out = self.lin(x.flatten(1))
        return torch.cat([out, out], 1)[:, : 2 * len(x) - 1]  # (2, 3) for 2 samples, (3, 5) for 3

def batch_wide(cfg, input_shape, num_classes):
    return BatchWide(math.prod(input_shape), num_classes)

def in_float64(cfg, input_shape, num_classes):
    return mlp(cfg, input_shape, num_classes).double()

def load_value_error(cfg):
    raise ValueError("the loader's own complaint")

def load_key_error(cfg):
    return {}["x_train"]

def load_exits(cfg):
    import sys
    sys.exit(0)
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
sparse_groups = ["hessian", "theorem2", "volume"]
num_log_epochs = 2
num_sparse_epochs = 1
hess_samples = 24
hess_matvecs = 6
lanczos_iters = 4
vol_samplers = ["shift@1", "shift@1,2,3"]
vol_samples = 5
vol_k = 2
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
    for key in ("jac_spec_rms/train", "lip_upper", "hess_trace", "thm2_mid", "dist_rel/all",
                "vol_jac_spec_rms/train_noisy/shift1", "vol_tangent_jac/train_clean/shift_path1-3"):  # named by the trial
        assert key in out["values"], key
    assert out["values"]["lip_upper"] >= out["values"]["jac_spec_max/train"]


@pytest.mark.parametrize("change, why", [
    ({"model": "nomodule:mlp"}, "config key 'model.name': cannot import module 'nomodule' (ModuleNotFoundError"),
    ({"model": "mymodels:nothing"}, "config key 'model.name': module 'mymodels' has no function 'nothing'"),
    ({"model": "mymodels:wrong_classes"}, "config key 'model.name': mymodels:wrong_classes returns outputs of shape "
                                          "(3, 4) for 3 samples; it must return (N, 3) logits"),
    ({"model": "mymodels:exits"}, "mymodels:exits cannot build or run the model on npz:blobs.npz inputs of shape "
                                  "(2, 4) (SystemExit: 0)"),
    ({"model": "mymodels:base_exception"}, "(Boom: a BaseException subclass)"),
    ({"model": "mymodels:three_d"}, "returns outputs of shape (3, 1, 3) for 3 samples"),
    ({"model": "mymodels:no_params"}, "builds a model without parameters"),
    ({"model": "mymodels:batch_wide"}, "returns outputs of shape (3, 5) for 3 samples"),
    ({"data": "mymodels:load_value_error"}, "the data function raised ValueError: the loader's own complaint"),
    ({"data": "mymodels:load_key_error"}, "the data function raised KeyError: 'x_train'"),
    ({"data": "mymodels:load_exits"}, "the data function raised SystemExit: 0"),
    ({"arrays": {"x_test": np.full((30, 2, 4), np.nan)}}, "'x_test' holds 240 NaN or infinite value(s)"),
    ({"arrays": {"x_val": np.ones((5, 2, 4)), "y_val": None}}, "x_val and y_val come together"),
    ({"arrays": {"y_val": np.zeros(5, int)}}, "x_val and y_val come together"),
    ({"arrays": {"x_train": np.ones((90, 2, 4)) * 1j}}, "'x_train' is complex (complex128)"),
    ({"arrays": {"x_train": np.ones((90, 0)), "x_test": np.ones((30, 0))}}, "'x_train' has samples of shape (0,) with no features"),
    ({"arrays": {"y_train": np.full(90, 2**40)}}, "'y_train' has a label of 1099511627776"),
    ({"arrays": {"y_train": np.full(90, 2**64 - 1, dtype=np.uint64)}}, "'y_train' has a label of "),
    ({"arrays": {"y_train": np.full(90, 1e30)}}, "'y_train' has a label of 1e+30"),
    ({"model": "mymodels:not_a_module"}, "returned str, not an nn.Module"),
    ({"model": "nodots"}, "config key 'model.name': unknown model 'nodots'"),
    ({"arrays": {"y_test": None}}, "config key 'data.path' (blobs.npz): missing array(s) y_test"),
    ({"arrays": {"y_train": np.linspace(0, 1, 90)}}, "'y_train' must hold integer class labels"),
], ids=["no module", "no function", "wrong outputs", "not a module", "bad name", "missing array", "float labels",
        "factory exits", "BaseException", "3-D output", "no parameters", "batch-dependent width", "loader ValueError",
        "loader KeyError", "loader exits", "NaN x_test", "x_val alone", "y_val alone", "complex", "no features",
        "label 2**40", "uint64 label", "label 1e30"])
def test_a_factory_or_data_that_cannot_work_is_exit_2_before_anything_is_written(tmp_path, change, why):
    _write(tmp_path, **change.get("arrays", {}))
    if "model" in change:
        text = (tmp_path / "mine.toml").read_text().replace('"mymodels:mlp"', json.dumps(change["model"]))
        (tmp_path / "mine.toml").write_text(text)
    if "data" in change:
        text = (tmp_path / "mine.toml").read_text().replace('name = "npz"', f'name = {json.dumps(change["data"])}')
        (tmp_path / "mine.toml").write_text(text)
    r = cli("sweep", "mine.toml", "--out", "run", cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("ddscope: error: ") and why in lines[0], r.stderr
    assert not (tmp_path / "run").exists()


def test_a_float64_factory_simply_trains(tmp_path):
    _write(tmp_path)
    text = (tmp_path / "mine.toml").read_text().replace('"mymodels:mlp"', '"mymodels:in_float64"')
    (tmp_path / "mine.toml").write_text(text)
    r = cli("sweep", "mine.toml", "--out", "run", "--quiet", "--no-report", "--set", "model.width=6", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rows = store_rows(tmp_path / "run")
    assert [t["status"] for t in rows] == ["done"], rows[0]["error"]


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
