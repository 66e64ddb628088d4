"""Figures as pure functions: a table from the store in, a matplotlib Figure out (or None when the
table lacks what the figure needs). Training never imports this module."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

STYLE = {
    "figure.dpi": 110,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "font.size": 9,
    "legend.fontsize": 8,
    "legend.frameon": False,
}
PALETTE = plt.get_cmap("tab10").colors


def curve(final: pd.DataFrame, metric: str, group: str = "data.noise") -> pd.DataFrame:
    """Mean, std and n over seeds of ``metric`` per (group, width), done trials only."""
    if metric not in final.columns:
        return pd.DataFrame(columns=[group, "model.width", "mean", "std", "n"])
    d = final[final["status"] == "done"].dropna(subset=[metric])
    g = d.groupby([group, "model.width"])[metric]
    out = g.agg(["mean", "std", "count"]).reset_index().rename(columns={"count": "n"})
    out["std"] = out["std"].fillna(0.0)
    return out.sort_values([group, "model.width"])


def _band(ax, c: pd.DataFrame, color, label, ls="-", marker="o"):
    x, m, s = c["model.width"].to_numpy(float), c["mean"].to_numpy(float), c["std"].to_numpy(float)
    ax.plot(x, m, ls=ls, marker=marker, ms=3, color=color, label=label)
    if (s > 0).any():
        ax.fill_between(x, m - s, m + s, color=color, alpha=0.18, lw=0)


def _n_text(c: pd.DataFrame) -> str:
    if c.empty:
        return ""
    lo, hi = int(c["n"].min()), int(c["n"].max())
    return f"n = {lo} seed{'s' if hi > 1 else ''}" if lo == hi else f"n = {lo}–{hi} seeds"


def _noise_levels(final: pd.DataFrame) -> list:
    return sorted(final["data.noise"].dropna().unique()) if "data.noise" in final else [None]


def width_curves(final: pd.DataFrame, panels: list[tuple[str, list[tuple[str, str, str]]]], *,
                 logy: bool = False, title: str = "") -> plt.Figure | None:
    """One panel per entry ``(ylabel, [(metric, label, linestyle), ...])`` against width (log x),
    one colour per label-noise level, mean ± std bands over seeds."""
    with plt.rc_context(STYLE):
        if not any(m in final.columns for _, series in panels for m, _, _ in series):
            return None
        fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.3), squeeze=False)
        for ax, (ylabel, series) in zip(axes[0], panels):
            ntext = ""
            levels = _noise_levels(final)
            for i, noise in enumerate(levels):
                for j, (metric, label, ls) in enumerate(series):
                    c = curve(final, metric)
                    if noise is not None:
                        c = c[c["data.noise"] == noise]
                    if c.empty:
                        continue
                    ntext = ntext or _n_text(c)
                    tag = f"{label}" + (f", noise {noise:g}" if len(levels) > 1 else "")
                    # Colour = noise level when several are swept, else one colour per series.
                    color = PALETTE[(i if len(levels) > 1 else j) % 10]
                    _band(ax, c, color, tag, ls=ls)
            ax.set_xscale("log")
            if logy:
                ax.set_yscale("log")
            ax.set_xlabel("width k")
            ax.set_ylabel(ylabel)
            ax.legend(title=ntext or None)
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        return fig


def over_epochs(tidy: pd.DataFrame, metric_left: str, metric_right: str, widths: list | None = None,
                noise=None) -> plt.Figure | None:
    """Two panels against epoch (log x, epoch 0 shown at 0.5): ``metric_left`` and ``metric_right``,
    one line per width (colour from small to large), first seed only."""
    d = tidy[tidy["metric"].isin([metric_left, metric_right])]
    if noise is not None and "data.noise" in d:
        d = d[d["data.noise"] == noise]
    if d.empty:
        return None
    seed0 = d["seed"].min()
    d = d[d["seed"] == seed0]
    all_w = sorted(d["model.width"].unique())
    widths = [w for w in (widths or all_w) if w in all_w]
    cmap = plt.get_cmap("viridis")
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, 2, figsize=(8.8, 3.3))
        for ax, metric in zip(axes, (metric_left, metric_right)):
            for j, w in enumerate(widths):
                s = d[(d["model.width"] == w) & (d["metric"] == metric)].sort_values("epoch")
                if s.empty:
                    continue
                x = np.maximum(s["epoch"].to_numpy(float), 0.5)
                ax.plot(x, s["value"], color=cmap(j / max(1, len(widths) - 1)), lw=1.2, label=f"k={w}")
            ax.set_xscale("log")
            ax.set_xlabel("epoch (0 drawn at 0.5)")
            ax.set_ylabel(metric)
        axes[1].legend(ncol=2, fontsize=7)
        fig.tight_layout()
        return fig


def save(fig: plt.Figure, stem) -> list:
    """PNG (for the page) and PDF (for papers) side by side; returns the paths."""
    paths = []
    for ext in ("png", "pdf"):
        p = stem.with_suffix(f".{ext}")
        fig.savefig(p, bbox_inches="tight", dpi=130 if ext == "png" else None)
        paths.append(p)
    plt.close(fig)
    return paths
