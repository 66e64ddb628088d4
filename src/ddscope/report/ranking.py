"""Which complexity measure tracks generalisation? Every measure in the store, ranked by the
protocols of Jiang et al. (ICLR 2020) and Dziugaite et al. (NeurIPS 2020) over a sweep's grid.

The nets are the done trials at their last epoch (``epochs="final"``, the papers' protocol) or
every (trial, metric epoch) of the store (``epochs="all"``: training time becomes the axis
``epoch``). A net is kept when it met the training criterion — training error ≤ ``criterion``
(1 %: the papers train every net to a fixed fit of its training set; under-fit nets are excluded
and the table says how many). Targets: the generalisation gap ``err/test − err/train`` and the
test error ``err/test``.

Axes: every config key that varies in the sweep (the width, ``data.noise``, ``data.n_train``,
``optim.epochs``, …), with ``epoch`` in the "all" mode. Jiang's τ pools every net; Ψ varies one
axis at a time, the seed included; the conditional mutual information conditions on the
hyper-parameter axes (not the seed); the sign-error's environments are pairs of hyper-parameter
settings differing in one axis, its samples the pairs of their replicates (seeds).

Intervals: a percentile bootstrap over seeds — each replicate draws the seeds with replacement
(every net of a drawn seed comes along, a seed drawn twice counts as two replicates) and
recomputes every score. One seed gives no interval.

Regions: ``"all"`` — every net that met the criterion; ``"over-parameterised"`` — those at or
beyond their condition's test-error peak width (the over-parameterised side of the double
descent, where the claim that smoothness tracks generalisation is made).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd

from . import protocols
from .evidence import measures_in
from .summary import at_noise, conditions, dd_peak, done_rows, interp_threshold, mean_by_width

CRITERION = 0.01  # a net enters the ranking when its training error is at most this
N_BOOT = 200
MIN_ESS = 1.0  # environments of the sign-error need this effective sample size (the paper: 12, with more seeds)
K_MAX = 2  # conditional mutual information for |S| = 0 … K_MAX
DEFAULT_N_TEST = 10_000  # the test-set size where a store predates n_test (Dziugaite et al.'s)
TARGETS = {"gap": "generalisation gap err/test − err/train", "test": "test error err/test"}
REPLICATES = ("seed", "data.seed")
_CONFIG_SECTIONS = ("data.", "model.", "optim.")
COLUMNS = ["region", "target", "measure", "n_nets", "n_excluded", "tau", "tau_lo", "tau_hi", "psi", "psi_lo", "psi_hi",
           *[f"cmi_{k}{s}" for k in range(K_MAX + 1) for s in ("", "_lo", "_hi")], "cmi_pgdl", "cmi_pgdl_lo",
           "cmi_pgdl_hi", "sign_worst", "sign_worst_lo",
           "sign_worst_hi", "sign_mean", "sign_mean_lo", "sign_mean_hi", "n_env", "psi_by_axis", "sign_by_axis"]
SCORED = ("tau", "psi", *[f"cmi_{k}" for k in range(K_MAX + 1)], "cmi_pgdl", "sign_worst", "sign_mean")  # with intervals


def measures_of(table: pd.DataFrame) -> list[str]:
    """Every measure of the catalogue (:func:`ddscope.catalogue.measures`: each metric group's,
    docs/design.md §1) with a value in the table, in its order, and the parameter count where
    the zoo did not record it (a baseline every study ranks)."""
    d = done_rows(table)
    out = measures_in(d)
    if "cm_params" not in out and "params" in d and pd.to_numeric(d["params"], errors="coerce").notna().any():
        out.append("params")
    return out


def axes_of(table: pd.DataFrame) -> list[str]:
    """The varying config axes (and ``epoch`` when the table has several per trial)."""
    axes = [c for c in table.columns if (c.startswith(_CONFIG_SECTIONS) or c in REPLICATES)
            and table[c].astype(str).nunique() > 1]
    if "epoch" in table and table.groupby("trial_id")["epoch"].nunique().max() > 1:
        axes.append("epoch")
    return axes


def nets_table(final: pd.DataFrame, long: pd.DataFrame | None = None, *, epochs: str = "final") -> pd.DataFrame:
    """One row per net: the done trials' final rows, or every (trial, epoch) of ``long`` (the
    tidy table) with the trial's axes and that epoch's metric values."""
    d = done_rows(final)
    if epochs == "final":
        return d.reset_index(drop=True)
    if epochs != "all":
        raise ValueError(f"epochs must be 'final' or 'all', got {epochs!r}")
    if long is None or long.empty:
        raise ValueError("epochs='all' needs the tidy table")
    wide = long[long["trial_id"].isin(d["trial_id"])].pivot_table(index=["trial_id", "epoch"], columns="metric",
                                                                   values="value", aggfunc="last").reset_index()
    keep = [c for c in d.columns if c not in wide.columns or c == "trial_id"]
    return wide.merge(d[keep], on="trial_id", how="left")


def _codes(nets: pd.DataFrame, axes: list[str]) -> np.ndarray:
    if not axes:
        return np.zeros((len(nets), 0), dtype=int)
    return np.stack([pd.factorize(nets[a].astype(str))[0] for a in axes], axis=1)


class _Nets:
    """The arrays every protocol reads for one set of nets: targets, axis codes, test-set sizes."""

    def __init__(self, nets: pd.DataFrame, target: str, axes: list[str]):
        self.frame, self.axes = nets, axes
        self.g = _target(nets, target)
        self.hp = [a for a in axes if a not in REPLICATES]
        self.H_all, self.H_hp = _codes(nets, axes), _codes(nets, self.hp)
        self.n_test = (pd.to_numeric(nets["n_test"], errors="coerce").fillna(DEFAULT_N_TEST).to_numpy(float)
                       if "n_test" in nets else np.full(len(nets), DEFAULT_N_TEST))

    def scores(self, measure: str) -> dict:
        m = pd.to_numeric(self.frame[measure], errors="coerce").to_numpy(float)
        ok = np.isfinite(m) & np.isfinite(self.g)
        m, g = m[ok], self.g[ok]
        H_all, H_hp = self.H_all[ok], self.H_hp[ok]
        psi, by_axis = protocols.granulated_tau(m, g, H_all)
        se = protocols.sign_error(m, g, H_hp, self.n_test[ok], min_ess=MIN_ESS)
        out = {"n_nets": int(ok.sum()), "tau": protocols.kendall_tau(m, g), "psi": psi,
               "psi_by_axis": dict(zip(self.axes, by_axis)),
               "sign_worst": se["worst"], "sign_mean": se["mean"], "n_env": se["n_env"],
               # per hyper-parameter axis: (worst, mean, environments)
               "sign_by_axis": {self.hp[a]: v for a, v in se["by_axis"].items()}}
        for k in range(K_MAX + 1):
            out[f"cmi_{k}"] = protocols.conditional_mi(m, g, H_hp, k)
        out["cmi_pgdl"] = protocols.conditional_mi_pgdl(m, g, H_hp)  # the PGDL program's convention
        return out


def scores(nets: pd.DataFrame, measure: str, target: str, axes: list[str]) -> dict:
    """Every protocol's score of one measure on one set of nets (no intervals)."""
    return _Nets(nets, target, axes).scores(measure)


