"""How far the RMS of ‖J(x)‖₂ over a random subset of training points is from the RMS over all.

The ``mnist1d-mlp`` preset computes Jacobian norms on ``metrics.jac_samples = 2000`` of the
4 000 training points (benchmark 4: the metric schedule then stays under a fifth of training).
This trains the preset's MLP at a few widths with its protocol (SGD lr 0.01, momentum 0.9,
batch 100) for ``--epochs`` epochs, computes ‖J(x_n)‖₂ on every training point, and reports
|RMS(subset) / RMS(all) − 1| over ``--draws`` random subsets of ``--subset`` points.

    python bench/check_jac_subset.py            # widths 8, 45, 181; 60 epochs; ~1 min
    python bench/check_jac_subset.py --preset mnist1d-cnn --widths 8 32 100   # the CNN preset's 2 000
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from ddscope.config import load_sweep
from ddscope.data import prepare
from ddscope.metrics.jacobian import jacobian_norms
from ddscope.models import make_model
from ddscope.train import index_batches


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="mnist1d-mlp")
    ap.add_argument("--widths", type=int, nargs="+", default=[8, 45, 181])
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--subset", type=int, default=2000)
    ap.add_argument("--draws", type=int, default=200)
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfgs = {c.model.width: c for c in load_sweep(args.preset).trials()}
    data = prepare(cfgs[args.widths[0]].data)
    for k in args.widths:
        cfg = cfgs[k]
        torch.manual_seed(cfg.seed)
        model = make_model(cfg.model, data.input_shape, data.num_classes)
        opt = torch.optim.SGD(model.parameters(), lr=cfg.optim.lr, momentum=cfg.optim.momentum)
        order = torch.Generator().manual_seed(cfg.seed)
        for _ in range(args.epochs):
            for xb, yb in index_batches(data, cfg.optim.batch_size, order, None, "cpu"):
                loss = F.cross_entropy(model(xb), yb)
                opt.zero_grad()
                loss.backward()
                opt.step()
        spec = jacobian_norms(model, data.x_train).spec
        full = spec.square().mean().sqrt()
        gen = torch.Generator().manual_seed(1)
        devs = sorted(
            float((spec[torch.randperm(len(spec), generator=gen)[: args.subset]].square().mean().sqrt() / full - 1).abs())
            for _ in range(args.draws)
        )
        q = lambda p: devs[min(len(devs) - 1, int(p * len(devs)))] * 100  # noqa: E731
        print(f"k={k}: RMS over all {len(spec)} = {float(full):.3f}; |subset/all - 1|: "
              f"median {q(0.5):.2f} %, 95th percentile {q(0.95):.2f} %, max {devs[-1] * 100:.2f} %")


if __name__ == "__main__":
    main()
