"""One entry point that measures a trained network: metric groups -> flat ``{key: float}``.

The training loop and the CLI call :func:`measure` with named data splits; every key is a
metric name of docs/design.md §1, with ``/<split>`` or ``/<module path>`` where it has one. The groups
are the rows of :data:`ddscope.metrics.groups.GROUPS`; the options a trial config sets take
their defaults from :class:`~ddscope.config.MetricsConfig` (one source of each default).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ddscope.config import MetricsConfig
from ddscope.estimators import default_generator
from ddscope.metrics.groups import GROUPS, Context
from ddscope.metrics.jacobian import math_attention
from ddscope.metrics.losses import loss_fn

METRIC_GROUPS = tuple(GROUPS)  # the table's names (validate.METRIC_GROUPS is kept equal by a test)


_CONFIG = MetricsConfig()  # the defaults of the options a trial config sets (one source of each)

DEFAULT_OPTIONS = {
    "output": _CONFIG.output,  # Jacobian output map: logits, softmax, log_softmax, loss
    "jac_method": "auto",  # exact / lanczos / power / auto (see jacobian_norms)
    "jac_samples": _CONFIG.jac_samples or None,  # points per split for "jacobian" (None: all)
    "jac_iters": 50,  # Lanczos / power steps for the iterative Jacobian methods
    "chunk_size": None,  # samples per Jacobian pass (None: sized from memory, see auto_chunk_size)
    "path_pairs": _CONFIG.path_pairs,  # pairs per path family
    "path_k": _CONFIG.path_k,  # points per segment, endpoints included
    "lip_iters": 100,  # Lanczos steps per conv / pooling layer
    "lip_lower_starts": 8,  # ascent chains of lip_lower, from the largest measured ‖J‖₂
    "lip_lower_steps": 30,  # ascent steps per chain (each 9 Jacobians per chain)
    "hess_samples": _CONFIG.hess_samples or None,  # training samples for "hessian" and "theorem2" (None: all)
    "hess_method": _CONFIG.hess_method,  # auto (exact tr(GGN) where it equals tr(H), else hutchpp) / ggn / hutchpp / hutchinson / exact
    "hess_matvecs": _CONFIG.hess_matvecs,  # Hessian-vector products for the trace
    "lanczos_iters": _CONFIG.lanczos_iters,  # Lanczos steps for the top Hessian eigenvalue
    "spec_top_k": 5,  # eigenvalues of group "spectrum"
    "spec_probes": 3,  # SLQ probes (each spec_steps Hessian-vector products, batched)
    "spec_steps": 40,  # Lanczos steps per probe (quadrature nodes)
    "cm_samples": None,  # training points of "complexity" (margins, Fisher–Rao; None: all)
    "sharp_samples": 1000,  # training points of "sharpness" (each bisection step evaluates sharp_draws nets on them)
    "sharp_draws": 10,  # Monte-Carlo perturbations per bisection step (Jiang et al.: 10)
    "sharp_depth": 15,  # bisection steps on σ (Jiang et al.: 15)
    "hess_batch": None,  # samples per Hessian-vector-product batch (None: sized from memory, auto_hess_batch)
    "hess_vmap": 8,  # probes per vmapped HVP pass (memory ~ hess_vmap x one batch's HVP)
    "grad_chunk": 64,  # samples per per-sample-gradient pass in theorem2 (memory ~ grad_chunk x #params)
    "loss": "cross_entropy",  # the loss of hessian, theorem2 and output="loss": cross_entropy, mse or a callable
    "lip_constants": None,  # declared Lipschitz constants {node, module path or op name: L} (lipschitz_upper)
}


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
    return {
        "output": m.output,
        "jac_samples": m.jac_samples or None,
        "path_pairs": m.path_pairs,
        "path_k": m.path_k,
        "hess_samples": m.hess_samples or None,
        "hess_matvecs": m.hess_matvecs,
        "lanczos_iters": m.lanczos_iters,
        "hess_method": m.hess_method,
        "lip_constants": dict(m.lip_constants) or None,
    }


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
) -> Measurement:
    """Compute the requested metric groups; returns plain floats (booleans as 0.0 / 1.0).

    Each group runs on its own: one that cannot run on this model (an operation AutoLip cannot
    bound, a first layer Theorem 2 does not cover, an op without a double-backward rule) is
    skipped with its reason in ``result.skipped`` and one :class:`MetricSkipped` warning, and
    the other groups are computed. Attention runs on the math SDPA backend (:func:`math_attention`).

    Groups (the rows of :data:`~ddscope.metrics.groups.GROUPS`, run in table order; their
    ``keys`` say what each writes): ``jacobian`` on every non-empty split, ``paths`` between
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
        subsets: named subsets of another split by a boolean mask, e.g.
            ``{"train_clean": ("train", ~noisy), "train_noisy": ("train", noisy)}``: their Jacobian
            aggregates reuse the parent's per-sample norms instead of a second pass.
    """
    unknown = [m for m in metrics if m not in METRIC_GROUPS]
    if unknown:
        raise ValueError(f"unknown metric group(s) {unknown}; allowed: {', '.join(METRIC_GROUPS)}")
    bad = [k for k in (options or {}) if k not in DEFAULT_OPTIONS]
    if bad:
        raise ValueError(f"unknown option(s) {bad}; allowed: {', '.join(DEFAULT_OPTIONS)}")
    opt = {**DEFAULT_OPTIONS, **(options or {})}
    if loss is not None:  # the same as options={"loss": ...}
        opt["loss"] = loss
    # The caller's errors are raised, not taken for groups that cannot run on this model.
    loss_fn(opt["loss"])
    if "distance" in metrics and init_state is None:
        raise ValueError("metric group 'distance' needs init_state (snapshot_params at step 0)")
    for group in ("paths", "hessian", "theorem2", "spectrum", "complexity", "sharpness"):
        if group in metrics and "train" not in splits:
            raise ValueError(f"metric group {group!r} needs a 'train' split; got {', '.join(splits) or 'none'}")
    gen = default_generator(generator)
    ctx = Context(model=model, splits=splits, subsets=subsets or {}, input_shape=tuple(input_shape),
                  init_state=init_state, opt=opt, gen=gen)
    out: dict[str, float] = {}
    skipped: dict[str, str] = {}
    with math_attention():
        for name, group in GROUPS.items():  # table order: the generator's stream depends on it
            if name not in metrics:
                continue
            try:
                out.update(group.compute(ctx))
            except Exception as e:  # noqa: BLE001 — one group that cannot run must not lose the others
                out.update(ctx.shared.pop("partial", {}))  # what the group could measure (lip_lower without a bound)
                lines = str(e).strip().splitlines()
                skipped[name] = f"{type(e).__name__}: {lines[0] if lines else ''}"
                warnings.warn(f"metric group '{name}' skipped: {skipped[name]}", MetricSkipped, stacklevel=2)
    for name, why in ctx.notes.items():
        warnings.warn(f"metric group '{name}': {why}", MetricNote, stacklevel=2)
    return Measurement({k: float(v) for k, v in out.items()}, skipped, ctx.notes)