def _target(nets: pd.DataFrame, target: str) -> np.ndarray:
    test = pd.to_numeric(nets["err/test"], errors="coerce").to_numpy(float)
    if target == "test":
        return test
    return test - pd.to_numeric(nets["err/train"], errors="coerce").to_numpy(float)


def _bootstrap(nets: pd.DataFrame, measures: list[str], target: str, axes: list[str], n_boot: int,
               seed: int) -> dict[str, dict[str, tuple[float, float]]]:
    """Percentile 95 % intervals of every score in :data:`SCORED` over seeds, per measure."""
    seeds = sorted(nets["seed"].unique()) if "seed" in nets else []
    if len(seeds) < 2 or n_boot <= 0:
        return {}
    rng = np.random.default_rng(seed)
    by_seed = {s: nets[nets["seed"] == s] for s in seeds}
    draws: dict[str, dict[str, list[float]]] = {m: {} for m in measures}
    for _ in range(n_boot):
        parts = []
        for r, s in enumerate(rng.choice(seeds, size=len(seeds), replace=True)):
            parts.append(by_seed[s].assign(seed=r))  # a seed drawn twice: two replicates
        boot = _Nets(pd.concat(parts, ignore_index=True), target, axes)
        for m in measures:
            sc = boot.scores(m)
            for key in SCORED:
                draws[m].setdefault(key, []).append(sc[key])
    out = {}
    for m, per in draws.items():
        out[m] = {}
        for key, vals in per.items():
            v = np.array(vals, float)
            v = v[np.isfinite(v)]
            out[m][key] = (float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))) if len(v) else (math.nan, math.nan)
    return out


def over_parameterised(nets: pd.DataFrame, final: pd.DataFrame) -> pd.DataFrame:
    """The nets at or beyond their condition's test-error peak (else its interpolation threshold)."""
    keep = []
    for cond in conditions(done_rows(final)) or [None]:
        test = mean_by_width(final, "err/test", cond)
        w_i = interp_threshold(mean_by_width(final, "err/train", cond))
        w_p = dd_peak(test, w_i)
        start = w_p if w_p is not None else w_i
        if start is None:
            continue
        part = at_noise(nets, cond)
        keep.append(part[part["x"].astype(float) >= start])
    return pd.concat(keep) if keep else nets.iloc[:0]


