"""What the store does not (yet) have: unfinished and failed trials, widths with fewer seeds than
planned, metric groups that were never measured, and why. The report lists these instead of
failing, so a half-finished sweep or an older store still gives a readable page."""

from __future__ import annotations

import pandas as pd

from .. import catalogue


def enabled_groups(sweep_cfg: dict) -> set[str] | None:
    """Metric groups the sweep's config asks for (None when the config does not say)."""
    m = sweep_cfg.get("metrics")
    if not isinstance(m, dict) or ("groups" not in m and "sparse_groups" not in m):
        return None
    return set(m.get("groups") or []) | set(m.get("sparse_groups") or [])


def _label(row: pd.Series) -> str:
    parts = [f"width {row['model.width']:g}" if pd.notna(row.get("model.width")) else ""]
    if pd.notna(row.get("data.noise")):
        parts.append(f"noise {row['data.noise']:g}")
    if pd.notna(row.get("seed")):
        parts.append(f"seed {int(row['seed'])}")
    return ", ".join(p for p in parts if p)


def _estimates(columns) -> list[tuple[str, str]]:
    """(key, its standard-error key) for every ``<name>_se[/<where>]`` column with its value:
    hess_trace_se, thm2_rhs_se, jac_spec_rms_se/path_same, …"""
    out = []
    for col in columns:
        head, _, where = str(col).partition("/")
        if head.endswith("_se"):
            key = head[: -len("_se")] + (f"/{where}" if where else "")
            if key in columns:
                out.append((key, col))
    return out


def estimate_lines(final: pd.DataFrame) -> list[str]:
    """One line per stochastic estimate in the final table: on how many trials the value is an
    estimate and how large its standard error is relative to it (exact values have s.e. 0)."""
    out = []
    d = final[final["status"] == "done"] if "status" in final else final
    for key, se_key in _estimates(list(d.columns)):
        v = pd.to_numeric(d[key], errors="coerce")
        se = pd.to_numeric(d[se_key], errors="coerce")
        est = se > 0
        if not est.any():
            continue
        rel = (se[est] / v[est].abs()).replace([float("inf")], float("nan")).dropna()
        worst = f"; its standard error is {rel.median():.1%} of the value at the median, {rel.max():.1%} at worst" \
            if len(rel) else ""
        out.append(f"{key} is a sampled estimate on {int(est.sum())} of {len(d)} trial(s){worst}; {se_key} holds "
                   "each standard error.")
    return out


def missing_items(final: pd.DataFrame, counts: dict, metrics: set[str], sweep_cfg: dict) -> list[str]:
    """Plain-language lines on what is missing; ``metrics`` are the metric names in the store."""
    out: list[str] = []
    total = sum(counts.values())
    done = counts.get("done", 0)
    if total == 0:
        return ["The store has no trials."]
    unfinished = counts.get("pending", 0) + counts.get("running", 0)
    if unfinished:
        out.append(f"The sweep is not finished: {counts.get('pending', 0)} trial(s) pending and "
                   f"{counts.get('running', 0)} running of {total}; figures and tables use the {done} done.")
    if done == 0:
        out.append("No trial is done yet: there is nothing to plot.")
    if "status" in final:
        for _, r in final[final["status"] == "failed"].iterrows():
            reason = (str(r.get("error") or "").strip().splitlines() or ["no reason recorded"])[-1]
            out.append(f"Failed trial ({_label(r)}): {reason[:200]}")
        keys = [k for k in ("condition", "x") if k in final]
        if keys and done:
            planned = final.groupby(keys).size()
            have = final[final["status"] == "done"].groupby(keys).size().reindex(planned.index, fill_value=0)
            short = [(k, int(have[k]), int(planned[k])) for k in planned.index if have[k] < planned[k]]
            if short:
                items = "; ".join(f"{_key(keys, k)}: {h} of {p}" for k, h, p in short[:12])
                more = f" (and {len(short) - 12} more)" if len(short) > 12 else ""
                out.append(f"Fewer done seeds than planned at {items}{more}.")
    enabled = enabled_groups(sweep_cfg)
    skipped: dict[str, list[str]] = {}
    for groups in (final["skipped_groups"] if "skipped_groups" in final else []):
        for group, why in (groups or {}).items():
            skipped.setdefault(group, []).append(why)
    for group, whys in skipped.items():
        out.append(f"Metric group '{group}' could not run on {len(whys)} trial(s)' model: {whys[0][:200]}")
    noted: dict[str, list[str]] = {}
    for groups in (final["metric_notes"] if "metric_notes" in final else []):
        for group, why in (groups or {}).items() if isinstance(groups, dict) else ():
            noted.setdefault(group, []).append(why)
    for group, whys in noted.items():
        out.append(f"Metric group '{group}' ran otherwise than asked on {len(whys)} trial(s): {whys[0][:200]}")
    for group, row in catalogue.GROUPS.items():
        if group in skipped:
            continue
        what = f"{row.about}: {row.keys}"
        if any(m == row.probe or m.startswith(row.probe + "/") for m in metrics):  # the probe, or its keys
            continue
        if row.schedule == "off" and (enabled is None or group not in enabled):
            continue  # an opt-in group (spectrum) nobody asked for is not missing
        if enabled is not None and group not in enabled:
            why = "not enabled in this sweep's config (metrics.groups / metrics.sparse_groups)"
        elif unfinished or not done:
            why = "enabled, but no trial has recorded it yet"
        else:
            why = "no trial recorded it"
        out.append(f"Metric group '{group}' ({what}): {why}.")
    if done and "interp_epoch" in final:
        d = final[final["status"] == "done"] if "status" in final else final
        if pd.to_numeric(d["interp_epoch"], errors="coerce").notna().sum() == 0:
            out.append("No done trial interpolated its training labels (train error never reached 0): "
                       "there is no interpolation threshold or interpolation epoch.")
    return out


def _key(keys: list[str], k) -> str:
    k = k if isinstance(k, tuple) else (k,)
    return ", ".join(str(v) if name == "condition" else f"{'width' if name == 'x' else name.split('.')[-1]} {v:g}"
                     for name, v in zip(keys, k))
