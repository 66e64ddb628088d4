"""The ranking protocols on hand-computed tables (and an independent loop for the CMI)."""

from __future__ import annotations

import itertools
import math
from collections import Counter

import numpy as np
import pytest

from ddscope.report import protocols
from ddscope.report.protocols import conditional_mi, granulated_tau, hoeffding_weight, kendall_tau, sign_error


def test_kendall_tau_by_hand():
    # pairs of (1,2,3,4) vs (1,3,2,4): five concordant, one discordant -> (5 − 1) / 6
    assert kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(2 / 3)
    # a tie in the measure counts 0: (0 + 1 + 1) / 3
    assert kendall_tau([1, 1, 2], [1, 2, 3]) == pytest.approx(2 / 3)
    assert kendall_tau([3, 2, 1], [1, 2, 3]) == -1.0
    assert math.isnan(kendall_tau([1], [2]))


def test_granulated_tau_by_hand():
    # axes (width, seed): ψ_width = mean(τ within seed 0 = +1, within seed 1 = −1) = 0;
    # ψ_seed = mean(τ within width 0 = +1, within width 1 = +1) = 1; Ψ = ½
    H = np.array([[0, 0], [1, 0], [0, 1], [1, 1]])
    m = np.array([1.0, 2.0, 3.0, 4.0])
    g = np.array([1.0, 2.0, 4.0, 3.0])
    psi, by_axis = granulated_tau(m, g, H)
    assert by_axis == pytest.approx([0.0, 1.0])
    assert psi == pytest.approx(0.5)
    # an axis that never varies within a setting has no ψ and does not enter Ψ
    psi1, by1 = granulated_tau(m[:2], g[:2], H[:2])
    assert by1[0] == 1.0 and math.isnan(by1[1]) and psi1 == 1.0


def _entropy(c: Counter) -> float:
    n = sum(c.values())
    return -sum(v / n * math.log(v / n) for v in c.values() if v)


def _cmi_loops(m, g, H, S):
    """Î(V_μ; V_g | U_S) by counting ordered pairs in dictionaries."""
    by_u: dict = {}
    for i, j in itertools.permutations(range(len(m)), 2):
        if g[i] == g[j]:
            continue
        u = tuple(H[i][s] for s in S) + tuple(H[j][s] for s in S)
        by_u.setdefault(u, []).append((int(np.sign(m[i] - m[j])), int(np.sign(g[i] - g[j]))))
    total = sum(len(v) for v in by_u.values())
    mi = hg = 0.0
    for pairs in by_u.values():
        p = len(pairs) / total
        hm, hgu = _entropy(Counter(a for a, _ in pairs)), _entropy(Counter(b for _, b in pairs))
        mi += p * (hm + hgu - _entropy(Counter(pairs)))
        hg += p * hgu
    return mi / hg if hg > 0 else math.nan  # U_S fixes V_g: no information to explain


