"""The report's figures, one row each (:data:`FIGURES`): the file stem, the title, the caption,
what the figure needs from the store (said where it cannot be drawn), and the function that draws
it. The HTML page, the report's file list (``summary.json``'s ``figures``) and the figure list in
``docs/report.md`` are generated from this table (``python -m ddscope.report.contents`` prints
that list; a test keeps the file equal to it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from . import epochs, figures, html, ranking, ranking_figure, volume
from .summary import theorem2_table


@dataclass(frozen=True)
class ReportData:
    """What the figure functions draw from: the final table (one row per trial), the tidy table
    (every stored row), the representative widths per condition, the epoch budget, the ranking."""

    final: pd.DataFrame
    long: pd.DataFrame
    reps: dict
    budget: float | None
    rank: pd.DataFrame
    criterion: float | None = ranking.CRITERION


def _theorem2_table(d: ReportData, fig: str) -> str:
    thm = theorem2_table(d.final)
    return fig if thm.empty else fig + "<h3>Theorem 2 check per width</h3>" + html.table(thm)


def _ranking_section(d: ReportData, fig: str) -> str:
    """The ranking tables (every region and target) under the ranking figure."""
    rank, criterion = d.rank, d.criterion
    if rank.empty:
        return ("<p class=note>No ranking: fewer than three done trials met the training criterion (train error ≤ "
                f"{criterion}).</p>")
    excluded = int(rank["n_excluded"].iloc[0])
    parts = [fig, f"<p>{excluded} net(s) excluded: training error above {criterion} (the protocols compare nets "
             "trained to the same fit of their training set, as Jiang et al. and Dziugaite et al. do). τ: Kendall's τ "
             "over all nets; Ψ: granulated τ, one axis varied at a time (ψ per axis); CMI: conditional mutual "
             "information between the signs of Δmeasure and Δtarget over pairs of nets, given |S| = 0, 1, 2 "
             "hyper-parameter axes (minimum over S; 1 = the measure's sign predicts the target's fully, in either "
             "direction); sign-error: Dziugaite et al.'s coupled pairs (settings differing in one axis, their seeds as "
             "samples, Hoeffding-weighted), worst and mean over environments — 0.5 is a coin flip. Brackets: 95 % "
             "bootstrap intervals over seeds. Machine-readable: <code>ranking.csv</code>, <code>ranking.md</code>.</p>"]
    first = True
    for region in dict.fromkeys(rank["region"]):
        for target, what in ranking.TARGETS.items():
            v = ranking.ranking_view(rank, region, target)
            if v.empty:
                continue
            title = f"{html.esc(region)} nets — {html.esc(what)}"
            body = html.table(v, left=("measure", "ψ per axis", "worst per axis"))
            # the first table open, the others one click away: the page stays readable
            parts.append(f"<h3>{title}</h3>{body}" if first else
                         f"<details><summary>{title}</summary>{body}</details>")
            first = False
    return "".join(parts)


@dataclass(frozen=True)
class Figure:
    """One figure: ``name`` is its file stem (PNG and PDF); ``draw(data)`` returns a matplotlib
    Figure or None when the store lacks ``needs``; ``headline`` figures come before the evidence
    table; an ``opt_in`` figure that is not drawn is not reported missing (its group is, when
    enabled and absent: coverage); ``section(data,
    figure_html)`` is the page's section body (default: the figure alone)."""

    name: str
    title: str
    caption: str
    needs: str
    draw: Callable[[ReportData], object]
    headline: bool = False
    opt_in: bool = False
    section: Callable[[ReportData, str], str] = lambda d, fig: fig


