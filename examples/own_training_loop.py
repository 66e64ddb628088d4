"""Keep your own training loop and let ddscope measure it: ``ddscope.Tracker`` records errors and
the metric groups of your model at the epochs you choose, into a run directory that
``ddscope report`` and ``ddscope.load`` read like a sweep.

    python examples/own_training_loop.py --out runs/own-loop
    python examples/own_training_loop.py --out /tmp/y --quick
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

import ddscope
from ddscope.config import DataConfig
from ddscope.data import prepare
from mymodels import MLP


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/own-loop")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    epochs = 4 if args.quick else 200
    # Any tensors will do; here MNIST-1D with 15 % label noise, as your own data would be.
    data = prepare(DataConfig(num_samples=1000 if args.quick else 16000, noise=0.15))
    for width in ([4, 16] if args.quick else [4, 8, 16, 32, 64, 128]):
        torch.manual_seed(0)
        model = MLP(40, width, 2, data.num_classes)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        with ddscope.Tracker(args.out, train=(data.x_train, data.y_train), test=(data.x_test, data.y_test),
                             noisy_mask=data.noisy_mask, y_train_clean=data.y_train_clean, epochs=epochs,
                             labels={"model.width": width, "seed": 0, "data.noise": 0.15},
                             groups=["jacobian", "lipschitz", "distance"], metrics={"jac_samples": 200}) as tracker:
            tracker.start(model)  # θ⁰, and epoch 0
            log_at = set(tracker.epochs(epochs))  # log-spaced, as a sweep would
            for epoch in range(1, epochs + 1):
                model.train()
                perm = torch.randperm(len(data.x_train))
                for i in range(0, len(perm), 100):
                    idx = perm[i : i + 100]
                    opt.zero_grad()
                    F.cross_entropy(model(data.x_train[idx]), data.y_train[idx]).backward()
                    opt.step()
                if epoch in log_at:
                    values = tracker.log(epoch, model)
            print(f"width {width:4d}: test error {values['err/test']:.3f}, "
                  f"‖J‖ rms on train {values['jac_spec_rms/train']:.2f}")
    from ddscope.report import build_report

    print(f"report: {build_report(args.out)}")


if __name__ == "__main__":
    ddscope.quiet_errors()  # Ctrl-C or a bad setting: one line, no traceback
    main()
