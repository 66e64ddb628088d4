"""One self-contained HTML page (figures embedded as base64 PNG, tables, the sweep's config and
software versions) and the evidence table as Markdown for a README."""

from __future__ import annotations

import base64
import html
import json
import platform
from pathlib import Path

import numpy as np
import pandas as pd

CSS = """
body{font-family:system-ui,sans-serif;max-width:1150px;margin:2em auto;padding:0 1em;color:#222;line-height:1.4}
h1{font-size:1.5em} h2{font-size:1.15em;margin-top:1.8em;border-bottom:1px solid #ddd}
h3{font-size:1em;margin-bottom:.3em}
table{border-collapse:collapse;font-size:.8em;margin:.4em 0} td,th{border:1px solid #ddd;padding:2px 6px;text-align:right}
th{background:#f4f4f4} td.l,th.l{text-align:left}
.note{color:#a60} .missing{background:#fff7e6;border:1px solid #f0c36d;padding:.5em 1em}
img{max-width:100%} figure{margin:0} figcaption{font-size:.9em;color:#444}
pre{background:#f7f7f7;padding:.6em;font-size:.8em;overflow:auto} .ok{color:#080} .bad{color:#b00}
.scroll{overflow-x:auto;max-width:100%} details{margin:.6em 0} summary{cursor:pointer;color:#345}
"""


def versions() -> dict:
    import matplotlib
    import scipy
    import torch

    from ..version import __version__

    return {
        "ddscope": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "pandas": pd.__version__,
        "matplotlib": matplotlib.__version__,
        "platform": platform.platform(),
    }


def esc(x) -> str:
    return html.escape("" if x is None else str(x))


def fmt(v, digits: int = 4) -> str:
    """Numbers to short text; None / NaN to an empty string; bools to yes / no."""
    if v is None or v is pd.NA:
        return ""
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (float, np.floating)):
        return "" if np.isnan(v) else f"{v:.{digits}g}"
    return str(v)


def table(df: pd.DataFrame, left: tuple[str, ...] = ()) -> str:
    """A plain HTML table; columns in ``left`` are left-aligned."""
    if df.empty:
        return "<p class=note>(empty)</p>"
    cls = {c: " class=l" if c in left else "" for c in df.columns}
    head = "".join(f"<th{cls[c]}>{esc(c)}</th>" for c in df.columns)
    rows = []
    for _, r in df.iterrows():
        cells = "".join(f"<td{cls[c]}>{esc(fmt(v))}</td>" for c, v in r.items())
        rows.append(f"<tr>{cells}</tr>")
    return f"<div class=scroll><table><tr>{head}</tr>{''.join(rows)}</table></div>"


def image(path: Path, alt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="{esc(alt)}">'


def _ci(v, lo, hi) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "—"
    ci = "" if lo is None or np.isnan(lo) else f" [{lo:+.2f}, {hi:+.2f}]"
    return f"{v:+.2f}{ci}"


def _w(v) -> str:
    return "—" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:g}"


def _steps(v) -> str:
    return "—" if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)) else f"{int(v):+d}"


