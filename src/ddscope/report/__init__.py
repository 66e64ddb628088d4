"""The report of a sweep, built from the store alone: figures (PNG + PDF), one self-contained HTML
page, and CSVs (final table per trial, tidy table)."""

from __future__ import annotations

from pathlib import Path

from ..sweep.store import Store
from ..sweep.table import final_table, tidy
from . import plots
from .html import write_page
from .summary import dd_summary


def build_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write ``out`` (default ``RUN_DIR/report``) and return the path of its ``index.html``."""
    run_dir = Path(run_dir)
    store = Store.open(run_dir)
    try:
        final = final_table(store)
        long = tidy(store)
        counts = store.counts()
        sweep_cfg = store.sweep_config()
    finally:
        store.close()
    out = Path(out) if out else run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    final.to_csv(out / "final_table.csv", index=False)
    long.to_csv(out / "tidy.csv", index=False)

    figures: list[tuple[str, str, Path | None]] = []  # (title, caption, png path or None = missing)
    missing: list[str] = []

    def add(name: str, title: str, caption: str, fig) -> None:
        if fig is None:
            missing.append(f"{title}: no data for it in the store yet")
            figures.append((title, caption, None))
            return
        png, _pdf = plots.save(fig, out / name)
        figures.append((title, caption, png))

    done = final[final["status"] == "done"] if "status" in final else final
    add(
        "double_descent",
        "Double descent",
        "Test error (solid) and train error on the noisy labels (dashed) against width.",
        plots.width_curves(done, [("error", [("err/test", "test", "-"), ("err/train", "train (noisy labels)", "--")])]),
    )
    add(
        "smoothness",
        "Smoothness mirrors double descent",
        "jac_spec_rms = (mean_n ‖∂f/∂x(x_n)‖₂²)^½ of the logits at training and test points.",
        plots.width_curves(
            done,
            [("jac_spec_rms", [("jac_spec_rms/train", "train", "-"), ("jac_spec_rms/test", "test", "--"),
                               ("jac_spec_rms/path_same", "paths (same class)", ":"),
                               ("jac_spec_rms/path_any", "paths (any class)", "-.")])],
        ),
    )
    add(
        "over_epochs",
        "Over epochs",
        "jac_spec_rms on training points and train error against epoch, one line per width (first seed).",
        plots.over_epochs(long, "jac_spec_rms/train", "err/train"),
    )
    summary = dd_summary(done)
    page = write_page(
        out / "index.html",
        title=f"ddscope report — {sweep_cfg.get('sweep', {}).get('name', run_dir.name)}",
        counts=counts,
        summary=summary,
        figures=figures,
        missing=missing,
        final=final,
        sweep_cfg=sweep_cfg,
    )
    return page
