"""Benchmark 1: the full MNIST-1D width sweep, ddscope against a plain PyTorch loop.

Protocol ``mnist1d-mlp``: MLP 40 -> k -> k -> 10 for the preset's 16 widths k = 2..300, MNIST-1D
4 000 train / 12 000 test, 15 % uniform label noise, SGD lr 0.01 momentum 0.9 batch 100, the
same number of epochs (hence steps) on both sides. The metric schedule is off (benchmark 4
measures it); ddscope records train/test loss and error on the preset's evaluation schedule
(``metrics.num_eval_epochs = 60``: 52 of the 500 epochs) and checks the training error after
every epoch until a trial interpolates (``interp_epoch``).

Compared, in one process, on the same tensors (``ddscope.data.prepare``):

- ``plain``: the textbook loop, one model at a time: ``DataLoader(TensorDataset(x, y),
  batch_size=100, shuffle=True)``, ``nn.Sequential`` MLP, ``torch.optim.SGD``. It evaluates the
  train/test errors at the same epochs as ddscope (on whole tensors, in chunks) and that
  evaluation is timed apart, so the table also shows the loop that evaluates only once at the end.
- ``ddscope``: ``group_trials`` + ``run_group`` in this process (one packed group).
- ``ddscope 2w``: the same groups split for two workers (``group_trials(workers=2)``), run by
  ddscope's ``LocalPoolExecutor`` (two processes, one torch thread each).
- ``run_trial``: ddscope without grouping, one trial at a time (``--ungrouped``).

Every single-process method runs with one torch thread (``--threads``); on a shared 2-core
machine a second intra-op thread mostly spins. Methods run interleaved, ``--repeats`` times, in
alternating order. Curves: the final test error per width of the plain loop (its own shuffling)
and of ddscope at seeds ``0..--seeds-1``; they agree when the plain-vs-ddscope gap is no larger
than the typical gap between two ddscope seeds.

    python bench/bench_sweep.py                 # 100 epochs (~10 min on 2 shared cores)
    python bench/bench_sweep.py --epochs 500    # the full protocol
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ddscope.train import group_trials, run_group
from ddscope.config import load_sweep
from ddscope.data import prepare
from ddscope.runs.executors import LocalPoolExecutor
from ddscope.train import eval_epochs, run_trial

RESULTS = Path(__file__).resolve().parent / "results"


def plain_mlp(d: int, k: int, classes: int) -> nn.Sequential:
    return nn.Sequential(nn.Flatten(), nn.Linear(d, k), nn.ReLU(), nn.Linear(k, k), nn.ReLU(), nn.Linear(k, classes))


@torch.no_grad()
def plain_errors(model: nn.Module, x: torch.Tensor, y: torch.Tensor, chunk: int = 4096) -> float:
    model.eval()
    wrong = sum(int((model(x[i : i + chunk]).argmax(1) != y[i : i + chunk]).sum()) for i in range(0, len(x), chunk))
    model.train()
    return wrong / len(x)


def cpu_s() -> float:
    """CPU seconds of this process and of its finished child processes (the pool's workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def run_plain(cfgs, data, seed: int) -> dict:
    """The plain loop over all widths; returns wall times and the final test errors."""
    t0 = time.perf_counter()
    eval_s = final_eval_s = 0.0
    curve = {}
    x, y, xt, yt = data.x_train, data.y_train, data.x_test, data.y_test
    for cfg in cfgs:
        torch.manual_seed(seed)
        model = plain_mlp(x.shape[1], cfg.model.width, data.num_classes).to(x.device)
        loader = DataLoader(TensorDataset(x, y), batch_size=cfg.optim.batch_size, shuffle=True)
        opt = torch.optim.SGD(model.parameters(), lr=cfg.optim.lr, momentum=cfg.optim.momentum)
        evals = eval_epochs(cfg.optim.epochs, cfg.metrics) or set(range(cfg.optim.epochs + 1))
        for epoch in range(1, cfg.optim.epochs + 1):
            for xb, yb in loader:
                loss = F.cross_entropy(model(xb), yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            if epoch not in evals:
                continue
            te = time.perf_counter()
            plain_errors(model, x, y)  # the curves over epochs ddscope records too
            err = plain_errors(model, xt, yt)
            dt = time.perf_counter() - te
            eval_s += dt
            if epoch == cfg.optim.epochs:
                final_eval_s += dt
        curve[cfg.model.width] = err
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "wall_final_eval_only_s": wall - eval_s + final_eval_s, "curve": curve}


def test_errors(results, cfgs) -> dict:
    out = {}
    for cfg, r in zip(cfgs, results):
        assert r.status == "done", r.error
        out[cfg.model.width] = next(v for e, m, v in r.records if m == "err/test" and e == cfg.optim.epochs)
    return out


def run_grouped(cfgs, progress_every: int) -> dict:
    t0 = time.perf_counter()
    results = []
    for group in group_trials(cfgs):
        def progress(epoch, total, t0=t0):
            if epoch % progress_every == 0:
                print(f"    ddscope epoch {epoch}/{total}  {time.perf_counter() - t0:.0f}s", flush=True)
        results += run_group(group, progress)
    return {"wall_s": time.perf_counter() - t0, "curve": test_errors(results, cfgs)}


def run_workers(cfgs, workers: int) -> dict:
    """ddscope's sweep path: groups split for ``workers`` processes of one thread each."""
    t0 = time.perf_counter()
    groups = group_trials(cfgs, workers=workers)
    pool = LocalPoolExecutor(max_workers=workers, threads_per_worker=1)
    try:
        futures = [pool.submit(run_group, g) for g in groups]
        results = {c.trial_id: r for g, f in zip(groups, futures) for c, r in zip(g, f.result())}
    finally:
        pool.shutdown()
    return {"wall_s": time.perf_counter() - t0, "curve": test_errors([results[c.trial_id] for c in cfgs], cfgs)}


def run_ungrouped(cfgs) -> dict:
    t0 = time.perf_counter()
    results = [run_trial(c) for c in cfgs]
    return {"wall_s": time.perf_counter() - t0, "curve": test_errors(results, cfgs)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--seeds", type=int, default=3, help="ddscope seeds for the seed-noise reference")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--ungrouped", action="store_true", help="also time run_trial one trial at a time")
    ap.add_argument("--device", default="cpu", help="cpu or cuda: every method trains there")
    ap.add_argument("--out", default=str(RESULTS / "bench_sweep.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    over = [f"optim.epochs={args.epochs}", "metrics.groups=[]", "metrics.sparse_groups=[]", f"device={args.device}"]
    sweeps = {s: load_sweep("mnist1d-mlp", over + [f"seed={s}"]).trials() for s in range(max(args.seeds, 1))}
    cfgs = sweeps[0]
    data = prepare(cfgs[0].data).to(torch.device(args.device))
    print(f"{len(cfgs)} widths {[c.model.width for c in cfgs]}, {args.epochs} epochs x "
          f"{math.ceil(len(data.x_train) / 100)} steps, {args.threads} thread(s)", flush=True)

    methods = {
        "plain": lambda: run_plain(cfgs, data, seed=0),
        "ddscope": lambda: run_grouped(cfgs, max(args.epochs // 5, 1)),
        f"ddscope {args.workers}w": lambda: run_workers(cfgs, args.workers),
    }
    if args.ungrouped:
        methods["run_trial"] = lambda: run_ungrouped(cfgs)
    times: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}  # CPU seconds: less sensitive than wall time to other users
    curves: dict[str, dict] = {}
    for rep in range(args.repeats):
        names = list(methods) if rep % 2 == 0 else list(reversed(methods))
        for name in names:
            print(f"[repeat {rep + 1}/{args.repeats}] {name} ...", flush=True)
            c0 = cpu_s()
            r = methods[name]()
            cpu.setdefault(name, []).append(cpu_s() - c0)
            times.setdefault(name, []).append(r["wall_s"])
            if name == "plain":
                times.setdefault("plain, final eval only", []).append(r["wall_final_eval_only_s"])
            curves[name] = r["curve"]
            print(f"    {name}: {r['wall_s']:.1f} s wall, {cpu[name][-1]:.1f} s CPU", flush=True)

    seed_curves = {0: curves["ddscope"]}
    for s in range(1, args.seeds):
        print(f"seed {s} (ddscope, {args.workers} workers) ...", flush=True)
        seed_curves[s] = run_workers(sweeps[s], args.workers)["curve"]

    med = {k: statistics.median(v) for k, v in times.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    print("\nwall time (s): median [min, max] over repeats;  CPU time (s, all processes)")
    for k, v in times.items():
        c = f"{med_cpu[k]:8.1f}" if k in med_cpu else "       -"
        print(f"  {k:26s} {med[k]:8.1f}  [{min(v):.1f}, {max(v):.1f}]   {c}")
    print("\nratios (plain / ddscope):")
    ratios = {}
    for base in ("plain", "plain, final eval only"):
        for fast in [m for m in methods if m != "plain"]:
            ratios[f"{base} / {fast}"] = med[base] / med[fast]
            print(f"  {base:24s} / {fast:12s} {med[base] / med[fast]:6.2f}x")

    widths = [c.model.width for c in cfgs]
    print("\nfinal test error per width: plain (seed 0) | ddscope seed 0 | ddscope seeds mean +- sd")
    gaps, seed_gaps = [], []
    for k in widths:
        vals = [seed_curves[s][k] for s in seed_curves]
        sd = statistics.stdev(vals) if len(vals) > 1 else float("nan")
        gaps.append(abs(curves["plain"][k] - statistics.mean(vals)))
        seed_gaps += [abs(a - b) for i, a in enumerate(vals) for b in vals[i + 1 :]]
        print(f"  k={k:4d}  {curves['plain'][k]:.4f} | {seed_curves[0][k]:.4f} | {statistics.mean(vals):.4f} +- {sd:.4f}")
    agree = {
        "mean_abs_gap_plain_vs_ddscope_mean": statistics.mean(gaps),
        "mean_abs_gap_between_ddscope_seeds": statistics.mean(seed_gaps) if seed_gaps else float("nan"),
    }
    print(f"\nmean |plain - ddscope mean| = {agree['mean_abs_gap_plain_vs_ddscope_mean']:.4f}; "
          f"mean |seed - seed| (ddscope) = {agree['mean_abs_gap_between_ddscope_seeds']:.4f}")
    out = {"args": vars(args), "times_s": times, "median_s": med, "cpu_s": cpu, "ratios": ratios, "curves": curves,
           "seed_curves": seed_curves, "agreement": agree}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
