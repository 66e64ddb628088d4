"""The Ray executor on a local ``ray.init(num_cpus=2)`` cluster: ``ddscope sweep --executor ray
--address auto`` continues a sweep begun in-process, into the same store, with the same numbers;
checkpoints are written by the Ray workers; a user error inside a task surfaces unwrapped."""

import time

import pandas as pd
import pytest

from ddscope.checkpoint import load_checkpoint
from ddscope.config import load_sweep
from ddscope.errors import UserError
from ddscope.runs.executors import InProcessExecutor, RayExecutor
from ddscope.errors import as_user_error
from ddscope.runs.runner import run_sweep
from .helpers_sweep import FAST, cli, duplicate_rows, sets, store_rows, table

ray = pytest.importorskip("ray", reason="Ray is not installed; pip install 'ddscope[ray]' to test the Ray executor")

ARGS = FAST + ["optim.epochs=3", "checkpoint.every_epochs=1"]


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_sweep_continues_an_inprocess_sweep_in_the_same_store(cluster, tmp_path):
    run, ref = tmp_path / "run", tmp_path / "ref"
    run_sweep(load_sweep("mnist1d-mlp", ARGS + ["model.width=[4,8]"]), run, InProcessExecutor(), show_progress=False, group=False)
    full = ARGS + ["model.width=[4,8,16,32]"]
    t0 = time.time()
    r = cli("sweep", "mnist1d-mlp", *sets(full), "--out", str(run), "--executor", "ray", "--address", "auto",
            "--no-report", "--quiet")
    t_ray = time.time() - t0
    assert r.returncode == 0, r.stderr
    assert "this run: 2" in r.stderr and "4 done" in r.stderr  # only the new widths ran, on Ray
    rows = store_rows(run)
    assert [t["attempts"] for t in rows] == [1] * 4 and duplicate_rows(run) == 0
    for t in rows:  # the Ray workers wrote θ⁰ and the final weights beside the store
        assert (run / "trials" / t["trial_id"] / "final.pt.sha256").exists()

    run_sweep(load_sweep("mnist1d-mlp", full), ref, InProcessExecutor(), show_progress=False, group=False)
    pd.testing.assert_frame_equal(table(run), table(ref), check_exact=True)
    print(f"ray sweep of 2 trials (CLI, joining the cluster): {t_ray:.1f} s")


def test_user_error_in_a_ray_task_surfaces_unwrapped(cluster, tmp_path):
    ex = RayExecutor()
    assert ex.max_workers == 2  # one trial per CPU of the cluster
    # Ray workers import ddscope, not this test module: a ddscope function raises the UserError.
    err = ex.submit(load_checkpoint, str(tmp_path / "missing.pt")).exception(timeout=120)
    assert isinstance(as_user_error(err), UserError)
    assert str(as_user_error(err)) == f"checkpoint {tmp_path / 'missing.pt'} not found"
    ex.shutdown()
    assert ray.is_initialized()  # it joined the session, so it leaves it running


def test_ray_workers_import_the_users_factory_from_the_current_folder(cluster, tmp_path):
    """model.name = "mymodels:mlp" with mymodels.py in the folder the sweep starts from."""
    from .test_user_sweep import _write

    _write(tmp_path)
    r = cli("sweep", "mine.toml", "--out", "run", "--executor", "ray", "--address", "auto", "--no-report", "--quiet",
            cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rows = store_rows(tmp_path / "run")
    assert len(rows) == 2 and {t["status"] for t in rows} == {"done"}
