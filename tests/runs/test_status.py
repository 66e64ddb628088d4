"""``ddscope status``: a dead driver's trials say their holder is gone, and the ETA counts a
vectorised group as one unit that finishes together."""

from __future__ import annotations

import socket
import subprocess
import time

import pytest

from ddscope.runs.status import eta_seconds, status_text
from ddscope.runs.store import Store


def _store(tmp_path, n: int) -> Store:
    store = Store.create(tmp_path / "store.sqlite", {})
    store.add_trials((f"t{i}", {"model": {"width": i}}) for i in range(n))
    return store


def _set(store, tid, **cols):
    sets = ", ".join(f"{k}=?" for k in cols)
    store.conn.execute(f"UPDATE trials SET {sets} WHERE trial_id=?", (*cols.values(), tid))


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_a_dead_drivers_running_trial_says_its_holder_is_gone(tmp_path):
    store = _store(tmp_path, 2)
    now = time.time()
    dead = f"{socket.gethostname()}:{_dead_pid()}:abc"
    _set(store, "t0", status="running", worker=dead, heartbeat=now - 3, started=now - 5)
    _set(store, "t1", status="running", worker=f"{socket.gethostname()}:1:abc", heartbeat=now - 3, started=now - 5)
    store.close()
    text = status_text(tmp_path)
    (line0,) = [ln for ln in text.splitlines() if ln.startswith("running t0")]
    (line1,) = [ln for ln in text.splitlines() if ln.startswith("running t1")]
    assert "holder gone" in line0 and "has exited" in line0
    assert "holder gone" not in line1 and "heartbeat 3 s ago" in line1  # pid 1 is alive


def test_a_silent_remote_holder_is_flagged(tmp_path):
    store = _store(tmp_path, 1)
    now = time.time()
    _set(store, "t0", status="running", worker="elsewhere:123:abc", heartbeat=now - 4000, started=now - 5000)
    store.close()
    assert "holder silent for 4000 s" in status_text(tmp_path)


def _trials(done, running, pending, *, wall, group=None, started):
    out = [dict(trial_id=f"d{i}", status="done", worker=None, heartbeat=None, started=None, unit=None,
                summary={"wall_s": wall}) for i in range(done)]
    alive = f"{socket.gethostname()}:1:abc"
    out += [dict(trial_id=f"r{i}", status="running", worker=alive, heartbeat=started, started=started,
                 unit=group if group else None, summary={}) for i in range(running)]
    out += [dict(trial_id=f"p{i}", status="pending", worker=None, heartbeat=None, started=None, unit=None,
                 summary={}) for i in range(pending)]
    return out


def test_eta_of_a_group_that_finishes_together():
    """Regression: 8 trials of one vectorised group, each carrying 11 s of the group's 88 s, were
    given an ETA of 11 s (mean per trial × left / running) right after the group started."""
    now = time.time()
    trials = _trials(8, 8, 0, wall=11.0, group="r0", started=now)
    assert eta_seconds(trials, now) == pytest.approx(88.0, abs=0.5)
    assert eta_seconds(trials, now + 44) == pytest.approx(44.0, abs=0.5)


def test_eta_of_single_trials_on_two_workers():
    now = time.time()
    trials = _trials(2, 2, 4, wall=10.0, started=now)  # 2 slots: 10 s each left, then 4 × 10 s over 2
    assert eta_seconds(trials, now) == pytest.approx(30.0, abs=0.5)
    assert eta_seconds(_trials(0, 2, 4, wall=10.0, started=now), now) is None  # nothing done: no estimate


def test_an_eta_before_any_trial_finishes_from_the_running_trials_progress(tmp_path):
    store = _store(tmp_path, 4)
    now = time.time()
    alive = f"{socket.gethostname()}:1:abc"  # pid 1 is alive
    for tid in ("t0", "t1"):  # one vectorised unit of 2, half-way after 100 s: 100 s of worker time per trial
        _set(store, tid, status="running", worker=alive, heartbeat=now, started=now - 100, unit="t0", progress=0.5)
    trials = store.trials()
    # the unit needs 2·100 − 100 = 100 s more; the 2 pending ones 200 s on the one slot
    assert eta_seconds(trials, now) == pytest.approx(300, rel=1e-6)
    store.close()
    assert "ETA ≈ 5m00s (4 left" in status_text(tmp_path) or "ETA ≈ 4m59s (4 left" in status_text(tmp_path)


def test_the_driver_writes_each_running_trials_progress_with_its_heartbeat(tmp_path):
    from ddscope.runs.heartbeat import Heartbeat

    store = _store(tmp_path, 1)
    assert store.claim("me:1:a")[0] == "t0"
    beat = Heartbeat(store.path, "me:1:a", 0.05)
    beat.add("t0")
    beat.progress("t0", 0.25)
    time.sleep(0.5)
    beat.stop()
    assert store.trials()[0]["progress"] == 0.25
    store.close()
