"""TensorBoard and MLflow: a sweep's [log] section streams every trial as it finishes, and
``ddscope export --format tensorboard|mlflow`` writes a finished run; both read back with the
libraries' own readers, the Jacobian norms as scalars at their epochs."""

from __future__ import annotations

import pytest

from ddscope.config import load_sweep
from ddscope.runs.executors import InProcessExecutor
from ddscope.runs.runner import run_sweep

from ..clirun import cli_inline
from .helpers_sweep import FAST, table

pytest.importorskip("tensorboard", reason="pip install 'ddscope[tensorboard]'")
pytest.importorskip("mlflow", reason="pip install 'ddscope[mlflow]'")

from mlflow.tracking import MlflowClient  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

ARGS = FAST + ["model.width=[4,8]", "optim.epochs=3"]


def _stored(run):
    """{trial_id: {(metric, epoch): value}} from the store."""
    df = table(run)
    return {t: {(m, int(e)): v for m, e, v in zip(g["metric"], g["epoch"], g["value"])} for t, g in df.groupby("trial_id")}


def _check_tensorboard(folder, stored):
    assert sorted(p.name for p in folder.iterdir()) == sorted(stored)
    for tid, values in stored.items():
        acc = EventAccumulator(str(folder / tid))
        acc.Reload()
        got = {(s.step, s.value) for s in acc.Scalars("jac_spec_rms/train")}
        want = {(e, v) for (m, e), v in values.items() if m == "jac_spec_rms/train"}
        assert len(got) == len(want) == 4  # epochs 0..3 (num_log_epochs 3 over 3 epochs)
        for (e, v), (e2, v2) in zip(sorted(got), sorted(want)):
            assert e == e2 and v == pytest.approx(v2, rel=1e-6)
        assert {s.step for s in acc.Scalars("err/test")} == {0, 1, 2, 3}


def _check_mlflow(uri, experiment, stored):
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    assert sorted(r.data.tags["ddscope.trial_id"] for r in runs) == sorted(stored)
    for r in runs:
        values = stored[r.data.tags["ddscope.trial_id"]]
        hist = client.get_metric_history(r.info.run_id, "jac_spec_rms/train")
        assert sorted((m.step, pytest.approx(m.value, rel=1e-9)) for m in hist) == sorted(
            (e, v) for (m, e), v in values.items() if m == "jac_spec_rms/train")
        assert r.data.params["model.width"] in ("4", "8") and r.info.status == "FINISHED"


def test_log_section_streams_every_trial_to_tensorboard_and_mlflow(tmp_path):
    tb, ml = tmp_path / "tb", tmp_path / "mlruns"
    sweep = load_sweep("mnist1d-mlp", ARGS + [f"log.tensorboard='{tb}'", f"log.mlflow='{ml}'",
                                              "log.mlflow_experiment='width-sweep'"])
    run_sweep(sweep, tmp_path / "run", InProcessExecutor(), show_progress=False)
    stored = _stored(tmp_path / "run")
    _check_tensorboard(tb, stored)
    _check_mlflow(ml.resolve().as_uri(), "width-sweep", stored)


def test_export_writes_a_finished_run_and_replaces_an_earlier_export(tmp_path, capsys):
    run = tmp_path / "run"
    run_sweep(load_sweep("mnist1d-mlp", ARGS), run, InProcessExecutor(), show_progress=False)
    stored = _stored(run)
    for _ in range(2):  # twice: the second export replaces the first, no duplicate runs
        code, out, err = cli_inline(capsys, "export", str(run), "--format", "tensorboard", "--out", str(tmp_path / "tb"))
        assert code == 0, err
        code, out, err = cli_inline(capsys, "export", str(run), "--format", "mlflow")
        assert code == 0, err
    _check_tensorboard(tmp_path / "tb", stored)
    _check_mlflow((run / "mlruns").resolve().as_uri(), "mnist1d-mlp", stored)
