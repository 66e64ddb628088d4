"""No process of a sweep outlives its driver (DESIGN.md §4), whenever the driver dies: a driver
SIGKILLed at many moments while its pool workers start up leaves no worker behind.

Regression: a worker took the driver's pid from ``os.getppid()`` in its initializer, which is
already 1 when the driver died first, so 8 of 8 such kills left workers training on as orphans."""

from __future__ import annotations

import os
import signal
import sys
import time

import pytest

from .helpers_sweep import FAST, group_alive, pool_workers, sets, start, wait_for

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

# Seconds between the first pool worker appearing and the SIGKILL: from "still importing torch"
# to "initialised and training".
DELAYS = (0.0, 0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 0.8, 1.2, 2.0)


def test_no_worker_outlives_a_driver_killed_during_worker_start_up(tmp_path):
    left = []
    for i, delay in enumerate(DELAYS):
        run = tmp_path / f"run{i}"
        proc = start("sweep", "mnist1d-mlp", *sets(FAST + ["model.width=[4,6,8]", "optim.epochs=200"]),
                     "--out", str(run), "--workers", "2", "--no-report", "--quiet", log=tmp_path / f"log{i}")
        wait_for(lambda: pool_workers(proc.pid), 120, "a pool worker", proc=proc)
        if _outlived(proc, delay, grace=10):
            left.append(delay)
    assert not left, f"workers outlived their driver when it was killed {left} s after they appeared"


def _outlived(proc, delay: float, grace: float) -> bool:
    """SIGKILL the driver alone ``delay`` s from now; whether any process of its group is still
    alive ``grace`` s later (they must notice by themselves). The group is killed either way."""
    try:
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.time() + grace
        while group_alive(proc.pid) and time.time() < deadline:
            time.sleep(0.05)
        return group_alive(proc.pid)
    finally:
        if proc.poll() is None:
            proc.kill()
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # never leave a stray process behind the test
        except ProcessLookupError:
            pass


SCRIPT = """
from ddscope.config import load_sweep
from ddscope.runs.executors import LocalPoolExecutor
from ddscope.runs.runner import run_sweep
s = load_sweep("mnist1d-mlp", ["model.width=[4,6,8,10]", "optim.epochs=30", "data.num_samples=400",
                               "metrics.groups=[]", "metrics.sparse_groups=[]"])
run_sweep(s, {run!r}, LocalPoolExecutor(2), show_progress=False, group=False)
"""


def test_a_script_without_a_main_guard_is_told_why_its_workers_die(tmp_path):
    """Regression: spawned workers re-import the main script; without the guard they die while
    starting and every trial was failed as "killed, or out of memory?"."""
    import subprocess

    from .helpers_sweep import env

    script = tmp_path / "my_sweep.py"
    script.write_text(SCRIPT.format(run=str(tmp_path / "run")))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env(), timeout=300)
    assert out.returncode != 0
    assert f"{script} has no `if __name__ == \"__main__\":` guard" in out.stderr, out.stderr[-2000:]
    assert "out of memory" not in out.stderr


def test_no_submitit_local_job_outlives_a_killed_driver(tmp_path):
    pytest.importorskip("submitit")
    left = []
    for i, delay in enumerate((0.0, 3.0)):
        run = tmp_path / f"run{i}"
        # long trials: a job that outlived the driver would still be training 15 s after the kill
        proc = start("sweep", "mnist1d-mlp", *sets(FAST + ["model.width=[4,6,8]", "optim.epochs=3000"]),
                     "--out", str(run), "--executor", "submitit-local", "--workers", "2", "--no-report", "--quiet",
                     log=tmp_path / f"log{i}")
        wait_for(lambda: list(run.glob("submitit/*_submitted.pkl")) or list(run.glob("submitit/*/*")), 120,
                 "a submitted job", proc=proc)
        if _outlived(proc, delay, grace=15):
            left.append(delay)
    assert left == [], f"submitit jobs outlived a driver killed {left} s after the first submission"
