"""``ddscope spectrum``: add the Hessian spectrum of chosen trials to a run's store, measured on
their saved checkpoints (:func:`ddscope.measure.measure_checkpoint`)."""

from __future__ import annotations

from pathlib import Path

from ..checkpoint import Checkpointer, trial_dir, verify_checkpoint
from ..config import TrialConfig
from ..errors import UserError
from ..measure import measure_checkpoint
from .store import Store


def add_spectrum(run_dir: str | Path, *, widths=(), epochs=(), samples: int | None = None, device: str = "cpu",
                 progress=None) -> list[dict]:
    """Measure the ``spectrum`` group (top eigenvalues and SLQ density of the loss Hessian) on
    the saved checkpoints of a run's done trials and add the rows to its store, where the report
    finds them. ``widths``: the trials' ``model.width`` values (empty: all); ``epochs``: the
    checkpoint epochs (empty: the last, ``final.pt``; others need ``checkpoint.epochs``).

    Returns one ``{"trial_id", "width", "epoch", "rows"}`` per measured checkpoint; raises
    UserError when nothing matches (naming what there is)."""
    run_dir = Path(run_dir)
    store = Store.open(run_dir)
    try:
        todo = []
        have_widths = set()
        for t in store.trials("done"):
            cfg = TrialConfig.from_dict(t["config"])
            have_widths.add(cfg.model.width)
            if widths and cfg.model.width not in set(widths):
                continue
            saved = Checkpointer(trial_dir(run_dir if run_dir.is_dir() else run_dir.parent, t["trial_id"]), cfg).by_epoch()
            want = list(epochs) or [cfg.optim.epochs]
            missing = [e for e in want if e not in saved]
            if missing:
                raise UserError(f"trial {t['trial_id']} (width {cfg.model.width}) has no checkpoint at epoch(s) "
                                f"{missing}; it has {sorted(saved)} (keep more with checkpoint.epochs)")
            todo += [(t["trial_id"], cfg.model.width, saved[e]) for e in want]
        if not todo:
            raise UserError(f"no done trial of {run_dir} has width {sorted(set(widths))}; the done trials have widths "
                            f"{sorted(have_widths) or 'none'}")
        for _, _, path in todo:  # every checkpoint is sound before any is measured
            verify_checkpoint(path)
        done, measured = [], []
        for i, (trial_id, width, path) in enumerate(todo):
            if progress is not None:
                progress(f"spectrum {i + 1}/{len(todo)}: trial {trial_id} (width {width:g}), {path.name}")
            out = measure_checkpoint(path, ("spectrum",), samples=samples, device=device)
            values = {k: v for k, v in out["values"].items() if k.startswith(("hess_eig/", "hess_slq_"))}
            if not values:
                raise UserError(f"the spectrum of trial {trial_id} could not be measured: "
                                f"{out['skipped'].get('spectrum', 'no values')}")
            measured.append((trial_id, out["epoch"], values))
            done.append({"trial_id": trial_id, "width": width, "epoch": out["epoch"], "rows": len(values)})
        for trial_id, epoch, values in measured:  # stored only once every one was measured: a refusal stores nothing
            store.add_records(trial_id, epoch, values)
        return done
    finally:
        store.close()


__all__ = ["add_spectrum"]
