"""Everything a sweep can check before it writes anything: bad input is one line (exit 2), never a
half-made run directory or a sweep of failed trials. Used by ``ddscope sweep`` and ``ddscope.sweep()``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..config import SweepConfig
from ..data import check_sizes
from ..errors import UserError, check_writable
from ..imports import is_import_spec
from ..samplers import check_sampler, parse_samplers
from ..models import make_model
from ..train import resolve_device
from .loggers import loggers_for
from .store import Store


def preflight(sweep: SweepConfig, run_dir: Path, *, resume: bool = False) -> None:
    """Devices, the run directory (writable; an existing store readable and of this sweep), every
    data set (files, sizes, a user loader's arrays) and every user model factory (imports, builds,
    gives one output per class): :class:`UserError` on the first problem."""
    trials = sweep.trials()
    for name in {t.device for t in trials}:
        resolve_device(name)  # device = "cuda" without a GPU
    check_writable(run_dir, "run directory")
    if resume and not (run_dir / "store.sqlite").exists():
        raise UserError(f"--resume: no store at {run_dir / 'store.sqlite'} to resume")
    if (run_dir / "store.sqlite").exists():
        # A corrupted store stops us here, untouched. (Another sweep's run directory is refused by
        # run_sweep, atomically with extending the stored sweep: the refusal changes nothing.)
        store = Store.open(run_dir / "store.sqlite")
        try:
            store.trials()  # every row readable
        finally:
            store.close()
    sources = {t.data: check_sizes(t.data) for t in trials}  # missing or malformed data files
    checked = set()
    for t in trials:
        if not is_import_spec(t.model.name) or (t.model.name, t.data) in checked:
            continue
        checked.add((t.model.name, t.data))
        _check_factory(t, sources[t.data])
    for t in trials:
        if "volume" in (*t.metrics.groups, *t.metrics.sparse_groups):
            check_volume_samplers(t.metrics.vol_samplers, sources[t.data])
    loggers_for(sweep.base.log, sweep.name)  # [log]: the extras are installed (last: MLflow makes its folder)


def check_volume_samplers(specs, ds) -> None:
    """Every sampler of ``metrics.vol_samplers`` applies to the data set ``ds``: its rank, its
    strengths, and a user's augmentation returns one sample of the input's shape per sample."""
    from ..metrics.neighbourhood import draw

    try:
        samplers = parse_samplers(specs)
        for sampler in samplers:
            check_sampler(sampler, tuple(ds.input_shape))
            x = ds.x_train[:2].to(torch.get_default_dtype())
            if len(x):
                draw(sampler, x, 1, torch.Generator(device="cpu").manual_seed(0))
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 — a user's augmentation is the user's code
        lines = str(e).strip().splitlines()
        raise UserError(f"config key 'metrics.vol_samplers': {lines[0] if lines else type(e).__name__} "
                        f"(data {ds.name})") from None


PREFLIGHT_SAMPLES = 3  # an odd count: an output that depends on the batch size shows at 3 as at any


def _check_factory(t, ds) -> None:
    """Build the user's model for one trial and run :data:`PREFLIGHT_SAMPLES` samples through it."""
    name = t.model.name
    state = torch.get_rng_state()
    n = min(PREFLIGHT_SAMPLES, len(ds.x_train))
    try:
        model = make_model(t.model, ds.input_shape, ds.num_classes)
        if next(model.parameters(), None) is None:
            raise UserError(f"config key 'model.name': {name} builds a model without parameters; there is "
                            "nothing to train")
        with torch.no_grad():
            out = model.eval()(ds.x_train[:n].to(next(model.parameters()).dtype))
    except (UserError, KeyboardInterrupt):
        raise
    except BaseException as e:  # noqa: BLE001 — the factory or its forward pass is the user's code (sys.exit too)
        lines = str(e).strip().splitlines()
        raise UserError(f"config key 'model.name': {name} cannot build or run the model on {ds.name} inputs of "
                        f"shape {ds.input_shape} ({type(e).__name__}: {lines[0] if lines else ''})") from None
    finally:
        torch.set_rng_state(state)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (n, ds.num_classes):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise UserError(f"config key 'model.name': {name} returns outputs of shape {shape} for {n} samples; "
                        f"it must return (N, {ds.num_classes}) logits for the {ds.num_classes} classes of {ds.name}")


__all__ = ["preflight"]
