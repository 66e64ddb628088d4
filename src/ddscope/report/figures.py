"""Figures against width, as pure functions of the final table (one row per trial, the values at
the last epoch; see :func:`ddscope.report.table.final_table`). Each returns a Figure, or None when
the table has nothing it needs. Colour = label-noise level, line style = series, mean ± std over
seeds with n in the title."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from . import plots
from .plots import band, noise_color, noise_levels, style_legend, subplots, subtitle, width_axis, x_label
from .summary import curve, dd_summary, done_rows

Series = list[tuple[str, str, str, str]]  # (metric, label, linestyle, marker)


def _panel(ax, final: pd.DataFrame, levels: list, series: Series, *, ylabel: str, logy: bool = False,
           colors: list[str] | None = None) -> tuple[set, list]:
    """Draw ``series`` for every noise level on ``ax``; returns (levels drawn, seed counts).
    ``colors``: one colour per series, used when there is a single condition (colours then tell
    the series apart instead of the conditions)."""
    used, counts = set(), []
    if logy:
        ax.set_yscale("log")
    for noise in levels:
        for i, (metric, _label, ls, mk) in enumerate(series):
            c = curve(final, metric, noise)
            if logy:
                c = c[c["mean"] > 0]
            if c.empty:
                continue
            color = colors[i] if colors is not None and len(levels) == 1 else noise_color(levels, noise)
            band(ax, c, color, ls=ls, marker=mk)
            used.add(noise)
            counts += list(c["n"])
    ax.set_ylabel(ylabel)
    width_axis(ax, done_rows(final)["x"].astype(float) if "x" in final else [], x_label(final))
    if logy:
        plots.tidy_log_axis(ax)
    return used, counts


def _has(final: pd.DataFrame, metrics) -> bool:
    d = done_rows(final)
    return any(m in d and pd.to_numeric(d[m], errors="coerce").notna().any() for m in metrics)


def double_descent(final: pd.DataFrame) -> plots.plt.Figure | None:
    """Test error (solid) and train error on the noisy labels (dashed) against width; a dotted
    line at each interpolation threshold, a ring at each test-error peak."""
    if not _has(final, ["err/test"]):
        return None
    levels = noise_levels(final)
    with plots.plt.rc_context(plots.STYLE):
        fig, axes = subplots(1, width=5.2, height=3.4)
        ax = axes[0, 0]
        series = [("err/test", "test error", "-", "o"), ("err/train", "train error (noisy labels)", "--", "s")]
        used, counts = _panel(ax, final, levels, series, ylabel="error")
        marks = []
        for noise in levels:
            s = dd_summary(final, noise)
            color = noise_color(levels, noise)
            if s.get("interp_width") is not None:
                ax.axvline(s["interp_width"], color=color, ls=":", lw=1.1, alpha=0.8)
                marks.append(("interpolation threshold (train error 0)", ":", ""))
            if s.get("test_peak_width") is not None:
                ax.plot([s["test_peak_width"]], [s["test_peak_err"]], "o", ms=10, mfc="none", mec=color, mew=1.3)
                marks.append(("test-error peak", "none", "o_"))
        ax.set_ylim(bottom=0)
        ax.set_title("Double descent — " + subtitle(levels, counts))
        styles = [(lab, ls, mk) for _, lab, ls, mk in series] + list(dict.fromkeys(marks))
        style_legend(fig, levels, styles, used_levels=used)
        return fig


def smoothness(final: pd.DataFrame) -> plots.plt.Figure | None:
    """``jac_spec_rms`` on training, test and path points against width, and the Lipschitz upper
    bound ∏‖W_l‖₂ on a log axis beside it."""
    series = [
        ("jac_spec_rms/train", "train points", "-", "o"),
        ("jac_spec_rms/test", "test points", "--", "s"),
        ("jac_spec_rms/path_same", "paths, same class", ":", "^"),
        ("jac_spec_rms/path_any", "paths, any class", "-.", "v"),
    ]
    if not _has(final, [m for m, *_ in series] + ["lip_upper"]):
        return None
    levels = noise_levels(final)
    shown = [s for s in series if _has(final, [s[0]])]
    has_lip = _has(final, ["lip_upper"])
    with plots.plt.rc_context(plots.STYLE):
        fig, axes = subplots(int(bool(shown)) + int(has_lip), width=4.0, height=3.2)
        used, counts, k = set(), [], 0
        if shown:
            used, counts = _panel(axes[0, 0], final, levels, shown, ylabel="jac_spec_rms  (rms of ‖∂f/∂x‖₂)")
            axes[0, 0].set_title("input-Jacobian norm of the logits")
            k = 1
        if has_lip:
            u2, c2 = _panel(axes[0, k], final, levels, [("lip_upper", "", "-", "D")], ylabel="∏ₗ ‖Wₗ‖₂  (log)", logy=True)
            used |= u2
            counts += c2
            axes[0, k].set_title("Lipschitz upper bound")
        fig.suptitle("Smoothness against width — " + subtitle(levels, counts), fontsize=9.5)
        style_legend(fig, levels, [(lab, ls, mk) for _, lab, ls, mk in shown], used_levels=used)
        return fig


def interpolation_speed(final: pd.DataFrame, budget: float | None = None) -> plots.plt.Figure | None:
    """Epochs to interpolate (first epoch with train error 0) against width: mean ± std over the
    seeds that interpolated, k/n beside a point when only k of n did; open triangles at the
    epoch budget for widths where no seed interpolated."""
    d = done_rows(final)
    if d.empty or "interp_epoch" not in d or "x" not in d:
        return None
    d = d.assign(interp_epoch=pd.to_numeric(d["interp_epoch"], errors="coerce"))
    levels = noise_levels(d)
    with plots.plt.rc_context(plots.STYLE):
        fig, axes = subplots(1, width=4.6, height=3.2)
        ax = axes[0, 0]
        counts, never_any = [], False
        for i, noise in enumerate(levels):
            color = noise_color(levels, noise)
            sub = d if noise is None else d[d["condition"] == noise]
            g = sub.groupby("x")["interp_epoch"]
            c = curve(sub, "interp_epoch")
            if not c.empty:
                band(ax, c, color, marker="o")
                counts += list(g.size())
                tot = g.size()
                for w, k in c.set_index("x")["n"].items():
                    if k < tot[w]:
                        ax.annotate(f"{int(k)}/{int(tot[w])}", (w, c.set_index("x")["mean"][w]),
                                    textcoords="offset points", xytext=(4, 4), fontsize=7, color=color)
            never = [w for w, v in g.count().items() if v == 0]
            if never and budget is not None:
                never_any = True
                dodge = 1 + 0.04 * (i - (len(levels) - 1) / 2)  # side by side, not on top of each other
                ax.plot(np.array(never) * dodge, [budget] * len(never), ls="none", marker="^", mfc="none", mec=color, ms=6)
        if budget is not None:
            ax.axhline(budget, color="0.5", lw=0.8, ls="--")
        ax.set_ylabel("epochs to interpolate")
        ax.set_ylim(bottom=0, top=None if budget is None else budget * 1.08)
        width_axis(ax, d["x"].astype(float), x_label(d))
        ax.set_title("Interpolation speed — " + subtitle(levels, counts, "mean ± std over interpolating seeds"))
        styles = [("epochs to train error 0", "-", "o")]
        if never_any:
            styles.append((f"no seed within {budget:g} epochs", "none", "^_"))
        style_legend(fig, levels, styles)
        return fig


def theorem2(final: pd.DataFrame) -> plots.plt.Figure | None:
    """Theorem 2: LHS = x_min²/‖θ¹‖² · E‖∇ₓL‖², MID = E‖∇_θL‖², RHS = 2 L_max tr H against width
    (log), and the fraction of seeds in which LHS ≤ MID and MID ≤ RHS held."""
    series = [("thm2_lhs", "LHS", ":", "v"), ("thm2_mid", "MID", "-", "o"), ("thm2_rhs", "RHS", "--", "^")]
    if not _has(final, [m for m, *_ in series]):
        return None
    levels = noise_levels(final)
    with plots.plt.rc_context(plots.STYLE):
        fig, axes = subplots(2, width=4.0, height=3.2)
        used, counts = _panel(axes[0, 0], final, levels, series, ylabel="value (log)", logy=True)
        axes[0, 0].set_title("LHS ≤ MID ≤ RHS")
        held = [("thm2_lhs_le_mid", "LHS ≤ MID held", "-", "s"), ("thm2_mid_le_rhs", "MID ≤ RHS held", "--", "D")]
        if _has(final, [m for m, *_ in held]):
            for noise in levels:
                for metric, _, ls, mk in held:
                    c = curve(final, metric, noise)
                    if not c.empty:
                        axes[0, 1].plot(c["x"], c["mean"], ls=ls, marker=mk, color=noise_color(levels, noise))
            axes[0, 1].set_ylim(-0.05, 1.08)
            axes[0, 1].set_ylabel("fraction of seeds")
            width_axis(axes[0, 1], done_rows(final)["x"].astype(float), x_label(final))
            axes[0, 1].set_title("inequality held")
        else:
            plots.no_data(axes[0, 1], "inequality flags not recorded")
        fig.suptitle("Theorem 2 — " + subtitle(levels, counts), fontsize=9.5)
        style_legend(fig, levels, [(lab, ls, mk) for _, lab, ls, mk in series + held], used_levels=used)
        return fig


def curvature(final: pd.DataFrame) -> plots.plt.Figure | None:
    """Trace and top eigenvalue of the loss Hessian in parameter space against width (log)."""
    panels = [("hess_trace", "tr H"), ("hess_top", r"$\lambda_{\max}(H)$")]
    if not _has(final, [m for m, _ in panels]):
        return None
    levels = noise_levels(final)
    with plots.plt.rc_context(plots.STYLE):
        fig, axes = subplots(2, width=3.8, height=3.0)
        used, counts = set(), []
        for ax, (metric, ylabel) in zip(axes[0], panels):
            if not _has(final, [metric]):
                plots.no_data(ax, f"{metric} not measured")
                continue
            u, c = _panel(ax, final, levels, [(metric, "", "-", "o")], ylabel=ylabel + " (log)", logy=True)
            used |= u
            counts += c
            ax.set_title(metric)
        fig.suptitle("Curvature of the training loss — " + subtitle(levels, counts), fontsize=9.5)
        style_legend(fig, levels, [], used_levels=used)
        return fig


def _layer_key(name: str):
    """Natural order of module paths: ``net.2`` before ``net.10``."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def layer_columns(final: pd.DataFrame, prefix: str = "dist_rel/") -> list[str]:
    """Per-layer columns ``<prefix><module>`` (not ``all``) in network order."""
    cols = [c for c in final.columns if c.startswith(prefix) and c != prefix + "all"]
    return sorted(cols, key=lambda c: _layer_key(c[len(prefix):]))


