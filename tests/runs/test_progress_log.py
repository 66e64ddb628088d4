"""A sweep whose output goes to a file (a batch job, ``nohup``) writes plain progress lines
there: at a steady interval and whenever a trial finishes, with no control characters.
Regression: such a log held one header line until the sweep ended."""

from __future__ import annotations

import re

import pytest

from .helpers_sweep import FAST, cli, sets


def test_progress_lines_in_a_log_file(tmp_path):
    r = cli("sweep", "mnist1d-mlp", *sets(FAST + ["model.width=[4,6,8]", "optim.epochs=20"]), "--out",
            str(tmp_path / "run"), "--executor", "inprocess", "--no-report", "--progress-interval", "0.2")
    assert r.returncode == 0, r.stderr
    log = r.stderr  # captured through a pipe: not a terminal
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", log), repr(log[:500])  # no escapes, no \r
    lines = [ln for ln in log.splitlines() if ln.startswith("progress: ")]
    assert len(lines) >= 3 and lines[-1].startswith("progress: 3/3 trials done, 0 running, epochs 60/60 (100 %)")
    finished = [ln for ln in lines if "last finished: " in ln]
    assert len({ln.split("last finished: ")[1] for ln in finished}) == 3  # a line per finished trial
    assert all(re.search(r"last finished: width=\d+ \(test error 0\.\d{3}\)$", ln) for ln in finished)
    assert any("ETA " in ln for ln in lines)
    assert cli("sweep", "mnist1d-mlp", *sets(FAST + ["model.width=[4,6,8]", "optim.epochs=20"]), "--out",
               str(tmp_path / "run"), "--quiet").stderr.count("progress:") == 0  # --quiet: none


class _Recorder:
    """Stands for the progress display: what the driver feeds it."""

    def __init__(self, *a, **k):
        self.errors_seen: list[tuple] = []
        self.epochs_seen: list[tuple] = []

    def start(self, tid, label, epochs):
        pass

    def epoch(self, tid, epoch):
        self.epochs_seen.append((tid, epoch))

    def errors(self, tid, train, test):
        self.errors_seen.append((tid, train, test))

    def tick(self):
        pass

    def finish(self, *a):
        pass

    def stop(self):
        pass



@pytest.mark.parametrize("executor", ["inprocess", "local"])
def test_running_trials_report_their_train_and_test_error_to_the_display(tmp_path, monkeypatch, executor):
    from ddscope.config import load_sweep
    from ddscope.runs import runner
    from ddscope.runs.executors import InProcessExecutor, LocalPoolExecutor
    from ddscope.report.table import load

    rec = _Recorder()
    monkeypatch.setattr(runner, "make_progress", lambda *a, **k: rec)
    ex = InProcessExecutor() if executor == "inprocess" else LocalPoolExecutor(1, threads_per_worker=1)
    runner.run_sweep(load_sweep("mnist1d-mlp", FAST + ["model.width=[4,8]", "optim.epochs=3"]), tmp_path, ex)
    stored = load(tmp_path)
    final = stored[(stored["epoch"] == 3) & (stored["metric"] == "err/test")].set_index("trial_id")["value"]
    last = {tid: (tr, te) for tid, tr, te in rec.errors_seen}  # the last report of each trial
    assert set(last) == set(final.index)
    for tid, (train, test) in last.items():
        assert test == pytest.approx(final[tid]) and 0 <= train <= 1


def test_the_bars_show_a_running_trials_errors():
    from io import StringIO

    from rich.console import Console

    from ddscope.runs.progress import Progress

    bar = Progress(True, 10, 1, Console(file=StringIO(), force_terminal=True))
    bar.start("t", "width=4", 10)
    bar.errors("t", 0.25, 0.5)
    assert bar.p.tasks[bar.tasks["t"]].description == "  width=4  train err 0.250, test err 0.500"
    bar.stop()


def test_a_progress_line_says_which_trials_have_not_finished_an_epoch_yet():
    import io

    from ddscope.runs.progress import PlainProgress

    out = io.StringIO()
    p = PlainProgress(40, 2, out, log_interval=1e9)
    p.start("a", "width=4", 20)
    p.start("b", "width=8", 20)
    p.write()
    p.epoch("a", 3)
    p.write()
    first, second = out.getvalue().splitlines()
    assert "epochs 0/40 (0 %)" in first and "2 trial(s) at epoch 0 (data, models, the epoch-0 metrics)" in first
    assert "1 trial(s) at epoch 0" in second