# In page order (headline figures first, then the rest after the evidence table).
FIGURES: tuple[Figure, ...] = (
    Figure('double_descent', 'Double descent',
           'Test error (solid) and train error on the noisy training labels (dashed) at the last epoch against '
           'width k (log axis). Lines: mean over seeds; bands: ± 1 std. Dotted vertical line: interpolation '
           'threshold (narrowest width with mean train error 0); ring: test-error peak (highest test error '
           'beyond the classical optimum). One colour per label-noise level.',
           needs='err/test',
           draw=lambda d: figures.double_descent(d.final), headline=True),
    Figure('smoothness', 'Smoothness mirrors double descent',
           'jac_spec_rms = (1/N Σₙ ‖∂f/∂x(xₙ)‖₂²)^½ of the logits at training points, test points and on paths '
           'between training pairs (same class / any class), at the last epoch; beside it, the upper bound ∏ₗ '
           '‖Wₗ‖₂ on the global Lipschitz constant on a log axis.',
           needs="jac_spec_rms/* or lip_upper (metric groups 'jacobian', 'paths', 'lipschitz')",
           draw=lambda d: figures.smoothness(d.final), headline=True),
    Figure('bracket', 'The Lipschitz constant, bracketed',
           'Certified bounds on the global Lipschitz constant of the logits at the last epoch (log axis): '
           'lip_lower is ‖J(x)‖₂ at the best point found by ascent from the largest measured norms inside the '
           "data's box (a witness, so Lip(f) ≥ lip_lower ≥ every measured max ‖J‖₂); lip_upper multiplies "
           'certified layer norms (convolutions by their circular embedding or dense SVD, never below the exact '
           'norm; dotted: the same product with Lanczos estimates); lip_upper_tight is ECLipsE-Fast on MLPs, '
           'else lip_upper. Right: the gap upper / lower against width — how loose the bracket gets with over-'
           'parameterisation.',
           needs="lip_lower and lip_upper (metric group 'lipschitz' with data)",
           draw=lambda d: figures.bracket(d.final), headline=True),
    Figure('bracket_epochs', 'The bracket over epochs',
           "lip_lower and lip_upper_tight against epoch for the representative widths (as in 'Over epochs'), the"
           ' band between the two certified bounds shaded, mean over seeds: where the true Lipschitz constant '
           'can be as training proceeds.',
           needs="lip_lower over epochs (metric group 'lipschitz' with data)",
           draw=lambda d: epochs.bracket_over_epochs(d.long, d.reps)),
    Figure('over_epochs', 'Over epochs',
           'jac_spec_rms on training points (top) and train error on the noisy labels (bottom) against epoch for'
           ' representative widths chosen from the data: the classical optimum (under-parameterised), the test-'
           "error peak (critical), one between it and the widest, and the widest. Dotted: each width's mean "
           'interpolation epoch.',
           needs='jac_spec_rms/train or err/train over epochs',
           draw=lambda d: epochs.over_epochs(d.long, d.reps)),
    Figure('epoch_heatmaps', 'Width × epoch',
           'jac_spec_rms on training points and train error, mean over seeds, for every width and recorded '
           'epoch; rings mark the mean interpolation epoch.',
           needs='jac_spec_rms/train or err/train over epochs',
           draw=lambda d: epochs.epoch_heatmaps(d.long)),
    Figure('interpolation', 'Interpolation speed',
           'First epoch at which the train error on the noisy labels is 0, mean ± std over the seeds that got '
           'there (k/n beside a point when only k of n did); triangles at the epoch budget: no seed '
           'interpolated.',
           needs="err/train and the trials' interp_epoch",
           draw=lambda d: figures.interpolation_speed(d.final, d.budget)),
    Figure('theorem2', 'Theorem 2',
           'LHS = x_min²/‖θ¹‖₂² · (1/N) Σₙ ‖∇ₓLₙ‖², MID = (1/N) Σₙ ‖∇_θLₙ‖², RHS = 2 L_max tr H at the last '
           'epoch (log axis), and the fraction of seeds in which LHS ≤ MID and MID ≤ RHS held.',
           needs="thm2_lhs, thm2_mid, thm2_rhs (metric group 'theorem2')",
           draw=lambda d: figures.theorem2(d.final), section=_theorem2_table),
    Figure('curvature', 'Curvature',
           'Trace and largest eigenvalue of the Hessian of the training loss in parameter space at the last '
           'epoch, log axis.',
           needs="hess_trace, hess_top (metric group 'hessian')",
           draw=lambda d: figures.curvature(d.final)),
    Figure('spectrum', 'Hessian spectrum',
           "Spectral density of the training loss's Hessian by stochastic Lanczos quadrature (Ghorbani et al. "
           "2019), Gaussian-smoothed, for every trial measured with the 'spectrum' group (ddscope spectrum RUN, "
           'or the group in the schedule), and its top eigenvalues against width.',
           needs="hess_slq_* (metric group 'spectrum'; ddscope spectrum RUN adds it from checkpoints)",
           draw=lambda d: figures.spectrum(d.final), opt_in=True),
    Figure('volume', 'Sharpness over volumes',
           'rms of ‖∂g/∂x‖₂ (g: metrics.vol_output, the loss by default) over the neighbourhoods of training points '
           'spanned by each sampler of metrics.vol_samplers — balls of weak augmentations and geodesic paths of '
           'ever stronger ones (Gamba et al., TMLR 2023) — at the last epoch against width, clean-label and '
           'noisy-label points side by side on one scale; right: the fraction of the noisy points\' neighbourhoods '
           'that still predict the noisy label, and the test error. Mean over seeds, bands ± 1 std.',
           needs="vol_* (metric group 'volume')",
           draw=lambda d: volume.volume(d.final), opt_in=True),
    Figure('volume_epochs', 'Volume sharpness over epochs',
           'rms of ‖∂g/∂x‖₂ over the first sampler\'s neighbourhoods of clean-label and noisy-label training points, '
           'and the test error, against epoch for the representative widths (as in \'Over epochs\').',
           needs="vol_* over epochs (metric group 'volume')",
           draw=lambda d: volume.volume_epochs(d.long, d.reps), opt_in=True),
    Figure('distance', 'Distance from initialisation',
           "Relative distance ‖θₗ − θₗ⁰‖_F / ‖θₗ⁰‖_F of each layer's parameters at the last epoch (heat map, "
           'mean over seeds; layers are module paths from input to output), and of the whole network.',
           needs="dist_rel/* (metric group 'distance')",
           draw=lambda d: figures.distance(d.final)),
    Figure('ranking', 'Which measure tracks generalisation?',
           'Every complexity measure in the store ranked against the generalisation gap (err/test − err/train) '
           'and the test error by the protocols of Jiang et al. (ICLR 2020: Kendall τ, granulated Ψ, conditional'
           ' mutual information) and Dziugaite et al. (NeurIPS 2020: coupled-pair sign-error, worst and mean '
           'environment), over the nets that met the training criterion, and over those from the test-error peak'
           ' on (over-parameterised).',
           needs='three nets that met the training criterion, with a test error and a measure',
           draw=lambda d: ranking_figure.ranking(d.rank), opt_in=True, section=_ranking_section),
)


def figure_docs() -> str:
    """The figure list of ``docs/report.md``, generated from :data:`FIGURES`."""
    lines = ["# The report's figures", "",
             "Generated from `ddscope.report.contents.FIGURES` (`python -m ddscope.report.contents > docs/report.md`);",
             "each is written as `<name>.png` and `<name>.pdf` beside `index.html`.", ""]
    for f in FIGURES:
        lines += [f"## {f.title} — `{f.name}`", "", f.caption, "",
                  f"Needs: {f.needs}{' (drawn when asked for)' if f.opt_in else ''}.", ""]
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    print(figure_docs(), end="")


__all__ = ["FIGURES", "Figure", "ReportData", "figure_docs"]
