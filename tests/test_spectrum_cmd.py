"""``ddscope spectrum RUN``: the Hessian spectrum of chosen widths and epochs from checkpoints,
added to the store (no duplicate rows), drawn by the report; bad choices exit 2 in one line."""

from __future__ import annotations

import sqlite3

import pytest

from ddscope.config import load_sweep
from ddscope.measure import measure_checkpoint
from ddscope.report import build_report
from ddscope.runs.executors import InProcessExecutor
from ddscope.runs.runner import run_sweep

from .clirun import cli_inline
from .tiny import overrides


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    sweep = load_sweep("mnist1d-mlp", overrides() + ["model.width=[4,8]", "checkpoint.epochs=[2]",
                                                     "metrics.hess_samples=64"])
    assert run_sweep(sweep, out, InProcessExecutor(), show_progress=False).counts["done"] == 2
    return out


def _rows(run, like: str) -> list[tuple]:
    with sqlite3.connect(run / "store.sqlite") as c:
        return c.execute("SELECT trial_id, epoch, metric, value FROM records WHERE metric LIKE ? ORDER BY 1, 2, 3",
                         (like,)).fetchall()


def test_spectrum_of_one_width_at_two_epochs_then_the_report(run, capsys):
    code, out, err = cli_inline(capsys, "spectrum", str(run), "--width", "8", "--epoch", "2", "--epoch", "3",
                                "--device", "cpu")
    assert code == 0, err
    assert out.count("width 8 epoch") == 2 and "spectrum 2/2" in err
    eig = _rows(run, "hess_eig/%")
    assert {(e, m) for _, e, m, _ in eig} == {(e, f"hess_eig/{i}") for e in (2, 3) for i in range(1, 6)}
    first = _rows(run, "hess_slq_%")
    # running it again replaces the rows: none lost, none duplicated
    assert cli_inline(capsys, "spectrum", str(run), "--width", "8", "--epoch", "2", "--epoch", "3",
                      "--device", "cpu")[0] == 0
    assert _rows(run, "hess_slq_%") == first
    # λ₁ is the Hessian's top eigenvalue: the hessian group's Lanczos value on the same sample
    trial = eig[0][0]
    hess = measure_checkpoint(run / "trials" / trial / "final.pt", ["hessian"], device="cpu")["values"]
    top = {m: v for _, e, m, v in eig if e == 3}
    assert top["hess_eig/1"] == pytest.approx(hess["hess_top"], rel=1e-3)
    assert all(top[f"hess_eig/{i}"] >= top[f"hess_eig/{i + 1}"] for i in range(1, 5))
    page = build_report(run)
    assert (page.parent / "spectrum.png").exists()
    assert "Hessian spectrum" in page.read_text()


def test_bad_choices_exit_2_in_one_line(run, capsys):
    code, _, err = cli_inline(capsys, "spectrum", str(run), "--width", "5", "--device", "cpu")
    assert code == 2 and "no done trial" in err and "widths [4, 8]" in err and len(err.strip().splitlines()) == 1
    code, _, err = cli_inline(capsys, "spectrum", str(run), "--epoch", "1", "--device", "cpu")
    assert code == 2 and "no checkpoint at epoch(s) [1]" in err and len(err.strip().splitlines()) == 1


def test_a_refused_spectrum_stores_nothing(run, capsys, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    before = _rows(copy, "hess_%")
    # the second width's final checkpoint is corrupted: the first width must not be stored either
    with sqlite3.connect(copy / "store.sqlite") as c:
        tids = [r[0] for r in c.execute("SELECT trial_id FROM trials ORDER BY position")]
    (copy / "trials" / tids[-1] / "final.pt").write_bytes(b"garbage")
    code, _, err = cli_inline(capsys, "spectrum", str(copy), "--device", "cpu")
    assert code == 2 and "checksum mismatch" in err and len(err.strip().splitlines()) == 1
    assert _rows(copy, "hess_%") == before
