"""SIGKILL a real sweep driver in the middle of a trial, rerun the same command, and get exactly the
table of an uninterrupted sweep: same rows, same values, none twice; the trials that were running
continue from their last checkpoints instead of starting again, and the orphaned pool workers
exit by themselves."""

import os
import signal
import threading
import time

import pandas as pd

from ddscope.config import load_sweep
from ddscope.runs.executors import InProcessExecutor
from ddscope.runs.runner import run_sweep
from .helpers_sweep import (FAST, cli, duplicate_rows, group_alive, integrity_ok, sets, start, store_rows, table,
                           wait_for)

ARGS = FAST + ["model.width=[32,64,96,128]", "optim.epochs=40", "checkpoint.every_epochs=10"]


def _sweep_args(out):
    # Two pool workers of one torch thread each (OMP_NUM_THREADS=1), like this test process.
    return ["sweep", "mnist1d-mlp", *sets(ARGS), "--out", str(out), "--workers", "2", "--no-report", "--quiet"]


def _mid_trial(run_dir):
    """(done ids, {running id: epoch of its latest complete checkpoint}) once one trial is done and
    another has a mid-training checkpoint; None before."""
    rows = store_rows(run_dir)
    done = [r["trial_id"] for r in rows if r["status"] == "done"]
    ckpts = {}
    for r in rows:
        if r["status"] == "running":
            sides = sorted((run_dir / "trials" / r["trial_id"]).glob("epoch_*.pt.sha256"))
            if sides:
                ckpts[r["trial_id"]] = int(sides[-1].name[6:11])
    return (done, ckpts) if done and ckpts else None


def test_sigkill_mid_trial_then_resume_equals_uninterrupted(tmp_path):
    run, ref = tmp_path / "run", tmp_path / "ref"
    t0 = time.time()
    victim = start(*_sweep_args(run), log=tmp_path / "run.log")
    # The uninterrupted sweep, in this process (one torch thread) while the victim starts up.
    reference = threading.Thread(target=run_sweep, args=(load_sweep("mnist1d-mlp", ARGS), ref, InProcessExecutor()),
                                 kwargs={"show_progress": False, "group": False})
    reference.start()
    done_before, ckpts = wait_for(lambda: _mid_trial(run), 240, "a done trial and a running one with a checkpoint",
                                  proc=victim)
    try:
        os.kill(victim.pid, signal.SIGKILL)  # the driver only, as the OOM killer would
        assert victim.wait(timeout=30) == -signal.SIGKILL
        t_kill = time.time() - t0
        wait_for(lambda: not group_alive(victim.pid), 15, "the pool workers to exit after their driver")
        t_orphans = time.time() - t0
    finally:
        if group_alive(victim.pid):
            os.killpg(victim.pid, signal.SIGKILL)

    assert integrity_ok(run)
    states = {r["trial_id"]: r["status"] for r in store_rows(run)}
    assert "running" in states.values(), states  # the kill left trials held by a dead driver
    interrupted = {t: e for t, e in ckpts.items() if states[t] == "running"}
    assert interrupted, (states, ckpts)

    r = cli(*_sweep_args(run), "--resume")  # the same command: dead holders' trials are reclaimed
    assert r.returncode == 0, r.stderr
    t_resumed = time.time() - t0
    reference.join(timeout=240)
    t_total = time.time() - t0

    rows = {t["trial_id"]: t for t in store_rows(run)}
    assert {t["status"] for t in rows.values()} == {"done"} and len(rows) == 4
    for tid in done_before:  # finished work was kept, not redone
        assert rows[tid]["attempts"] == 1 and rows[tid]["summary"]["resumed_from_epoch"] is None
    for tid, epoch in interrupted.items():  # continued from its checkpoint, not from scratch
        assert rows[tid]["attempts"] == 2
        assert rows[tid]["summary"]["resumed_from_epoch"] >= epoch > 0
    assert duplicate_rows(run) == 0
    a, b = table(run), table(ref)
    assert len(a) == len(b) > 0
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    for tid in rows:  # every trial kept θ⁰ and its final weights, and no rolling checkpoint
        names = sorted(p.name for p in (run / "trials" / tid).iterdir())
        names = [n for n in names if not n.startswith(".")]  # a SIGKILL may leave a temporary file
        assert names == ["final.pt", "final.pt.sha256", "init.pt", "init.pt.sha256"]
    print(f"killed after {t_kill:.1f} s with {len(done_before)} done, workers gone at {t_orphans:.1f} s, "
          f"resumed from epochs {sorted(interrupted.values())}, resume done at {t_resumed:.1f} s, "
          f"reference at {t_total:.1f} s")
