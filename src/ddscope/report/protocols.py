"""The ranking protocols of the generalisation-measure studies, on plain arrays.

Each function scores one complexity measure μ against a target g (the generalisation gap or
the test error) over a set of trained networks ("nets"); hyper-parameters arrive as integer
codes, one column per axis (``H``: (n, a)). The arithmetic is checked on hand-computed tables
(tests/report/test_protocols.py).

* :func:`kendall_tau` — Jiang et al. (ICLR 2020), eq. 2: τ = Σ_{i<j} sgn(μ_i − μ_j) sgn(g_i − g_j)
  / (n(n−1)/2) (τ_a: ties count 0).
* :func:`granulated_tau` — Jiang et al., eq. 3: for each axis i, ψ_i = the mean, over the
  settings of all other axes, of τ over the nets that differ only in axis i; Ψ = mean_i ψ_i.
  Settings with fewer than two nets (or one value of axis i) are left out.
* :func:`conditional_mi` — Jiang et al., §5: over ordered pairs of nets (θ, θ') with g ≠ g',
  V_μ = sgn(μ − μ'), V_g = sgn(g − g') and U_S = (θ_S, θ'_S) the pair's values of the axes in S;
  Î(S) = I(V_μ; V_g | U_S) / H(V_g | U_S) and K = min over |S| = k of Î (plug-in probabilities,
  natural logarithms; the ratio does not depend on the base).
* :func:`conditional_mi_pgdl` — the same quantity with the PGDL scoring program's conventions
  (self-pairs, binary signs with ties negative, unweighted cells, |S| = 2 only), for comparison
  with published PGDL numbers; the ranking reports both, labelled.
* :func:`sign_error` — Dziugaite et al., "In Search of Robust Measures of Generalization"
  (NeurIPS 2020): an environment is a pair of hyper-parameter settings that differ in exactly
  one axis; its samples are the pairs of nets (any replicate of each setting); the sign-error of
  a pair is (1 − sgn(Δμ) sgn(Δg)) / 2, weighted by w = (ψ(|Δg|) − ½)₊ with the Hoeffding
  probability ψ(x) = (1 − 2 exp(−2 n_test (x/2)²))₊² that the two gaps truly differ (pairs
  whose gaps Monte-Carlo noise could swap get no weight); an environment's error is the
  weighted mean, kept when its effective sample size (Σw)² / Σw² reaches ``min_ess``. The
  robust score is the worst environment; the mean over environments is reported beside it.
"""

from __future__ import annotations

import functools
import itertools
import math

import numpy as np

HALF = 0.5  # pairs with Hoeffding probability below ½ + weight 0 (Dziugaite et al.'s filter)


def kendall_tau(m: np.ndarray, g: np.ndarray) -> float:
    """Jiang's τ (τ_a) of two equal-length vectors; NaN with fewer than two values."""
    m, g = np.asarray(m, float), np.asarray(g, float)
    n = len(m)
    if n < 2:
        return math.nan
    dm = np.sign(m[:, None] - m[None, :])
    dg = np.sign(g[:, None] - g[None, :])
    return float((dm * dg).sum() / (n * (n - 1)))  # each unordered pair counted twice


@functools.lru_cache(maxsize=64)
def _granules(key: bytes, shape: tuple[int, int]) -> tuple[tuple[np.ndarray, ...], ...]:
    """Per axis i, the index arrays of the settings of the other axes where axis i varies
    (cached: the bootstrap scores every measure on the same H)."""
    H = np.frombuffer(key, dtype=np.int64).reshape(shape)
    out = []
    for i in range(shape[1]):
        others = np.delete(H, i, axis=1)
        code = np.unique(others, axis=0, return_inverse=True)[1].reshape(-1) if others.shape[1] else np.zeros(shape[0], int)
        groups = []
        for c in dict.fromkeys(code.tolist()):
            idx = np.flatnonzero(code == c)
            if len(idx) >= 2 and len(set(H[idx, i].tolist())) >= 2:
                groups.append(idx)
        out.append(tuple(groups))
    return tuple(out)


def granulated_tau(m: np.ndarray, g: np.ndarray, H: np.ndarray) -> tuple[float, list[float]]:
    """(Ψ, [ψ_i per axis]) — NaN for an axis with no setting where it varies."""
    m, g = np.asarray(m, float), np.asarray(g, float)
    H = np.ascontiguousarray(H, dtype=np.int64)
    psis = []
    for groups in _granules(H.tobytes(), H.shape):
        taus = [kendall_tau(m[idx], g[idx]) for idx in groups]
        psis.append(float(np.mean(taus)) if taus else math.nan)
    defined = [p for p in psis if not math.isnan(p)]
    return (float(np.mean(defined)) if defined else math.nan), psis


