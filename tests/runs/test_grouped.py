"""Sweeps whose trials train as vectorised groups (the default): one stored result per trial,
equal to separate training up to float summation order, and kill + resume loses nothing."""

import os
import signal

import numpy as np
import pandas as pd

from ddscope.config import load_sweep
from ddscope.runs.executors import InProcessExecutor
from ddscope.runs.runner import run_sweep
from .helpers_sweep import FAST, cli, duplicate_rows, integrity_ok, sets, start, store_rows, table, wait_for

ARGS = FAST + ["model.width=[4,8,16,32]", "optim.epochs=6"]


def _close(a, b) -> None:
    """Same rows; values equal up to float summation order (errors: at most one flipped sample)."""
    assert len(a) == len(b) > 0
    assert (a[["trial_id", "epoch", "metric"]].values == b[["trial_id", "epoch", "metric"]].values).all()
    err = a["metric"].str.startswith("err/").to_numpy()
    x, y = a["value"].to_numpy(float), b["value"].to_numpy(float)
    assert np.allclose(x[err], y[err], atol=1.5 / 250, equal_nan=True)
    assert np.allclose(x[~err], y[~err], rtol=1e-3, atol=1e-4, equal_nan=True)


def test_grouped_sweep_equals_separate_trials(tmp_path):
    sweep = load_sweep("mnist1d-mlp", ARGS + ["seed=[0,1]"])
    grouped = run_sweep(sweep, tmp_path / "g", InProcessExecutor(), show_progress=False)
    separate = run_sweep(sweep, tmp_path / "s", InProcessExecutor(), show_progress=False, group=False)
    assert grouped.counts["done"] == separate.counts["done"] == 8 and grouped.ran == 8
    _close(table(tmp_path / "g"), table(tmp_path / "s"))
    assert duplicate_rows(tmp_path / "g") == 0
    # The store says which training path made each trial's numbers.
    trainers = {run: {r["summary"]["trainer"] for r in store_rows(tmp_path / run)} for run in ("g", "s")}
    assert trainers == {"g": {"packed"}, "s": {"trial"}}
    # Rerunning skips every trial, grouped or not.
    assert run_sweep(sweep, tmp_path / "g", InProcessExecutor(), show_progress=False).ran == 0


def test_grouped_sweep_killed_and_resumed_loses_nothing(tmp_path):
    run = tmp_path / "run"
    args = ["sweep", "mnist1d-mlp", *sets(FAST + ["model.width=[4,8,16,32,64,96]", "optim.epochs=30", "seed=[0,1]"]),
            "--out", str(run), "--workers", "2", "--no-report", "--quiet", "--group", "--max-group", "3"]
    victim = start(*args, log=tmp_path / "run.log")
    wait_for(lambda: any(r["status"] == "done" for r in store_rows(run)) and
             any(r["status"] == "running" for r in store_rows(run)), 240, "a done and a running trial", proc=victim)
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait(timeout=30)
    assert integrity_ok(run)
    r = cli(*args, "--resume")
    assert r.returncode == 0, r.stderr
    rows = store_rows(run)
    assert len(rows) == 12 and {t["status"] for t in rows} == {"done"}
    assert duplicate_rows(run) == 0
    ref = tmp_path / "ref"
    r = cli(*[a if a != str(run) else str(ref) for a in args])
    assert r.returncode == 0, r.stderr
    _close(table(run), table(ref))


def _group_checkpoint(run_dir):
    """{trial id: epoch} of the members' latest mid-training checkpoints, once all have one."""
    rows = store_rows(run_dir)
    if not rows or any(r["status"] != "running" for r in rows):
        return None
    latest = {}
    for r in rows:
        sides = sorted((run_dir / "trials" / r["trial_id"]).glob("epoch_*.pt.sha256"))
        if not sides:
            return None
        latest[r["trial_id"]] = int(sides[-1].name[6:11])
    return latest


def test_sigkilled_group_resumes_from_its_checkpoints_bit_identical(tmp_path):
    """One packed group of four widths, SIGKILLed mid-training: the rerun continues every member
    from its checkpoint (not from epoch 0) and the table equals an uninterrupted run exactly."""
    run, ref = tmp_path / "run", tmp_path / "ref"
    over = FAST + ["model.width=[32,64,96,128]", "optim.epochs=40", "checkpoint.every_epochs=5"]
    args = ["sweep", "mnist1d-mlp", *sets(over), "--out", str(run), "--executor", "inprocess", "--no-report",
            "--quiet", "--group"]
    victim = start(*args, log=tmp_path / "run.log")
    reference = start(*[a if a != str(run) else str(ref) for a in args], log=tmp_path / "ref.log")
    try:
        saved = wait_for(lambda: _group_checkpoint(run), 240, "every member's first resume point", proc=victim)
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait(timeout=30)
        assert integrity_ok(run)
        r = cli(*args, "--resume")
        assert r.returncode == 0, r.stderr
        assert reference.wait(timeout=300) == 0
    finally:
        for p in (victim, reference):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
    rows = store_rows(run)
    assert {t["status"] for t in rows} == {"done"} and len(rows) == 4
    for t in rows:
        assert t["summary"]["trainer"] == "packed" and t["attempts"] == 2
        assert t["summary"]["resumed_from_epoch"] >= min(saved.values()) > 0
        names = sorted(p.name for p in (run / "trials" / t["trial_id"]).iterdir() if not p.name.startswith("."))
        assert names == ["final.pt", "final.pt.sha256", "init.pt", "init.pt.sha256"]
    assert duplicate_rows(run) == 0
    pd.testing.assert_frame_equal(table(run), table(ref), check_exact=True)
