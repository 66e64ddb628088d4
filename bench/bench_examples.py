"""Benchmark 7: every example's ``--quick`` path finishes in under a minute on 2 cores.

The examples promise a newcomer seconds with ``--quick``; this runs each one as a newcomer would
(a fresh ``python examples/<name>.py --quick`` in a subprocess, one torch thread per process,
output in a temporary folder), times it, and fails (exit 1) when one takes longer than
``--limit`` seconds (60) or exits non-zero. Wall times on a shared machine move with its load:
the limit is the promise, the JSON keeps the measured times.

    python bench/bench_examples.py                  # all examples; results/bench_examples.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
EXAMPLES = {  # script -> its quick arguments (the output folder is appended)
    "own_model_api.py": ["--quick", "--out"],
    "own_training_loop.py": ["--quick", "--out"],
    "factory_npz_sweep.py": ["--quick", "--out"],
    "walkthrough.py": ["--quick"],
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=float, default=60.0, help="seconds each quick path may take")
    args = ap.parse_args(argv)
    rows, ok = [], True
    for script, quick in EXAMPLES.items():
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, str(ROOT / "examples" / script), *quick]
            if cmd[-1] == "--out":
                cmd.append(str(Path(tmp) / "run"))
            t0 = time.perf_counter()
            r = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=args.limit * 10)
            wall = time.perf_counter() - t0
        passed = r.returncode == 0 and wall <= args.limit
        ok &= passed
        rows.append({"example": script, "wall_s": round(wall, 1), "exit": r.returncode, "within_limit": passed})
        print(f"{script:24s} {wall:6.1f} s  exit {r.returncode}  {'ok' if passed else 'TOO SLOW OR FAILED'}")
        if r.returncode:
            print(r.stderr[-2000:])
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_examples.json").write_text(json.dumps({"limit_s": args.limit, "nproc": os.cpu_count(),
                                                             "date": time.strftime("%Y-%m-%d"), "rows": rows},
                                                            indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
