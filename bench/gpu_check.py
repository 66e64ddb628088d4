"""The GPU check: one script, its own time limit, one JSON — what the CIFAR presets cost on a GPU.

On a CUDA device it runs, within ``--limit-s`` (default 480 s):

1. benchmarks 1 and 2 at a reduced size with ``--device cuda`` (``bench_sweep.py``,
   ``bench_jacobian.py``), their JSON kept beside this one;
2. the ``cifar10-convnet`` and ``cifar10-resnet18`` presets on CIFAR-format data written on the
   spot (the published pickle layout, random pixels): two widths, a few epochs, with and without
   AMP, each trial once with its metric schedule and once without: seconds per epoch, the metric
   schedule's cost, peak GPU memory;
3. a projection of each full preset's GPU-hours: seconds per epoch fitted as a·k^b over the two
   widths, scaled to the 50 000 CIFAR-10 training images and summed over the preset's widths ×
   epochs, times (1 + the metric share).

``--smoke`` runs the same code on the CPU in seconds (tiny widths, 1 epoch, no benchmarks): what
CI runs, so the script cannot rot between GPU loans. Usage::

    python bench/gpu_check.py                       # on a GPU machine; writes bench/results/gpu_check.json
    python bench/gpu_check.py --smoke --out /tmp/g.json
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ddscope.config import load_sweep, set_key
from ddscope.data.cifar import SETS, write_batch
from ddscope.train import run_trial

HERE = Path(__file__).resolve().parent
PRESETS = ("cifar10-convnet", "cifar10-resnet18")
CIFAR10_TRAIN = 50_000
# The smoke mode's metric settings: every group runs, on a handful of points.
SMOKE_METRICS = ["metrics.jac_samples=16", "metrics.hess_samples=16", "metrics.hess_matvecs=3",
                 "metrics.lanczos_iters=2", "metrics.path_pairs=2", "metrics.path_k=3", "metrics.vol_samples=4",
                 "metrics.vol_k=1"]


def write_cifar10(root: Path, n_train: int, n_test: int) -> None:
    """CIFAR-10 in its published layout (five data batches, one test batch), random pixels."""
    _, sub, train_files, test_file, label_key, classes, _ = SETS["cifar10"]
    folder = root / sub
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    per = max(n_train // len(train_files), 1)
    for stem in train_files:
        write_batch(folder / stem, rng.integers(0, 256, (per, 3072), dtype=np.uint8),
                    rng.integers(0, classes, per).tolist(), label_key=label_key)
    write_batch(folder / test_file, rng.integers(0, 256, (n_test, 3072), dtype=np.uint8),
                rng.integers(0, classes, n_test).tolist(), label_key=label_key)


def time_trial(cfg, device: str) -> dict:
    """Seconds per epoch with the metric schedule and without, peak GPU memory."""
    out = {}
    for label, groups in (("with_metrics", None), ("training_only", {"metrics.groups": [], "metrics.sparse_groups": []})):
        c = set_key(cfg, groups) if groups else cfg
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        r = run_trial(c)
        out[label] = {"wall_s": time.perf_counter() - t0, "status": r.status, "error": (r.error or "")[-300:]}
        if device == "cuda":
            out[label]["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    epochs = cfg.optim.epochs
    train = out["training_only"]["wall_s"]
    out["s_per_epoch"] = train / epochs
    out["metric_s"] = max(out["with_metrics"]["wall_s"] - train, 0.0)
    out["metric_epochs"] = _metric_epochs(cfg)
    return out


def _metric_epochs(cfg) -> int:
    """Epochs at which the metric schedule runs some group."""
    from ddscope.train.schedule import Schedule

    sched = Schedule(cfg)
    return sum(1 for e in range(cfg.optim.epochs + 1) if sched.groups(e))


def project(preset: str, runs: list[dict], n_train: int) -> dict:
    """GPU-hours of the full preset from a·k^b fitted to two widths' seconds per epoch."""
    full = load_sweep(preset)
    widths = list(full.grid.get("model.width", (full.base.model.width,)))
    seeds = len(full.grid.get("seed", (0,)))
    (k1, t1), (k2, t2) = [(r["width"], r["s_per_epoch"]) for r in runs[:2]]
    b = math.log(t2 / t1) / math.log(k2 / k1) if k1 != k2 and t1 > 0 and t2 > 0 else 1.0
    a = t1 / k1**b
    scale = CIFAR10_TRAIN / n_train  # training time grows with the images; metrics use fixed sample counts
    per_metric_epoch = float(np.mean([r["metric_s"] / max(r["metric_epochs"], 1) for r in runs]))
    n_metric = _metric_epochs(full.trials()[0])
    train_s = sum(a * k**b * scale * full.base.optim.epochs for k in widths) * seeds
    metric_s = per_metric_epoch * n_metric * len(widths) * seeds
    return {"widths": widths, "seeds": seeds, "epochs": full.base.optim.epochs, "exponent_b": b,
            "metric_epochs_per_trial": n_metric, "train_gpu_hours": train_s / 3600,
            "metric_gpu_hours": metric_s / 3600, "gpu_hours": (train_s + metric_s) / 3600}


