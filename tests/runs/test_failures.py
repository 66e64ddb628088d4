"""Failures: a diverging trial is marked failed with the reason and epoch, a crashing one with its
traceback, the sweep goes on, ``--retry-failed`` reruns them, ``ddscope status`` shows them; a
corrupted checkpoint stops the sweep with one line and exit 2, losing nothing."""

import os

import pytest

import ddscope.train.members
from ddscope.checkpoint import trial_dir
from ddscope.config import load_sweep
from ddscope.runs.executors import InProcessExecutor, LocalPoolExecutor
from ddscope.runs.runner import WORKER_DEATH_RETRIES, WORKER_DIED, run_sweep
from ddscope.runs.status import status_text
from ddscope.runs.store import Store
from .helpers_sweep import FAST, cli_inline, duplicate_rows, sets, table




def test_divergence_is_marked_failed_with_epoch_and_retried(tmp_path, capsys):
    args = ["sweep", "mnist1d-mlp", *sets(FAST + ["model.width=8", "optim.epochs=3", "optim.lr=[0.01,1e6]"]),
            "--out", str(tmp_path), "--executor", "inprocess", "--no-report", "--quiet"]
    code, _, err = cli_inline(capsys, *args)
    assert code == 1 and "1 done, 1 failed" in err  # exit 1: some trial failed and "diverged: loss became" in err
    store = Store.open(tmp_path)
    (bad,) = store.trials("failed")
    (good,) = store.trials("done")
    store.close()
    assert bad["config"]["optim"]["lr"] == 1e6 and bad["summary"]["failed_epoch"] == 1
    assert "at epoch 1" in bad["error"] and good["config"]["optim"]["lr"] == 0.01
    code, text, _ = cli_inline(capsys, "status", str(tmp_path))
    assert code == 0 and "1 done" in text and "1 failed" in text
    assert f"failed  {bad['trial_id']} lr=1000000.0: diverged: loss became" in text and "at epoch 1" in text
    code, _, err = cli_inline(capsys, *args, "--retry-failed")  # deterministic: it diverges again
    assert code == 1 and "this run: 1" in err and "1 failed" in err


def test_a_sweep_whose_trials_all_failed_exits_1_with_its_report_written(tmp_path, capsys):
    """Regression: every trial failed and ``ddscope sweep`` exited 0, so no script noticed."""
    args = ["sweep", "mnist1d-mlp", *sets(FAST + ["model.width=[6,8]", "optim.epochs=2", "optim.lr=1e6"]),
            "--out", str(tmp_path), "--executor", "inprocess", "--quiet"]
    code, out, err = cli_inline(capsys, *args)
    assert code == 1 and "0 done, 2 failed" in err and "2 trial(s) failed" in err
    assert (tmp_path / "report" / "index.html").is_file() and "report:" in out
    code, _, _ = cli_inline(capsys, *args)  # nothing left to run: the sweep's verdict is still "failed"
    assert code == 1


def test_crash_in_one_trial_stores_its_traceback_and_the_sweep_goes_on(tmp_path, monkeypatch):
    sweep = load_sweep("mnist1d-mlp", FAST + ["model.width=[4,5,6]", "optim.epochs=2"])
    real = ddscope.train.members.make_model

    def flaky(cfg, *a):
        if cfg.width == 5:
            raise RuntimeError("boom: width 5")
        return real(cfg, *a)

    monkeypatch.setattr(ddscope.train.members, "make_model", flaky)
    out = run_sweep(sweep, tmp_path, InProcessExecutor(), show_progress=False, group=False)
    assert out.counts == {"pending": 0, "running": 0, "done": 2, "failed": 1}
    assert out.failed[0][1] == "RuntimeError: boom: width 5"
    store = Store.open(tmp_path)
    (failed,) = store.trials("failed")
    store.close()
    assert failed["error"].startswith("Traceback") and "in flaky" in failed["error"]
    assert "RuntimeError: boom: width 5" in status_text(tmp_path)

    monkeypatch.undo()  # the bug is fixed: --retry-failed runs only that trial
    out = run_sweep(sweep, tmp_path, InProcessExecutor(), retry_failed=True, show_progress=False, group=False)
    assert out.ran == 1 and out.counts["done"] == 3


class _KillsOneWorker(LocalPoolExecutor):
    """The trial of width 5 takes its worker process down (as the OOM killer would)."""

    def submit(self, fn, *args):
        if args and any(c["model"]["width"] == 5 for c in args[0]):  # the job's first argument: its configs
            return super().submit(os._exit, 9)
        return super().submit(fn, *args)


