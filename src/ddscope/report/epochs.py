"""Figures against epoch, as pure functions of the tidy table (one row per trial, epoch, metric;
see :func:`ddscope.report.table.tidy`): curves for representative widths, and width × epoch heat
maps, both marking the interpolation epoch. One column per label-noise level. The epoch axis is
log(1 + epoch), so epoch 0 (the initialisation) is on it."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.colors import LogNorm, Normalize
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

from . import plots
from .plots import noise_label, noise_levels, subplots, x_label

LABELS = {"jac_spec_rms/train": r"jac_spec_rms, train points", "err/train": "train error (noisy labels)"}
ROLE_NAMES = {"under": "under-param.", "critical": "critical", "over": "over-param.", "widest": "widest",
              "narrowest": "narrowest", "middle": "middle"}


def epoch_axis(ax, max_epoch: float) -> None:
    """x axis on log(1 + epoch) with plain epoch labels."""
    ax.set_xscale("function", functions=(lambda e: np.log10(1 + np.maximum(e, 0)), lambda u: 10**u - 1))
    ticks = [t for t in (0, 1, 3, 10, 30, 100, 300, 1000, 3000, 10000) if t <= max_epoch * 1.01]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlim(0, max(max_epoch, 1))
    ax.set_xlabel("epoch")


def _done(tidy: pd.DataFrame) -> pd.DataFrame:
    return tidy[tidy["status"] == "done"] if "status" in tidy else tidy


def _interp_epochs(d: pd.DataFrame) -> pd.Series:
    """Mean interpolation epoch per width over the trials that interpolated."""
    if "interp_epoch" not in d:
        return pd.Series(dtype=float)
    t = d.drop_duplicates("trial_id")
    v = pd.to_numeric(t["interp_epoch"], errors="coerce")
    return v.groupby(t["x"].astype(float)).mean().dropna()


def _levels(d: pd.DataFrame) -> list:
    return noise_levels(d.drop_duplicates("trial_id")) if "condition" in d else [None]


def _at(d: pd.DataFrame, noise) -> pd.DataFrame:
    return d if noise is None or "condition" not in d else d[d["condition"] == noise]


def over_epochs(tidy: pd.DataFrame, widths: dict, metrics=("jac_spec_rms/train", "err/train")) -> plots.plt.Figure | None:
    """``metrics`` (rows) against epoch for the representative widths ``widths[noise]`` (``{role:
    width}``, see :func:`.summary.representative_widths`), mean ± std over seeds; the train-error
    row marks each width's interpolation epoch with a dotted line."""
    d = _done(tidy)
    d = d[d["metric"].isin(metrics)]
    metrics = [m for m in metrics if (d["metric"] == m).any()]
    if d.empty or not metrics or not any(widths.values()):
        return None
    levels = [lv for lv in _levels(d) if widths.get(lv)]
    cmap = plots.plt.get_cmap("viridis")
    max_epoch = float(d["epoch"].max())
    with plots.plt.rc_context(plots.STYLE):
        fig, axes = subplots(len(levels), len(metrics), width=5.0 if len(levels) == 1 else 4.0, height=2.6,
                             sharex=True)
        for j, noise in enumerate(levels):
            dn = _at(d, noise)
            roles = widths[noise]
            handles = []
            interp = _interp_epochs(_at(_done(tidy), noise))
            for r, (role, w) in enumerate(roles.items()):
                color = cmap(0.9 * r / max(1, len(roles) - 1))
                label = f"k = {w:g} ({ROLE_NAMES.get(role, role)})"
                drawn = False
                for i, metric in enumerate(metrics):
                    ax = axes[i, j]
                    s = dn[(dn["x"].astype(float) == w) & (dn["metric"] == metric)]
                    g = s.groupby("epoch")["value"].agg(["mean", "std", "count"]).reset_index()
                    if g.empty:
                        continue
                    g["std"] = g["std"].fillna(0.0)
                    plots.band(ax, g.rename(columns={"count": "n"}), color, x="epoch", marker="")
                    drawn = True
                    if metric.startswith("err/train") and w in interp.index:
                        ax.axvline(interp[w], color=color, ls=":", lw=1.1)
                if drawn:
                    handles.append(plots.Line2D([], [], color=color, label=label))
            handles.append(plots.Line2D([], [], color="0.3", ls=":", label="interpolation epoch"))
            # Below each column: its widths differ from the other columns'.
            axes[-1, j].legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.28), ncol=2)
            for i, metric in enumerate(metrics):
                ax = axes[i, j]
                epoch_axis(ax, max_epoch)
                ax.set_ylabel(LABELS.get(metric, metric))
                if i == 0 and len(levels) > 1:
                    ax.set_title(noise_label(noise))
                if metric.startswith("err/"):
                    ax.set_ylim(bottom=0)
                if i < len(metrics) - 1:
                    ax.set_xlabel("")
        n = d.drop_duplicates("trial_id").groupby(["condition", "x"] if "condition" in d else ["x"]).size()
        fig.suptitle("Over epochs — " + plots.subtitle(levels, list(n)), fontsize=9.5)
        return fig


def _edges(epochs: np.ndarray) -> np.ndarray:
    """Cell edges around sorted epochs, halfway in log(1 + epoch)."""
    u = np.log10(1 + epochs.astype(float))
    if len(u) == 1:
        mid = np.array([u[0] - 0.1, u[0] + 0.1])
    else:
        inner = (u[1:] + u[:-1]) / 2
        mid = np.concatenate([[u[0] - (inner[0] - u[0])], inner, [u[-1] + (u[-1] - inner[-1])]])
    return np.maximum(10**mid - 1, 0.0)


