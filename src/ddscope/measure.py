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

from . import catalogue
from .catalogue import SPLITS
from .checkpoint import checkpoint_config, load_checkpoint, load_weights
from .config import set_key
from .data import prepare
from .models import make_model
from .train import measure_epoch, resolve_device

MEASURE_SPLITS = SPLITS  # every split a trial has (the catalogue's)


def measure_checkpoint(path: str | Path, groups, *, progress=None, samples: int | None = None, output: str | None = None,
                       device: str = "cpu", data_root: str | None = None) -> dict:
    """Rebuild a checkpoint's model from its stored config and measure it on its own data.

    The splits are train (noisy labels), train_clean, train_noisy, test (and val when the trial
    has one); θ⁰ for ``distance`` comes from ``init.pt`` beside the checkpoint, or is regenerated
    from the trial's seed (the same draw) when that file is absent. With the trial's own options
    the values equal the ones stored at that epoch: the same function with the same seeds.

    ``groups``: the metric groups; None: every group on by default (the catalogue's schedule) and
    every opt-in group the trial's config names.

    Returns ``{"checkpoint", "trial_id", "epoch", "init", "values": {metric: float},
    "skipped": {group: reason}}`` (groups that cannot run on this model are skipped, the
    others measured).
    """
    path = Path(path)
    state = load_checkpoint(path)
    cfg = checkpoint_config(state, path)
    trial_id = cfg.trial_id  # the trial's own id: the overrides below would change the hash
    if groups is None:
        named = (*cfg.metrics.groups, *cfg.metrics.sparse_groups)
        groups = [g for g, row in catalogue.GROUPS.items() if row.schedule != "off" or g in named]
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
    records = measure_epoch(cfg, model, data, init_state, state["epoch"], list(groups), skipped, notes,
                            progress=progress)
    return {
        "checkpoint": str(path),
        "trial_id": trial_id,
        "epoch": state["epoch"],
        "init": source,
        "values": {metric: value for _, metric, value in records},
        "skipped": skipped,
        "notes": notes,
    }


__all__ = ["MEASURE_SPLITS", "measure_checkpoint"]
