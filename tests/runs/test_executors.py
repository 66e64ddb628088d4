"""Every executor is a backend of one interface (``executors.Executor``) and gives the same
table as running the trials in this process (Ray: tests/runs/test_ray.py, on a local cluster)."""

from __future__ import annotations

import typing

import pandas as pd
import pytest

from ddscope.config import load_sweep
from ddscope.runs.executors import Executor, InProcessExecutor, LocalPoolExecutor, make_executor
from ddscope.runs.runner import run_sweep

from .helpers_sweep import FAST, table

SWEEP = FAST + ["model.width=[4,6]", "seed=[0,1]", "optim.epochs=3"]


def test_every_backend_has_the_interface():
    members = [*typing.get_type_hints(Executor), "submit", "shutdown"]  # what the Protocol declares
    assert set(members) == {"max_workers", "inline", "progress_queue", "submit", "shutdown"}
    for ex in (InProcessExecutor(), LocalPoolExecutor(1)):
        try:
            assert all(hasattr(ex, m) for m in members)
        finally:
            ex.shutdown()


@pytest.mark.parametrize("group", [False, True], ids=["one trial a job", "vectorised groups"])
def test_the_local_pool_gives_the_in_process_table(tmp_path, group):
    sweep = load_sweep("mnist1d-mlp", SWEEP)
    tables = {}
    for name in ("inprocess", "local"):
        out = run_sweep(sweep, tmp_path / name, make_executor(name, 2), show_progress=False, group=group)
        assert out.counts["done"] == 4
        tables[name] = table(tmp_path / name)
    pd.testing.assert_frame_equal(tables["inprocess"], tables["local"])
