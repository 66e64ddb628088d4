"""The Python API: ``ddscope.sweep()`` is the CLI's sweep as a function (same store, resume, report,
errors), and ``ddscope.Tracker`` records a training loop the user keeps into a store that
``ddscope report``, ``ddscope status`` and ``ddscope.load`` read like a sweep's."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ddscope
from ddscope.errors import UserError
from ddscope.metrics.suite import measure

from .clirun import cli_inline
from .tiny import TINY


def test_sweep_function_runs_resumes_and_reports(tmp_path):
    out = ddscope.sweep("mnist1d-mlp", {**TINY, "model.width": [4, 8]}, out=tmp_path / "run")
    assert out == tmp_path / "run" and (out / "report" / "index.html").is_file()
    first = ddscope.load(out)
    assert sorted(first["model.width"].unique()) == [4, 8] and first["trial_id"].nunique() == 2
    again = ddscope.sweep("mnist1d-mlp", {**TINY, "model.width": [4, 8]}, out=out, report=False)
    assert again == out and ddscope.load(out).equals(first)  # nothing rerun, nothing duplicated
    # Overrides as the CLI's --set strings, and extending the grid runs only the new width.
    ddscope.sweep("mnist1d-mlp", [f"{k}={v}" for k, v in {"data.num_samples": 1000, "optim.batch_size": 50,
                                                          "optim.epochs": 3, "metrics.num_log_epochs": 2,
                                                          "metrics.jac_samples": 32}.items()]
                  + ['metrics.groups=["jacobian", "distance"]', "metrics.sparse_groups=[]", "model.width=[4,8,12]"],
                  out=out, report=False)
    assert sorted(ddscope.load(out)["model.width"].unique()) == [4, 8, 12]


def test_sweep_function_bad_input_raises_before_writing(tmp_path):
    with pytest.raises(UserError, match="config key 'optim.lr'"):
        ddscope.sweep("mnist1d-mlp", {"optim.lr": -1.0}, out=tmp_path / "x")
    with pytest.raises(UserError, match="cannot import module 'nosuchmodule'"):
        ddscope.sweep("mnist1d-mlp", {**TINY, "model.name": "nosuchmodule:f"}, out=tmp_path / "y")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


class Net(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.a, self.b = nn.Linear(12, width), nn.Linear(width, 3)

    def forward(self, x):
        return self.b(F.relu(self.a(x)))


def _blobs(n, seed):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    return torch.randn(n, 12, generator=g) + 2.0 * F.one_hot(y, 12).float(), y


def test_tracker_records_a_users_loop_and_the_report_reads_it(tmp_path, capsys):
    train, test = _blobs(60, 0), _blobs(30, 1)
    run = tmp_path / "mine"
    for width in (4, 16):
        torch.manual_seed(0)
        model = Net(width)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        with ddscope.Tracker(run, train=train, test=test, labels={"model.width": width, "seed": 0}, epochs=6,
                             metrics={"jac_samples": 0}) as tracker:
            tracker.start(model)
            for epoch in range(1, 7):
                for i in range(0, 60, 20):  # the user's own loop
                    opt.zero_grad()
                    F.cross_entropy(model(train[0][i : i + 20]), train[1][i : i + 20]).backward()
                    opt.step()
                if epoch in (3, 6):
                    got = tracker.log(epoch, model)
            # the values are the model's own: errors and the suite on the same tensors
            with torch.no_grad():
                err = (model(test[0]).argmax(1) != test[1]).float().mean().item()
            assert got["err/test"] == pytest.approx(err)
            assert model.training  # log() restores the training flag
            want = measure(model, {"train": train}, metrics=["jacobian"], input_shape=(12,))
            assert got["jac_spec_rms/train"] == pytest.approx(want["jac_spec_rms/train"], rel=1e-6)
    table = ddscope.load(run)
    assert sorted(table["model.width"].unique()) == [4, 16]
    assert sorted(table["epoch"].unique()) == [0, 3, 6]
    assert {"err/train", "err/test", "jac_spec_rms/train", "lip_upper", "dist_rel/all"} <= set(table["metric"])
    code, out, _ = cli_inline(capsys, "report", str(run))
    assert code == 0 and (run / "report" / "index.html").is_file()
    code, out, _ = cli_inline(capsys, "status", str(run))
    assert code == 0 and "2 done" in out
    # the same labels again: refused, not silently overwritten
    with pytest.raises(UserError, match="already holds a finished trial with these labels"):
        ddscope.Tracker(run, train=train, test=test, labels={"model.width": 4, "seed": 0}, epochs=6,
                        metrics={"jac_samples": 0}).start(Net(4))


def test_tracker_marks_a_crashed_loop_failed_and_keeps_what_was_logged(tmp_path):
    train, test = _blobs(30, 0), _blobs(15, 1)
    model = Net(4)
    with pytest.raises(RuntimeError, match="the user's loop broke"):
        with ddscope.Tracker(tmp_path, train=train, test=test, groups=["jacobian"]) as tracker:
            tracker.start(model)
            tracker.log(1, model)
            raise RuntimeError("the user's loop broke")
    table = ddscope.load(tmp_path)
    assert sorted(table["epoch"].unique()) == [0, 1]
    with pytest.raises(UserError, match="integer class labels"):
        ddscope.Tracker(tmp_path / "f", train=(train[0], train[1].float()), test=test)


@pytest.mark.parametrize("raise_, code, line", [
    ("KeyboardInterrupt()", -2, "interrupted: finished trials are stored"),
    ("UserError('config key x: bad\\nsecond line')", 2, "ddscope: error: config key x: bad\\nsecond line"),
])
def test_quiet_errors_ends_a_script_with_one_line(tmp_path, raise_, code, line):
    import subprocess
    import sys

    script = tmp_path / "s.py"
    script.write_text(f"import ddscope\nfrom ddscope.errors import UserError\nddscope.quiet_errors()\nraise {raise_}\n")
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert r.returncode in (code, 128 - code if code < 0 else code), r
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(line), r.stderr
    # other exceptions keep their traceback: they are bugs to report
    script.write_text("import ddscope\nddscope.quiet_errors()\nraise ValueError('a bug')\n")
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "Traceback" in r.stderr and "ValueError: a bug" in r.stderr


def test_the_api_checks_executor_options_as_the_cli_does(tmp_path):
    """One driver: ddscope.sweep refuses what ``ddscope sweep`` refuses, before anything is written."""
    with pytest.raises(UserError, match="--address needs --executor ray"):
        ddscope.sweep("mnist1d-mlp", TINY, out=tmp_path / "a", executor="local", address="10.0.0.1:6379")
    with pytest.raises(UserError, match="--partition needs --executor slurm"):
        ddscope.sweep("mnist1d-mlp", TINY, out=tmp_path / "b", executor="inprocess", partition="gpu")
    with pytest.raises(UserError, match="unknown executor option 'adress'"):
        ddscope.sweep("mnist1d-mlp", TINY, out=tmp_path / "c", adress="x")
    assert not any(tmp_path.iterdir())


def test_a_sweepconfig_is_run_as_given(tmp_path):
    from ddscope.api import load_spec
    from ddscope.config import load_sweep

    spec = load_sweep("mnist1d-mlp", [f"{k}={v}" for k, v in TINY.items()])
    assert load_spec(spec) is spec
    assert load_spec(spec, {"seed": 3}).base.seed == 3


def test_the_tracker_measures_volumes_around_clean_and_noisy_points_under_its_loss(tmp_path):
    """The volume group on a user's loop: clean and noisy points apart, the trial's loss (MSE)
    in the volume loss; a sampler that does not fit the tensors is one line at construction."""
    (x, y), test = _blobs(40, 0), _blobs(20, 1)
    noisy = torch.arange(40) % 5 == 0
    y_noisy = torch.where(noisy, (y + 1) % 3, y)
    torch.manual_seed(0)
    model = Net(8)
    with ddscope.Tracker(tmp_path / "vol", train=(x, y_noisy), test=test, noisy_mask=noisy, y_train_clean=y,
                         groups=["volume"], labels={"optim.loss": "mse"},
                         metrics={"vol_samples": 5, "vol_k": 2, "vol_samplers": ["shift@1", "shift@1,2"]}) as tracker:
        tracker.start(model, log=False)
        got = tracker.log(1, model)
    keys = {"vol_loss/train_clean/shift1", "vol_loss/train_noisy/shift1", "vol_tangent_jac/train_noisy/shift_path1-2"}
    assert keys <= set(got)
    # the same measurement by hand, with the Tracker's generator: the MSE's volume loss, not the CE's
    subsets = {"train_clean": ("train", ~noisy), "train_noisy": ("train", noisy)}
    opts = {"vol_samples": 5, "vol_k": 2, "vol_samplers": ("shift@1", "shift@1,2")}
    again = {loss: measure(model, {"train": (x, y_noisy), "test": test}, subsets=subsets, metrics=["volume"],
                           input_shape=(12,), options={**opts, "loss": loss},
                           generator=torch.Generator().manual_seed(tracker.cfg.seed * 100_003 + 1))
             for loss in ("mse", "cross_entropy")}
    assert got["vol_loss/train_noisy/shift1"] == pytest.approx(again["mse"]["vol_loss/train_noisy/shift1"], rel=1e-6)
    assert abs(again["mse"]["vol_loss/train_noisy/shift1"] - again["cross_entropy"]["vol_loss/train_noisy/shift1"]) > 0.1
    with torch.no_grad():
        mse = float(((model(x) - F.one_hot(y_noisy, 3)) ** 2).mean())
    assert got["loss/train"] == pytest.approx(mse, rel=1e-5)
    with pytest.raises(UserError, match="metrics.vol_samplers.*at most 11 pixels"):
        ddscope.Tracker(tmp_path / "bad", train=(x, y), test=test, groups=["volume"],
                        metrics={"vol_samplers": ["shift@12"]})
