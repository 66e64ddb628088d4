"""The Python API: run a sweep from a script, or record a training loop you keep.

``ddscope.sweep(config, overrides, out)`` is ``ddscope sweep`` as a function: the same checks,
store, resume semantics and report, returning the run directory. :class:`Tracker` records, at
the epochs you choose, the errors and the configured metric groups of your model on your tensors
into a run directory's store, so ``ddscope report``, ``ddscope status`` and ``ddscope.load`` work
on it as on a sweep.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from .catalogue import TRACKED, scheduled
from .config import (
    MAX_GROUP,
    PROGRESS_INTERVAL_S,
    SweepConfig,
    TrialConfig,
    apply_overrides,
    read_toml,
    set_key,
    sweep_from_dict,
)
from .data import TrialData
from .errors import UserError
from .validate import check_ranges


def sweep(config: str | Path | Mapping | SweepConfig = "mnist1d-mlp", overrides: Sequence[str] | Mapping | None = None,
          out: str | Path | None = None, *, executor: str = "inprocess", workers: int | None = None,
          retry_failed: bool = False, report: bool = True, group: bool = True, max_group: int = MAX_GROUP,
          progress: bool = False, resume: bool = False, **executor_options) -> Path:
    """Run a sweep; returns its run directory (default ``runs/<sweep name>``).

    Args:
        config: a preset name, a TOML file, a TOML document as a dict, or a :class:`SweepConfig`.
        overrides: ``["model.width=[8,16]", ...]`` or ``{"model.width": [8, 16], ...}`` (a list
            value on a scalar key is a grid axis).
        out: the run directory; rerunning into it resumes (finished trials are kept).
        executor: ``"inprocess"`` (default), ``"local"`` (a process pool of ``workers``), ``"ray"``,
            ``"slurm"`` or ``"submitit-local"``; ``executor_options``: ``address`` (Ray),
            ``gpus_per_trial`` (Ray, Slurm), ``partition``, ``time_limit_min``, ``cpus_per_trial``
            (Slurm) — the ``ddscope sweep`` options of the same names.
        resume: require an existing run directory.
        report: write ``<out>/report`` at the end.

    Bad input raises :class:`~ddscope.errors.UserError` before anything is written. Failed
    trials do not raise: they are stored as failed (``ddscope status``) and named in a warning.
    """
    done = run(config, overrides, out, executor=executor, workers=workers, retry_failed=retry_failed, group=group,
               max_group=max_group, progress=progress, resume=resume, **executor_options)
    if done.outcome.failed:
        warnings.warn(f"{len(done.outcome.failed)} trial(s) failed: "
                      + "; ".join(f"{t}: {why}" for t, why in done.outcome.failed[:3]), stacklevel=2)
    if report:
        from .report import build_report

        build_report(done.run_dir)
    return done.run_dir


@dataclass(frozen=True)
class SweepRun:
    """What :func:`run` did: the sweep as run, its run directory and the outcome (counts, the
    trials that failed in this run)."""

    spec: SweepConfig
    run_dir: Path
    outcome: object  # ddscope.runs.runner.SweepOutcome


def load_spec(config: str | Path | Mapping | SweepConfig, overrides: Sequence[str] | Mapping | None = None) -> SweepConfig:
    """The sweep a preset name, TOML file, TOML document or :class:`SweepConfig` with
    ``overrides`` describes, validated (``UserError`` on bad input)."""
    if isinstance(config, SweepConfig) and not overrides:
        for t in config.trials() or [config.base]:  # a SweepConfig built by hand is checked too
            check_ranges(t)
        return config
    if isinstance(config, SweepConfig):
        doc, name = config.to_dict(), config.name
    elif isinstance(config, Mapping):
        doc, name = dict(config), "sweep"
    else:
        doc, name = read_toml(str(config))
    items = dict(overrides) if isinstance(overrides, Mapping) else list(overrides or [])
    return sweep_from_dict(apply_overrides(doc, items), default_name=name)


# Which executors take which of the executor options (anything else is refused, one line).
EXECUTOR_OPTIONS = {"address": ("ray",), "gpus_per_trial": ("ray", "slurm", "submitit-local"),
                    "partition": ("slurm",), "time_limit_min": ("slurm", "submitit-local"),
                    "cpus_per_trial": ("slurm", "submitit-local")}


def run(config: str | Path | Mapping | SweepConfig, overrides: Sequence[str] | Mapping | None = None,
        out: str | Path | None = None, *, executor: str = "inprocess", workers: int | None = None,
        retry_failed: bool = False, group: bool = True, max_group: int = MAX_GROUP, progress: bool = False,
        resume: bool = False, console=None, progress_interval: float = PROGRESS_INTERVAL_S,
        on_start: Callable[[SweepConfig, Path], None] | None = None, **executor_options) -> SweepRun:
    """The sweep driver that :func:`sweep` and ``ddscope sweep`` share: validate the config and
    the executor's options, check everything that can be checked before anything is written
    (:func:`~ddscope.runs.preflight.preflight`), call ``on_start(spec, run_dir)``, run the
    pending trials (:func:`~ddscope.runs.runner.run_sweep`). Returns a :class:`SweepRun`."""
    from .runs.executors import make_executor
    from .runs.preflight import preflight
    from .runs.runner import run_sweep

    for key, value in executor_options.items():
        takers = EXECUTOR_OPTIONS.get(key)
        if takers is None:
            raise UserError(f"unknown executor option '{key}'; allowed: {', '.join(EXECUTOR_OPTIONS)}")
        if value and executor not in takers:
            flag = "--" + key.replace("_min", "").replace("_", "-")
            names = takers[0] if len(takers) == 1 else f"{', '.join(takers[:-1])} or {takers[-1]}"
            raise UserError(f"{flag} needs --executor {names}")
    spec = load_spec(config, overrides)  # validates everything before anything is written
    run_dir = Path(out) if out is not None else Path("runs") / spec.name
    preflight(spec, run_dir, resume=resume)  # devices, run directory, data, your factories: one line
    if on_start is not None:
        on_start(spec, run_dir)
    given = {k: v for k, v in executor_options.items() if v is not None}
    slurm = {k: given[k] for k in ("partition", "time_limit_min", "cpus_per_trial") if k in given}
    ex = make_executor(executor, workers, given.get("address"), given.get("gpus_per_trial", 0),
                       folder=run_dir / "submitit", **(slurm if executor in ("slurm", "submitit-local") else {}))
    outcome = run_sweep(spec, run_dir, ex, retry_failed=retry_failed, show_progress=progress, console=console,
                        group=group, max_group=max_group, progress_interval=progress_interval)
    return SweepRun(spec, run_dir, outcome)


class Tracker:
    """Record a training loop you keep: errors and metric groups at the epochs you choose.

    ::

        tracker = ddscope.Tracker("runs/mine", train=(x_tr, y_tr), test=(x_te, y_te),
                                  labels={"model.width": 64, "seed": 0})
        tracker.start(model)                  # θ⁰ for distance-from-init; logs epoch 0
        for epoch in range(1, epochs + 1):
            ...                               # your training step(s)
            if epoch in tracker.epochs(epochs):  # or any epochs you like
                tracker.log(epoch, model)
        tracker.finish()

    Each tracker is one trial of the run directory; several (other widths, seeds) share it and
    the report draws them like a sweep's trials, with ``labels`` as their config axes (any keys
    of a trial config, e.g. ``model.width``, ``seed``, ``data.noise``). Records are written to the
    store at every ``log`` (a crash keeps what was logged; the trial shows as running).

    Args:
        out: the run directory.
        train, test: ``(x, y)`` tensors; y integer class labels. ``val`` optional.
        labels: config keys and values that describe this run (the report's axes).
        groups: metric groups measured at every ``log`` (:data:`ddscope.config.METRIC_GROUPS`).
        metrics: other ``metrics.*`` settings, e.g. ``{"jac_samples": 500, "hess_samples": 500}``.
        noisy_mask: (N_train,) bool, which training labels are corrupted (gives the
            train_clean / train_noisy splits); ``y_train_clean`` the true labels.
        num_classes: default: the largest label + 1.
        epochs: the epochs you plan to train (the report's epoch budget; ``optim.epochs``).
    """

    def __init__(self, out: str | Path, *, train: tuple[Tensor, Tensor], test: tuple[Tensor, Tensor],
                 val: tuple[Tensor, Tensor] | None = None, labels: Mapping | None = None,
                 groups: Sequence[str] = scheduled("every"), metrics: Mapping | None = None,
                 noisy_mask: Tensor | None = None, y_train_clean: Tensor | None = None,
                 num_classes: int | None = None, epochs: int | None = None, name: str = "tracked"):
        self.run_dir = Path(out)
        x_tr, y_tr = train
        x_te, y_te = test
        x_va, y_va = val if val is not None else (x_tr[:0], y_tr[:0])
        for what, y in (("train", y_tr), ("test", y_te), ("val", y_va)):
            if y.is_floating_point() or y.dim() != 1:
                raise UserError(f"Tracker: {what} labels must be integer class labels (N,), got {y.dtype} {tuple(y.shape)}")
        mask = torch.zeros(len(y_tr), dtype=torch.bool) if noisy_mask is None else noisy_mask.bool().cpu()
        classes = num_classes or 1 + max(int(y.max()) for y in (y_tr, y_te) if len(y))
        self.data = TrialData(x_train=x_tr, y_train=y_tr, y_train_clean=y_tr if y_train_clean is None else y_train_clean,
                              noisy_mask=mask.to(y_tr.device), x_test=x_te, y_test=y_te, x_val=x_va, y_val=y_va,
                              num_classes=classes, name=name)
        # data.noise is the fraction of noisy labels the mask marks (what tables and titles show)
        noise = round(float(mask.float().mean()), 6) if len(mask) else 0.0
        updates = {"data.name": TRACKED, "data.noise": noise, "metrics.groups": list(groups),
                   **({"optim.epochs": int(epochs)} if epochs else {}),
                   "metrics.sparse_groups": [], **{f"metrics.{k}": v for k, v in (metrics or {}).items()},
                   **dict(labels or {})}
        self.cfg = set_key(TrialConfig(), updates)
        if "volume" in self.cfg.metrics.groups:  # its samplers must fit these tensors: one line now, not a skip later
            from .runs.preflight import check_volume_samplers

            check_volume_samplers(self.cfg.metrics.vol_samplers, self.data)
        self.labels = dict(labels or {})
        self.groups = list(groups)
        self.records: list[tuple[int, str, float]] = []
        self.skipped: dict[str, str] = {}
        self.notes: dict[str, str] = {}
        self.init_state: dict[str, Tensor] | None = None
        self.interp_epoch: int | None = None
        self.params = 0
        self._t0 = time.perf_counter()
        self._store = None

    def epochs(self, total: int) -> list[int]:
        """The log-spaced schedule of a sweep's metrics over ``total`` epochs (0 and the last
        included), from ``metrics.num_log_epochs``."""
        from .train.schedule import metric_epochs

        return metric_epochs(total, self.cfg.metrics.num_log_epochs)

    def start(self, model: nn.Module, log: bool = True) -> Tracker:
        """Snapshot θ⁰ (for ``distance``), open the store and register this trial; logs epoch 0
        unless ``log=False``."""
        from .runs.store import Store

        cls = type(model)
        self.cfg = set_key(self.cfg, {"model.name": f"{cls.__module__}:{cls.__name__}"})
        self.init_state = {k: v.detach().clone() for k, v in model.named_parameters()}
        self.params = sum(p.numel() for p in model.parameters())
        doc = self.cfg.to_dict()
        self._store = Store.create(self.run_dir / "store.sqlite", doc)
        self._store.update_sweep_config(lambda stored: _merge_axes(stored, doc, list(self.labels)))
        row = {t["trial_id"]: t["status"] for t in self._store.trials()}.get(self.cfg.trial_id)
        if row == "done":
            self._store.close()
            raise UserError(f"Tracker: {self.run_dir} already holds a finished trial with these labels "
                            f"({self.labels}); give a distinguishing label (e.g. seed) or another run directory")
        self._store.add_trials([(self.cfg.trial_id, doc)])
        if log:
            self.log(0, model)
        return self

    def log(self, epoch: int, model: nn.Module) -> dict[str, float]:
        """Losses and errors on every split and the metric groups of ``model`` (eval mode, its
        training flag restored) at ``epoch``; stored at once. Returns this epoch's values."""
        from .train.evaluate import loss_of, measure_epoch, record_errors

        if self._store is None:
            raise RuntimeError("Tracker.log before Tracker.start(model)")
        was_training = model.training
        model.eval()
        try:
            rows: list[tuple[int, str, float]] = []  # the training loop's records and interpolation test
            self.interp_epoch = record_errors(model, self.data, None, epoch, 0, rows, self.interp_epoch, diverge=False,
                                              loss=loss_of(self.cfg))
            if self.groups:
                rows += measure_epoch(self.cfg, model, self.data, self.init_state, epoch, self.groups, self.skipped,
                                      self.notes)
        finally:
            model.train(was_training)
        self.records = [r for r in self.records if r[0] != epoch] + rows
        self._write("running")
        return {m: v for _, m, v in rows}

    def finish(self, status: str = "done") -> Path:
        """Mark the trial done (or ``"failed"``) and close the store; returns the run directory."""
        if self._store is None:
            raise RuntimeError("Tracker.finish before Tracker.start(model)")
        self._write(status, last_epoch=max((e for e, _, _ in self.records), default=0))
        self._store.close()
        self._store = None
        return self.run_dir

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._store is not None:
            self.finish("failed" if exc_type is not None else "done")

    def _write(self, status: str, last_epoch: int | None = None) -> None:
        """The trial's row in the store as it stands; ``last_epoch``: it is finished (the
        interpolation epoch is closed as the training loop closes it)."""
        from .train.result import TrialResult, close_interpolation, data_summary

        result = TrialResult(trial_id=self.cfg.trial_id, config=self.cfg.to_dict(), status=status,
                             records=list(self.records),
                             summary={**data_summary(self.data, self.params, "tracker"), "interp_epoch": self.interp_epoch,
                                      "wall_s": time.perf_counter() - self._t0, "skipped_groups": dict(self.skipped),
                                      "metric_notes": dict(self.notes)},
                             noisy_mask=np.packbits(self.data.noisy_mask.cpu().numpy()).tobytes())
        if last_epoch is not None:
            close_interpolation(result, self.interp_epoch, last_epoch)
        self._store.finish(result)


def _merge_axes(stored: dict, doc: dict, axes: list[str]) -> dict:
    """The run directory's config: the first tracker's, with every label key a list of the values
    the trackers gave (the report's axes)."""
    out = stored if stored else doc

    def get(d, dotted):
        for p in dotted.split("."):
            d = d.get(p, {}) if isinstance(d, dict) else {}
        return d

    def put(d, dotted, value):
        parts = dotted.split(".")
        for p in parts[:-1]:
            d = d.setdefault(p, {})
        d[parts[-1]] = value

    for key in axes:
        old, new = get(out, key), get(doc, key)
        values = old if isinstance(old, list) else ([old] if old != {} else [])
        if new not in values:
            values = values + [new]
        put(out, key, values if len(values) > 1 else values[0])
    return out


__all__ = ["EXECUTOR_OPTIONS", "SweepRun", "Tracker", "load_spec", "run", "sweep"]
