"""One entry point that measures a trained network: metric groups -> flat ``{key: float}``.

The training loop and the CLI call :func:`measure` with named data splits; every key is a
metric name of DESIGN.md §1, with ``/<split>`` or ``/<module path>`` where it has one. The groups
are the rows of :data:`ddscope.metrics.groups.GROUPS`; the options a trial config sets take
their defaults from :class:`~ddscope.config.MetricsConfig` (one source of each default).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ddscope.config import MetricsConfig
from ddscope.estimators import default_generator
from ddscope.metrics.groups import GROUPS, Context

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
    "hess_samples": _CONFIG.hess_samples or None,  # training samples for "hessian" and "theorem2" (None: all)
    "hess_method": "hutchpp",  # hutchpp / hutchinson / exact
    "hess_matvecs": _CONFIG.hess_matvecs,  # Hessian-vector products for the trace
    "lanczos_iters": _CONFIG.lanczos_iters,  # Lanczos steps for the top Hessian eigenvalue
    "hess_batch": None,  # samples per Hessian-vector-product batch (None: sized from memory, auto_hess_batch)
    "hess_vmap": 8,  # probes per vmapped HVP pass (memory ~ hess_vmap x one batch's HVP)
    "grad_chunk": 64,  # samples per per-sample-gradient pass in theorem2 (memory ~ grad_chunk x #params)
}


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
) -> dict[str, float]:
    """Compute the requested metric groups; returns plain floats (booleans as 0.0 / 1.0).

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
    gen = default_generator(generator)
    ctx = Context(model=model, splits=splits, subsets=subsets or {}, input_shape=tuple(input_shape),
                  init_state=init_state, opt=opt, gen=gen)
    out: dict[str, float] = {}
    for name, group in GROUPS.items():  # table order: the generator's stream depends on it
        if name in metrics:
            out.update(group.compute(ctx))
    return {k: float(v) for k, v in out.items()}
