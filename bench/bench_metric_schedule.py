"""Benchmark 6: the mnist1d-cnn preset's metric schedule before and after exact curvature.

Before this round tr(H) was Hutch++ with ``hess_matvecs`` = 60 Hessian-vector products (and it fed
Theorem 2's RHS); now the networks of the preset are piecewise linear in each parameter, so the
default is the exact tr(H) = tr(GGN) (``ddscope.metrics.ggn``: C per-sample gradient passes). This
script runs both side by side in one process on the preset's own trials (its data, model, SGD
settings and metric options), for a few widths:

* training: the wall time of one epoch of the preset's SGD loop (40 steps of batch 100) after
  ``--train-epochs`` warm-up epochs, times the preset's 500 epochs;
* metrics: one metric epoch of the cheap groups (jacobian, lipschitz, distance) and one of the
  costly groups (paths, hessian, theorem2), each timed with ``metrics.hess_method`` "hutchpp"
  ("before") and "auto" ("after"), times the number of epochs each set is scheduled at;
  "before" also runs the Lipschitz group without the new lip_lower ascent (its cost did not
  exist before), so the two columns differ by what this round changed;
* error: |Hutch++ − exact| / exact on the same 1 000 training samples, median over
  ``--repeats`` probe seeds.

    python bench/bench_metric_schedule.py                # widths 8 32 100, ~10 min on 2 cores
    python bench/bench_metric_schedule.py --widths 4 --train-epochs 1 --repeats 1   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from unittest import mock

import torch
import torch.nn.functional as F

from ddscope.config import load_sweep, set_key
from ddscope.data import prepare
from ddscope.metrics import suite
from ddscope.metrics.hessian import auto_hess_batch, hess_trace_detail
from ddscope.models import make_model
from ddscope.train import measure_epoch
from ddscope.train.schedule import Schedule

CHEAP = ["jacobian", "lipschitz", "distance"]
COSTLY = ["paths", "hessian", "theorem2"]


def train_epoch(model, opt, x, y, batch: int, gen: torch.Generator) -> float:
    """One epoch of the preset's SGD; returns its wall time."""
    t = time.perf_counter()
    model.train()
    for idx in torch.randperm(len(x), generator=gen).split(batch):
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    return time.perf_counter() - t


