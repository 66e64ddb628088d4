"""One entry point that measures a trained network: metric groups -> flat ``{key: float}``.

The training loop and the CLI call :func:`measure` with named data splits; every key is a
metric name of docs/design.md §1, with ``/<split>`` or ``/<module path>`` where it has one. The groups
are the rows of the catalogue (:data:`ddscope.catalogue.GROUPS`), run in its order; the options and
their defaults are its :data:`~ddscope.catalogue.OPTIONS` (the trial config's ``[metrics]`` keys
default to the same values).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ddscope import catalogue
from ddscope.config import MetricsConfig
from ddscope.estimators import default_generator
from ddscope.metrics.context import Context
from ddscope.metrics.jacobian import math_attention
from ddscope.metrics.losses import loss_fn

METRIC_GROUPS = catalogue.METRIC_GROUPS  # the names, in run order
DEFAULT_OPTIONS = catalogue.OPTIONS  # the options of measure() and their defaults


class Measurement(dict):
    """``{key: float}`` of the groups that ran, ``skipped``: ``{group: reason}`` for the groups
    that could not run on this model (the others were computed all the same), and ``notes``:
    ``{group: what}`` where a group ran otherwise than asked — an estimate because exactness was
    not proven, a bound withheld because it failed its check."""

    def __init__(self, values=(), skipped: dict[str, str] | None = None, notes: dict[str, str] | None = None):
        super().__init__(values)
        self.skipped: dict[str, str] = dict(skipped or {})
        self.notes: dict[str, str] = dict(notes or {})


class MetricSkipped(UserWarning):
    """A metric group could not run on the model; the others were computed."""


class MetricNote(UserWarning):
    """A metric group ran otherwise than asked (an estimate where exactness was not proven)."""


def options_from_config(m: MetricsConfig) -> dict:
    """The :func:`measure` options a trial's ``[metrics]`` section sets (0 samples = all)."""
    out = {k: getattr(m, k) for k in catalogue.OPTIONS if hasattr(m, k)}
    for k in ("jac_samples", "hess_samples"):
        out[k] = out[k] or None
    out["lip_constants"] = dict(m.lip_constants) or None
    return out


def measure(
    model: nn.Module,
    splits: dict[str, tuple[Tensor, Tensor]],
    *,
    metrics: Sequence[str],
    input_shape: tuple[int, ...],
    init_state: dict[str, Tensor] | None = None,
    options: dict | None = None,
    generator: torch.Generator | None = None,
    subsets: dict[str, tuple[str, Tensor]] | None = None,
    loss=None,
    progress=None,
) -> Measurement:
    """Compute the requested metric groups; returns plain floats (booleans as 0.0 / 1.0).

    Each group runs on its own: one that cannot run on this model (an operation AutoLip cannot
    bound, a first layer Theorem 2 does not cover, an op without a double-backward rule) is
    skipped with its reason in ``result.skipped`` and one :class:`MetricSkipped` warning, and
    the other groups are computed. Attention runs on the math SDPA backend (:func:`math_attention`).

    Groups (the rows of :data:`ddscope.catalogue.GROUPS`, run in its order; their ``keys`` say
    what each writes): ``jacobian`` on every non-empty split, ``paths`` between
    pairs of ``train`` points, ``lipschitz``, ``hessian`` and ``theorem2`` on the same
    ``hess_samples`` training points (theorem2 reuses hessian's trace), ``distance`` (needs
    ``init_state``).

    Args:
        model: evaluated in eval mode; its training flags are restored.
        splits: named (x, y) pairs, e.g. ``train``, ``train_clean``, ``train_noisy``, ``test``.
        metrics: groups to compute.
        input_shape: one sample's shape, without the batch dimension.
        init_state: θ⁰ from ``snapshot_params`` (for ``distance``).
        options: overrides of :data:`DEFAULT_OPTIONS`; unknown keys raise ValueError.
        generator: all randomness (subsets, paths, probes); ``None``: seeded 0.
        loss: the loss of ``hessian``, ``theorem2`` and ``output="loss"``: ``"cross_entropy"``
            (default), ``"mse"`` or a callable ``(outputs, targets) -> per-sample losses``.
        progress: ``progress(line)`` hears each group as it starts and ends (with its seconds), for a
            long measurement's progress lines.
        subsets: named subsets of another split by a boolean mask, e.g.
            ``{"train_clean": ("train", ~noisy), "train_noisy": ("train", noisy)}``: their Jacobian
            aggregates reuse the parent's per-sample norms instead of a second pass.
    """
    groups = catalogue.GROUPS
    unknown = [m for m in metrics if m not in groups]
    if unknown:
        raise ValueError(f"unknown metric group(s) {unknown}; allowed: {', '.join(groups)}")
    bad = [k for k in (options or {}) if k not in catalogue.OPTIONS]
    if bad:
        raise ValueError(f"unknown option(s) {bad}; allowed: {', '.join(catalogue.OPTIONS)}")
    opt = {**catalogue.OPTIONS, **(options or {})}
    if loss is not None:  # the same as options={"loss": ...}
        opt["loss"] = loss
    # The caller's errors are raised, not taken for groups that cannot run on this model.
    loss_fn(opt["loss"])
    for name in metrics:  # what the catalogue says each group cannot run without
        if "init_state" in groups[name].needs and init_state is None:
            raise ValueError(f"metric group {name!r} needs init_state (snapshot_params at step 0)")
        if "train" in groups[name].needs and "train" not in splits:
            raise ValueError(f"metric group {name!r} needs a 'train' split; got {', '.join(splits) or 'none'}")
    gen = default_generator(generator)
    ctx = Context(model=model, splits=splits, subsets=subsets or {}, input_shape=tuple(input_shape),
                  init_state=init_state, opt=opt, gen=gen)
    out: dict[str, float] = {}
    skipped: dict[str, str] = {}
    with math_attention():
        for name, group in groups.items():  # catalogue order: the generator's stream depends on it
            if name not in metrics:
                continue
            t0 = time.perf_counter()
            if progress is not None:
                progress(f"metric group {name} ...")
            try:
                out.update(catalogue.resolve(group.compute)(ctx))
            except Exception as e:  # noqa: BLE001 — one group that cannot run must not lose the others
                out.update(ctx.shared.pop("partial", {}))  # what the group could measure (lip_lower without a bound)
                lines = str(e).strip().splitlines()
                skipped[name] = f"{type(e).__name__}: {lines[0] if lines else ''}"
                warnings.warn(f"metric group '{name}' skipped: {skipped[name]}", MetricSkipped, stacklevel=2)
            if progress is not None:
                progress(f"metric group {name}: {time.perf_counter() - t0:.1f} s")
    for name, why in ctx.notes.items():
        warnings.warn(f"metric group '{name}': {why}", MetricNote, stacklevel=2)
    return Measurement({k: float(v) for k, v in out.items()}, skipped, ctx.notes)
