"""Shared figure machinery: one style, one colour per label-noise level, mean ± std bands over
seeds, a width axis with the grid's own tick labels, legends outside the data, PNG + PDF output.

Every figure of the report is a pure function ``table -> matplotlib Figure | None`` (``None``
when the table lacks what the figure needs); they live in :mod:`.figures` (against width) and
:mod:`.epochs` (against epoch, heat maps). Training never imports this package.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullFormatter, NullLocator

from .summary import conditions as noise_levels  # noqa: F401 — re-exported: one colour per condition, in grid order
from .summary import x_axis_of

STYLE = {
    "figure.dpi": 110,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titlesize": 9.5,
    "axes.labelsize": 9,
    "font.size": 9,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
    "legend.frameon": False,
    "lines.linewidth": 1.5,
    "lines.markersize": 3.5,
    "savefig.dpi": 150,
    "pdf.fonttype": 42,  # editable text in the PDF
}

# Okabe–Ito: colour-blind safe; noise level i (sorted) always gets NOISE_COLORS[i].
NOISE_COLORS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000"]
PANEL_W, PANEL_H = 3.6, 2.8  # inches per panel


# Colours of the series of one figure when there is one condition (Okabe–Ito, colour-blind safe).
SERIES_COLORS = ["#0072B2", "#56B4E9", "#009E73", "#D55E00", "#CC79A7", "#E69F00", "#000000", "#999999"]


def noise_color(levels: list, noise) -> str:
    return NOISE_COLORS[levels.index(noise) % len(NOISE_COLORS)] if noise in levels else NOISE_COLORS[0]


def noise_label(noise) -> str:
    """The condition's label (``noise 15 %, n_train 300``)."""
    return "all trials" if noise is None else str(noise)


X_LABELS = {"model.width": "width k", "data.n_train": "training samples n"}


def x_label(final: pd.DataFrame) -> str:
    """The x-axis name of the table: width, or the training-set size (sample-wise)."""
    key = x_axis_of(final)
    return X_LABELS.get(key, key)


def subplots(ncols: int, nrows: int = 1, *, width: float = PANEL_W, height: float = PANEL_H, **kw):
    """Figure with ``nrows × ncols`` panels, constrained layout (legends may sit outside)."""
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False,
                             layout="constrained", **kw)
    return fig, axes


def width_axis(ax, widths, label: str = X_LABELS["model.width"]) -> None:
    """Log x axis labelled with the swept values themselves (at most ~9 of them)."""
    ws = sorted({float(w) for w in widths if w is not None and np.isfinite(w) and w > 0})
    ax.set_xscale("log")
    ax.set_xlabel(label)
    if not ws:
        return
    ax.xaxis.set_major_locator(FixedLocator(spaced_ticks(ws)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())
    lo, hi = ws[0], ws[-1]
    pad = (hi / lo) ** 0.04 if hi > lo else 1.3
    ax.set_xlim(lo / pad, hi * pad)


def spaced_ticks(ws: list[float], max_ticks: int = 9) -> list[float]:
    """Widths to label on a log axis: the narrowest, the widest, and in between only those at
    least 1/``max_ticks`` of the log range from their neighbours (labels never overlap)."""
    if len(ws) <= 2:
        return list(ws)
    gap = (np.log(ws[-1]) - np.log(ws[0])) / max_ticks
    shown = [ws[0]]
    for w in ws[1:-1]:
        if np.log(w) - np.log(shown[-1]) >= gap and np.log(ws[-1]) - np.log(w) >= gap:
            shown.append(w)
    return shown + [ws[-1]]


def band(ax, c: pd.DataFrame, color, *, ls="-", marker="o", label=None, x="x", fill=True, **kw):
    """Mean line with a ±1 std band (drawn only where the std is positive)."""
    xs, m, s = c[x].to_numpy(float), c["mean"].to_numpy(float), c["std"].to_numpy(float)
    ax.plot(xs, m, ls=ls, marker=marker, color=color, label=label, **kw)
    if fill and np.nan_to_num(s).max(initial=0) > 0:
        lo, hi = m - s, m + s
        if ax.get_yscale() == "log":
            lo = np.where(lo > 0, lo, m)  # a log axis cannot draw a band through zero
        ax.fill_between(xs, lo, hi, color=color, alpha=0.18, lw=0)


def tidy_log_axis(ax) -> None:
    """Log y labels: only powers of ten over two decades or more, else also 2× and 5× as plain
    numbers (so a narrow range still has several labels)."""
    lo, hi = ax.get_ylim()
    if not (lo > 0 and hi > lo):
        return
    if hi / lo >= 100:
        ax.yaxis.set_minor_formatter(NullFormatter())
        return
    ax.yaxis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain)


def n_text(counts: pd.Series | np.ndarray | list) -> str:
    """"n = 3 seeds" or "n = 1–3 seeds" from per-point seed counts."""
    counts = [int(c) for c in counts if pd.notna(c)]
    if not counts:
        return ""
    lo, hi = min(counts), max(counts)
    return f"n = {lo} seed{'s' if lo > 1 else ''}" if lo == hi else f"n = {lo}–{hi} seeds"


def style_legend(fig, levels: list, styles: list[tuple[str, str, str]], *, used_levels=None,
                 colors: list[str] | None = None) -> None:
    """Legends below the panels: line styles (black, or ``colors`` when the series were drawn in
    their own colours) for the series, colours for noise levels.

    ``styles`` is ``[(label, linestyle, marker), ...]``.
    """
    handles = [Line2D([], [], color=colors[i] if colors else "0.2", ls=ls, marker=mk.rstrip("_"), label=lab,
                      **({"mfc": "none", "ms": 8} if mk.endswith("_") else {}))  # "o_": an open ring
               for i, (lab, ls, mk) in enumerate(styles)]
    shown = [lv for lv in levels if used_levels is None or lv in used_levels]
    if len(shown) > 1:
        handles += [Line2D([], [], color=noise_color(levels, lv), lw=6, alpha=0.8, label=noise_label(lv))
                    for lv in shown]
    if handles:
        ncol = len(handles) if len(handles) <= 5 else int(np.ceil(len(handles) / 2))
        fig.legend(handles=handles, loc="outside lower center", ncol=ncol, handlelength=2.6)


def subtitle(levels: list, counts: list, what: str = "mean ± std over seeds") -> str:
    """Panel-set subtitle: the statistic, n, and the noise level when there is only one. With one
    seed at every point there is no mean or spread to speak of: it says so."""
    seeds = [int(c) for c in counts if pd.notna(c)]
    if seeds and max(seeds) == 1 and what == "mean ± std over seeds":
        parts = ["one seed per point (no spread)"]
    else:
        parts = [what, n_text(counts)]
    if len(levels) == 1 and levels[0] is not None:
        parts.append(noise_label(levels[0]))
    return ", ".join(p for p in parts if p)


def no_data(ax, text: str) -> None:
    """An empty panel that says why it is empty."""
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4", wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    for spine in ax.spines.values():
        spine.set_visible(False)


def save(fig: plt.Figure, stem: Path) -> list[Path]:
    """PNG (for the page) and PDF (for papers) side by side; returns the paths."""
    stem = Path(stem)
    paths = []
    for ext in ("png", "pdf"):
        p = stem.with_suffix(f".{ext}")
        fig.savefig(p, bbox_inches="tight")
        paths.append(p)
    plt.close(fig)
    return paths