def test_a_trial_that_kills_its_worker_every_time_fails_after_its_retries_and_the_pool_is_replaced(tmp_path):
    sweep = load_sweep("mnist1d-mlp", FAST + ["model.width=[4,5,6]", "optim.epochs=2"])
    out = run_sweep(sweep, tmp_path, _KillsOneWorker(max_workers=1, threads_per_worker=1), show_progress=False, group=False)
    assert out.counts == {"pending": 0, "running": 0, "done": 2, "failed": 1}
    store = Store.open(tmp_path)
    (failed,) = store.trials("failed")
    store.close()
    assert failed["config"]["model"]["width"] == 5 and failed["error"] == WORKER_DIED
    assert failed["attempts"] == WORKER_DEATH_RETRIES


class _KillsOnce(LocalPoolExecutor):
    """The first job of width 5 takes its worker down once (a stray kill); later ones run."""

    killed = False

    def submit(self, fn, *args):
        if not self.killed and args and any(c["model"]["width"] == 5 for c in args[0]):
            self.killed = True
            return super().submit(_die_later, 9)
        return super().submit(fn, *args)


def _die_later(code):
    import time

    time.sleep(1.0)  # the other worker's trial is running by now: it breaks with the pool
    os._exit(code)


def test_a_killed_worker_requeues_the_trials_of_its_pool_and_they_finish(tmp_path):
    sweep = load_sweep("mnist1d-mlp", FAST + ["model.width=[4,5,6,7]", "optim.epochs=3"])
    out = run_sweep(sweep, tmp_path, _KillsOnce(max_workers=2, threads_per_worker=1), show_progress=False, group=False)
    assert out.counts == {"pending": 0, "running": 0, "done": 4, "failed": 0}
    store = Store.open(tmp_path)
    attempts = {t["config"]["model"]["width"]: t["attempts"] for t in store.trials()}
    store.close()
    assert attempts[5] == 2 and max(attempts.values()) <= 2 and duplicate_rows(tmp_path) == 0


def test_corrupted_checkpoint_stops_the_sweep_with_exit_2(tmp_path, capsys):
    args = ["sweep", "mnist1d-mlp", *sets(FAST + ["model.width=[4,8]", "optim.epochs=2"]),
            "--out", str(tmp_path), "--executor", "inprocess", "--no-report", "--quiet", "--no-group"]
    assert cli_inline(capsys, *args)[0] == 0
    before = table(tmp_path)
    store = Store.open(tmp_path)
    tid = store.trials()[1]["trial_id"]
    # As if the driver had died after the trial finished but before storing it.
    store.conn.execute("UPDATE trials SET status='pending' WHERE trial_id=?", (tid,))
    store.conn.execute("DELETE FROM records WHERE trial_id=?", (tid,))
    store.close()
    final = trial_dir(tmp_path, tid) / "final.pt"
    final.write_bytes(final.read_bytes()[:-64])  # truncated
    code, _, err = cli_inline(capsys, *args)
    assert code == 2
    lines = [ln for ln in err.splitlines() if ln.startswith("ddscope: error")]
    assert lines == [f"ddscope: error: checkpoint {final} is corrupted: checksum mismatch"]
    store = Store.open(tmp_path)
    assert {t["trial_id"]: t["status"] for t in store.trials()}[tid] == "pending"  # handed back
    store.close()
    kept = table(tmp_path)
    assert kept.equals(before[before["trial_id"] != tid].reset_index(drop=True))  # nothing lost


@pytest.mark.parametrize("args, needle", [
    (["sweep", "mnist1d-mlp", "--address", "auto"], "--address needs --executor ray"),
    (["sweep", "mnist1d-mlp", "--gpus-per-trial", "1"], "--gpus-per-trial needs --executor ray, slurm or submitit-local"),
    (["sweep", "mnist1d-mlp", "--set", "checkpoint.every_epochs=-1"], "checkpoint.every_epochs"),
    (["sweep", "mnist1d-mlp", "--set", "checkpoint.epochs=[1,2]", "--set", "device=[\"cpu\",\"auto\"]"],
     "cannot be a grid axis"),
])
def test_bad_sweep_options_exit_2(tmp_path, capsys, args, needle):
    code, _, err = cli_inline(capsys, *args, "--out", str(tmp_path / "x"))
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()
