"""The CLI end to end, in subprocesses: a tiny sweep with its report, bad input → exit 2."""

from pathlib import Path

import pandas as pd
import pytest

from .clirun import cli as ddscope
from .tiny import overrides, sets

TINY = overrides()



def test_tiny_sweep_end_to_end(tmp_path):
    out = tmp_path / "run"
    r = ddscope("sweep", "mnist1d-mlp", *sets(TINY + ["model.width=[4,8,16]"]), "--out", str(out), "--workers", "2")
    assert r.returncode == 0, r.stderr
    report = out / "report"
    for name in ("index.html", "final_table.csv", "tidy.csv", "double_descent.png", "smoothness.png", "over_epochs.png"):
        assert (report / name).exists(), name
    table = pd.read_csv(report / "final_table.csv")
    assert sorted(table["model.width"]) == [4, 8, 16]
    assert (table["status"] == "done").all()
    for col in ("params", "err/train", "err/test", "jac_spec_rms/train", "jac_spec_rms/test", "jac_fro_rms/train"):
        assert table[col].notna().all(), col
    html = (report / "index.html").read_text()
    assert "data:image/png;base64" in html
    # Running again skips everything.
    r2 = ddscope("sweep", "mnist1d-mlp", *sets(TINY + ["model.width=[4,8,16]"]), "--out", str(out), "--no-report")
    assert r2.returncode == 0 and "this run: 0" in r2.stderr
    # status and export read the same store.
    s = ddscope("status", str(out))
    assert s.returncode == 0 and "3 done" in s.stdout
    e = ddscope("export", str(out), "--format", "csv")
    assert e.returncode == 0 and Path(e.stdout.strip()).exists()


@pytest.mark.parametrize(
    "args, needle",
    [
        (["sweep", "mnist1d-mlp", "--set", "model.width=0"], "model.width"),
        (["sweep", "mnist1d-mlp", "--set", "data.noise=1.5"], "data.noise"),
        (["sweep", "mnist1d-mlp", "--set", "model.depht=3"], "model.depht"),
        (["sweep", "no-such-preset"], "no-such-preset"),
        (["sweep", "mnist1d-mlp", "--set", "model.name=nope"], "model.name"),
        (["report", "missing-dir"], "no ddscope store"),
        (["status", "missing-dir"], "no ddscope store"),
        (["measure", "missing.pt"], "checkpoint missing.pt not found"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, args, needle):
    if args[0] == "sweep":
        r = ddscope(*args, "--out", str(tmp_path / "x"), cwd=tmp_path)
    else:
        r = ddscope(*args, cwd=tmp_path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = [ln for ln in r.stderr.strip().splitlines() if ln]
    assert len(lines) == 1 and needle in lines[0], r.stderr
    assert not (tmp_path / "x").exists()
    assert not (tmp_path / "runs").exists()


def test_corrupted_store_is_not_touched(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    blob = b"garbage" * 500
    (run / "store.sqlite").write_bytes(blob)
    r = ddscope("sweep", "mnist1d-mlp", *sets(TINY + ["model.width=4"]), "--out", str(run))
    assert r.returncode == 2 and "corrupted" in r.stderr
    assert (run / "store.sqlite").read_bytes() == blob


def test_presets_lists_default():
    r = ddscope("presets")
    assert r.returncode == 0 and "mnist1d-mlp" in r.stdout
