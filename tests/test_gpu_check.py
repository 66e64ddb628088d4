"""bench/gpu_check.py in its CPU smoke mode (what CI runs): the same code path as on a GPU, with
every preset measured, projected and written to one JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from .clirun import env

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.py"


def test_gpu_check_smoke_mode_writes_one_json(tmp_path):
    out = tmp_path / "g.json"
    r = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--out", str(out)], capture_output=True, text=True,
                       env=env(), timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(out.read_text())
    assert report["smoke"] and report["device"] == "cpu (smoke)"
    assert set(report["presets"]) == {"cifar10-convnet", "cifar10-resnet18"}
    for preset in report["presets"].values():
        assert [r["width"] for r in preset["runs"]] == [1, 2]
        assert all(r["with_metrics"]["status"] == r["training_only"]["status"] == "done" for r in preset["runs"])
        p = preset["projection"]
        assert p["gpu_hours"] > 0 and p["metric_epochs_per_trial"] > 2 and len(p["widths"]) == 20
