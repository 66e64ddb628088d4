"""The ranking figure: every measure sorted by each protocol, with its bootstrap interval.

A pure function of :func:`ddscope.report.ranking.ranking_table`'s table (plots read the store
only through it). One row of panels per region; panels: Jiang's τ with the gap and with the test
error, the granulated Ψ with the gap, and Dziugaite's sign-error with the gap (mean over
environments, the worst environment as an open marker).
"""

from __future__ import annotations

import math

import pandas as pd

from . import plots
from .ranking import TARGETS

PANELS = (  # (column, target, title, lower is better)
    ("tau", "gap", "Kendall τ with the generalisation gap", False),
    ("tau", "test", "Kendall τ with the test error", False),
    ("psi", "gap", "granulated Kendall Ψ (gap)", False),
    ("sign_mean", "gap", "sign-error (gap): mean ●, worst ○", True),
)


def ranking(table: pd.DataFrame) -> plots.plt.Figure | None:
    """``None`` without rows."""
    if table.empty:
        return None
    regions = list(dict.fromkeys(table["region"]))
    n = max(len(table[(table["region"] == r) & (table["target"] == t)]) for r in regions for t in TARGETS)
    with plots.plt.rc_context(plots.STYLE):
        fig, axes = plots.subplots(len(PANELS), len(regions), width=3.3, height=max(2.5, 0.17 * n + 0.8))
        for i, region in enumerate(regions):
            for j, (col, target, title, lower) in enumerate(PANELS):
                ax = axes[i, j]
                t = table[(table["region"] == region) & (table["target"] == target)].copy()
                t = t[t[col].notna()]
                if t.empty:
                    plots.no_data(ax, "no score")
                    continue
                # best at the top: the largest τ, Ψ (Jiang et al.'s reading); the smallest sign-error
                t = t.sort_values(col, ascending=lower, kind="stable")
                y = range(len(t))
                ax.invert_yaxis()
                lo, hi = t[f"{col}_lo"].to_numpy(float), t[f"{col}_hi"].to_numpy(float)
                v = t[col].to_numpy(float)
                err = [[max(0.0, a - b) if not math.isnan(b) else 0.0 for a, b in zip(v, lo)],
                       [max(0.0, b - a) if not math.isnan(b) else 0.0 for a, b in zip(v, hi)]]
                ax.errorbar(v, list(y), xerr=err, fmt="o", ms=3.5, color="C0", ecolor="C0", elinewidth=1, capsize=2)
                if col == "sign_mean":
                    ax.plot(t["sign_worst"].to_numpy(float), list(y), "o", mfc="none", color="C3", ms=4)
                    ax.axvline(0.5, color="0.5", lw=0.8, ls=":")  # a coin flip
                else:
                    ax.axvline(0.0, color="0.5", lw=0.8, ls=":")
                ax.set_yticks(list(y))
                ax.set_yticklabels(t["measure"], fontsize=6.5)
                ax.set_title(f"{title}\n{region} nets (n = {int(t['n_nets'].max())})", fontsize=8)
        fig.suptitle("Which measure tracks generalisation? (95 % bootstrap intervals over seeds)", fontsize=9.5)
        return fig


__all__ = ["ranking"]
