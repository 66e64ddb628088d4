"""The store on real SQLite files: resume skips finished trials, rows are never duplicated,
claims are exclusive, dead holders are reclaimed, corruption is reported."""

import sqlite3
import subprocess
import sys

import pytest

from ddscope.config import load_sweep
from ddscope.errors import UserError
from ddscope.runs.executors import InProcessExecutor
from ddscope.runs.runner import run_sweep
from ddscope.runs.store import Store
from ddscope.report.table import tidy
from ddscope.train import TrialResult


def _sweep(tiny, widths="[3,5]"):
    return load_sweep("mnist1d-mlp", tiny + [f"model.width={widths}"])


def test_resume_skips_finished_trials(tmp_path, tiny_overrides, monkeypatch):
    sweep = _sweep(tiny_overrides, "[3,5,7]")
    run_sweep(sweep, tmp_path, InProcessExecutor(), show_progress=False, group=False)
    store = Store.open(tmp_path)
    first = tidy(store)
    assert store.counts()["done"] == 3
    store.close()

    calls = []
    import ddscope.runs.runner as runner

    real = runner.run_group
    monkeypatch.setattr(runner, "run_group", lambda cfgs, *a: calls.extend(cfgs) or real(cfgs, *a))
    out = run_sweep(sweep, tmp_path, InProcessExecutor(), show_progress=False, group=False)
    assert calls == [] and out.ran == 0
    # Extending the grid runs only the new width.
    run_sweep(_sweep(tiny_overrides, "[3,5,7,9]"), tmp_path, InProcessExecutor(), show_progress=False, group=False)
    assert [c.model.width for c in calls] == [9]
    store = Store.open(tmp_path)
    second = tidy(store)
    n_dupes = store.conn.execute(
        "SELECT count(*) FROM (SELECT trial_id, epoch, metric, count(*) c FROM records GROUP BY 1,2,3 HAVING c > 1)"
    ).fetchone()[0]
    store.close()
    assert n_dupes == 0
    assert len(second) > len(first)
    old = second[second["trial_id"].isin(first["trial_id"])].sort_values(["trial_id", "epoch", "metric"])
    assert old["value"].tolist() == first.sort_values(["trial_id", "epoch", "metric"])["value"].tolist()


def test_finish_never_overwrites_done(tmp_path):
    store = Store.create(tmp_path / "s.sqlite", {})
    store.add_trials([("a", {"seed": 1})])
    r = TrialResult("a", {"seed": 1}, "done", records=[(0, "m", 1.0)])
    assert store.finish(r)
    r2 = TrialResult("a", {"seed": 1}, "done", records=[(0, "m", 2.0)])
    assert not store.finish(r2)
    assert list(store.records()) == [("a", 0, "m", 1.0)]


def test_claims_are_exclusive_and_dead_holders_reclaimed(tmp_path):
    path = tmp_path / "s.sqlite"
    store = Store.create(path, {})
    store.add_trials([(f"t{i}", {"seed": i}) for i in range(4)])
    other = Store.open(path)
    got = [store.claim("me:1:a"), other.claim("you:2:b"), store.claim("me:1:a"), other.claim("you:2:b")]
    assert sorted(g[0] for g in got) == ["t0", "t1", "t2", "t3"]
    assert store.claim("me:1:a") is None
    # A holder on this host whose process is gone is reclaimed at once.
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    import socket

    dead = f"{socket.gethostname()}:{int(proc.stdout)}:zz"
    store.conn.execute("UPDATE trials SET worker=? WHERE trial_id='t0'", (dead,))
    assert store.reclaim(stale_after=1e9) == ["t0"]
    # A silent holder elsewhere is reclaimed once its heartbeat is stale.
    store.conn.execute("UPDATE trials SET worker='otherhost:1:x', heartbeat=0 WHERE trial_id='t1'")
    assert store.reclaim(stale_after=60) == ["t1"]
    assert store.counts() == {"pending": 2, "running": 2, "done": 0, "failed": 0}


def test_corrupted_store_is_reported(tmp_path):
    bad = tmp_path / "store.sqlite"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(UserError, match="corrupted"):
        Store.open(tmp_path)
    other = tmp_path / "o.sqlite"
    sqlite3.connect(other).execute("CREATE TABLE x(a)").connection.commit()
    with pytest.raises(UserError, match="not a ddscope store"):
        Store.open(other)


def test_a_schema_1_store_is_migrated_and_keeps_its_rows(tmp_path):
    """Stores written before trials.unit existed open, gain the column and keep every row."""
    path = tmp_path / "store.sqlite"
    store = Store.create(path, {"sweep": {"name": "old"}})
    store.add_trials([("t0", {"model": {"width": 4}})])
    store.close()
    conn = sqlite3.connect(path)
    conn.execute("ALTER TABLE trials DROP COLUMN unit")
    conn.execute("ALTER TABLE trials DROP COLUMN progress")  # as a version-1 store had neither
    conn.execute("UPDATE meta SET value='1' WHERE key='schema_version'")
    conn.commit()
    conn.close()
    store = Store.open(path)
    assert store.meta("schema_version") == "3" and store.trials()[0]["unit"] is None and store.trials()[0]["progress"] is None
    assert store.claim("w", unit="g")[0] == "t0" and store.trials()[0]["unit"] == "g"
    store.close()
