"""Benchmark 3: Hessian trace, ddscope's Hutchinson and Hutch++ against PyHessian.

PyHessian (Yao et al., "PyHessian: Neural Networks Through the Lens of the Hessian", 2020;
``pip install pyhessian``) estimates tr(H) with Rademacher Hutchinson, one double-backward
Hessian-vector product per probe. ddscope (``ddscope.metrics.hessian.hess_trace``) uses
Hutchinson and Hutch++ (Meyer et al. 2021) on the same budget, with its default products
(``mode="auto"``: double backward through a kept gradient graph, batched over probes, for models
without convolutions; forward-over-reverse vmapped over probes for conv nets). All get the same number m of Hessian-vector products, the same model and the
same data (the mean cross-entropy over ``--samples`` MNIST-1D training samples, eval mode), and
are compared with the exact trace of the dense float64 Hessian (``ddscope.metrics.reference.dense_hessian``).

Models small enough for a dense Hessian, briefly trained (``--train-epochs`` of SGD) so H is not
the Hessian at initialisation: MLP 40 -> 32 -> 32 -> 10 and CNN1d with 8 channels. Each method
runs ``--repeats`` times per m with fresh probes, interleaved; time is the median wall time of
one estimate (setup included), error the median relative error |est - tr H| / |tr H|. ddscope
runs twice: with the defaults of ``measure`` (batches sized from memory, 8 probes per pass)
and, marked ``*``, with the chunks this small model affords (one batch, all probes in one pass).

PyHessian lives only in the benchmark's environment, never in ddscope's dependencies:

    python -m venv /tmp/bench-venv --system-site-packages
    /tmp/bench-venv/bin/pip install pyhessian
    /tmp/bench-venv/bin/python bench/bench_hessian.py
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ddscope.config import ModelConfig, TrialConfig, set_key
from ddscope.data import prepare
from ddscope.metrics.hessian import auto_hess_batch, hess_trace
from ddscope.models import count_parameters, make_model
from ddscope.metrics.reference import dense_hessian

RESULTS = Path(__file__).resolve().parent / "results"
BATCH, VMAP = "auto", 8  # measure's defaults: batch sized from memory (auto_hess_batch), 8 probes per pass


def train_briefly(model, x, y, epochs: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), 100):
            idx = perm[i : i + 100]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()


def pyhessian_trace(model, x, y, m: int, seed: int) -> float:
    from pyhessian import hessian

    torch.manual_seed(seed)  # PyHessian draws its probes from the global RNG
    h = hessian(model, torch.nn.CrossEntropyLoss(), data=(x, y), cuda=False)
    vhv = h.trace(maxIter=m, tol=-float("inf"))  # tol -inf: exactly m products, no early stop
    model.zero_grad(set_to_none=True)
    return float(sum(vhv) / len(vhv))


def ddscope_trace(method: str, batch: int | str | None = BATCH, vmap_chunk: int | None = VMAP):
    """``hess_trace`` over batches of ``batch`` samples (None: one batch; "auto": as ``measure``
    sizes them), ``vmap_chunk`` probes per vmapped pass (None: all at once)."""

    def run(model, x, y, m: int, seed: int) -> float:
        step = auto_hess_batch(model, x, vmap_chunk) if batch == "auto" else (batch or len(x))
        batches = [(x[s : s + step], y[s : s + step]) for s in range(0, len(x), step)]
        return hess_trace(model, batches, method=method, num_matvecs=m, generator=torch.Generator().manual_seed(seed),
                          vmap_chunk=vmap_chunk)

    return run


METHODS = {
    "pyhessian": pyhessian_trace,
    "ddscope hutchinson": ddscope_trace("hutchinson"),
    "ddscope hutch++": ddscope_trace("hutchpp"),
    # the same estimators with chunks sized for this small model: one batch, every probe in one pass
    "ddscope hutchinson*": ddscope_trace("hutchinson", None, None),
    "ddscope hutch++*": ddscope_trace("hutchpp", None, None),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--matvecs", type=int, nargs="+", default=[30, 60, 120])
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--train-epochs", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(RESULTS / "bench_hessian.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = set_key(TrialConfig(), {})
    data = prepare(cfg.data)
    x, y = data.x_train[: args.samples], data.y_train[: args.samples]
    out = {"args": vars(args), "models": {}}
    for name, mcfg in (("mlp k=32", ModelConfig(name="mlp", width=32)), ("cnn1d c=8", ModelConfig(name="cnn1d", width=8))):
        torch.manual_seed(0)
        model = make_model(mcfg, data.input_shape, data.num_classes)
        train_briefly(model, data.x_train, data.y_train, args.train_epochs, seed=0)
        model.eval()
        t = time.perf_counter()
        exact = float(torch.trace(dense_hessian(copy.deepcopy(model).double(), [(x.double(), y)])))
        print(f"{name}: {count_parameters(model)} parameters, dense tr(H) = {exact:.6g} ({time.perf_counter() - t:.1f} s)",
              flush=True)
        rows = {}
        for m in args.matvecs:
            times = {k: [] for k in METHODS}
            errs = {k: [] for k in METHODS}
            for r in range(args.repeats):
                order = list(METHODS) if r % 2 == 0 else list(reversed(METHODS))
                for k in order:
                    t = time.perf_counter()
                    est = METHODS[k](model, x, y, m, seed=1000 * m + r)
                    times[k].append(time.perf_counter() - t)
                    errs[k].append(abs(est - exact) / abs(exact))
            rows[m] = {k: {"time_s": statistics.median(times[k]), "time_range": [min(times[k]), max(times[k])],
                           "rel_err": statistics.median(errs[k]), "rel_err_range": [min(errs[k]), max(errs[k])]}
                       for k in METHODS}
            print(f"  m={m:4d} HVPs   median time [min, max]      median rel. error [min, max]")
            for k, v in rows[m].items():
                speed = rows[m]["pyhessian"]["time_s"] / v["time_s"]
                print(f"    {k:21s} {v['time_s'] * 1e3:7.1f} ms [{v['time_range'][0] * 1e3:.0f}, {v['time_range'][1] * 1e3:.0f}]"
                      f"  {v['rel_err']:.4f} [{v['rel_err_range'][0]:.4f}, {v['rel_err_range'][1]:.4f}]"
                      f"   pyhessian/this time {speed:.2f}x", flush=True)
        out["models"][name] = {"params": count_parameters(model), "exact_trace": exact, "by_matvecs": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