def evidence_blocks(ev: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """The evidence table for display: per condition (noise level, other non-seed axes) a heading
    (grid, seeds, test-error peak, threshold) and one row per measure with the correlations over all widths and from w_C on."""
    blocks = []
    if ev.empty:
        return blocks
    for noise, e in ev.groupby(ev["condition"].fillna("all trials"), sort=False):
        a = e[e["region"] == "all"].set_index("measure")
        c = e[e["region"] != "all"].set_index("measure")
        r0 = a.iloc[0]
        head = (f"{noise}: {r0['n_widths']} widths, "
                f"{r0['n_seeds']} seed{'' if str(r0['n_seeds']) == '1' else 's'} per width; test-error peak k = {_w(r0['test_peak_width'])}, "
                f"interpolation threshold k = {_w(r0['interp_width'])}")
        if len(c):
            head += f"; w_C = {_w(c.iloc[0]['min_width'])} ({c.iloc[0]['n_widths']} widths from it)"
        rows = []
        for m, r in a.iterrows():
            row = {"measure": m,
                   "ρ, all widths": _ci(r["spearman"], r["spearman_lo"], r["spearman_hi"]),
                   "τ_b, all widths": _ci(r["kendall"], r["kendall_lo"], r["kendall_hi"])}
            if len(c):
                rc = c.loc[m] if m in c.index else None
                row["ρ, from w_C"] = "—" if rc is None else _ci(rc["spearman"], rc["spearman_lo"], rc["spearman_hi"])
                row["τ_b, from w_C"] = "—" if rc is None else _ci(rc["kendall"], rc["kendall_lo"], rc["kendall_hi"])
            row["peak k"] = _w(r["peak_width"]) + (" (edge)" if r["peak_at_edge"] else "")
            row["steps to test peak"] = _steps(r["steps_to_test_peak"])
            row["steps to threshold"] = _steps(r["steps_to_interp"])
            rows.append(row)
        blocks.append((head, pd.DataFrame(rows)))
    return blocks


def evidence_html(ev: pd.DataFrame) -> str:
    blocks = evidence_blocks(ev)
    if not blocks:
        return "<p class=note>No evidence table: no done trial has both a test error and a complexity measure.</p>"
    return "".join(f"<h3>{esc(h)}</h3>" + table(t, left=("measure",)) for h, t in blocks)


def evidence_markdown(ev: pd.DataFrame) -> str:
    """The evidence table as GitHub Markdown, one table per condition."""
    blocks = evidence_blocks(ev)
    if not blocks:
        return "(no evidence table: no done trial has both a test error and a complexity measure)\n"
    out = []
    for head, t in blocks:
        out += [f"**{head}**", "", "| " + " | ".join(t.columns) + " |", "|" + "---|" * len(t.columns)]
        out += ["| " + " | ".join(str(x) for x in row) + " |" for row in t.itertuples(index=False)]
        out.append("")
    return "\n".join(out)


def summary_view(summaries: dict) -> pd.DataFrame:
    """One row per condition from :func:`.summary.dd_summary` results."""
    rows = []
    for noise, s in summaries.items():
        if not s.get("widths"):
            rows.append({"condition": noise or "all trials", "note": s.get("note", "no test errors")})
            continue
        ws = s["widths"]
        rows.append({
            "condition": noise or "all trials",
            "widths": f"{len(ws)} ({ws[0]:g}–{ws[-1]:g})",
            "seeds / width": "–".join(dict.fromkeys(str(n) for n in s["n_seeds"])),
            "interp. threshold k (train err 0)": _w(s["interp_width"]),
            "classical optimum k (test err)": f"{_w(s['best_narrower_width'])} ({fmt(s['best_narrower_err'], 3)})",
            "test-error peak k (test err)": "none" if s["test_peak_width"] is None
            else f"{s['test_peak_width']:g} ({fmt(s['test_peak_err'], 3)})",
            "widest (test err)": fmt(s["widest_err"], 3),
            "double descent": "yes" if s["double_descent"] else f"no: {s.get('verdict', '')}",
        })
    return pd.DataFrame(rows)


def write_page(path: Path, *, title: str, intro: str, missing: list[str], sections: list[tuple[str, str]],
               sweep_cfg: dict, notes: list[str] = ()) -> Path:
    """Assemble the page: title, what is missing, the given ``(heading, html)`` sections, notes on
    estimates, config, software versions."""
    parts = [f"<!doctype html><html><head><meta charset=utf-8>"
             "<meta name=viewport content='width=device-width, initial-scale=1'>"
             f"<title>{esc(title)}</title>",
             f"<style>{CSS}</style></head><body><h1>{esc(title)}</h1>", f"<p>{intro}</p>"]
    if missing:
        parts.append("<div class=missing><h3>What is missing</h3><ul>"
                     + "".join(f"<li>{esc(m)}</li>" for m in missing) + "</ul></div>")
    for heading, body in sections:
        parts.append(f"<h2>{esc(heading)}</h2>{body}")
    if notes:
        parts.append("<h2>Sampled estimates and their standard errors</h2><ul>"
                     + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>")
    parts.append("<details><summary>Sweep config</summary><pre>" + esc(json.dumps(sweep_cfg, indent=1))
                 + "</pre></details>")
    parts.append("<h2>Software</h2>" + table(pd.DataFrame([versions()]), left=("platform",)))
    parts.append("</body></html>")
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
