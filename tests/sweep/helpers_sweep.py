"""Shared helpers for the sweep tests: tiny configs, the CLI in subprocesses, reading a store.

A plain module rather than a conftest, so that ``tests/conftest.py`` stays the only ``conftest``
module on the path (``tests/test_cli.py`` imports it by that name).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from ddscope.sweep.store import Store
from ddscope.sweep.table import tidy

# The default preset made tiny (1 000 MNIST-1D samples: 250 train / 750 test) and cheap: only the
# Jacobian group, on 32 points per split, at 0, a middle epoch and the last one.
FAST = [
    # Losses/errors after every epoch (the config default; the preset records 60 log-spaced
    # epochs): it also keeps each epoch long enough that the kill/interrupt tests' signals land
    # while a trial is still running.
    "metrics.num_eval_epochs=0",
    "data.num_samples=1000",
    "optim.batch_size=50",
    "metrics.num_log_epochs=3",
    "metrics.jac_samples=32",
    'metrics.groups=["jacobian"]',
    "metrics.sparse_groups=[]",
]


def sets(items) -> list[str]:
    out = []
    for s in items:
        out += ["--set", s]
    return out


def env() -> dict:
    # One torch thread per process: the two cores are shared by concurrent processes, and the
    # numbers of two runs are compared bit for bit (same thread count on both sides).
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _ungrouped(args: tuple) -> tuple:
    """Sweeps run ungrouped here: these tests pin per-trial mechanics (checkpoints, bit-exact
    resume); tests/sweep/test_grouped.py covers vectorised groups."""
    if args and args[0] == "sweep" and not any(a.startswith(("--group", "--no-group")) for a in args):
        return (*args, "--no-group")
    return args


def cli(*args, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ddscope.cli", *_ungrouped(args)], capture_output=True, text=True,
                          env=env(), timeout=timeout)


def _default_signals() -> None:
    # The tests signal the child: it must not inherit an ignored SIGINT/SIGTERM from however the
    # suite itself was started (``nohup ... &`` runs it with SIGINT ignored).
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)


def start(*args, log: Path) -> subprocess.Popen:
    """The CLI in its own session (process group), so a test can signal it with all its workers."""
    return subprocess.Popen([sys.executable, "-m", "ddscope.cli", *_ungrouped(args)], stdout=subprocess.DEVNULL,
                            stderr=open(log, "w"), env=env(), start_new_session=True, preexec_fn=_default_signals)


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


def cli_inline(capsys, *args):
    """``ddscope ARGS`` in this process; returns (exit code, stdout, stderr)."""
    from ddscope.cli import main

    try:
        main(list(args))
        code = 0
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err
