"""The report of a sweep, built from the store alone (``ddscope report RUN_DIR``; also written at
the end of every sweep):

- the figures of :data:`~ddscope.report.contents.FIGURES` (PNG and PDF, one style; listed with
  their captions in docs/report.md);
- ``evidence.csv`` / ``evidence.md``: rank correlation of each measure with the test error
  across widths, with bootstrap intervals over seeds, and where each measure peaks
  (:mod:`.evidence`); ``ranking.csv`` / ``ranking.md``: every measure ranked by the
  generalisation-measure protocols (:mod:`.ranking`);
- ``summary.json``: per condition (label-noise level and every other grid axis except the
  seeds, kept apart everywhere) the double-descent summary with its verdict and reason, the
  representative widths, the evidence rows and what is missing;
- ``final_table.csv`` (one row per trial) and ``tidy.csv`` (every stored row);
- ``index.html``: one self-contained page with all of it, the sweep's config and the software.

A partly finished sweep, failed trials or metric groups that were never measured give a page
that says what is missing (:mod:`.coverage`) instead of an error.
"""

from __future__ import annotations

# Loaded on first use: the tables (ddscope.load, export) must not pull matplotlib in.
_LAZY = {"build_report": ".build", "dd_summary": ".summary", "evidence_table": ".evidence"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["build_report", "dd_summary", "evidence_table"]
