"""Figures of the ``volume`` group (sharpness over volumes around training points; Gamba et al.,
TMLR 2023): against width, clean and noisy labels side by side with the test error, and over
epochs for the representative widths. Pure functions of the report's tables."""

from __future__ import annotations

import re

import pandas as pd

from . import plots
from .epochs import over_epochs
from .figures import _has, _panel
from .plots import noise_levels, style_legend, subplots, subtitle

STYLES = (("-", "o"), ("--", "s"), (":", "^"), ("-.", "v"), ((0, (1, 3)), "D"))


def samplers(columns) -> list[str]:
    """The sampler labels of the volume keys among ``columns``, in first-seen order."""
    out = []
    for c in columns:
        m = re.fullmatch(r"vol_jac_spec_rms/[a-z_]+/(.+)", str(c))
        if m and m.group(1) not in out:
            out.append(m.group(1))
    return out


def _splits(columns) -> list[str]:
    have = {str(c).split("/")[1] for c in columns if str(c).startswith("vol_jac_spec_rms/")}
    return [s for s in ("train_clean", "train_noisy", "train") if s in have]


def volume(final: pd.DataFrame) -> plots.plt.Figure | None:
    """``vol_jac_spec_rms`` against width for each sampler — clean-label points, noisy-label points
    (one y-scale for both) — and the fraction of the noisy points' neighbourhoods that predict
    the noisy label beside the test error."""
    labels, splits = samplers(final.columns), _splits(final.columns)
    keys = [f"vol_jac_spec_rms/{s}/{lab}" for s in splits for lab in labels]
    if not keys or not _has(final, keys):
        return None
    levels = noise_levels(final)
    acc_split = "train_noisy" if "train_noisy" in splits else splits[0]
    with plots.plt.rc_context(plots.STYLE):
        fig, axes = subplots(len(splits) + 1, width=3.7, height=3.1)
        used, counts = set(), []
        for j, split in enumerate(splits):
            series = [(f"vol_jac_spec_rms/{split}/{lab}", lab, *STYLES[i % len(STYLES)]) for i, lab in enumerate(labels)]
            u, c = _panel(axes[0, j], final, levels, series, ylabel="" if j else "rms of ‖∂g/∂x‖₂ over neighbourhoods")
            used |= u
            counts += c
            axes[0, j].set_title({"train_clean": "clean labels", "train_noisy": "noisy labels"}.get(split, "training points"))
        lows, highs = zip(*(axes[0, j].get_ylim() for j in range(len(splits))))
        for j in range(len(splits)):  # one scale: the clean and the noisy panels compare by eye
            axes[0, j].set_ylim(min(lows), max(highs))
        ax = axes[0, len(splits)]
        series = [(f"vol_acc/{acc_split}/{lab}", lab, *STYLES[i % len(STYLES)]) for i, lab in enumerate(labels)]
        series.append(("err/test", "test error", (0, (5, 1)), "x"))
        u, c = _panel(ax, final, levels, series, ylabel="fraction")
        used |= u
        ax.set_ylim(-0.02, 1.02)
        ax.set_title("neighbourhoods predicting the " + ("noisy label" if acc_split == "train_noisy" else "label"))
        fig.suptitle("Sharpness over volumes around training points — " + subtitle(levels, counts), fontsize=9.5)
        style_legend(fig, levels, [(lab, ls, mk) for _, lab, ls, mk in series], used_levels=used)
        return fig


def volume_epochs(long: pd.DataFrame, reps: dict) -> plots.plt.Figure | None:
    """``vol_jac_spec_rms`` of the first sampler on clean and on noisy points against epoch for
    the representative widths, with the test error."""
    metrics = sorted(long["metric"].unique()) if not long.empty else []
    labels = samplers(metrics)
    if not labels:
        return None
    rows = [f"vol_jac_spec_rms/{s}/{labels[0]}" for s in _splits(metrics)] + ["err/test"]
    return over_epochs(long, reps, metrics=tuple(rows))


__all__ = ["samplers", "volume", "volume_epochs"]
