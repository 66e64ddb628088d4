"""Synthetic stores with known curves, written through the real Store API.

Noise 0.2 has a double descent: train error reaches 0 at width 16 (the interpolation threshold),
the test error falls to 0.40 at width 4 (the classical optimum), peaks at 0.60 at width 16 and
falls to 0.25 at width 128. Noise 0.0 has no peak (threshold 8, falling test error). Every width
has three seeds whose test errors are the curve −0.01, +0, +0.01 (the mean is the curve; the
spread is smaller than half the gaps between widths, so no bootstrap draw reorders them). Measures at the last epoch:

- ``jac_spec_rms/train`` = 10·exp(test error): a monotone transform, ρ = τ = +1;
- ``lip_upper`` = 1 / test error: ρ = τ = −1;
- ``hess_trace`` = TIES (the same for every seed): ρ and τ_b with ties, computed by hand in
  test_evidence.py;
- ``dist_rel/all`` = PEAK32: peaks at width 32, one grid step right of the test-error peak.
"""

from __future__ import annotations

import math
from pathlib import Path

from ddscope.runs.store import Store
from ddscope.train import TrialResult

WIDTHS = [2, 4, 8, 16, 32, 64, 128]
SEEDS = [0, 1, 2]
OFFSETS = {0: -0.01, 1: 0.0, 2: 0.01}
EPOCHS = 10
JAC_EPOCHS = [0, 1, 3, EPOCHS]
TEST = {0.2: [0.50, 0.40, 0.45, 0.60, 0.35, 0.30, 0.25], 0.0: [0.70, 0.60, 0.50, 0.45, 0.40, 0.35, 0.30]}
TRAIN = {0.2: [0.50, 0.30, 0.10, 0.0, 0.0, 0.0, 0.0], 0.0: [0.40, 0.20, 0.0, 0.0, 0.0, 0.0, 0.0]}
# First epoch with train error 0, per width (None: never).
INTERP = {0.2: [None, None, None, 8, 6, 4, 3], 0.0: [None, None, 9, 7, 5, 4, 3]}
TIES = [1.0, 1.0, 2.0, 3.0, 2.0, 2.0, 1.0]
PEAK32 = [1.0, 2.0, 3.0, 4.0, 5.0, 3.0, 2.0]


def trial_config(width: int, noise: float, seed: int) -> dict:
    return {"seed": seed, "model": {"name": "mlp", "width": width}, "data": {"name": "synthetic", "noise": noise},
            "optim": {"epochs": EPOCHS}}


def trial_id(width: int, noise: float, seed: int) -> str:
    return f"w{width}-n{noise:g}-s{seed}"


def records(width: int, noise: float, seed: int, groups=("jacobian", "lipschitz", "hessian", "distance")) -> list:
    """Per-epoch errors ramping linearly to their final values (0 from the interpolation
    epoch on), the Jacobian at a log schedule, the other measures at the last epoch."""
    i = WIDTHS.index(width)
    test = TEST[noise][i] + OFFSETS[seed]
    train, ie = TRAIN[noise][i], INTERP[noise][i]
    end = ie if ie is not None else EPOCHS
    out = []
    for e in range(EPOCHS + 1):
        frac = min(e / end, 1.0)
        out.append((e, "err/train", 0.9 + (train - 0.9) * frac))
        out.append((e, "err/test", 0.9 + (test - 0.9) * frac))
        out.append((e, "loss/train", 2.3 * (1 - frac) + 0.01))
    if "jacobian" in groups:
        out += [(e, "jac_spec_rms/train", 10 * math.exp(test) * (e + 1) / (EPOCHS + 1)) for e in JAC_EPOCHS]
    last = EPOCHS
    if "lipschitz" in groups:
        out.append((last, "lip_upper", 1.0 / test))
    if "hessian" in groups:
        out += [(last, "hess_trace", TIES[i]), (last, "hess_top", float(width))]
    if "distance" in groups:
        out += [(last, "dist_rel/all", PEAK32[i]), (last, "dist_rel/net.0", 0.1 * PEAK32[i]),
                (last, "dist_rel/net.2", 0.2 * PEAK32[i])]
    if ie is not None:
        out.append((last, "interp_epoch", float(ie)))
    return out


def finish(store: Store, width: int, noise: float, seed: int, **kw) -> None:
    ie = INTERP[noise][WIDTHS.index(width)]
    store.finish(TrialResult(trial_id=trial_id(width, noise, seed), config=trial_config(width, noise, seed),
                             status="done", records=records(width, noise, seed, **kw),
                             summary={"params": width * 100, "interp_epoch": ie, "wall_s": 1.0}))


SWEEP = {"sweep": {"name": "synthetic"}, "metrics": {"groups": ["jacobian", "lipschitz", "distance"],
                                                      "sparse_groups": ["hessian"]}}


def synthetic_store(root: Path) -> Path:
    """``root/run`` with every trial of both noise levels done; returns the run directory."""
    store = Store.create(root / "run" / "store.sqlite", SWEEP)
    trials = [(w, n, s) for n in (0.0, 0.2) for w in WIDTHS for s in SEEDS]
    store.add_trials((trial_id(*t), trial_config(*t)) for t in trials)
    for t in trials:
        finish(store, *t)
    store.close()
    return root / "run"