def timed(fn) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def bench_width(width: int, args) -> dict:
    sweep = load_sweep("mnist1d-cnn")
    cfg = set_key(sweep.base, {"model.width": width})
    data = prepare(cfg.data)
    torch.manual_seed(cfg.seed)
    model = make_model(cfg.model, data.input_shape, data.num_classes)
    init = {k: v.detach().clone() for k, v in model.named_parameters()}
    opt = torch.optim.SGD(model.parameters(), lr=cfg.optim.lr, momentum=cfg.optim.momentum)
    gen = torch.Generator().manual_seed(0)
    for _ in range(args.train_epochs):
        train_epoch(model, opt, data.x_train, data.y_train, cfg.optim.batch_size, gen)
    t_epoch = statistics.median(train_epoch(model, opt, data.x_train, data.y_train, cfg.optim.batch_size, gen)
                                for _ in range(3))
    model.eval()
    sched = Schedule(cfg)
    n_cheap, n_costly = len(sched.dense), len(sched.sparse)
    # "before": the preset as it was — Hutch++, Jacobian norms on every point of every split
    before_cfg = set_key(cfg, {"metrics.hess_method": "hutchpp", "metrics.jac_samples": 0})
    row = {"width": width, "params": sum(p.numel() for p in model.parameters()), "train_epoch_s": t_epoch,
           "train_s": t_epoch * cfg.optim.epochs, "cheap_epochs": n_cheap, "costly_epochs": n_costly}
    for label, c, no_ascent in (("before", before_cfg, True), ("after", cfg, False)):
        patch = mock.patch.dict(suite.DEFAULT_OPTIONS, {"lip_lower_steps": 0} if no_ascent else {})
        with patch:
            t_cheap, _ = timed(lambda: measure_epoch(c, model, data, init, cfg.optim.epochs, CHEAP))
            if no_ascent:  # the Lipschitz group before: the upper bound alone, without data
                t_lip, _ = timed(lambda: suite.measure(model, {}, metrics=["lipschitz"], input_shape=data.input_shape))
                t_cheap_lip, _ = timed(lambda: measure_epoch(c, model, data, init, cfg.optim.epochs, ["lipschitz"]))
                t_cheap = t_cheap - t_cheap_lip + t_lip
        t_costly, rec = timed(lambda: measure_epoch(c, model, data, init, cfg.optim.epochs, COSTLY))
        values = {m: v for _, m, v in rec}
        row[f"{label}_cheap_s"] = t_cheap
        row[f"{label}_costly_s"] = t_costly
        row[f"{label}_metrics_s"] = n_cheap * t_cheap + n_costly * t_costly
        row[f"{label}_hess_trace"] = values.get("hess_trace")
    row["before_ratio"] = row["before_metrics_s"] / row["train_s"]
    row["after_ratio"] = row["after_metrics_s"] / row["train_s"]
    # Hutch++ against the exact trace on the preset's Hessian sample (1 000 training points)
    x, y = data.x_train[: cfg.metrics.hess_samples], data.y_train[: cfg.metrics.hess_samples]
    hb = auto_hess_batch(model, x, 8)
    batches = [(x[s : s + hb], y[s : s + hb]) for s in range(0, len(x), hb)]
    t_exact, exact = timed(lambda: hess_trace_detail(model, batches, method="ggn"))
    errs, t_h = [], []
    for seed in range(args.repeats):
        t, est = timed(lambda: hess_trace_detail(model, batches, method="hutchpp", num_matvecs=cfg.metrics.hess_matvecs,
                                                 generator=torch.Generator().manual_seed(seed)))
        errs.append(abs(est.value - exact.value) / abs(exact.value))
        t_h.append(t)
    row.update({"trace_exact": exact.value, "trace_exact_s": t_exact, "hutchpp_s": statistics.median(t_h),
                "hutchpp_rel_err": statistics.median(errs), "hutchpp_rel_err_max": max(errs)})
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", type=int, nargs="+", default=[8, 32, 100])
    ap.add_argument("--train-epochs", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "metric_schedule.json"))
    args = ap.parse_args()
    rows = []
    head = (f"{'width':>5} {'params':>7} {'train 500 ep':>12} | {'metrics before':>14} {'/train':>6} | "
            f"{'metrics after':>13} {'/train':>6} | {'Hutch++ err':>11} {'(max)':>7} | {'tr H exact':>10} {'s':>5} "
            f"{'Hutch++ s':>9}")
    print(head)
    for w in args.widths:
        r = bench_width(w, args)
        rows.append(r)
        print(f"{r['width']:>5} {r['params']:>7} {r['train_s']:>11.0f}s | {r['before_metrics_s']:>13.0f}s "
              f"{r['before_ratio']:>6.2f} | {r['after_metrics_s']:>12.0f}s {r['after_ratio']:>6.2f} | "
              f"{100 * r['hutchpp_rel_err']:>10.1f}% {100 * r['hutchpp_rel_err_max']:>6.1f}% | "
              f"{r['trace_exact']:>10.4g} {r['trace_exact_s']:>5.1f} {r['hutchpp_s']:>9.1f}", flush=True)
    tot = {k: sum(r[k] for r in rows) for k in ("train_s", "before_metrics_s", "after_metrics_s")}
    print(f"all widths: training {tot['train_s']:.0f}s, metrics before {tot['before_metrics_s']:.0f}s "
          f"({tot['before_metrics_s'] / tot['train_s']:.2f}x), after {tot['after_metrics_s']:.0f}s "
          f"({tot['after_metrics_s'] / tot['train_s']:.2f}x)")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"rows": rows, "totals": tot, "torch": torch.__version__,
                                          "threads": torch.get_num_threads()}, indent=1))


if __name__ == "__main__":
    main()