def epoch_heatmaps(tidy: pd.DataFrame, metrics=("jac_spec_rms/train", "err/train")) -> plots.plt.Figure | None:
    """Width × epoch heat maps of ``metrics`` (rows; mean over seeds), one column per noise level;
    white rings mark the mean interpolation epoch of each width."""
    d = _done(tidy)
    d = d[d["metric"].isin(metrics)].dropna(subset=["value"])
    metrics = [m for m in metrics if (d["metric"] == m).any()]
    if d.empty or not metrics:
        return None
    levels = _levels(d)
    max_epoch = float(d["epoch"].max())
    with plots.plt.rc_context(plots.STYLE):
        n_widths = d["x"].nunique()
        fig, axes = subplots(len(metrics), len(levels), width=4.2, height=max(2.6, 1.0 + 0.2 * n_widths))
        for i, metric in enumerate(metrics):
            dm = d[d["metric"] == metric]
            vals = dm.groupby(["condition", "x", "epoch"] if "condition" in dm else ["x", "epoch"])["value"].mean()
            positive = (vals > 0).all() and vals.max() / max(vals.min(), 1e-300) > 20
            norm = LogNorm(vals.min(), vals.max()) if metric.startswith("jac") and positive else Normalize(
                0 if metric.startswith("err/") else vals.min(), vals.max())
            mesh = None
            for j, noise in enumerate(levels):
                ax = axes[j, i]
                sub = _at(dm, noise)
                grid = sub.groupby([sub["x"].astype(float), "epoch"])["value"].mean().unstack("epoch")
                if grid.empty:
                    plots.no_data(ax, f"{metric}: no data")
                    continue
                ep = grid.columns.to_numpy(float)
                widths = grid.index.to_numpy(float)
                mesh = ax.pcolormesh(_edges(ep), np.arange(len(widths) + 1) - 0.5, grid.to_numpy(float),
                                     cmap="magma" if metric.startswith("jac") else "viridis", norm=norm, shading="flat")
                epoch_axis(ax, max(max_epoch, _edges(ep)[-1]))
                ax.set_xlim(0, _edges(ep)[-1])
                step = max(1, int(np.ceil(len(widths) / 16)))
                ax.set_yticks(range(0, len(widths), step), [f"{w:g}" for w in widths[::step]])
                ax.set_ylabel(x_label(d))
                ax.grid(False)
                interp = _interp_epochs(_at(_done(tidy), noise))
                rows = [(interp[w], k) for k, w in enumerate(widths) if w in interp.index]
                if rows:
                    ax.plot(*zip(*rows), ls="none", marker="o", ms=5, mfc="none", mec="white", mew=1.2)
                ax.set_title(LABELS.get(metric, metric) + ("" if noise is None else f", {noise_label(noise)}"))
            if mesh is not None:
                fig.colorbar(mesh, ax=list(axes[:, i]), location="bottom", shrink=0.8, aspect=30, label=metric)
        fig.suptitle("Width × epoch (mean over seeds); rings: interpolation epoch", fontsize=9.5)
        return fig


def bracket_over_epochs(tidy: pd.DataFrame, widths: dict) -> plots.plt.Figure | None:
    """The Lipschitz bracket against epoch for the representative widths ``widths[noise]``: the
    certified lower bound ``lip_lower`` (solid) and upper bound ``lip_upper_tight`` (dashed),
    the band between them shaded; mean over seeds, log axis."""
    d = _done(tidy)
    d = d[d["metric"].isin(("lip_lower", "lip_upper_tight"))]
    if d.empty or not (d["metric"] == "lip_lower").any() or not any(widths.values()):
        return None
    levels = [lv for lv in _levels(d) if widths.get(lv)]
    cmap = plots.plt.get_cmap("viridis")
    max_epoch = float(d["epoch"].max())
    with plots.plt.rc_context(plots.STYLE):
        fig, axes = subplots(len(levels), width=5.0 if len(levels) == 1 else 4.0, height=3.0)
        for j, noise in enumerate(levels):
            ax, dn, roles = axes[0, j], _at(d, noise), widths[noise]
            for r, (role, w) in enumerate(roles.items()):
                color = cmap(0.9 * r / max(1, len(roles) - 1))
                s = dn[dn["x"].astype(float) == w].groupby(["metric", "epoch"])["value"].mean()
                if "lip_lower" not in s.index.get_level_values(0):
                    continue
                lo = s["lip_lower"]
                ax.plot(lo.index, lo.values, color=color, marker="o", ms=3, label=f"k = {w:g} ({ROLE_NAMES.get(role, role)})")
                if "lip_upper_tight" in s.index.get_level_values(0):
                    hi = s["lip_upper_tight"].reindex(lo.index)
                    ax.plot(hi.index, hi.values, color=color, ls="--", marker="^", ms=3)
                    ax.fill_between(lo.index, lo.values, hi.values, color=color, alpha=0.12, lw=0)
            ax.set_yscale("log")
            plots.tidy_log_axis(ax)
            epoch_axis(ax, max_epoch)
            ax.set_ylabel("Lipschitz constant (log)")
            ax.set_title("lip_lower (solid) ≤ Lip(f) ≤ lip_upper_tight (dashed)"
                         + ("" if noise is None else f", {noise_label(noise)}"), fontsize=8.5)
            ax.legend(fontsize=6.5)
        return fig
