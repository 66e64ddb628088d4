"""Benchmark 2: input-Jacobian spectral norm ‖J(x_n)‖₂ at CIFAR input size (3, 32, 32), C = 10.

Compared, in one process, on the same models and inputs:

- ``ddscope exact``: ``ddscope.metrics.jacobian.jacobian_norms(method="exact")`` — all C rows of
  every sample's J by one vmapped reverse pass per chunk, ‖J‖₂² = λ_max(J Jᵀ) by ``eigvalsh``
  (the Frobenius norm comes from the same pass); chunks of ``--chunk`` samples, with the default
  chunk sized from memory (``auto_chunk_size``), and with 1024 (every sample in one pass). On a CPU
  small chunks keep a convolution's activations in cache.
- ``per-sample loop``: the textbook way, one sample at a time:
  ``torch.autograd.functional.jacobian`` then ``torch.linalg.matrix_norm(J, 2)`` (an SVD).
- ``power-10``: 10 steps of power iteration on J Jᵀ per sample, batched over the chunk (one JVP
  and one VJP per step, ``ddscope.estimators.batched_power_iteration``); spectral norm only.

Relative error: median over ``--ref-samples`` samples of |est − ref| / ref, ref = the per-sample
loop in float64. Throughput: samples per second (median over ``--repeats`` interleaved runs;
the per-sample loop runs on fewer samples, throughput is per sample either way). Models at
random initialisation (PyTorch defaults), inputs i.i.d. N(0, 1) — only the shapes matter for
speed. Widths: ``--widths`` for ConvNet/ResNet-18 (k = 64 is the standard ResNet-18).

    python bench/bench_jacobian.py
    python bench/bench_jacobian.py --widths 16 64 --repeats 3
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import torch
from torch.func import jvp, vjp

from ddscope.config import ModelConfig
from ddscope.estimators import batched_power_iteration
from ddscope.metrics.jacobian import eval_mode, jacobian_norms, output_fn
from ddscope.models import count_parameters, make_model

RESULTS = Path(__file__).resolve().parent / "results"
SHAPE, CLASSES = (3, 32, 32), 10


def exact(model, x, chunk: int) -> torch.Tensor:
    return jacobian_norms(model, x, method="exact", chunk_size=chunk).spec


def exact_default(model, x, chunk: int) -> torch.Tensor:
    return jacobian_norms(model, x, method="exact").spec  # the default: chunk sized from memory


def exact_1024(model, x, chunk: int) -> torch.Tensor:
    return jacobian_norms(model, x, method="exact", chunk_size=1024).spec  # every sample in one pass


def per_sample(model, x, chunk: int) -> torch.Tensor:
    out = []
    with eval_mode(model):
        for n in range(len(x)):
            J = torch.autograd.functional.jacobian(lambda inp: model(inp.unsqueeze(0)).squeeze(0), x[n])  # (C, 3, 32, 32)
            out.append(torch.linalg.matrix_norm(J.reshape(J.shape[0], -1), ord=2))
    return torch.stack(out)


def power10(model, x, chunk: int, iters: int = 10) -> torch.Tensor:
    out = []
    g = torch.Generator(device=x.device).manual_seed(0)
    with eval_mode(model), torch.no_grad():
        for s in range(0, len(x), chunk):
            xc = x[s : s + chunk]
            fn = output_fn(model, "logits")
            logits, vjp_fn = vjp(fn, xc)
            B, C = logits.shape

            def matvec(u, fn=fn, xc=xc, vjp_fn=vjp_fn):  # (B, C) -> J Jᵀ u: one VJP + one JVP per chunk
                v = vjp_fn(u)[0]
                return jvp(fn, (xc,), (v,))[1]

            lam = batched_power_iteration(matvec, B, C, iters, tol=0.0, generator=g, dtype=x.dtype, device=x.device)
            out.append(lam.clamp_min(0).sqrt())
    return torch.cat(out)


METHODS = {"ddscope exact": exact, "exact, auto chunk (default)": exact_default, "exact, chunk 1024": exact_1024, "per-sample loop": per_sample,
           "power-10": power10}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--widths", type=int, nargs="+", default=[16], help="k of ConvNet / ResNet-18")
    ap.add_argument("--mlp-width", type=int, default=512)
    ap.add_argument("--samples", type=int, default=256, help="samples for the batched methods")
    ap.add_argument("--loop-samples", type=int, default=32, help="samples for the per-sample loop")
    ap.add_argument("--ref-samples", type=int, default=16)
    ap.add_argument("--chunk", type=int, default=8, help="samples per pass (exact and power-10)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (the float64 reference stays on the CPU)")
    ap.add_argument("--out", default=str(RESULTS / "bench_jacobian.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    models = [("mlp", args.mlp_width)] + [(f, k) for k in args.widths for f in ("convnet", "resnet18")]
    x_cpu = torch.randn(args.samples, *SHAPE, generator=torch.Generator().manual_seed(0))
    x = x_cpu.to(device)
    out = {"args": vars(args), "rows": []}
    print(f"{'model':16s} {'params':>10s}  {'method':18s} {'samples/s':>10s} [min, max]     {'rel. err (median, max)':>24s}  exact speed-up")
    for family, k in models:
        torch.manual_seed(0)
        model = make_model(ModelConfig(name=family, width=k), SHAPE, CLASSES).eval()
        ref = per_sample(copy.deepcopy(model).double(), x_cpu[: args.ref_samples].double(), args.chunk)
        model = model.to(device)
        for method in METHODS.values():  # warm-up: first calls pay one-off costs (allocator, torch.func setup)
            method(model, x[:2], args.chunk)
        rates = {m: [] for m in METHODS}
        errs = {}
        for r in range(args.repeats):
            for m in (METHODS if r % 2 == 0 else reversed(list(METHODS))):
                n = args.loop_samples if m == "per-sample loop" else args.samples
                sync()
                t = time.perf_counter()
                spec = METHODS[m](model, x[:n], args.chunk)
                sync()
                rates[m].append(n / (time.perf_counter() - t))
                rel = ((spec[: args.ref_samples].double().cpu() - ref).abs() / ref)
                errs[m] = (float(rel.median()), float(rel.max()))
        med = {m: statistics.median(v) for m, v in rates.items()}
        for m in METHODS:
            speedup = med["ddscope exact"] / med[m]
            print(f"{family + ' k=' + str(k):16s} {count_parameters(model):10d}  {m:18s} {med[m]:10.1f} "
                  f"[{min(rates[m]):.1f}, {max(rates[m]):.1f}]  {errs[m][0]:11.2e} {errs[m][1]:11.2e}  {speedup:6.1f}x", flush=True)
            out["rows"].append({"model": family, "width": k, "params": count_parameters(model), "method": m,
                                "samples_per_s": med[m], "range": [min(rates[m]), max(rates[m])],
                                "rel_err_median": errs[m][0], "rel_err_max": errs[m][1], "exact_speedup": speedup})
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