def run_benchmarks(out_dir: Path, budget_s: float) -> dict:
    """Benchmarks 1 and 2, reduced, on CUDA, each within its share of the time left."""
    results = {}
    cmds = {
        "bench_sweep": [sys.executable, str(HERE / "bench_sweep.py"), "--device", "cuda", "--epochs", "20",
                        "--seeds", "1", "--workers", "1", "--out", str(out_dir / "gpu_bench_sweep.json")],
        "bench_jacobian": [sys.executable, str(HERE / "bench_jacobian.py"), "--device", "cuda", "--repeats", "1",
                           "--out", str(out_dir / "gpu_bench_jacobian.json")],
    }
    for name, cmd in cmds.items():
        t0 = time.perf_counter()
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=max(budget_s / 2, 30))
            results[name] = {"rc": p.returncode, "wall_s": time.perf_counter() - t0, "tail": p.stdout[-1500:]}
        except subprocess.TimeoutExpired:
            results[name] = {"rc": None, "wall_s": time.perf_counter() - t0, "tail": "timed out"}
    return results


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny sizes, no benchmarks (CI)")
    ap.add_argument("--limit-s", type=float, default=480.0, help="stop starting new measurements after this")
    ap.add_argument("--out", default=str(HERE / "results" / "gpu_check.json"))
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    device = "cuda" if torch.cuda.is_available() and not args.smoke else "cpu"
    if device == "cpu" and not args.smoke:
        print("gpu_check: no CUDA device; run with --smoke for the CPU smoke mode", file=sys.stderr)
        return 2
    widths = (1, 2) if args.smoke else (16, 64)
    epochs = 1 if args.smoke else 3
    n_train, n_test = (200, 50) if args.smoke else (10_000, 2_000)
    report: dict = {"device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu (smoke)",
                    "torch": torch.__version__, "smoke": args.smoke, "n_train": n_train, "presets": {}}
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as root:
        write_cifar10(Path(root), n_train, n_test)
        for preset in PRESETS:
            entries = []
            for amp in ((False, True) if device == "cuda" else (False,)):
                for k in widths:
                    if time.perf_counter() - t_start > args.limit_s:
                        report["stopped_early"] = f"time limit {args.limit_s} s reached before {preset} k={k}"
                        break
                    cfg = load_sweep(preset, [f"model.width={k}", f"optim.epochs={epochs}", "optim.warmup_epochs=0",
                                              f"data.root='{root}'", f"device='{device}'", f"optim.amp={str(amp).lower()}",
                                              *(SMOKE_METRICS if args.smoke else []),
                                              "metrics.num_log_epochs=1", "metrics.num_sparse_epochs=1",
                                              f"data.val_size={min(1000, n_train // 10)}"]).trials()[0]
                    entry = {"width": k, "amp": amp, **time_trial(cfg, device)}
                    entries.append(entry)
                    print(f"{preset} k={k} amp={amp}: {entry['s_per_epoch']:.3f} s/epoch, metric schedule "
                          f"{entry['metric_s']:.1f} s over {entry['metric_epochs']} epochs", flush=True)
            fp32 = [e for e in entries if not e["amp"]]
            report["presets"][preset] = {"runs": entries,
                                         "projection": project(preset, fp32, n_train) if len(fp32) >= 2 else None}
        if device == "cuda" and time.perf_counter() - t_start < args.limit_s:
            report["benchmarks"] = run_benchmarks(out_path.parent, args.limit_s - (time.perf_counter() - t_start))
    report["wall_s"] = time.perf_counter() - t_start
    out_path.write_text(json.dumps(report, indent=2))
    print(f"gpu_check: {out_path} ({report['wall_s']:.0f} s)")
    failed = [e for p in report["presets"].values() for e in p["runs"]
              if "done" not in (e["with_metrics"]["status"], e["training_only"]["status"])]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