def distance(final: pd.DataFrame) -> plots.plt.Figure | None:
    """Relative distance from initialisation ‖θ_l − θ_l⁰‖_F / ‖θ_l⁰‖_F: a layer × width heat map
    per noise level (mean over seeds), and the whole network's against width."""
    layers = [c for c in layer_columns(final) if _has(final, [c])]
    if not layers and not _has(final, ["dist_rel/all"]):
        return None
    levels = noise_levels(final)
    d = done_rows(final)
    with plots.plt.rc_context(plots.STYLE):
        fig, axes = subplots(len(levels) + 1, width=3.6, height=3.0)
        vals = pd.concat([pd.to_numeric(d[c], errors="coerce") for c in layers]) if layers else pd.Series(dtype=float)
        vmax = float(np.nanmax(vals)) if vals.notna().any() else 1.0
        im = None
        for ax, noise in zip(axes[0], levels):
            rows, widths = [], None
            for c in layers:
                cv = curve(final, c, noise)
                widths = cv["x"].to_numpy(float) if widths is None else widths
                rows.append(cv.set_index("x")["mean"].reindex(widths).to_numpy(float))
            if not rows or widths is None or not len(widths):
                plots.no_data(ax, "per-layer distances not recorded")
                continue
            im = ax.imshow(np.array(rows), aspect="auto", cmap="magma", vmin=0, vmax=vmax, origin="upper")
            ax.set_xticks(range(len(widths)), [f"{w:g}" for w in widths], rotation=90 if len(widths) > 8 else 0)
            ax.set_yticks(range(len(layers)), [f"{i + 1}: {c.split('/', 1)[1]}" for i, c in enumerate(layers)])
            ax.set_ylabel("layer: module")
            ax.set_xlabel(x_label(final))
            ax.grid(False)
            ax.set_title("per layer" + ("" if noise is None else f", {plots.noise_label(noise)}"))
        if im is not None:
            fig.colorbar(im, ax=list(axes[0][: len(levels)]), label=r"$\|\theta_l - \theta_l^0\|_F \,/\, \|\theta_l^0\|_F$", shrink=0.9)
        ax = axes[0, -1]
        if _has(final, ["dist_rel/all"]):
            used, counts = _panel(ax, final, levels, [("dist_rel/all", "", "-", "o")], ylabel=r"$\|\theta - \theta^0\|_F \,/\, \|\theta^0\|_F$")
            ax.set_title("whole network")
        else:
            used, counts = set(), []
            plots.no_data(ax, "dist_rel/all not recorded")
        fig.suptitle("Distance from initialisation — " + subtitle(levels, counts, "mean (± std) over seeds"),
                     fontsize=9.5)
        style_legend(fig, levels, [], used_levels=used)
        return fig