def _entropies(counts: np.ndarray) -> np.ndarray:
    """Entropy (nats) of each row's distribution: counts (U, K) -> (U,); empty rows give 0."""
    n = counts.sum(1, keepdims=True)
    p = np.divide(counts, n, out=np.zeros(counts.shape), where=n > 0)
    return -(p * np.log(np.where(p > 0, p, 1.0))).sum(1)


@functools.lru_cache(maxsize=256)
def _pair_codes(key: bytes, shape: tuple[int, int], S: tuple[int, ...]) -> np.ndarray:
    """U_S of every ordered pair (row-major over i ≠ j): one code per distinct (θ_S, θ'_S)."""
    H = np.frombuffer(key, dtype=np.int64).reshape(shape)
    i, j = np.nonzero(~np.eye(shape[0], dtype=bool))
    if not S:
        return np.zeros(len(i), dtype=np.int64)
    return np.unique(np.concatenate([H[i][:, S], H[j][:, S]], axis=1), axis=0, return_inverse=True)[1].reshape(-1)


def conditional_mi(m: np.ndarray, g: np.ndarray, H: np.ndarray, k: int) -> float:
    """K = min over axis subsets S with |S| = k of Î(V_μ; V_g | U_S); NaN when there are fewer
    than k axes, no pair with distinct targets, or H(V_g | U_S) = 0 for every S."""
    m, g = np.asarray(m, float), np.asarray(g, float)
    H = np.ascontiguousarray(H, dtype=np.int64)
    n = len(m)
    if k > H.shape[1] or n < 2:
        return math.nan
    i, j = np.nonzero(~np.eye(n, dtype=bool))  # ordered pairs
    vg = np.sign(g[i] - g[j])
    keep = vg != 0
    if not keep.any():
        return math.nan
    cell = ((np.sign(m[i] - m[j]).astype(int) + 1) * 2 + (vg > 0))[keep]  # (V_μ, V_g) as one of 6 cells
    best = math.nan
    for S in itertools.combinations(range(H.shape[1]), k):
        u = _pair_codes(H.tobytes(), H.shape, S)[keep]
        joint = np.bincount(u * 6 + cell, minlength=(u.max() + 1) * 6).reshape(-1, 3, 2).astype(float)  # (U, V_μ, V_g)
        pu = joint.sum((1, 2)) / len(u)
        h_g = _entropies(joint.sum(1))
        mi = _entropies(joint.sum(2)) + h_g - _entropies(joint.reshape(len(joint), 6))
        hg = float((pu * h_g).sum())
        if hg > 0:
            ratio = float((pu * mi).sum()) / hg
            best = ratio if math.isnan(best) else min(best, ratio)
    return best


def conditional_mi_pgdl(m: np.ndarray, g: np.ndarray, H: np.ndarray) -> float:
    """The conditional mutual information as the PGDL competition's scoring program computes it
    (Jiang et al., NeurIPS 2020 competition), for comparison with published PGDL numbers:

    * every ordered pair of nets (θ, θ'), the pairs of a net with itself included;
    * binary signs: V_g = + when g > g' and − otherwise (ties, self-pairs included, count −);
      V_μ likewise;
    * S = a pair of distinct hyper-parameter axes only (|S| = 2); the cells are *all*
      combinations (v, v') of each axis's values for both nets — empty ones included;
    * per cell, I(V_μ; V_g) and H(V_g) of its 2 × 2 table; their plain (unweighted) means over
      the cells; the score of S is mean I / mean H, and the result the minimum over S.

    An incomplete grid leaves some cells without a pair: their table is empty, the program's
    arithmetic gives NaN for that S (0/0), and here too such an S is NaN; the minimum is taken
    over the S that are defined (NaN when none is). ddscope's own :func:`conditional_mi` differs
    by excluding i = j, dropping gap ties, keeping the measure's sign 3-valued, weighting the
    cells by p(u) and offering |S| = 0, 1, 2.
    """
    m, g = np.asarray(m, float), np.asarray(g, float)
    H = np.asarray(H, dtype=np.int64)
    n = len(m)
    if H.ndim != 2 or H.shape[1] < 2 or n < 1:
        return math.nan
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    i, j = i.reshape(-1), j.reshape(-1)  # every ordered pair, i = j included
    vg = (g[i] > g[j]).astype(int)  # 1: +, 0: − (ties −)
    vm = (m[i] > m[j]).astype(int)
    best = math.nan
    for a, b in itertools.combinations(range(H.shape[1]), 2):
        va, vb = np.unique(H[:, a]), np.unique(H[:, b])
        # the cell of a pair: (θ_a, θ'_a, θ_b, θ'_b) over the full grid of the axes' values
        ia, ib = np.searchsorted(va, H[:, a]), np.searchsorted(vb, H[:, b])
        cell = ((ia[i] * len(va) + ia[j]) * len(vb) + ib[i]) * len(vb) + ib[j]
        n_cells = (len(va) * len(vb)) ** 2
        tables = np.bincount(cell * 4 + vg * 2 + vm, minlength=n_cells * 4).reshape(n_cells, 2, 2).astype(float)
        totals = tables.sum((1, 2))
        if (totals == 0).any():
            continue  # an empty cell: 0/0 in the program, NaN here
        p = tables / totals[:, None, None]
        pg, pm = p.sum(2), p.sum(1)  # (cells, 2) marginals of V_g and V_μ
        outer = pg[:, :, None] * pm[:, None, :]
        mi = (p * np.log(np.where(p > 0, p, 1.0) / np.where(outer > 0, outer, 1.0))).sum((1, 2))
        hg = -(pg * np.log(np.where(pg > 0, pg, 1.0))).sum(1)
        if hg.mean() > 0:
            score = float(mi.mean() / hg.mean())
            best = score if math.isnan(best) else min(best, score)
    return best


