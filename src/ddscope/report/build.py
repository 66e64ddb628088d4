"""Writing the report: the steps of :func:`build_report` and the page's sections."""

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

from .. import catalogue
from ..runs.store import Store
from . import html, plots, ranking
from .contents import FIGURES, ReportData
from .coverage import estimate_lines, missing_items
from .evidence import evidence_table
from .summary import conditions, dd_summary, done_rows, representative_widths, with_bracket, x_axis_of
from .table import tables

__all__ = ["build_report"]

AXIS_COLUMNS = ("model.width", "data.noise", "seed")  # always in the page's final table


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
        final, long = tables(store)  # one read of the trials and one of the records
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
    data = ReportData(final=final, long=long, reps=reps, budget=budget, rank=rank, criterion=criterion)
    fig_html, files = {}, {}
    for f in FIGURES:
        fig = f.draw(data)
        if fig is None:
            files[f.name] = None
            if not f.opt_in:
                missing.append(f"Figure '{f.title}' not drawn: the done trials have no {f.needs}.")
            fig_html[f.name] = f"<p class=note>Not drawn: the done trials have no {html.esc(f.needs)}.</p>"
            continue
        png, _pdf = plots.save(fig, out / f.name)
        files[f.name] = png.name
        fig_html[f.name] = f"<figure>{html.image(png, f.title)}<figcaption>{html.esc(f.caption)}</figcaption></figure>"

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
    sections = _sections(data, ev, summaries, fig_html)
    html.write_page(out / "index.html", title=f"ddscope report — {name}", intro=intro, missing=missing,
                    notes=notes, sections=sections, sweep_cfg=sweep_cfg)


def _sections(data: ReportData, ev: pd.DataFrame, summaries: dict, fig_html: dict) -> list[tuple[str, str]]:
    """The page body in reading order: summary, the headline figures, evidence, the other
    figures (:data:`~ddscope.report.contents.FIGURES` order), tables."""
    final = data.final
    secs = [("Summary", html.table(html.summary_view(summaries)) + (
        "<p>Interpolation threshold: narrowest width whose mean train error (noisy labels) is 0. Classical "
        "optimum: lowest test error among narrower widths. Test-error peak: highest test error from the classical "
        "optimum on (none if it never rises above it). Double descent: the widest nets fit their training labels "
        "(train error ≤ 1 %) and the peak stands above both the classical optimum and the widest net by more than "
        "the seeds' spread (at least 0.01); otherwise the row says why there is no evidence. One row per condition: "
        "every grid axis but the seeds is kept apart.</p>"))]
    for f in FIGURES:  # the headline figures before the long table
        if f.headline:
            secs.append((f.title, f.section(data, fig_html[f.name])))
    legend = "".join(f"<li><code>{html.esc(m)}</code>: {html.esc(d)}</li>" for m, d in catalogue.measures(ev["measure"] if not ev.empty else ()).items()
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
    for f in FIGURES:
        if not f.headline:
            secs.append((f.title, f.section(data, fig_html[f.name])))
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
