"""Benchmark 4: cost of the default metric schedule relative to training, for the demo sweep.

The demo (``ddscope demo``) runs the ``mnist1d-mlp`` preset: 16 widths, 500 epochs, the dense
metric groups (jacobian, lipschitz, distance) at 9 epochs and the sparse ones (paths, hessian,
theorem2, and the measure zoo: complexity, sharpness) at 4. Each trial is trained with its full default schedule; the time spent inside
``measure_epoch`` (the metric suite) is clocked apart from the rest (training steps, per-epoch
losses/errors), so

    overhead = metric time / training time,   training time = wall time − metric time.

Grouped training (``group_trials`` + ``run_group``, one process) is the default; ``--ungrouped``
also runs ``run_trial`` one trial at a time. Per metric group, the cost is also measured once per
width on the model at initialisation (``--breakdown``), to show where the time goes.

    python bench/bench_overhead.py                      # the demo, ~10 min on 2 shared cores
    python bench/bench_overhead.py --epochs 100         # shorter (the schedule keeps its 20 points)
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

import torch

import ddscope.train.members as members_mod
import ddscope.train as train_mod
from ddscope.train import group_trials, run_group
from ddscope.config import load_sweep
from ddscope.data import prepare
from ddscope.models import make_model
from ddscope.train import metric_epochs, run_trial

RESULTS = Path(__file__).resolve().parent / "results"


class MetricClock:
    """Wraps ``measure_epoch`` where the trainers look it up and sums its wall time."""

    def __init__(self):
        self.seconds = 0.0
        self.calls = 0
        self.original = train_mod.measure_epoch

    def __call__(self, *args, **kw):
        t = time.perf_counter()
        try:
            return self.original(*args, **kw)
        finally:
            self.seconds += time.perf_counter() - t
            self.calls += 1

    def __enter__(self):
        members_mod.measure_epoch = train_mod.measure_epoch = self
        return self

    def __exit__(self, *exc):
        members_mod.measure_epoch = train_mod.measure_epoch = self.original


def timed(run) -> dict:
    with MetricClock() as clock:
        t = time.perf_counter()
        results = run()
        wall = time.perf_counter() - t
    assert all(r.status == "done" for r in results), [r.error for r in results if r.status != "done"]
    train = wall - clock.seconds
    return {"wall_s": wall, "metric_s": clock.seconds, "train_s": train, "overhead": clock.seconds / train,
            "metric_calls": clock.calls}


def schedule_groups(cfg) -> list[str]:
    """The preset's metric groups, dense then sparse (the preset is the one source of them)."""
    return list(dict.fromkeys((*cfg.metrics.groups, *cfg.metrics.sparse_groups)))


def breakdown(cfgs) -> dict:
    """Seconds per call of each metric group, per width, at initialisation (one call each)."""
    data = prepare(cfgs[0].data)
    out = defaultdict(dict)
    for cfg in cfgs:
        torch.manual_seed(cfg.seed)
        model = make_model(cfg.model, data.input_shape, data.num_classes)
        init = {k: v.detach().clone() for k, v in model.named_parameters()}
        for g in schedule_groups(cfg):
            t = time.perf_counter()
            train_mod.measure_epoch(cfg, model, data, init, 1, [g])
            out[g][cfg.model.width] = time.perf_counter() - t
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=500)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--ungrouped", action="store_true")
    ap.add_argument("--breakdown", action="store_true")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="a preset override (TOML value), e.g. metrics.sparse_groups='[\"hessian\"]'")
    ap.add_argument("--out", default=str(RESULTS / "bench_overhead.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfgs = load_sweep("mnist1d-mlp", [f"optim.epochs={args.epochs}", *args.overrides]).trials()
    m = cfgs[0].metrics
    dense = metric_epochs(args.epochs, m.num_log_epochs, m.epochs)
    sparse = metric_epochs(args.epochs, m.num_sparse_epochs, m.epochs)
    print(f"demo sweep: {len(cfgs)} widths x {args.epochs} epochs; dense groups {list(m.groups)} at {len(dense)} "
          f"epochs, sparse groups {list(m.sparse_groups)} at {len(sparse)}", flush=True)
    out = {"args": vars(args), "dense_epochs": dense, "sparse_epochs": sparse}

    def grouped():
        res = []
        for g in group_trials(cfgs):
            res += run_group(g, lambda e, n: e % 100 == 0 and print(f"    epoch {e}/{n}", flush=True))
        return res

    runs = {"grouped": grouped}
    if args.ungrouped:
        runs["run_trial"] = lambda: [run_trial(c) for c in cfgs]
    for name, run in runs.items():
        print(f"{name} ...", flush=True)
        r = timed(run)
        out[name] = r
        print(f"  {name}: wall {r['wall_s']:.1f} s = training {r['train_s']:.1f} s + metrics {r['metric_s']:.1f} s"
              f" ({r['metric_calls']} calls): overhead {100 * r['overhead']:.1f} %", flush=True)
    if args.breakdown:
        bd = breakdown(cfgs)
        total = {g: sum(v.values()) for g, v in bd.items()}
        n_calls = {g: len(dense) if g in m.groups else len(sparse) for g in schedule_groups(cfgs[0])}
        print("per-group cost at init (s per call, summed over widths) x calls in the schedule:")
        for g in schedule_groups(cfgs[0]):
            print(f"  {g:10s} {total[g]:7.2f} s x {n_calls[g]:2d} = {total[g] * n_calls[g]:7.1f} s"
                  f"   (widest: {max(bd[g].values()):.2f} s)")
        out["breakdown"] = {"per_width_s": bd, "per_call_sum_s": total, "calls": n_calls}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
