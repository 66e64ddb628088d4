"""Trials into TensorBoard and MLflow: after a sweep (``ddscope export --format tensorboard|mlflow``)
or while it runs (the ``[log]`` section: each trial as it finishes, written by the driver).

One TensorBoard run (a folder ``<dir>/<trial_id>``) or one MLflow run (tagged
``ddscope.trial_id``) per trial: every stored (metric, epoch, value) as a scalar at step = epoch,
and the trial's config axes as hyperparameters. Both libraries are optional extras, imported
here only; both work offline on a local folder.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import time
from pathlib import Path

from ..errors import UserError
from ..paths import check_component


def _import(module: str, extra: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"{extra} logging needs the optional extra: pip install 'ddscope[{extra}]'") from None


def _params(flat: dict, axes: list[str]) -> dict[str, object]:
    """Hyperparameters: the axes' values, as numbers, booleans or strings."""
    out = {}
    for k in axes:
        v = flat.get(k)
        out[k] = v if isinstance(v, (int, float, bool, str)) else str(v)
    return out


class TensorBoardLogger:
    """Writes each trial to ``folder/<trial_id>`` (replacing an earlier export of it)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self._writer = _import("torch.utils.tensorboard", "tensorboard").SummaryWriter

    def log_trial(self, trial_id: str, flat: dict, axes: list[str], records, status: str) -> None:
        run = self.folder / check_component(trial_id, "trial id")
        shutil.rmtree(run, ignore_errors=True)
        w = self._writer(log_dir=str(run))
        try:
            last: dict[str, float] = {}
            for epoch, metric, value in sorted(records, key=lambda r: r[0]):
                if value is not None and math.isfinite(value):
                    w.add_scalar(metric, value, int(epoch))
                    last[metric] = value
            finals = {f"final/{m}": v for m, v in last.items() if m.startswith(("err/", "loss/", "jac_spec_rms/"))}
            w.add_hparams(_params(flat, axes) | {"status": status}, finals or {"final/none": 0.0}, run_name=".")
        finally:
            w.close()


class MLflowLogger:
    """One run per trial in ``experiment`` at ``uri`` (a tracking URI, or a folder for a local
    file store); a trial exported before is replaced."""

    def __init__(self, uri: str, experiment: str):
        mlflow = _import("mlflow", "mlflow")
        from mlflow.tracking import MlflowClient

        self._entities = mlflow.entities
        if "://" not in uri:  # a local folder: MLflow's file store, which MLflow >= 3.x keeps behind a flag
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        target = uri if "://" in uri else Path(uri).resolve().as_uri()
        self.client = MlflowClient(tracking_uri=target)
        found = self.client.get_experiment_by_name(experiment)
        self.experiment = found.experiment_id if found else self.client.create_experiment(experiment)

    def log_trial(self, trial_id: str, flat: dict, axes: list[str], records, status: str) -> None:
        E = self._entities
        check_component(trial_id, "trial id")  # it goes into a search filter and a run name
        for old in self.client.search_runs([self.experiment], f"tags.`ddscope.trial_id` = '{trial_id}'"):
            self.client.delete_run(old.info.run_id)
        run = self.client.create_run(self.experiment, run_name=trial_id, tags={"ddscope.trial_id": trial_id})
        rid = run.info.run_id
        now = int(time.time() * 1000)
        metrics = [E.Metric(mlflow_key(m), float(v), now, int(e)) for e, m, v in records
                   if v is not None and math.isfinite(v)]
        params = [E.Param(k, str(v)) for k, v in _params(flat, axes).items()]
        for i in range(0, max(len(metrics), 1), 1000):  # MLflow takes at most 1000 metrics per batch
            self.client.log_batch(rid, metrics=metrics[i : i + 1000], params=params if i == 0 else [])
        self.client.set_terminated(rid, "FINISHED" if status == "done" else "FAILED")


def mlflow_key(name: str) -> str:
    """A metric name MLflow accepts: letters, digits, '_', '-', '.', ' ', '/' and ':' kept, anything
    else '_', no '..' and no leading '/' (ddscope's own names, ``jac_spec_rms/train``, pass unchanged)."""
    out = re.sub(r"[^A-Za-z0-9_\-. /:]", "_", str(name)).lstrip("/") or "_"
    while ".." in out:
        out = out.replace("..", "_.")
    return out[:250]


def loggers_for(log, sweep_name: str) -> list:
    """The loggers a ``[log]`` section asks for (an empty list when none)."""
    out: list = []
    if log.tensorboard:
        out.append(TensorBoardLogger(log.tensorboard))
    if log.mlflow:
        out.append(MLflowLogger(log.mlflow, log.mlflow_experiment or sweep_name))
    return out


def export_run(run_dir: str | Path, fmt: str, out: str) -> str:
    """Every trial of a run directory into TensorBoard (``out``: a folder) or MLflow (``out``: a
    tracking URI or folder); returns where."""
    from .store import Store
    from ..config import axes_of, flatten

    store = Store.open(run_dir, readonly=True)
    try:
        trials = store.trials()
        flats = [flatten(t["config"]) for t in trials]
        keys = axes_of(flats)
        name = str(store.sweep_config().get("sweep", {}).get("name") or Path(run_dir).name)
        logger = TensorBoardLogger(out) if fmt == "tensorboard" else MLflowLogger(out, name)
        by_trial: dict[str, list] = {t["trial_id"]: [] for t in trials}
        for tid, epoch, metric, value in store.records():
            by_trial.setdefault(tid, []).append((epoch, metric, value))
        for t, flat in zip(trials, flats):
            if t["status"] in ("done", "failed"):
                logger.log_trial(t["trial_id"], flat, keys, by_trial[t["trial_id"]], t["status"])
    finally:
        store.close()
    return out


__all__ = ["MLflowLogger", "TensorBoardLogger", "export_run", "loggers_for"]
