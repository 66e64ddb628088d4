"""Ctrl-C (SIGINT) and SIGTERM stop a sweep cleanly: exit 130 / 143, running trials handed back
to the store (none left "running"), workers stopped, no process left, the store intact, and a
rerun resumes the interrupted trial from its checkpoint."""

import os
import signal
import time

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


def test_a_second_ctrl_c_while_stopping_leaves_no_traceback(tmp_path):
    """Regression: a double Ctrl-C printed a traceback from atexit callbacks."""
    run = tmp_path / "run"
    args = ["sweep", "mnist1d-mlp", *sets(ARGS), "--out", str(run), "--workers", "2", "--no-report", "--quiet"]
    proc = start(*args, log=tmp_path / "log")
    try:
        wait_for(lambda: _running_with_checkpoint(run), 120, "a running trial with a checkpoint", proc=proc)
        os.kill(proc.pid, signal.SIGINT)
        for _ in range(5):  # impatient presses while the workers are being stopped
            if proc.poll() is not None:
                break
            os.kill(proc.pid, signal.SIGINT)
            time.sleep(0.05)
        assert proc.wait(timeout=60) == 130
        wait_for(lambda: not group_alive(proc.pid), 15, "no process of the sweep left")
    finally:
        if group_alive(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
    log = (tmp_path / "log").read_text()
    assert "interrupted" in log and "Traceback" not in log and "Exception ignored" not in log, log
    assert "running" not in {r["status"] for r in store_rows(run)}


def test_sigterm_during_the_report_keeps_the_previous_one_whole(tmp_path):
    """Regression: SIGTERM while the report was written left it half written, with no message."""
    run = tmp_path / "run"
    r = cli("sweep", "mnist1d-mlp", *sets(FAST + ["model.width=[4,6,8]", "optim.epochs=2"]), "--out", str(run),
            "--executor", "inprocess", "--quiet")
    assert r.returncode == 0, r.stderr
    before = {p.name: p.read_bytes() for p in (run / "report").iterdir()}
    proc = start("report", str(run), log=tmp_path / "log")
    try:
        wait_for(lambda: list(run.glob(".report.*.tmp")), 120, "the report being written", proc=proc)
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=60) == 143
    finally:
        if group_alive(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
    log = (tmp_path / "log").read_text()
    assert "interrupted" in log and "previous one is intact" in log and "Traceback" not in log, log
    assert {p.name: p.read_bytes() for p in (run / "report").iterdir()} == before
    assert not list(run.glob(".report.*"))  # no half-written folder left behind


def test_ctrl_c_after_the_last_trial_still_writes_the_report(tmp_path, monkeypatch, capsys):
    """Regression: a Ctrl-C that came after every trial had finished skipped the report."""
    import ddscope.runs.runner as runner

    from .helpers_sweep import cli_inline

    real = runner.run_sweep

    def finish_then_interrupt(*a, **kw):
        real(*a, **kw)
        raise KeyboardInterrupt  # e.g. pressed while the pool shut down

    monkeypatch.setattr(runner, "run_sweep", finish_then_interrupt)
    run = tmp_path / "run"
    code, out, err = cli_inline(capsys, "sweep", "mnist1d-mlp", *sets(FAST + ["model.width=[4,6]", "optim.epochs=2"]),
                                "--out", str(run), "--executor", "inprocess", "--quiet")
    assert code == 130 and "after every trial finished" in err
    assert (run / "report" / "index.html").is_file()
