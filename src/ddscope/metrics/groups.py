"""The metric groups' functions: ``compute_<group>(ctx) -> {key: float}``, one per row of the
catalogue (:data:`ddscope.catalogue.GROUPS`, which names them, says what they write and when they
run). The suite (:func:`ddscope.metrics.suite.measure`) calls them in the catalogue's order with
one :class:`~ddscope.metrics.context.Context`.

Adding a group: write its function (here or in the metric's own module, taking a ``Context``),
add its row to the catalogue, and test it against a dense float64 reference (docs/design.md §5).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..catalogue import PATHS
from .context import Context
from .distance import distance_from_init
from .hessian import auto_hess_batch, hess_top, hess_trace_detail
from .ascent import lipschitz_lower
from .complexity import complexity_measures
from .sharpness import sharpness_measures
from .jacobian import JacNorms, aggregate, jacobian_norms, path_jacobian_norms, rms_standard_error, top_points
from .lipschitz import lipschitz_upper
from .spectrum import hess_spectrum, spectrum_metrics
from .neighbourhood import check_sampler, parse_samplers
from .tight import lipschitz_upper_tight
from .volume import volume_measures
from .theorem import theorem2


def _subsample(x: Tensor, y: Tensor, n: int | None, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """A fixed random subset of n samples (all when n is None or ≥ N)."""
    if n is None or n >= len(x):
        return x, y
    idx = torch.randperm(len(x), generator=generator, device=generator.device)[:n].to(x.device)
    return x[idx], y[idx]


def compute_jacobian(ctx: Context) -> dict[str, float]:
    out: dict[str, float] = {}
    gen, n_max = ctx.gen, ctx.opt["jac_samples"]
    for name, (x, y) in ctx.splits.items():
        if len(x) == 0 or name in ctx.subsets:
            continue
        mine = {n: m for n, (parent, m) in ctx.subsets.items() if parent == name}
        if n_max is not None and n_max < len(x):
            idx = torch.randperm(len(x), generator=gen, device=gen.device)[:n_max].to(x.device)
        else:
            idx = torch.arange(len(x), device=x.device)
        norms = jacobian_norms(ctx.model, x[idx], y=y[idx], generator=gen, **ctx.jac_kw)
        out.update({f"{k}/{name}": v for k, v in aggregate(norms).items()})
        if len(idx) < len(x):  # a random subset: the rms is an estimate of the split's
            out[f"jac_spec_rms_se/{name}"] = rms_standard_error(norms.spec.square()) * (1 - len(idx) / len(x)) ** 0.5
        if ctx.opt["output"] == "logits":  # lip_lower starts from the largest norms of every split
            ctx.shared.setdefault("witnesses", []).extend(top_points(norms.spec, x[idx]))
            _measured(ctx, f"jac_spec_max/{name}", out[f"jac_spec_max/{name}"])
        for sub, mask in mine.items():
            keep = mask.to(idx.device)[idx]  # (n,) which of the measured samples are in `sub`
            if keep.any():
                part = JacNorms(spec=norms.spec[keep], fro=norms.fro[keep])
                out.update({f"{k}/{sub}": v for k, v in aggregate(part).items()})
    for sub, (parent, _) in ctx.subsets.items():  # a subset whose parent was not measured
        if parent not in ctx.splits and sub in ctx.splits and len(ctx.splits[sub][0]):
            xs, ys = _subsample(*ctx.splits[sub], n_max, gen)
            norms = jacobian_norms(ctx.model, xs, y=ys, generator=gen, **ctx.jac_kw)
            out.update({f"{k}/{sub}": v for k, v in aggregate(norms).items()})
    return out


def compute_paths(ctx: Context) -> dict[str, float]:
    x, y = ctx.split("train", "paths")
    out: dict[str, float] = {}
    for name, same in zip(PATHS, (True, False)):  # same-class pairs, then any two points
        agg = path_jacobian_norms(ctx.model, x, y, n_pairs=ctx.opt["path_pairs"], k=ctx.opt["path_k"],
                                  same_class=same, generator=ctx.gen,
                                  witnesses=ctx.shared.setdefault("witnesses", []) if ctx.opt["output"] == "logits" else None,
                                  **ctx.jac_kw)
        out.update({f"{k}/{name}": v for k, v in agg.items()})
        if ctx.opt["output"] == "logits":
            _measured(ctx, f"jac_spec_max/{name}", agg["jac_spec_max"])
    return out


def _measured(ctx: Context, key: str, value: float) -> None:
    """Remember a measured ‖J‖₂ of the logits: every upper bound is checked against it."""
    ctx.shared.setdefault("measured_max", {})[key] = value


def compute_lipschitz(ctx: Context) -> dict[str, float]:
    """The bracket lip_lower ≤ Lip(f) ≤ lip_upper_tight ≤ lip_upper (and the Lanczos product).

    lip_lower needs no bound, so it is measured whether or not the upper bound exists. Every
    upper bound is then checked against every ‖J(x)‖₂ measured on the logits (the splits, the
    paths, the ascent's witness): a "certificate" below a measured norm is false, so it is not
    stored, and the violation is an error of the group (``skipped``) naming both numbers."""
    out = _lip_lower(ctx) if ctx.splits else {}
    try:
        bound = lipschitz_upper(ctx.model, tuple(ctx.input_shape), num_iters=ctx.opt["lip_iters"],
                                constants=ctx.opt["lip_constants"])
    except ValueError:
        if not out:
            raise
        ctx.shared["partial"] = out  # the suite keeps lip_lower and reports the refusal
        raise
    tight = lipschitz_upper_tight(ctx.model, tuple(ctx.input_shape))
    upper = {"lip_upper": bound.value,
             # both certified, so the smaller is too (ECLipsE-Fast on MLPs, else the product bound)
             "lip_upper_tight": bound.value if tight is None else min(tight, bound.value)}
    measured = {k: v for k, v in ctx.shared.get("measured_max", {}).items()}
    if "lip_lower" in out:
        measured["lip_lower"] = out["lip_lower"]
    worst = max(measured.items(), key=lambda kv: kv[1], default=None)
    if worst is not None:
        bad = {k: v for k, v in upper.items() if v < worst[1] * (1 - CERTIFICATE_RTOL)}
        if bad:
            ctx.shared["partial"] = out
            raise CertificateViolated(
                "; ".join(f"{k} = {v:.6g} is below the measured {worst[0]} = {worst[1]:.6g}" for k, v in bad.items())
                + " — the bound is false on this model and is not stored")
    out.update(upper)
    out.update({"lip_upper_lanczos": bound.lanczos_value,
                "lip_upper_tight_eclipse": float(tight is not None),
                **{f"lip_layer/{path}": value for path, _, value in bound.layers},
                **{f"lip_layer_lanczos/{path}": value for path, value in bound.lanczos_layers.items()}})
    return out


# A certified bound may sit below a measured norm only by the measurement's rounding (float32
# Jacobians: ~1e-6 relative); anything more is a false certificate.
CERTIFICATE_RTOL = 1e-4


class CertificateViolated(ValueError):
    """A stored upper bound would be below a measured ‖J‖₂ or lip_lower of the same function."""


def _lip_lower(ctx: Context) -> dict[str, float]:
    """lip_lower by ascent from the largest measured norms (or random training points when the
    Jacobian groups did not run on logits), inside the box spanned by every split's inputs."""
    xs = [x for x, _ in ctx.splits.values() if len(x)]
    if not xs:
        return {}
    flat = torch.cat([x.flatten(1) for x in xs])
    lo, hi = flat.min(0).values.reshape(xs[0].shape[1:]), flat.max(0).values.reshape(xs[0].shape[1:])
    found = sorted(ctx.shared.get("witnesses", []), key=lambda w: -w[0])[: ctx.opt["lip_lower_starts"]]
    kw = {**ctx.jac_kw, "output": "logits"}
    kw.pop("loss")
    if found:
        starts = torch.stack([p for _, p in found])
        values = torch.tensor([v for v, _ in found], dtype=starts.dtype, device=starts.device)
    else:
        x = next(iter(ctx.splits.values()))[0]
        starts, values = _subsample(x, x, ctx.opt["lip_lower_starts"], ctx.gen)[0], None
    low = lipschitz_lower(ctx.model, starts, lo, hi, start_values=values, steps=ctx.opt["lip_lower_steps"],
                          generator=ctx.gen, **kw)
    return {"lip_lower": low.value, "lip_lower_dist": low.distance}


def _hessian_batches(ctx: Context, group: str) -> tuple[Tensor, Tensor, list]:
    """The training subsample of ``hessian`` and ``theorem2`` (drawn once for both) and its
    Hessian-vector-product batches."""
    if "hess_data" not in ctx.shared:
        xh, yh = _subsample(*ctx.split("train", group), ctx.opt["hess_samples"], ctx.gen)
        hb = ctx.opt["hess_batch"] or auto_hess_batch(ctx.model, xh, ctx.opt["hess_vmap"])
        ctx.shared["hess_data"] = (xh, yh, hb, [(xh[s : s + hb], yh[s : s + hb]) for s in range(0, len(xh), hb)])
    return ctx.shared["hess_data"]


def compute_hessian(ctx: Context) -> dict[str, float]:
    _, _, _, batches = _hessian_batches(ctx, "hessian")
    trace = hess_trace_detail(ctx.model, batches, method=ctx.opt["hess_method"], num_matvecs=ctx.opt["hess_matvecs"],
                              generator=ctx.gen, vmap_chunk=ctx.opt["hess_vmap"], loss=ctx.opt["loss"],
                              grad_chunk=ctx.opt["grad_chunk"])
    ctx.shared["hess_trace"] = trace  # theorem2's RHS reuses it
    if trace.refusal is not None and ctx.opt["hess_method"] == "auto":
        ctx.notes["hessian"] = f"hess_trace is {'exact (all dim products)' if trace.exact else 'an estimate (' + trace.method + ')'}: tr(GGN) was not used because {trace.refusal}"
    return {"hess_trace": trace.value, "hess_trace_exact": float(trace.exact), "hess_trace_se": trace.se,
            **{f"hess_trace/{layer}": v for layer, v in trace.layers.items()},
            "hess_top": hess_top(ctx.model, batches, num_iters=ctx.opt["lanczos_iters"], generator=ctx.gen,
                                 loss=ctx.opt["loss"])}


def compute_theorem2(ctx: Context) -> dict[str, float]:
    xh, yh, hb, _ = _hessian_batches(ctx, "theorem2")
    shared = ctx.shared.get("hess_trace")
    thm = theorem2(ctx.model, xh, yh, hess_trace_value=shared,
                   hutch_matvecs=ctx.opt["hess_matvecs"], chunk_size=ctx.opt["grad_chunk"], hess_batch=hb,
                   generator=ctx.gen, loss=ctx.opt["loss"])
    return {k: float(v) for k, v in thm.items()}


def compute_spectrum(ctx: Context) -> dict[str, float]:
    _, _, _, batches = _hessian_batches(ctx, "spectrum")
    s = hess_spectrum(ctx.model, batches, top_k=ctx.opt["spec_top_k"], probes=ctx.opt["spec_probes"],
                      steps=ctx.opt["spec_steps"], generator=ctx.gen, loss=ctx.opt["loss"], vmap_chunk=ctx.opt["hess_vmap"])
    return spectrum_metrics(s)


def compute_complexity(ctx: Context) -> dict[str, float]:
    x, y = _subsample(*ctx.split("train", "complexity"), ctx.opt["cm_samples"], ctx.gen)
    return complexity_measures(ctx.model, x, y, tuple(ctx.input_shape), ctx.init_state, loss=ctx.opt["loss"])


def compute_sharpness(ctx: Context) -> dict[str, float]:
    x, y = _subsample(*ctx.split("train", "sharpness"), ctx.opt["sharp_samples"], ctx.gen)
    return sharpness_measures(ctx.model, x, y, ctx.init_state, draws=ctx.opt["sharp_draws"],
                              depth=ctx.opt["sharp_depth"], generator=ctx.gen)


def compute_volume(ctx: Context) -> dict[str, float]:
    """Sharpness over volumes around training points (:mod:`.volume`), on ``vol_samples`` points
    of each of the training split's clean and noisy subsets (the whole split without them), for
    every sampler of ``vol_samplers``."""
    o = ctx.opt
    samplers = parse_samplers(o["vol_samplers"])
    for sampler in samplers:
        check_sampler(sampler, tuple(ctx.input_shape))
    x, y = ctx.split("train", "volume")
    parts = {name: mask for name, (parent, mask) in ctx.subsets.items() if parent == "train"} or {"train": None}
    out: dict[str, float] = {}
    for name, mask in parts.items():
        keep = mask.to(x.device) if mask is not None else None
        xs, ys = (x, y) if keep is None else (x[keep], y[keep])
        if len(xs) == 0:  # no noisy label: nothing to measure around
            continue
        xs, ys = _subsample(xs, ys, o["vol_samples"] or None, ctx.gen)
        for sampler in samplers:
            values = volume_measures(ctx.model, xs, ys, sampler, k=o["vol_k"], output=o["vol_output"], loss=o["loss"],
                                     generator=ctx.gen, chunk_size=o["chunk_size"])
            out.update({f"{k}/{name}/{sampler.label}": v for k, v in values.items()})
    return out


def compute_distance(ctx: Context) -> dict[str, float]:
    if ctx.init_state is None:
        raise ValueError("metric group 'distance' needs init_state (snapshot_params at step 0)")
    return distance_from_init(ctx.model, ctx.init_state)


__all__ = ["CERTIFICATE_RTOL", "CertificateViolated", "Context", "compute_complexity", "compute_distance",
           "compute_hessian", "compute_jacobian", "compute_lipschitz", "compute_paths", "compute_sharpness",
           "compute_spectrum", "compute_theorem2", "compute_volume"]
