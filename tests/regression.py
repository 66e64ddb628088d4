"""A small sweep whose every stored value is kept in ``tests/fixtures/regression_store.json``:
the regression test reruns it and compares trial ids, keys and values one by one, so a
refactoring that changes a number, a trial id or a key is caught.

Regenerate (only when a change of the numbers is intended, and say so in the commit):
``python -m tests.regression --write``.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

FIXTURE = Path(__file__).parent / "fixtures" / "regression_store.json"

# Two widths x two seeds of the MLP on a small MNIST-1D (packed and stacked grouping), every
# metric group on the sparse schedule, label noise so that train_clean / train_noisy exist.
CONFIG = {
    "sweep": {"name": "regression"},
    "data": {"name": "mnist1d", "num_samples": 400, "train_split": 0.3, "noise": 0.2},
    "model": {"name": "mlp", "width": [4, 12], "depth": 2},
    "seed": [0, 1],
    "optim": {"epochs": 6, "batch_size": 40, "lr": 0.05},
    "metrics": {"groups": ["jacobian", "lipschitz", "distance"],
                "sparse_groups": ["paths", "hessian", "theorem2", "complexity", "sharpness", "spectrum"],
                "num_log_epochs": 3, "num_sparse_epochs": 1, "hess_samples": 60, "path_pairs": 10,
                "jac_samples": 80},
}


def snapshot(run_dir: Path) -> dict:
    """``{trial_id: {"config": ..., "status": ..., "summary": {...}, "records": {"epoch metric": value}}}``."""
    import ddscope
    from ddscope.runs.store import Store

    ddscope.sweep(CONFIG, out=run_dir, executor="inprocess", report=False)
    store = Store.open(run_dir, readonly=True)
    try:
        out = {t["trial_id"]: {"config": t["config"], "status": t["status"],
                               "summary": {k: t["summary"].get(k) for k in ("params", "n_train", "n_test", "n_noisy",
                                                                            "interp_epoch", "trainer")},
                               "records": {}} for t in store.trials()}
        for tid, epoch, metric, value in store.records():
            out[tid]["records"][f"{epoch} {metric}"] = None if value is None or math.isnan(value) else value
    finally:
        store.close()
    return out


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        snap = snapshot(Path(tmp) / "run")
    if "--write" in sys.argv:
        FIXTURE.write_text(json.dumps(snap, indent=0, sort_keys=True) + "\n", encoding="utf-8")
        print(f"wrote {FIXTURE}: {len(snap)} trials, {sum(len(t['records']) for t in snap.values())} values")