BRACKET: Series = [
    ("lip_upper", "lip_upper: ∏ of certified layer norms", "-", "D"),
    ("lip_upper_lanczos", "the same with Lanczos layer norms", ":", "d"),
    ("lip_upper_tight", "lip_upper_tight (ECLipsE-Fast on MLPs)", "--", "^"),
    ("lip_lower", "lip_lower: largest ‖J(x)‖₂ found (certified)", "-", "o"),
    ("jac_spec_max/train", "max ‖J‖₂ at training points", "-.", "s"),
    ("jac_spec_rms/train", "rms ‖J‖₂ at training points", ":", "x"),
]


def bracket(final: pd.DataFrame) -> plots.plt.Figure | None:
    """lip_lower ≤ Lip(f) ≤ lip_upper_tight ≤ lip_upper against width (log), with the measured
    Jacobian norms inside, and the gap lip_upper_tight / lip_lower against width."""
    if not _has(final, ["lip_lower"]) or not _has(final, ["lip_upper"]):
        return None
    levels = noise_levels(final)
    shown = [s for s in BRACKET if _has(final, [s[0]])]
    with plots.plt.rc_context(plots.STYLE):
        fig, axes = subplots(2, width=4.2, height=3.3)
        gaps = [("lip_gap", "lip_upper_tight / lip_lower", "-", "o"), ("lip_gap_product", "lip_upper / lip_lower", "--", "D")]
        gaps = [g for g in gaps if _has(final, [g[0]])]
        colors = plots.SERIES_COLORS[: len(shown) + len(gaps)] if len(levels) == 1 else None
        used, counts = _panel(axes[0, 0], final, levels, shown, ylabel="Lipschitz constant (log)", logy=True,
                              colors=colors)
        axes[0, 0].set_title("the bracket: lower ≤ Lip(f) ≤ upper")
        u2, _ = _panel(axes[0, 1], final, levels, gaps, ylabel="upper / lower (log)", logy=True,
                       colors=None if colors is None else colors[len(shown):])
        axes[0, 1].set_title("gap against width")
        fig.suptitle("Lipschitz bracket — " + subtitle(levels, counts), fontsize=9.5)
        style_legend(fig, levels, [(lab, ls, mk) for _, lab, ls, mk in shown + gaps], used_levels=used | u2,
                     colors=colors)
        return fig


