"""One self-contained HTML page: figures embedded as base64 PNG, tables, config, versions."""

from __future__ import annotations

import base64
import html
import json
import platform
from pathlib import Path

import pandas as pd

CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.5em} h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.8em} td,th{border:1px solid #ddd;padding:2px 6px;text-align:right}
th{background:#f4f4f4} .note{color:#a60} img{max-width:100%} pre{background:#f7f7f7;padding:.6em;font-size:.8em;overflow:auto}
.ok{color:#080} .bad{color:#b00}
"""


def _versions() -> dict:
    import matplotlib
    import numpy
    import torch

    from .. import __version__

    return {
        "ddscope": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "pandas": pd.__version__,
        "matplotlib": matplotlib.__version__,
        "platform": platform.platform(),
    }


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(path.stem)}">'


def _fmt(v) -> str:
    if isinstance(v, bool):
        return f'<span class="{"ok" if v else "bad"}">{"yes" if v else "no"}</span>'
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape(str(v))


def _table(df: pd.DataFrame, float_fmt: str = "{:.4g}") -> str:
    if df.empty:
        return "<p class=note>empty</p>"
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    rows = []
    for _, r in df.iterrows():
        cells = []
        for v in r:
            if isinstance(v, float):
                cells.append("" if pd.isna(v) else float_fmt.format(v))
            else:
                cells.append(html.escape("" if v is None else str(v)))
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


FINAL_COLUMNS = [
    "model.width", "data.noise", "seed", "params", "status", "err/train", "err/train_clean", "err/train_noisy",
    "err/test", "loss/train", "loss/test", "interp_epoch", "jac_spec_rms/train", "jac_spec_rms/test",
    "jac_spec_mean/train", "jac_fro_rms/train", "jac_spec_rms/path_same", "lip_upper", "hess_trace", "hess_top",
    "dist_rel/all", "wall_s",
]


def write_page(path: Path, *, title: str, counts: dict, summary: dict, figures, missing, final: pd.DataFrame,
               sweep_cfg: dict, extra_sections: list[tuple[str, str]] | None = None) -> Path:
    parts = [f"<!doctype html><html><head><meta charset=utf-8><title>{html.escape(title)}</title>",
             f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    parts.append("<p>Trials: " + ", ".join(f"{n} {s}" for s, n in counts.items()) + "</p>")
    if counts.get("pending") or counts.get("running"):
        parts.append("<p class=note>The sweep is not finished: figures show the trials done so far.</p>")
    if summary:
        rows = "".join(f"<tr><th style='text-align:left'>{html.escape(k)}</th><td>{_fmt(v)}</td></tr>"
                       for k, v in summary.items() if k != "widths")
        parts.append(f"<h2>Summary</h2><table>{rows}</table>")
    for name, body in extra_sections or []:
        parts.append(f"<h2>{html.escape(name)}</h2>{body}")
    for title_, caption, png in figures:
        parts.append(f"<h2>{html.escape(title_)}</h2>")
        if png is None:
            parts.append("<p class=note>Missing: the store has no data for this figure yet.</p>")
        else:
            parts.append(f"{_img(png)}<p>{html.escape(caption)}</p>")
    if missing:
        parts.append("<h2>What is missing</h2><ul>" + "".join(f"<li>{html.escape(m)}</li>" for m in missing) + "</ul>")
    cols = [c for c in FINAL_COLUMNS if c in final.columns]
    parts.append("<h2>Final table (one row per trial)</h2>" + _table(final[cols]) +
                 "<p>All columns: <code>final_table.csv</code>; every epoch: <code>tidy.csv</code>.</p>")
    failed = final[final["status"] == "failed"] if "status" in final else final.iloc[0:0]
    if len(failed):
        parts.append("<h2>Failed trials</h2>" + _table(failed[["trial_id", "model.width", "error"]]))
    parts.append("<h2>Sweep config</h2><pre>" + html.escape(json.dumps(sweep_cfg, indent=1)) + "</pre>")
    parts.append("<h2>Software</h2>" + _table(pd.DataFrame([_versions()])))
    parts.append("</body></html>")
    path.write_text("\n".join(parts))
    return path
