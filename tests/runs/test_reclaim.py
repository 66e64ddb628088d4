"""Holders of running trials: a dead or silent one loses its trials, a live one keeps them; the
driver's heartbeat thread keeps a long in-process trial alive."""

import socket
import subprocess
import sys
import time

from ddscope.config import load_sweep
from ddscope.runs import runner
from ddscope.runs.executors import InProcessExecutor
from ddscope.runs.runner import run_sweep
from ddscope.runs.status import status_text
from ddscope.runs.store import Store
from .helpers_sweep import FAST


def _sweep(widths="[4,6,8]"):
    return load_sweep("mnist1d-mlp", FAST + [f"model.width={widths}", "optim.epochs=2"])


def _hold(store, tid, worker, heartbeat):
    store.conn.execute("UPDATE trials SET status='running', worker=?, heartbeat=? WHERE trial_id=?",
                       (worker, heartbeat, tid))


def test_stale_and_dead_holders_are_reclaimed_live_ones_are_not(tmp_path):
    sweep = _sweep()
    stale, live, dead = [t.trial_id for t in sweep.trials()]
    store = Store.create(tmp_path / "store.sqlite", sweep.to_dict())
    store.add_trials((t.trial_id, t.to_dict()) for t in sweep.trials())
    host, now = socket.gethostname(), time.time()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    gone = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)
    try:
        _hold(store, stale, "otherhost:1:aaaaaa", now - 3600)  # another machine, silent for an hour
        _hold(store, live, f"{host}:{sleeper.pid}:bbbbbb", now)  # a live process here
        _hold(store, dead, f"{host}:{gone}:cccccc", now)  # a process here that no longer exists
        store.close()

        out = run_sweep(sweep, tmp_path, InProcessExecutor(), show_progress=False, group=False)
        assert out.ran == 2
        store = Store.open(tmp_path)
        states = {t["trial_id"]: (t["status"], t["worker"]) for t in store.trials()}
        store.close()
        assert states[stale][0] == states[dead][0] == "done"
        assert states[live] == ("running", f"{host}:{sleeper.pid}:bbbbbb")
        text = status_text(tmp_path)
        assert "2 done" in text and f"running {live}" in text and str(sleeper.pid) in text
    finally:
        sleeper.kill()
        sleeper.wait()
    out = run_sweep(sweep, tmp_path, InProcessExecutor(), show_progress=False, group=False)  # its holder is gone now
    assert out.ran == 1 and out.counts["done"] == 3


def test_heartbeat_runs_while_a_trial_trains_in_process(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "HEARTBEAT_S", 0.05)
    seen = []
    real = runner.run_group

    def slow_trial(cfgs, *rest):
        probe = Store.open(tmp_path)  # what another sweep process would see
        before = probe.trials("running")[0]["heartbeat"]
        time.sleep(0.5)  # one long epoch, no progress callback
        after = probe.trials("running")[0]["heartbeat"]
        probe.close()
        seen.append((before, after))
        return real(cfgs, *rest)

    monkeypatch.setattr(runner, "run_group", slow_trial)
    run_sweep(_sweep("[4]"), tmp_path, InProcessExecutor(), show_progress=False, group=False)
    (before, after), = seen
    assert after > before