def test_conditional_mi_by_hand_and_against_a_loop():
    m, g = np.array([1.0, 2, 3, 4]), np.array([1.0, 3, 2, 4])
    # 12 ordered pairs: (+,+) 5, (−,−) 5, (+,−) 1, (−,+) 1; H(V_μ) = H(V_g) = ln 2
    h_joint = -2 * (5 / 12) * math.log(5 / 12) - 2 * (1 / 12) * math.log(1 / 12)
    expected = (2 * math.log(2) - h_joint) / math.log(2)
    H = np.zeros((4, 0), dtype=int)
    assert conditional_mi(m, g, H, 0) == pytest.approx(expected)
    # a perfect measure — in either direction — carries all of V_g
    assert conditional_mi(m, m, H, 0) == pytest.approx(1.0)
    assert conditional_mi(-m, m, H, 0) == pytest.approx(1.0)
    # conditioning: the minimum over subsets of size k, each against the loop version
    rng = np.random.default_rng(0)
    m, g = rng.normal(size=9), rng.normal(size=9)
    H = np.stack([np.arange(9) % 3, np.arange(9) // 3, np.arange(9) % 2], axis=1)
    for k in (1, 2):
        ref = np.nanmin([_cmi_loops(m, g, H, S) for S in itertools.combinations(range(3), k)])
        assert conditional_mi(m, g, H, k) == pytest.approx(ref, rel=1e-12)
    assert math.isnan(conditional_mi(m, g, H, 4))


def test_hoeffding_weight_by_hand():
    # n = 10 000: a gap difference of 0.01 could be noise (ψ clips to 0), one of 0.05 could not
    assert hoeffding_weight(np.array([0.01]), 10_000)[0] == 0.0
    psi = (1 - 2 * math.exp(-2 * 10_000 * 0.025**2)) ** 2
    assert hoeffding_weight(np.array([-0.05]), 10_000)[0] == pytest.approx(psi - 0.5)
    assert hoeffding_weight(np.array([0.0]), 10_000)[0] == 0.0


def test_sign_error_by_hand():
    # one axis (three widths), two seeds each; gaps far apart, so every weight is ≈ ½ (equal)
    H = np.array([[0], [0], [1], [1], [2], [2]])
    g = np.array([0.10, 0.12, 0.30, 0.32, 0.50, 0.55])
    m = np.array([1.0, 1.5, 2.0, 0.5, 3.0, 4.0])
    out = sign_error(m, g, H, 1e6)
    # env (0,1): pairs (1.0,2.0)+ (1.0,0.5)− (1.5,2.0)+ (1.5,0.5)− -> error 2/4
    # env (0,2): all four concordant -> 0;  env (1,2): all four concordant -> 0
    assert out["n_env"] == 3
    assert out["worst"] == pytest.approx(0.5, abs=1e-9)
    assert out["mean"] == pytest.approx(0.5 / 3, abs=1e-9)
    assert out["by_axis"][0] == pytest.approx((0.5, 0.5 / 3, 3), abs=1e-9)
    # pairs within one setting (the replicates) are never compared: permuting them changes nothing
    assert sign_error(m[[1, 0, 2, 3, 4, 5]], g[[1, 0, 2, 3, 4, 5]], H, 1e6)["mean"] == pytest.approx(out["mean"])
    # the effective sample size filter: one pair per environment gives ESS 1
    one = sign_error(m[[0, 2, 4]], g[[0, 2, 4]], H[[0, 2, 4]], 1e6, min_ess=2.0)
    assert one["n_env"] == 0 and math.isnan(one["worst"])


def test_sign_error_weights_and_two_axes():
    # gaps closer than the test set can tell get no weight; settings differing in two axes are no environment
    H = np.array([[0, 0], [1, 0], [0, 1], [1, 1]])
    g = np.array([0.100, 0.101, 0.30, 0.50])
    m = np.array([2.0, 1.0, 3.0, 5.0])
    out = sign_error(m, g, H, 10_000)
    # envs: (00,10): Δg 0.001 -> weight 0 -> dropped; (00,01): concordant; (10,11): concordant; (01,11): concordant
    assert out["n_env"] == 3 and out["worst"] == 0.0
    unweighted = sign_error(m, g, H, 10_000, weighted=False)
    assert unweighted["n_env"] == 4 and unweighted["worst"] == 1.0


# ---- the PGDL scoring program's convention --------------------------------------------------------

def _pgdl_grid():
    """Two axes on a complete 2 × 2 grid, two replicates per point; g orders the points, the
    replicate only breaks ties inside a point."""
    H = np.array([[a, b] for a in (0, 1) for b in (0, 1) for _ in (0, 1)])
    g = np.array([10 * (2 * a + b) + 0.1 * r for a in (0, 1) for b in (0, 1) for r in (0, 1)], float)
    return H, g


def test_pgdl_cmi_on_a_hand_computed_table():
    H, g = _pgdl_grid()
    # m = g: in the 4 cells of pairs within one point, the signs agree (self-pairs are −/− ties):
    # I = H(V_g) there; every other cell has one V_g value (I = H = 0). Ratio 1.
    assert protocols.conditional_mi_pgdl(g, g, H) == pytest.approx(1.0)
    # m = −g: a within-point cell holds (V_g, V_m) = (−,−) twice (self-pairs), (+,−), (−,+):
    # I = ½ ln(32/27), H(V_g) = H(¾, ¼); the other 12 cells add 0 to both means.
    want = 0.5 * math.log(32 / 27) / -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert protocols.conditional_mi_pgdl(-g, g, H) == pytest.approx(want)
    # ddscope's convention on the same table differs (no self-pairs, p(u)-weighted cells)
    assert protocols.conditional_mi(-g, g, H, 2) != pytest.approx(want)


def test_pgdl_cmi_on_an_incomplete_grid():
    H, g = _pgdl_grid()
    keep = ~((H[:, 0] == 1) & (H[:, 1] == 1))  # one grid point missing: cells without pairs
    assert math.isnan(protocols.conditional_mi_pgdl(-g[keep], g[keep], H[keep]))
    # a third axis copying the first: the S that contain it have empty cells; the minimum is over
    # the defined S, here (a, b) alone, and (b, c) which equals it
    H3 = np.concatenate([H, H[:, :1]], axis=1)
    want = protocols.conditional_mi_pgdl(-g, g, H)
    assert protocols.conditional_mi_pgdl(-g, g, H3) == pytest.approx(want)
    assert math.isnan(protocols.conditional_mi_pgdl(g, g, H[:, :1]))  # |S| = 2 needs two axes
