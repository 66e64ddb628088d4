"""The table of metric groups: one row per group — its function, the keys it writes, the key
that shows it ran, what it measures, and (from the config's defaults) its schedule.

The suite (:func:`ddscope.metrics.suite.measure`) runs the requested rows in table order, the
report (:mod:`ddscope.report.coverage`) names the missing ones from it, and the trial's schedule
comes from ``metrics.groups`` / ``metrics.sparse_groups``, whose defaults are the one source of
each group's default schedule. Config validation checks names against
``ddscope.validate.METRIC_GROUPS``, kept equal to this table by a test (config is the bottom
layer and does not import torch code).

Adding a group: write ``_compute_<name>(ctx) -> {key: value}`` here, add its row to
:data:`GROUPS` and its name to ``validate.METRIC_GROUPS`` (and to ``MetricsConfig.groups`` or
``sparse_groups`` if it should run by default); test it against a dense float64 reference.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ..config import MetricsConfig
from .distance import distance_from_init
from .hessian import auto_hess_batch, hess_top, hess_trace_detail
from .ascent import lipschitz_lower
from .complexity import complexity_measures
from .sharpness import sharpness_measures
from .jacobian import JacNorms, aggregate, jacobian_norms, path_jacobian_norms, rms_standard_error, top_points
from .lipschitz import lipschitz_upper
from .spectrum import hess_spectrum, spectrum_metrics
from .tight import lipschitz_upper_tight
from .theorem import theorem2


@dataclass
class Context:
    """What a group's function sees: the model, the named splits, the options, one generator
    for all randomness (consumed in table order), and values groups share (``shared``)."""

    model: nn.Module
    splits: dict[str, tuple[Tensor, Tensor]]
    subsets: dict[str, tuple[str, Tensor]]
    input_shape: tuple[int, ...]
    init_state: dict[str, Tensor] | None
    opt: dict
    gen: torch.Generator
    shared: dict = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)  # group -> what ran otherwise than asked

    @property
    def jac_kw(self) -> dict:
        o = self.opt
        return dict(output=o["output"], method=o["jac_method"], chunk_size=o["chunk_size"], num_iters=o["jac_iters"],
                    loss=o["loss"])

    def split(self, name: str, group: str) -> tuple[Tensor, Tensor]:
        if name not in self.splits:
            raise ValueError(f"metric group {group!r} needs a {name!r} split; got {', '.join(self.splits) or 'none'}")
        return self.splits[name]


def _subsample(x: Tensor, y: Tensor, n: int | None, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """A fixed random subset of n samples (all when n is None or ≥ N)."""
    if n is None or n >= len(x):
        return x, y
    idx = torch.randperm(len(x), generator=generator, device=generator.device)[:n].to(x.device)
    return x[idx], y[idx]


def _compute_jacobian(ctx: Context) -> dict[str, float]:
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


def _compute_paths(ctx: Context) -> dict[str, float]:
    x, y = ctx.split("train", "paths")
    out: dict[str, float] = {}
    for name, same in (("path_same", True), ("path_any", False)):
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


def _compute_lipschitz(ctx: Context) -> dict[str, float]:
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


def _compute_hessian(ctx: Context) -> dict[str, float]:
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


def _compute_theorem2(ctx: Context) -> dict[str, float]:
    xh, yh, hb, _ = _hessian_batches(ctx, "theorem2")
    shared = ctx.shared.get("hess_trace")
    thm = theorem2(ctx.model, xh, yh, hess_trace_value=shared,
                   hutch_matvecs=ctx.opt["hess_matvecs"], chunk_size=ctx.opt["grad_chunk"], hess_batch=hb,
                   generator=ctx.gen, loss=ctx.opt["loss"])
    return {k: float(v) for k, v in thm.items()}


def _compute_spectrum(ctx: Context) -> dict[str, float]:
    _, _, _, batches = _hessian_batches(ctx, "spectrum")
    s = hess_spectrum(ctx.model, batches, top_k=ctx.opt["spec_top_k"], probes=ctx.opt["spec_probes"],
                      steps=ctx.opt["spec_steps"], generator=ctx.gen, loss=ctx.opt["loss"], vmap_chunk=ctx.opt["hess_vmap"])
    return spectrum_metrics(s)


def _compute_complexity(ctx: Context) -> dict[str, float]:
    x, y = _subsample(*ctx.split("train", "complexity"), ctx.opt["cm_samples"], ctx.gen)
    return complexity_measures(ctx.model, x, y, tuple(ctx.input_shape), ctx.init_state, loss=ctx.opt["loss"])


def _compute_sharpness(ctx: Context) -> dict[str, float]:
    x, y = _subsample(*ctx.split("train", "sharpness"), ctx.opt["sharp_samples"], ctx.gen)
    return sharpness_measures(ctx.model, x, y, ctx.init_state, draws=ctx.opt["sharp_draws"],
                              depth=ctx.opt["sharp_depth"], generator=ctx.gen)


def _compute_distance(ctx: Context) -> dict[str, float]:
    if ctx.init_state is None:
        raise ValueError("metric group 'distance' needs init_state (snapshot_params at step 0)")
    return distance_from_init(ctx.model, ctx.init_state)


@dataclass(frozen=True)
class MetricGroup:
    name: str
    compute: Callable[[Context], dict[str, float]]
    keys: str  # the keys it writes (<split>: every measured split; <layer>: a module path)
    probe: str  # a key every run of the group writes: the store shows the group ran
    about: str  # what it measures, in words

    @property
    def schedule(self) -> str:
        """``"every"`` metric epoch or ``"sparse"`` by default (``MetricsConfig``), or ``"off"``."""
        m = MetricsConfig()
        return "every" if self.name in m.groups else "sparse" if self.name in m.sparse_groups else "off"


# In the order the suite runs them: the generator's stream, hence every sampled value, depends on it.
GROUPS: dict[str, MetricGroup] = {g.name: g for g in (
    MetricGroup("jacobian", _compute_jacobian,
                "jac_spec_rms/<split>, jac_spec_mean/<split>, jac_spec_max/<split>, jac_fro_rms/<split>, "
                "jac_spec_rms_se/<split> (where jac_samples subsamples the split)",
                "jac_spec_rms/train", "input-Jacobian norms on the data splits"),
    MetricGroup("paths", _compute_paths, "the jacobian keys for <split> = path_same, path_any, with "
                "jac_spec_rms_se/<path> (the random pairs' standard error)",
                "jac_spec_rms/path_same", "Jacobian norms on paths between training points"),
    MetricGroup("lipschitz", _compute_lipschitz,
                "lip_upper, lip_upper_lanczos, lip_upper_tight, lip_upper_tight_eclipse (1: ECLipsE-Fast), "
                "lip_layer/<layer>, lip_layer_lanczos/<layer> (conv and pools), lip_lower, lip_lower_dist (with data)",
                "lip_upper", "the Lipschitz bracket: certified lower and upper bounds and the per-layer factors"),
    MetricGroup("hessian", _compute_hessian,
                "hess_trace, hess_trace_exact (1: verified tr(GGN) or dense, 0: an estimate), hess_trace_se (its standard "
                "error, 0 when exact), hess_trace/<layer> (exact only), "
                "hess_top", "hess_trace", "trace and top eigenvalue of the training loss's Hessian"),
    MetricGroup("theorem2", _compute_theorem2, "thm2_lhs, thm2_mid, thm2_rhs and their parts (theorem2())",
                "thm2_mid", "the Theorem 2 terms"),
    MetricGroup("spectrum", _compute_spectrum,
                "hess_eig/<i> (top-k, 1 = largest), hess_slq_node/<probe>.<step>, hess_slq_weight/<probe>.<step>",
                "hess_eig/1", "top eigenvalues and spectral density (SLQ) of the training loss's Hessian"),
    MetricGroup("complexity", _compute_complexity,
                "cm_params, cm_spec_prod, cm_spec_sum, cm_fro_prod, cm_fro_sum, cm_bft, cm_dist_fro, cm_dist_spec "
                "(with θ⁰), cm_path (ReLU nets), cm_fisher_rao, cm_margin, cm_inv_margin, cm_spec_margin, "
                "cm_fro_margin, cm_path_margin, cm_bft_margin", "cm_spec_prod",
                "the norm, margin and Fisher–Rao measures of the generalisation-measure studies"),
    MetricGroup("sharpness", _compute_sharpness,
                "cm_pacbayes_sigma, cm_pacbayes_flat, cm_pacbayes_mag_sigma, cm_pacbayes_mag_flat, "
                "cm_pacbayes_init (with θ⁰)", "cm_pacbayes_flat",
                "PAC-Bayes sharpness: the Gaussian weight noise the net tolerates"),
    MetricGroup("distance", _compute_distance, "dist_abs/<layer>, dist_rel/<layer>, dist_abs/all, dist_rel/all",
                "dist_rel/all", "distance from initialisation"),
)}

__all__ = ["GROUPS", "Context", "MetricGroup"]
