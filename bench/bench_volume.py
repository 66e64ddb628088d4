"""Benchmark 8: the cost of the ``volume`` group on the demo sweep, side by side with the others.

The demo (``ddscope demo``, the ``mnist1d-mlp`` preset: 16 widths, 500 epochs) trained as the
sweep trains it (grouped, one process), with every metric group's function clocked apart inside
the same run: each group's seconds as a share of the demo's wall time without metrics and of the
whole run. The target of the volume group (issue: "volume sharpness"): at most 15 % added to the
demo's wall time on its sparse schedule.

    python bench/bench_volume.py                 # the demo, ~2 min on 2 cores
    python bench/bench_volume.py --epochs 100    # shorter
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

import torch

import ddscope.metrics.groups as groups_mod
from ddscope import catalogue
from ddscope.config import load_sweep
from ddscope.train import group_trials, run_group

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=500)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--out", default=str(RESULTS / "bench_volume.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfgs = load_sweep("mnist1d-mlp", [f"optim.epochs={args.epochs}", *args.overrides]).trials()
    seconds: dict[str, float] = defaultdict(float)
    calls: dict[str, int] = defaultdict(int)
    originals = {}
    for name, row in catalogue.GROUPS.items():  # the suite resolves each row's function at call time
        attr = row.compute.rpartition(":")[2]
        original = getattr(groups_mod, attr)
        originals[attr] = original

        def clocked(ctx, _f=original, _name=name):
            t = time.perf_counter()
            try:
                return _f(ctx)
            finally:
                seconds[_name] += time.perf_counter() - t
                calls[_name] += 1

        setattr(groups_mod, attr, clocked)
    try:
        t0 = time.perf_counter()
        for g in group_trials(cfgs):
            for r in run_group(g):
                assert r.status == "done", r.error
        wall = time.perf_counter() - t0
    finally:
        for attr, f in originals.items():
            setattr(groups_mod, attr, f)
    metric = sum(seconds.values())
    base = wall - metric
    print(f"demo: {len(cfgs)} widths x {args.epochs} epochs, wall {wall:.1f} s = training {base:.1f} s + "
          f"metric groups {metric:.1f} s")
    print(f"{'group':12s} {'calls':>5s} {'seconds':>8s} {'% of training':>14s} {'% of wall':>10s}")
    rows = {}
    for name in sorted(seconds, key=lambda n: -seconds[n]):
        rows[name] = {"calls": calls[name], "seconds": seconds[name], "share_of_training": seconds[name] / base,
                      "share_of_wall": seconds[name] / wall}
        print(f"{name:12s} {calls[name]:5d} {seconds[name]:8.1f} {100 * seconds[name] / base:13.1f}% "
              f"{100 * seconds[name] / wall:9.1f}%")
    vol = seconds.get("volume", 0.0)
    print(f"volume adds {100 * vol / (wall - vol):.1f} % to the demo's wall time without it (target: at most 15 %)")
    out = {"args": vars(args), "wall_s": wall, "training_s": base, "groups": rows,
           "volume_added_share": vol / (wall - vol)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
