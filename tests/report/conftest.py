"""Fixtures: a synthetic store with known curves (see synthetic.py)."""

from __future__ import annotations

import pytest
from synthetic import SEEDS, SWEEP, WIDTHS, finish, trial_config, trial_id

from ddscope.sweep.store import Store


@pytest.fixture
def synthetic_store(tmp_path):
    """Run directory with every trial of both noise levels done."""
    store = Store.create(tmp_path / "run" / "store.sqlite", SWEEP)
    trials = [(w, n, s) for n in (0.0, 0.2) for w in WIDTHS for s in SEEDS]
    store.add_trials((trial_id(*t), trial_config(*t)) for t in trials)
    for t in trials:
        finish(store, *t)
    store.close()
    return tmp_path / "run"