def hoeffding_weight(delta: np.ndarray, n_test: np.ndarray | float) -> np.ndarray:
    """w = (ψ(|Δg|) − ½)₊, ψ(x) = (1 − 2 exp(−2 n (x/2)²))₊² (module docstring)."""
    delta = np.abs(np.asarray(delta, float))
    psi = np.clip(1 - 2 * np.exp(-2 * np.asarray(n_test, float) * (delta / 2) ** 2), 0, None) ** 2
    return np.clip(psi - HALF, 0, None)


def sign_error(m: np.ndarray, g: np.ndarray, H: np.ndarray, n_test: np.ndarray | float, *, min_ess: float = 1.0,
               weighted: bool = True) -> dict:
    """Dziugaite et al.'s coupled-network sign-error (module docstring).

    ``H`` holds the hyper-parameter axes only (replicates — seeds — are what an environment's
    samples are drawn over); ``n_test`` is each net's test-set size (or one number).

    Returns ``{"worst", "mean", "n_env", "by_axis": {axis index: (worst, mean, n_env)}}``;
    NaNs where no environment is kept.
    """
    m, g, H = np.asarray(m, float), np.asarray(g, float), np.asarray(H)
    n = len(m)
    nt = np.broadcast_to(np.asarray(n_test, float), (n,))
    i, j = np.triu_indices(n, k=1)
    differ = H[i] != H[j]  # (pairs, axes)
    one = differ.sum(1) == 1
    i, j, axis = i[one], j[one], differ[one].argmax(1)
    # the environment: the unordered pair of settings (its two rows of H, in a fixed order)
    settings, code = np.unique(H, axis=0, return_inverse=True)
    code = code.reshape(-1)
    a, b = np.minimum(code[i], code[j]), np.maximum(code[i], code[j])
    env = a * len(settings) + b
    dg = g[i] - g[j]
    w = hoeffding_weight(dg, np.minimum(nt[i], nt[j])) if weighted else np.ones(len(i))
    err = (1 - np.sign(m[i] - m[j]) * np.sign(dg)) / 2
    out = {"worst": math.nan, "mean": math.nan, "n_env": 0, "by_axis": {}}
    per_env = {}  # env -> (error, axis)
    for e in np.unique(env):
        sel = env == e
        sw, sw2 = w[sel].sum(), (w[sel] ** 2).sum()
        if sw <= 0 or sw * sw / sw2 < min_ess - 1e-12:
            continue
        per_env[int(e)] = (float((w[sel] * err[sel]).sum() / sw), int(axis[sel][0]))
    if per_env:
        errs = np.array([v for v, _ in per_env.values()])
        out.update(worst=float(errs.max()), mean=float(errs.mean()), n_env=len(errs))
        for ax in sorted({a for _, a in per_env.values()}):
            e_ax = np.array([v for v, a in per_env.values() if a == ax])
            out["by_axis"][ax] = (float(e_ax.max()), float(e_ax.mean()), len(e_ax))
    return out


__all__ = ["conditional_mi", "conditional_mi_pgdl", "granulated_tau", "hoeffding_weight", "kendall_tau", "sign_error"]
