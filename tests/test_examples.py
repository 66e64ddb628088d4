"""Every script in examples/ runs (its --quick size) as a user would run it, so none can rot."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .clirun import env

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SCRIPTS = sorted(p.name for p in EXAMPLES.glob("*.py") if p.name != "mymodels.py")


def test_every_example_is_listed():
    assert SCRIPTS == ["factory_npz_sweep.py", "own_model_api.py", "own_training_loop.py", "walkthrough.py"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_example_runs(tmp_path, script):
    r = subprocess.run([sys.executable, str(EXAMPLES / script), "--out", str(tmp_path / "out"), "--quick"],
                       capture_output=True, text=True, cwd=tmp_path, env=env(), timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "report:" in r.stdout or "lip_upper" in r.stdout
    assert any((tmp_path / "out").rglob("store.sqlite"))
