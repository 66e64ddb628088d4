"""``ddscope.load(run_dir)`` and ``ddscope export`` (CSV, Parquet) give the store's tidy table."""

import pandas as pd
import pytest

import ddscope
from ddscope.cli import main
from ddscope.config import load_sweep
from ddscope.runs.executors import InProcessExecutor
from ddscope.runs.runner import run_sweep
from ddscope.runs.store import Store
from ddscope.report.table import tidy
from .helpers_sweep import FAST


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("run")
    sweep = load_sweep("mnist1d-mlp", FAST + ["model.width=[4,8]", "seed=[0,1]", "optim.epochs=2"])
    run_sweep(sweep, path, InProcessExecutor(), show_progress=False, group=False)
    return path


def test_load_returns_the_tidy_table(run_dir):
    df = ddscope.load(run_dir)
    store = Store.open(run_dir)
    expected = tidy(store)
    store.close()
    pd.testing.assert_frame_equal(df, expected)
    assert {"trial_id", "model.width", "seed", "data.noise", "epoch", "metric", "value", "status"} <= set(df.columns)
    assert sorted(df["model.width"].unique()) == [4, 8] and sorted(df["seed"].unique()) == [0, 1]
    assert df.groupby(["trial_id", "epoch", "metric"]).size().max() == 1
    pd.testing.assert_frame_equal(ddscope.load(run_dir / "store.sqlite"), df)  # the file works too


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_export_round_trips(run_dir, tmp_path, fmt):
    if fmt == "parquet":
        pytest.importorskip("pyarrow", reason="Parquet export needs pyarrow (the test extra installs it)")
    out = tmp_path / f"t.{fmt}"
    main(["export", str(run_dir), "--format", fmt, "--out", str(out)])
    back = pd.read_parquet(out) if fmt == "parquet" else pd.read_csv(out)
    df = ddscope.load(run_dir)
    assert list(back.columns) == list(df.columns) and len(back) == len(df)
    if fmt == "parquet":  # binary and typed: exactly the same table
        pd.testing.assert_frame_equal(back, df)
    else:
        assert back["value"].fillna(-1).tolist() == pytest.approx(df["value"].fillna(-1).tolist(), rel=1e-12)