def ranking_table(final: pd.DataFrame, long: pd.DataFrame | None = None, *, epochs: str = "final",
                  criterion: float | None = CRITERION, n_boot: int | None = None, seed: int = 0) -> pd.DataFrame:
    """One row per (region, target, measure): every protocol's score and its interval (columns
    :data:`COLUMNS`), sorted within each (region, target) by Ψ, largest first. Empty without
    test errors. ``n_boot``: bootstrap draws for the intervals (None: :data:`N_BOOT`, read when
    called)."""
    n_boot = N_BOOT if n_boot is None else n_boot
    nets = nets_table(final, long, epochs=epochs) if "err/test" in final else pd.DataFrame()
    if nets.empty or "err/test" not in nets or "err/train" not in nets:
        return pd.DataFrame(columns=COLUMNS)  # the targets and the criterion need both errors
    measures = measures_of(nets)
    train = pd.to_numeric(nets["err/train"], errors="coerce")
    met = nets[train <= criterion] if criterion is not None else nets
    excluded = len(nets) - len(met)
    axes = axes_of(met)
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        over = over_parameterised(met, final)
        for region, sub in (("all", met), ("over-parameterised", over)):
            if len(sub) < 3 or (region != "all" and len(sub) == len(met)):
                continue  # too few nets, or the criterion already kept only over-parameterised ones
            for target in TARGETS:
                boot = _bootstrap(sub, measures, target, axes, n_boot, seed)
                here = _Nets(sub, target, axes)
                for m in measures:
                    sc = here.scores(m)
                    if sc["n_nets"] < 3:
                        continue
                    iv = boot.get(m, {})
                    row = {"region": region, "target": target, "measure": m, "n_excluded": excluded, **sc}
                    for key in SCORED:
                        row[f"{key}_lo"], row[f"{key}_hi"] = iv.get(key, (math.nan, math.nan))
                    rows.append(row)
    out = pd.DataFrame(rows, columns=COLUMNS)
    if out.empty:
        return out
    out["_order"] = -out["psi"].fillna(-2)  # Jiang et al.'s reading: the most positive Ψ first
    return out.sort_values(["region", "target", "_order"], kind="stable").drop(columns="_order").reset_index(drop=True)


def _fmt(v: float, lo: float, hi: float, signed: bool) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    f = "{:+.2f}" if signed else "{:.2f}"
    out = f.format(v)
    if not (isinstance(lo, float) and math.isnan(lo)):
        out += f" [{f.format(lo)}, {f.format(hi)}]"
    return out


def ranking_view(table: pd.DataFrame, region: str = "all", target: str = "gap") -> pd.DataFrame:
    """One region and target of :func:`ranking_table` as strings, intervals in brackets."""
    t = table[(table["region"] == region) & (table["target"] == target)]
    rows = []
    for _, r in t.iterrows():
        rows.append({
            "measure": r["measure"], "nets": int(r["n_nets"]),
            "τ": _fmt(r["tau"], r["tau_lo"], r["tau_hi"], True),
            "Ψ": _fmt(r["psi"], r["psi_lo"], r["psi_hi"], True),
            "ψ per axis": ", ".join(f"{a} {v:+.2f}" for a, v in (r["psi_by_axis"] or {}).items() if not math.isnan(v)),
            "CMI |S|=0 / 1 / 2 (ddscope)": " / ".join(_fmt(r[f"cmi_{k}"], r[f"cmi_{k}_lo"], r[f"cmi_{k}_hi"], False)
                                                      for k in range(K_MAX + 1)),
            "CMI (PGDL program)": _fmt(r["cmi_pgdl"], r["cmi_pgdl_lo"], r["cmi_pgdl_hi"], False),
            "sign-error worst": _fmt(r["sign_worst"], r["sign_worst_lo"], r["sign_worst_hi"], False),
            "sign-error mean": _fmt(r["sign_mean"], r["sign_mean_lo"], r["sign_mean_hi"], False),
            "worst per axis": ", ".join(f"{a} {w:.2f}" for a, (w, _, _) in (r["sign_by_axis"] or {}).items()),
            "environments": int(r["n_env"]),
        })
    return pd.DataFrame(rows)


def ranking_markdown(table: pd.DataFrame) -> str:
    """Every region and target of :func:`ranking_table` as GitHub Markdown tables."""
    if table.empty:
        return "(no ranking: fewer than three done trials met the training criterion)\n"
    out = []
    for region in dict.fromkeys(table["region"]):
        for target in TARGETS:
            v = ranking_view(table, region, target)
            if v.empty:
                continue
            excluded = int(table[table["region"] == region]["n_excluded"].iloc[0])
            out += [f"**{region} nets, target: {TARGETS[target]}** ({excluded} nets excluded by the training "
                    "criterion)", "", "| " + " | ".join(v.columns) + " |", "|" + "---|" * len(v.columns)]
            out += ["| " + " | ".join(str(x) for x in row) + " |" for row in v.itertuples(index=False)]
            out.append("")
    return "\n".join(out)


__all__ = ["CRITERION", "TARGETS", "axes_of", "measures_of", "nets_table", "over_parameterised", "ranking_markdown",
           "ranking_table", "ranking_view", "scores"]
