"""Shared helpers for the sweep tests: the tiny sweep, the CLI (ungrouped by default: these tests
pin per-trial mechanics such as bit-exact resume), reading a store, processes.

A plain module rather than a conftest, so that ``tests/conftest.py`` stays the only ``conftest``
module on the path.
"""

from __future__ import annotations

import functools
import subprocess
import os
import sqlite3
import time
from pathlib import Path

import pandas as pd

from ddscope.runs.store import Store
from ddscope.report.table import tidy

from .. import clirun
from ..clirun import cli_inline, env
from ..tiny import overrides, sets

# The tiny trial with only the Jacobian group, at 0, two middle epochs and the last; losses and
# errors after every epoch (the config default; the preset records 60 log-spaced epochs), which
# also keeps each epoch long enough that the kill/interrupt tests' signals land while a trial
# is still running. Tests set optim.epochs and the grid after it.
FAST = overrides(**{"metrics.num_eval_epochs": 0, "metrics.num_log_epochs": 3, "metrics.groups": ["jacobian"]})

cli = functools.partial(clirun.cli, ungrouped=True)
start = functools.partial(clirun.start, ungrouped=True)


def pool_workers(pid: int) -> list[int]:
    """Pids of the spawned pool workers whose parent is ``pid`` (not the resource tracker)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmd = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == pid and b"spawn_main" in cmd and b"resource_tracker" not in cmd:
            out.append(int(stat.parent.name))
    return out


def store_rows(run_dir: Path) -> list[dict]:
    """Trials of the store read with a plain connection (the driver may be writing)."""
    path = Path(run_dir) / "store.sqlite"
    if not path.exists():
        return []
    try:
        store = Store.open(path)
    except Exception:  # noqa: BLE001 — not created yet
        return []
    try:
        return store.trials()
    except sqlite3.OperationalError:
        return []
    finally:
        store.close()


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None):
    """Poll ``predicate()`` every 20 ms until it returns something truthy."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        got = predicate()
        if got:
            return got
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the sweep exited ({proc.returncode}) before: {what}")
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for: {what}")


def table(run_dir: Path) -> pd.DataFrame:
    store = Store.open(run_dir)
    try:
        df = tidy(store)
    finally:
        store.close()
    return df.sort_values(["trial_id", "epoch", "metric"]).reset_index(drop=True)


def duplicate_rows(run_dir: Path) -> int:
    store = Store.open(run_dir)
    try:
        return store.conn.execute(
            "SELECT count(*) FROM (SELECT trial_id, epoch, metric, count(*) c FROM records "
            "GROUP BY 1, 2, 3 HAVING c > 1)"
        ).fetchone()[0]
    finally:
        store.close()


def integrity_ok(run_dir: Path) -> bool:
    conn = sqlite3.connect(Path(run_dir) / "store.sqlite")
    try:
        return conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()


def group_alive(pgid):
    """Whether a live (not zombie) process of the process group ``pgid`` remains."""
    proc = Path("/proc")
    if not proc.is_dir():  # not Linux: signal 0 (counts zombies, good enough elsewhere)
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        return True
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "pid (comm)"
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


__all__ = ["FAST", "cli", "cli_inline", "duplicate_rows", "env", "group_alive", "integrity_ok", "pool_workers",
           "sets", "start", "store_rows", "table", "wait_for"]
