"""``ddscope measure``: measure a saved model on its own trial's data.

Rebuilds the model from the config stored in a checkpoint, prepares the trial's data (the same
subset and noisy labels) and runs the metric groups through the same function training uses
(:func:`ddscope.train.measure_epoch`), so a checkpoint of a metric epoch gives the stored values.
It sits above :mod:`ddscope.checkpoint` (files) and :mod:`ddscope.train` (the trial), so neither
needs the other's use case.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .checkpoint import checkpoint_config, load_checkpoint, load_weights
from .config import set_key
from .errors import UserError
from .data import prepare
from .models import make_model
from .train import measure_epoch, resolve_device

MEASURE_SPLITS = ("train", "train_clean", "train_noisy", "test", "val")


def measure_checkpoint(path: str | Path, groups, *, samples: int | None = None, output: str | None = None,
                       device: str = "cpu", data_root: str | None = None) -> dict:
    """Rebuild a checkpoint's model from its stored config and measure it on its own data.

    The splits are train (noisy labels), train_clean, train_noisy, test (and val when the trial
    has one); θ⁰ for ``distance`` comes from ``init.pt`` beside the checkpoint, or is regenerated
    from the trial's seed (the same draw) when that file is absent. With the trial's own options
    the values equal the ones stored at that epoch: the same function with the same seeds.

    Returns ``{"checkpoint", "trial_id", "epoch", "init", "values": {metric: float},
    "skipped": {group: reason}}`` (groups that cannot run on this model are skipped, the
    others measured).
    """
    path = Path(path)
    state = load_checkpoint(path)
    cfg = checkpoint_config(state, path)
    trial_id = cfg.trial_id  # the trial's own id: the overrides below would change the hash
    updates: dict = {"device": device, "metrics.splits": list(MEASURE_SPLITS)}
    if samples is not None:
        updates.update({"metrics.jac_samples": samples, "metrics.hess_samples": samples})
    if output is not None:
        updates["metrics.output"] = output
    if data_root is not None:
        updates["data.root"] = data_root
    cfg = set_key(cfg, updates)
    dev = resolve_device(cfg.device)
    data = prepare(cfg.data).to(dev)

    def build(weights: tuple[dict, Path] | None):
        torch.manual_seed(cfg.seed)  # the trial's initialisation draw
        net = make_model(cfg.model, data.input_shape, data.num_classes)
        if weights is not None:
            load_weights(net, *weights)
        return net.to(dev)

    model = build((state, path))
    ref = next(model.parameters(), None)
    if ref is not None and ref.is_floating_point():
        data = data.inputs_as(ref.dtype)
    init_path = path.with_name("init.pt")
    if init_path.is_file() and init_path != path:
        theta0, source = build((load_checkpoint(init_path), init_path)), "init.pt"
    elif state["epoch"] == 0:
        theta0, source = model, path.name
    else:
        theta0, source = build(None), "regenerated from the trial seed"
    init_state = {k: v.detach().clone() for k, v in theta0.named_parameters()}
    skipped: dict[str, str] = {}
    notes: dict[str, str] = {}
    records = measure_epoch(cfg, model, data, init_state, state["epoch"], list(groups), skipped, notes)
    return {
        "checkpoint": str(path),
        "trial_id": trial_id,
        "epoch": state["epoch"],
        "init": source,
        "values": {metric: value for _, metric, value in records},
        "skipped": skipped,
        "notes": notes,
    }


def add_spectrum(run_dir: str | Path, *, widths=(), epochs=(), samples: int | None = None, device: str = "cpu",
                 progress=None) -> list[dict]:
    """Measure the ``spectrum`` group (top eigenvalues and SLQ density of the loss Hessian) on
    the saved checkpoints of a run's done trials and add the rows to its store, where the report
    finds them. ``widths``: the trials' ``model.width`` values (empty: all); ``epochs``: the
    checkpoint epochs (empty: the last, ``final.pt``; others need ``checkpoint.epochs``).

    Returns one ``{"trial_id", "width", "epoch", "rows"}`` per measured checkpoint; raises
    UserError when nothing matches (naming what there is)."""
    from .checkpoint import Checkpointer, trial_dir, verify_checkpoint
    from .config import TrialConfig
    from .sweep.store import Store

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


__all__ = ["MEASURE_SPLITS", "add_spectrum", "measure_checkpoint"]