def spectrum(final: pd.DataFrame, sigma_rel: float = 0.01) -> plots.plt.Figure | None:
    """The Hessian's spectral density (SLQ, Gaussian-smoothed, log density) of every trial that
    has one, one colour per width, and its top eigenvalues against width."""
    from ..metrics.spectrum import quadrature_from_metrics, spectral_density
    import torch

    d = done_rows(final)
    node_cols = [c for c in d.columns if c.startswith("hess_slq_node/")]
    eig_cols = sorted([c for c in d.columns if c.startswith("hess_eig/")], key=lambda c: int(c.split("/")[1]))
    if not node_cols or not d[node_cols].notna().any().any():
        return None
    rows = d[d[node_cols].notna().any(axis=1)].sort_values("x")
    cols = [c for c in d.columns if c.startswith(("hess_slq_node/", "hess_slq_weight/"))]
    quads = [quadrature_from_metrics({c: float(v) for c, v in r[cols].items() if pd.notna(v)}) for _, r in rows.iterrows()]
    lo = min(float(n[w > 0].min()) for n, w in quads)
    hi = max(float(n[w > 0].max()) for n, w in quads)
    span = max(hi - lo, 1e-12)
    sigma = sigma_rel * span
    grid = torch.linspace(lo - 5 * sigma, hi + 5 * sigma, 800, dtype=torch.float64)
    cmap = plots.plt.get_cmap("viridis")
    widths = rows["x"].astype(float).to_numpy()
    with plots.plt.rc_context(plots.STYLE):
        fig, axes = subplots(2, width=4.4, height=3.3)
        ax = axes[0, 0]
        for i, ((_, r), (n, w)) in enumerate(zip(rows.iterrows(), quads)):
            phi = spectral_density(n, w, grid, sigma).clamp_min(1e-12)
            frac = i / max(len(quads) - 1, 1)
            label = f"{x_label(final)} {r['x']:g}" + ("" if pd.isna(r.get("seed")) else f", seed {int(r['seed'])}")
            ax.plot(grid.numpy(), phi.numpy(), color=cmap(frac), lw=1.1, label=label)
        ax.set_yscale("log")
        ax.set_xlabel("eigenvalue of H")
        ax.set_ylabel("density (log)")
        ax.set_title(f"spectral density (SLQ, σ = {sigma:.2g})")
        ax.legend(fontsize=6.5)
        ax = axes[0, 1]
        if eig_cols:
            for k, c in enumerate(eig_cols):
                vals = pd.to_numeric(rows[c], errors="coerce")
                ax.plot(widths, vals, marker="o", ls="-" if k == 0 else ":", color=cmap(k / max(len(eig_cols) - 1, 1)),
                        label=f"λ_{k + 1}")
            ax.set_ylabel("top eigenvalues of H")
            width_axis(ax, widths, x_label(final))
            ax.legend(fontsize=6.5)
            ax.set_title("top eigenvalues")
        else:
            plots.no_data(ax, "hess_eig/* not recorded")
        fig.suptitle("Hessian spectrum at the last epoch measured", fontsize=9.5)
        return fig
