"""The report of a sweep, built from the store alone (``ddscope report RUN_DIR``; also written at
the end of every sweep):

- figures, PNG and PDF, one style: ``double_descent``, ``smoothness``, ``over_epochs``,
  ``epoch_heatmaps``, ``interpolation``, ``theorem2``, ``curvature``, ``distance``;
- ``evidence.csv`` / ``evidence.md``: rank correlation of each measure with the test error
  across widths, with bootstrap intervals over seeds, and where each measure peaks
  (:mod:`.evidence`);
- ``summary.json``: per condition (label-noise level and every other grid axis except the
  seeds, kept apart everywhere) the double-descent summary with its verdict and reason, the
  representative widths, the evidence rows and what is missing;
- ``final_table.csv`` (one row per trial) and ``tidy.csv`` (every stored row);
- ``index.html``: one self-contained page with all of it, the sweep's config and the software.

A partly finished sweep, failed trials or metric groups that were never measured give a page
that says what is missing (:mod:`.coverage`) instead of an error.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from ..sweep.store import Store
from ..sweep.table import final_table, tidy
from . import epochs, figures, html, plots, ranking, ranking_figure
from .coverage import estimate_lines, missing_items
from .evidence import MEASURES, evidence_table
from .summary import conditions, dd_summary, done_rows, representative_widths, theorem2_table, with_bracket, x_axis_of

__all__ = ["build_report", "dd_summary", "evidence_table"]

# file stem -> (title, caption); the figure functions are called in build_report.
CAPTIONS = {
    "double_descent": ("Double descent", (
        "Test error (solid) and train error on the noisy training labels (dashed) at the last epoch against "
        "width k (log axis). Lines: mean over seeds; bands: ± 1 std. Dotted vertical line: interpolation "
        "threshold (narrowest width with mean train error 0); ring: test-error peak (highest test error beyond "
        "the classical optimum). One colour per label-noise level.")),
    "smoothness": ("Smoothness mirrors double descent", (
        "jac_spec_rms = (1/N Σₙ ‖∂f/∂x(xₙ)‖₂²)^½ of the logits at training points, test points and on paths "
        "between training pairs (same class / any class), at the last epoch; beside it, the upper bound "
        "∏ₗ ‖Wₗ‖₂ on the global Lipschitz constant on a log axis.")),
    "over_epochs": ("Over epochs", (
        "jac_spec_rms on training points (top) and train error on the noisy labels (bottom) against epoch for "
        "representative widths chosen from the data: the classical optimum (under-parameterised), the test-error "
        "peak (critical), one between it and the widest, and the widest. Dotted: each width's mean "
        "interpolation epoch.")),
    "epoch_heatmaps": ("Width × epoch", (
        "jac_spec_rms on training points and train error, mean over seeds, for every width and recorded epoch; "
        "rings mark the mean interpolation epoch.")),
    "interpolation": ("Interpolation speed", (
        "First epoch at which the train error on the noisy labels is 0, mean ± std over the seeds that got there "
        "(k/n beside a point when only k of n did); triangles at the epoch budget: no seed interpolated.")),
    "bracket": ("The Lipschitz constant, bracketed", (
        "Certified bounds on the global Lipschitz constant of the logits at the last epoch (log axis): lip_lower "
        "is ‖J(x)‖₂ at the best point found by ascent from the largest measured norms inside the data's box (a "
        "witness, so Lip(f) ≥ lip_lower ≥ every measured max ‖J‖₂); lip_upper multiplies certified layer norms "
        "(convolutions by their circular embedding or dense SVD, never below the exact norm; dotted: the same "
        "product with Lanczos estimates); lip_upper_tight is ECLipsE-Fast on MLPs, else lip_upper. Right: the "
        "gap upper / lower against width — how loose the bracket gets with over-parameterisation.")),
    "bracket_epochs": ("The bracket over epochs", (
        "lip_lower and lip_upper_tight against epoch for the representative widths (as in 'Over epochs'), the "
        "band between the two certified bounds shaded, mean over seeds: where the true Lipschitz constant can "
        "be as training proceeds.")),
    "ranking": ("Which measure tracks generalisation?", (
        "Every complexity measure in the store ranked against the generalisation gap (err/test − err/train) and the "
        "test error by the protocols of Jiang et al. (ICLR 2020: Kendall τ, granulated Ψ, conditional mutual "
        "information) and Dziugaite et al. (NeurIPS 2020: coupled-pair sign-error, worst and mean environment), over "
        "the nets that met the training criterion, and over those from the test-error peak on (over-parameterised).")),
    "spectrum": ("Hessian spectrum", (
        "Spectral density of the training loss's Hessian by stochastic Lanczos quadrature (Ghorbani et al. 2019), "
        "Gaussian-smoothed, for every trial measured with the 'spectrum' group (ddscope spectrum RUN, or the "
        "group in the schedule), and its top eigenvalues against width.")),
    "theorem2": ("Theorem 2", (
        "LHS = x_min²/‖θ¹‖₂² · (1/N) Σₙ ‖∇ₓLₙ‖², MID = (1/N) Σₙ ‖∇_θLₙ‖², RHS = 2 L_max tr H at the last "
        "epoch (log axis), and the fraction of seeds in which LHS ≤ MID and MID ≤ RHS held.")),
    "curvature": ("Curvature", (
        "Trace and largest eigenvalue of the Hessian of the training loss in parameter space at the last epoch, "
        "log axis.")),
    "distance": ("Distance from initialisation", (
        "Relative distance ‖θₗ − θₗ⁰‖_F / ‖θₗ⁰‖_F of each layer's parameters at the last epoch (heat map, mean "
        "over seeds; layers are module paths from input to output), and of the whole network.")),
}
OPT_IN_FIGURES = ("spectrum", "ranking")  # drawn when asked for (or possible: the ranking section says why not); not a gap
AXIS_COLUMNS = ("model.width", "data.noise", "seed")  # always in the page's final table
NEEDS = {  # what a figure needs, said when it cannot be drawn
    "double_descent": "err/test",
    "smoothness": "jac_spec_rms/* or lip_upper (metric groups 'jacobian', 'paths', 'lipschitz')",
    "over_epochs": "jac_spec_rms/train or err/train over epochs",
    "epoch_heatmaps": "jac_spec_rms/train or err/train over epochs",
    "interpolation": "err/train and the trials' interp_epoch",
    "bracket": "lip_lower and lip_upper (metric group 'lipschitz' with data)",
    "bracket_epochs": "lip_lower over epochs (metric group 'lipschitz' with data)",
    "spectrum": "hess_slq_* (metric group 'spectrum'; ddscope spectrum RUN adds it from checkpoints)",
    "ranking": "three nets that met the training criterion, with a test error and a measure",
    "theorem2": "thm2_lhs, thm2_mid, thm2_rhs (metric group 'theorem2')",
    "curvature": "hess_trace, hess_top (metric group 'hessian')",
    "distance": "dist_rel/* (metric group 'distance')",
}


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if x is None or x is pd.NA:
        return None
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return None if math.isnan(x) else float(x)
    return x


def _levels(final: pd.DataFrame) -> list:
    """The conditions of the done trials, in grid order (``[None]`` when there are none)."""
    return conditions(done_rows(final))


def build_report(run_dir: str | Path, out: str | Path | None = None, *, rank_epochs: str = "final",
                 criterion: float | None = ranking.CRITERION, progress: Callable[[str], None] | None = None) -> Path:
    """Write the report of ``run_dir`` to ``out`` (default ``RUN_DIR/report``); returns the path
    of its ``index.html``. ``rank_epochs`` and ``criterion``: which nets the measure ranking
    uses (:func:`ddscope.report.ranking.ranking_table`). ``progress(line)`` hears each step
    (the ranking's bootstrap and the figures take most of the time on a large store)."""
    run_dir = Path(run_dir)
    t0 = time.perf_counter()

    def say(what: str) -> None:
        if progress is not None:
            progress(f"{what} ({time.perf_counter() - t0:.0f} s)")

    say("reading the store")
    store = Store.open(run_dir, readonly=True)
    try:
        final, long = final_table(store), tidy(store)
        counts, sweep_cfg = store.counts(), store.sweep_config()
    finally:
        store.close()
    say(f"{len(final)} trials, {len(long)} rows read")
    final_out = Path(out) if out else (run_dir if run_dir.is_dir() else run_dir.parent) / "report"
    # Written into a fresh folder beside the target and swapped in at the end: an interrupted or
    # failing report (SIGTERM, a full disk) leaves the previous one whole, never a half-written mix.
    final_out.parent.mkdir(parents=True, exist_ok=True)
    out = Path(tempfile.mkdtemp(prefix=f".{final_out.name}.", suffix=".tmp", dir=final_out.parent))
    os.chmod(out, 0o755)  # mkdtemp makes it private; a report is for reading
    try:
        _write(out, run_dir, final, long, counts, sweep_cfg, rank_epochs=rank_epochs, criterion=criterion, say=say)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    old = final_out.with_name(f"{out.name}.old")
    if final_out.exists():
        os.replace(final_out, old)
    os.replace(out, final_out)
    shutil.rmtree(old, ignore_errors=True)
    return final_out / "index.html"


def _write(out: Path, run_dir: Path, final: pd.DataFrame, long: pd.DataFrame, counts: dict, sweep_cfg: dict, *,
           rank_epochs: str = "final", criterion: float | None = ranking.CRITERION,
           say: Callable[[str], None] = lambda _: None) -> None:
    """Every file of the report into the folder ``out``."""
    final = with_bracket(final)
    final.to_csv(out / "final_table.csv", index=False)
    long.to_csv(out / "tidy.csv", index=False)

    levels = _levels(final)
    summaries = {lv: dd_summary(final, lv) for lv in levels}
    reps = {lv: representative_widths(final, lv) for lv in levels}
    say("the evidence table (bootstrap over seeds)")
    ev = evidence_table(final)
    ev.to_csv(out / "evidence.csv", index=False)
    (out / "evidence.md").write_text(html.evidence_markdown(ev), encoding="utf-8")
    say(f"the measure ranking ({ranking.N_BOOT} bootstrap draws)")
    rank = ranking.ranking_table(final, long if rank_epochs == "all" else None, epochs=rank_epochs,
                                 criterion=criterion)
    say("the figures")
    rank.to_csv(out / "ranking.csv", index=False)
    (out / "ranking.md").write_text(ranking.ranking_markdown(rank), encoding="utf-8")
    metrics = set(long["metric"].unique()) if not long.empty else set()
    missing = missing_items(final, counts, metrics, sweep_cfg)
    notes = estimate_lines(final)

    done_long = long[long["status"] == "done"] if "status" in long else long
    train_rows = done_long[done_long["metric"] == "err/train"] if not done_long.empty else done_long
    budget = float(train_rows["epoch"].max()) if len(train_rows) else None
    drawn = {
        "double_descent": figures.double_descent(final),
        "smoothness": figures.smoothness(final),
        "over_epochs": epochs.over_epochs(long, reps),
        "epoch_heatmaps": epochs.epoch_heatmaps(long),
        "interpolation": figures.interpolation_speed(final, budget),
        "bracket": figures.bracket(final),
        "bracket_epochs": epochs.bracket_over_epochs(long, reps),
        "theorem2": figures.theorem2(final),
        "curvature": figures.curvature(final),
        "distance": figures.distance(final),
        "spectrum": figures.spectrum(final),
        "ranking": ranking_figure.ranking(rank),
    }
    fig_html, files = {}, {}
    for name, fig in drawn.items():
        title, caption = CAPTIONS[name]
        if fig is None:
            files[name] = None
            if name not in OPT_IN_FIGURES:
                missing.append(f"Figure '{title}' not drawn: the done trials have no {NEEDS[name]}.")
            fig_html[name] = f"<p class=note>Not drawn: the done trials have no {html.esc(NEEDS[name])}.</p>"
            continue
        png, _pdf = plots.save(fig, out / name)
        files[name] = png.name
        fig_html[name] = f"<figure>{html.image(png, title)}<figcaption>{html.esc(caption)}</figcaption></figure>"

    generated = _dt.datetime.now().isoformat(timespec="seconds")
    (out / "summary.json").write_text(json.dumps(_jsonable({
        "run_dir": str(run_dir), "generated": generated, "counts": counts, "conditions": levels,
        "x_axis": x_axis_of(final),
        "double_descent": {str(k): v for k, v in summaries.items()},
        "representative_widths": {str(k): v for k, v in reps.items()},
        "evidence": ev.to_dict(orient="records"), "missing": missing, "estimates": notes, "figures": files,
        "ranking": {"epochs": rank_epochs, "criterion": criterion,
                    "excluded": int(rank["n_excluded"].iloc[0]) if len(rank) else None,
                    "rows": rank.drop(columns=["psi_by_axis", "sign_by_axis"]).to_dict(orient="records")},
    }), indent=1), encoding="utf-8")

    name = sweep_cfg.get("sweep", {}).get("name") or run_dir.name
    intro = (f"Run <code>{html.esc(run_dir)}</code>. Trials: " + ", ".join(f"{n} {html.esc(s)}" for s, n in counts.items())
             + f". Generated {generated} from the store alone; regenerate with "
             f"<code>ddscope report {html.esc(run_dir)}</code>. All values are at each trial's last epoch "
             "unless the axis is epoch.")
    sections = _sections(final, ev, summaries, fig_html, rank, criterion)
    html.write_page(out / "index.html", title=f"ddscope report — {name}", intro=intro, missing=missing,
                    notes=notes, sections=sections, sweep_cfg=sweep_cfg)


def _ranking_section(rank: pd.DataFrame, criterion, fig: str) -> str:
    """The ranking tables (every region and target) under the ranking figure."""
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


def _sections(final: pd.DataFrame, ev: pd.DataFrame, summaries: dict, fig_html: dict, rank: pd.DataFrame | None = None,
              criterion=ranking.CRITERION) -> list[tuple[str, str]]:
    """The page body in reading order: summary, evidence, figures, tables."""
    secs = [("Summary", html.table(html.summary_view(summaries)) + (
        "<p>Interpolation threshold: narrowest width whose mean train error (noisy labels) is 0. Classical "
        "optimum: lowest test error among narrower widths. Test-error peak: highest test error from the classical "
        "optimum on (none if it never rises above it). Double descent: the widest nets fit their training labels "
        "(train error ≤ 1 %) and the peak stands above both the classical optimum and the widest net by more than "
        "the seeds' spread (at least 0.01); otherwise the row says why there is no evidence. One row per condition: "
        "every grid axis but the seeds is kept apart.</p>"))]
    for name in ("double_descent", "smoothness", "bracket"):  # the headline figures before the long table
        secs.append((CAPTIONS[name][0], fig_html[name]))
    legend = "".join(f"<li><code>{html.esc(m)}</code>: {html.esc(d)}</li>" for m, d in MEASURES.items()
                     if (ev["measure"] == m).any()) if not ev.empty else ""
    secs.append(("Evidence table", html.evidence_html(ev) + (
        "<p>Per noise level, correlation across widths between each measure and the test error (per-width means "
        "over seeds): Spearman ρ and Kendall τ_b, with 95 % percentile bootstrap intervals [lo, hi] from "
        "redrawing each width's seeds with replacement (none with one seed per width). 'all widths': every width; "
        "'from w_C': only the widths from the classical optimum w_C on (the critical and over-parameterised "
        "regime, where smoothness is claimed to mirror the test error; under-fit nets are smooth and bad). "
        "'peak k': the width of the measure's largest mean ('edge': the narrowest or widest width, so no interior "
        "peak); steps: signed steps along the width grid from the test-error peak / the interpolation threshold to "
        "it. Machine-readable, with p-values: <code>evidence.csv</code>; as Markdown: <code>evidence.md</code>.</p>") + (
        f"<details><summary>What each measure is</summary><ul>{legend}</ul></details>" if legend else "")))
    for name in ("bracket_epochs", "over_epochs", "epoch_heatmaps", "interpolation", "theorem2"):
        secs.append((CAPTIONS[name][0], fig_html[name]))
    thm = theorem2_table(final)
    if not thm.empty:
        secs[-1] = (secs[-1][0], secs[-1][1] + "<h3>Theorem 2 check per width</h3>" + html.table(thm))
    for name in ("curvature", "spectrum", "distance"):
        secs.append((CAPTIONS[name][0], fig_html[name]))
    if rank is not None:
        secs.append((CAPTIONS["ranking"][0], _ranking_section(rank, criterion, fig_html["ranking"])))
    axes = [c for c in final.columns if c in AXIS_COLUMNS or (c.startswith(("data.", "model.", "optim.", "metrics."))
                                                              and final[c].nunique(dropna=False) > 1)]
    cols = [c for c in (*dict.fromkeys(["model.width", "data.noise", *axes]), "seed", "n_train", "params", "status", "err/train", "err/train_clean",
                        "err/train_noisy", "err/test", "loss/train", "loss/test", "interp_epoch", "jac_spec_rms/train",
                        "jac_spec_rms/test", "jac_spec_rms/path_same", "lip_lower", "lip_upper_tight", "lip_upper",
                        "hess_trace", "hess_top",
                        "dist_rel/all", "wall_s") if c in final.columns]
    secs.append(("Final table (one row per trial)", "<details><summary>" + f"{len(final)} trials" + "</summary>"
                 + html.table(final[cols]) + "</details>" +
                 "<p>All columns: <code>final_table.csv</code>; every stored row: <code>tidy.csv</code>; figures as "
                 "PNG and PDF beside this page.</p>"))
    failed = final[final["status"] == "failed"] if "status" in final else final.iloc[0:0]
    if len(failed):
        f = failed[[c for c in ("trial_id", "condition", "model.width", "seed", "error") if c in failed]].copy()
        f["error"] = f["error"].map(lambda e: (str(e or "").strip().splitlines() or [""])[-1])
        secs.append(("Failed trials", html.table(f, left=("trial_id", "error"))))
    return secs
