"""A sweep whose output goes to a file (a batch job, ``nohup``) writes plain progress lines
there: at a steady interval and whenever a trial finishes, with no control characters.
Regression: such a log held one header line until the sweep ended."""

from __future__ import annotations

import re

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
