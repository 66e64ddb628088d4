"""The tiny trial (tests/tiny.py) and a record comparison for the training tests."""

from __future__ import annotations

import pytest

from ..tiny import tiny

def assert_same_records(got, want, rel: float = 1e-3, abs_: float = 1e-4) -> None:
    """Same (epoch, metric) keys and values equal up to float summation order in training.

    Errors are fractions of a split: they may differ by one flipped prediction at most.
    """
    a = {(e, m): v for e, m, v in got.records}
    b = {(e, m): v for e, m, v in want.records}
    assert a.keys() == b.keys()
    for key, v in b.items():
        tol = 1.5 / 250 if key[1].startswith("err/") else abs_
        assert a[key] == pytest.approx(v, rel=rel, abs=tol), key


@pytest.fixture
def tiny_cfg():
    return tiny
