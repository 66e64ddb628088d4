"""One entry point that measures a trained network: metric groups -> flat ``{key: float}``.

The training loop and the CLI call :func:`measure` with named data splits; every key is a
metric name of DESIGN.md §1, with ``/<split>`` or ``/<module path>`` where it has one.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ddscope.estimators import default_generator
from ddscope.metrics.distance import distance_from_init
from ddscope.metrics.hessian import auto_hess_batch, hess_top, hess_trace
from ddscope.metrics.jacobian import JacNorms, aggregate, jacobian_norms, path_jacobian_norms
from ddscope.metrics.lipschitz import lipschitz_upper
from ddscope.metrics.theorem import theorem2
from ddscope.validate import METRIC_GROUPS  # one list of the groups, for config, CLI and suite

DEFAULT_OPTIONS = {
    "output": "logits",  # Jacobian output map: logits, softmax, log_softmax, loss
    "jac_method": "auto",  # exact / lanczos / power / auto (see jacobian_norms)
    "jac_samples": None,  # points per split for "jacobian" (None: all)
    "jac_iters": 50,  # Lanczos / power steps for the iterative Jacobian methods
    "chunk_size": None,  # samples per Jacobian pass (None: sized from memory, see auto_chunk_size)
    "path_pairs": 100,  # pairs per path family
    "path_k": 8,  # points per segment, endpoints included
    "lip_iters": 100,  # Lanczos steps per conv / pooling layer
    "hess_samples": None,  # training samples for "hessian" and "theorem2" (None: all)
    "hess_method": "hutchpp",  # hutchpp / hutchinson / exact
    "hess_matvecs": 100,  # Hessian-vector products for the trace
    "lanczos_iters": 30,  # Lanczos steps for the top Hessian eigenvalue
    "hess_batch": None,  # samples per Hessian-vector-product batch (None: sized from memory, auto_hess_batch)
    "hess_vmap": 8,  # probes per vmapped HVP pass (memory ~ hess_vmap x one batch's HVP)
    "grad_chunk": 64,  # samples per per-sample-gradient pass in theorem2 (memory ~ grad_chunk x #params)
}


def _subsample(x: Tensor, y: Tensor, n: int | None, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """A fixed random subset of n samples (all when n is None or ≥ N)."""
    if n is None or n >= len(x):
        return x, y
    idx = torch.randperm(len(x), generator=generator, device=generator.device)[:n].to(x.device)
    return x[idx], y[idx]


def _split(splits: dict[str, tuple[Tensor, Tensor]], name: str, group: str) -> tuple[Tensor, Tensor]:
    if name not in splits:
        raise ValueError(f"metric group {group!r} needs a {name!r} split; got {', '.join(splits) or 'none'}")
    return splits[name]


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

    Groups (:data:`METRIC_GROUPS`):
        ``jacobian``: ``jac_spec_rms/<split>``, ``jac_spec_mean/<split>``,
            ``jac_spec_max/<split>``, ``jac_fro_rms/<split>`` for every non-empty split.
        ``paths``: the same keys for splits ``path_same`` and ``path_any``, integrated along
            segments between pairs of ``train`` points.
        ``lipschitz``: ``lip_upper`` and ``lip_layer/<module path>``.
        ``hessian``: ``hess_trace``, ``hess_top`` on ``train`` (subsampled to ``hess_samples``).
        ``theorem2``: the keys of :func:`ddscope.metrics.theorem.theorem2` on the same samples as
            ``hessian`` (reusing its trace when both are requested).
        ``distance``: ``dist_abs/*``, ``dist_rel/*``; needs ``init_state``.

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
    jac_kw = dict(output=opt["output"], method=opt["jac_method"], chunk_size=opt["chunk_size"], num_iters=opt["jac_iters"])
    out: dict[str, float] = {}

    if "jacobian" in metrics:
        subsets = subsets or {}
        for name, (x, y) in splits.items():
            if len(x) == 0 or name in subsets:
                continue
            mine = {n: m for n, (parent, m) in subsets.items() if parent == name}
            if opt["jac_samples"] is not None and opt["jac_samples"] < len(x):
                idx = torch.randperm(len(x), generator=gen, device=gen.device)[: opt["jac_samples"]].to(x.device)
            else:
                idx = torch.arange(len(x), device=x.device)
            norms = jacobian_norms(model, x[idx], y=y[idx], generator=gen, **jac_kw)
            out.update({f"{k}/{name}": v for k, v in aggregate(norms).items()})
            for sub, mask in mine.items():
                keep = mask.to(idx.device)[idx]  # (n,) which of the measured samples are in `sub`
                if keep.any():
                    part = JacNorms(spec=norms.spec[keep], fro=norms.fro[keep])
                    out.update({f"{k}/{sub}": v for k, v in aggregate(part).items()})
        for sub, (parent, _) in subsets.items():  # a subset whose parent was not measured
            if parent not in splits and sub in splits and len(splits[sub][0]):
                xs, ys = _subsample(*splits[sub], opt["jac_samples"], gen)
                norms = jacobian_norms(model, xs, y=ys, generator=gen, **jac_kw)
                out.update({f"{k}/{sub}": v for k, v in aggregate(norms).items()})

    if "paths" in metrics:
        x, y = _split(splits, "train", "paths")
        for name, same in (("path_same", True), ("path_any", False)):
            agg = path_jacobian_norms(model, x, y, n_pairs=opt["path_pairs"], k=opt["path_k"], same_class=same,
                                      generator=gen, **jac_kw)
            out.update({f"{k}/{name}": v for k, v in agg.items()})

    if "lipschitz" in metrics:
        bound = lipschitz_upper(model, tuple(input_shape), num_iters=opt["lip_iters"])
        out["lip_upper"] = bound.value
        out.update({f"lip_layer/{path}": value for path, _, value in bound.layers})

    trace = None
    if "hessian" in metrics or "theorem2" in metrics:
        xh, yh = _subsample(*_split(splits, "train", "hessian"), opt["hess_samples"], gen)
        hb = opt["hess_batch"] or auto_hess_batch(model, xh, opt["hess_vmap"])
        opt["hess_batch"] = hb
        batches = [(xh[s : s + hb], yh[s : s + hb]) for s in range(0, len(xh), hb)]
    if "hessian" in metrics:
        trace = hess_trace(model, batches, method=opt["hess_method"], num_matvecs=opt["hess_matvecs"], generator=gen,
                           vmap_chunk=opt["hess_vmap"])
        out["hess_trace"] = trace
        out["hess_top"] = hess_top(model, batches, num_iters=opt["lanczos_iters"], generator=gen)

    if "theorem2" in metrics:
        thm = theorem2(model, xh, yh, hess_trace_value=trace, hutch_matvecs=opt["hess_matvecs"],
                       chunk_size=opt["grad_chunk"], hess_batch=opt["hess_batch"], generator=gen)
        out.update({k: float(v) for k, v in thm.items()})

    if "distance" in metrics:
        if init_state is None:
            raise ValueError("metric group 'distance' needs init_state (snapshot_params at step 0)")
        out.update(distance_from_init(model, init_state))

    return {k: float(v) for k, v in out.items()}
