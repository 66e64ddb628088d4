"""Slurm through submitit, tested on submitit's local executor (the same code path): a sweep
gives the in-process table, and a job preempted mid-trial is requeued and resumes from its
checkpoint to the numbers of an uninterrupted run."""

from __future__ import annotations

import pandas as pd
import pytest

from ddscope.config import load_sweep
from ddscope.runs.executors import InProcessExecutor, SubmititExecutor
from ddscope.runs.runner import _job, run_sweep
from ddscope.train import run_trial

from ..clirun import cli
from ..tiny import tiny
from .helpers_sweep import FAST, sets, store_rows, table, wait_for

pytest.importorskip("submitit", reason="pip install 'ddscope[slurm]'")


def test_submitit_local_sweep_gives_the_in_process_table(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the jobs' threads, as this process's (bit-equal numbers)
    sweep = load_sweep("mnist1d-mlp", FAST + ["model.width=[4,6]", "seed=[0,1]", "optim.epochs=3"])
    run_sweep(sweep, tmp_path / "a", InProcessExecutor(), show_progress=False)
    run_sweep(sweep, tmp_path / "b", SubmititExecutor(tmp_path / "jobs", "local", 2), show_progress=False)
    pd.testing.assert_frame_equal(table(tmp_path / "a"), table(tmp_path / "b"), check_exact=True)
    assert any((tmp_path / "jobs").glob("*_result.pkl"))  # they ran as submitit jobs


def _job_processes(controller_pid: int) -> list[int]:
    """The python processes under submitit's local controller (the job itself)."""
    import os

    out = []
    for stat in os.listdir("/proc"):
        if stat.isdigit():
            try:
                fields = open(f"/proc/{stat}/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == controller_pid:
                out.append(int(stat))
    return out


def test_a_job_killed_mid_trial_is_submitted_again_and_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    import os
    import signal

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    cfg = tiny(**{"model.width": 256, "optim.epochs": 200, "checkpoint.every_epochs": 2,
                  "checkpoint.every_minutes": 0.0})
    want = run_trial(cfg)
    ex = SubmititExecutor(tmp_path / "jobs", "local", 1)
    folder = tmp_path / cfg.trial_id
    fut = ex.submit(_job, [cfg.to_dict()], [str(folder)])
    first = ex.jobs[fut]
    wait_for(lambda: any(folder.glob("epoch_*.pt.sha256")), 120, "the job's first resume point")
    victims = _job_processes(first._process.pid) or [first._process.pid]
    for pid in victims:  # as the OOM killer or a node failure would
        os.kill(pid, signal.SIGKILL)
    (got,) = fut.result(timeout=300)
    assert got.status == "done" and got.summary["resumed_from_epoch"] >= 2
    assert got.records == want.records  # equal to a run never stopped


def test_cli_submitit_local_runs_a_sweep_to_completion(tmp_path):
    r = cli("sweep", "mnist1d-mlp", *sets(FAST + ["model.width=[4,8]", "optim.epochs=2"]), "--out", str(tmp_path / "r"),
            "--executor", "submitit-local", "--workers", "2", "--no-report")
    assert r.returncode == 0, r.stderr
    assert {t["status"] for t in store_rows(tmp_path / "r")} == {"done"}
    assert any((tmp_path / "r" / "submitit").glob("*_result.pkl"))
    bad = cli("sweep", "mnist1d-mlp", "--out", str(tmp_path / "x"), "--partition", "gpu")
    assert bad.returncode == 2 and "--partition needs --executor slurm" in bad.stderr
    import shutil

    if shutil.which("sbatch") is None:  # no Slurm here: one line, nothing written
        bad = cli("sweep", "mnist1d-mlp", *sets(FAST), "--out", str(tmp_path / "y"), "--executor", "slurm")
        assert bad.returncode == 2 and "needs Slurm (sbatch is not on PATH)" in bad.stderr
        assert not (tmp_path / "y").exists()
