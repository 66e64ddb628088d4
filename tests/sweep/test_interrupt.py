"""Ctrl-C (SIGINT) and SIGTERM stop a sweep cleanly: exit 130 / 143, running trials handed back
to the store (none left "running"), workers stopped, no process left, the store intact, and a
rerun resumes the interrupted trial from its checkpoint."""

import os
import signal

import pytest

from .helpers_sweep import FAST, cli, duplicate_rows, group_alive, integrity_ok, sets, start, store_rows, wait_for

ARGS = FAST + ["model.width=[64,128]", "optim.epochs=80", "checkpoint.every_epochs=5"]


def _running_with_checkpoint(run_dir):
    for r in store_rows(run_dir):
        if r["status"] == "running" and list((run_dir / "trials" / r["trial_id"]).glob("epoch_*.pt.sha256")):
            return r["trial_id"]
    return None


@pytest.mark.parametrize("executor, sig, code, resume", [
    ("local", signal.SIGINT, 130, True),  # Ctrl-C on the default pool: workers stopped, then resumed
    ("inprocess", signal.SIGTERM, 143, False),  # a preemption while the trial runs in the driver
], ids=["sigint-local", "sigterm-inprocess"])
def test_signal_stops_cleanly_and_resumes(tmp_path, executor, sig, code, resume):
    run = tmp_path / "run"
    args = ["sweep", "mnist1d-mlp", *sets(ARGS), "--out", str(run), "--executor", executor, "--workers", "1",
            "--no-report", "--quiet"]
    proc = start(*args, log=tmp_path / "log")
    try:
        tid = wait_for(lambda: _running_with_checkpoint(run), 120, "a running trial with a checkpoint", proc=proc)
        os.kill(proc.pid, sig)  # the driver only: it stops its own workers
        assert proc.wait(timeout=60) == code
        wait_for(lambda: not group_alive(proc.pid), 15, "no process of the sweep left")
    finally:
        if group_alive(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
    log = (tmp_path / "log").read_text()
    assert "interrupted" in log and "Traceback" not in log, log

    assert integrity_ok(run)
    states = {r["trial_id"]: r["status"] for r in store_rows(run)}
    assert "running" not in states.values() and states[tid] == "pending", states

    if not resume:
        return
    r = cli(*[a if a != "local" else "inprocess" for a in args])  # any executor resumes from checkpoints
    assert r.returncode == 0, r.stderr
    rows = {t["trial_id"]: t for t in store_rows(run)}
    assert {t["status"] for t in rows.values()} == {"done"}
    assert rows[tid]["summary"]["resumed_from_epoch"] >= 5  # from its checkpoint, not from scratch
    assert duplicate_rows(run) == 0
