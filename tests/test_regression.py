"""A small sweep's store, value for value, against the one recorded before the catalogue
refactoring (``tests/fixtures/regression_store.json``; ``python -m tests.regression --write``
regenerates it when a change of the numbers is intended)."""

from __future__ import annotations

import json
import math

from tests.regression import FIXTURE, snapshot


def _plain(config: dict) -> dict:
    """The config without the keys added since (``ADDED_KEYS``) that hold their default: what
    the trial id hashes, so a key added later shows here only when it is set."""
    from ddscope.config import ADDED_KEYS

    out = json.loads(json.dumps(config))
    for (section, key), default in ADDED_KEYS.items():
        if out.get(section, {}).get(key, default) == default:
            out.get(section, {}).pop(key, None)
    return out


def test_a_small_sweep_stores_the_same_trials_keys_and_values_as_recorded(tmp_path):
    old = json.loads(FIXTURE.read_text(encoding="utf-8"))
    new = json.loads(json.dumps(snapshot(tmp_path / "run")))
    assert sorted(new) == sorted(old), "trial ids changed"
    for tid, want in old.items():
        got = new[tid]
        assert _plain(got["config"]) == _plain(want["config"]), tid
        assert got["status"] == want["status"] == "done", tid
        assert got["summary"] == want["summary"], tid
        assert sorted(got["records"]) == sorted(want["records"]), f"{tid}: the stored keys changed"
        differ = [(k, v, got["records"][k]) for k, v in want["records"].items()
                  if not (v is None and got["records"][k] is None)
                  and (v is None or got["records"][k] is None
                       or not math.isclose(v, got["records"][k], rel_tol=1e-6, abs_tol=1e-9))]
        assert not differ, f"{tid}: {len(differ)} values changed, e.g. {differ[:3]}"
