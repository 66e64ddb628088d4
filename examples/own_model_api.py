"""Your own model in a width sweep, from Python: ``ddscope.sweep`` with ``model.name`` naming
your factory (``mymodels.py`` beside this script), on the embedded MNIST-1D data.

    python examples/own_model_api.py --out runs/own-model          # the report is in runs/own-model/report
    python examples/own_model_api.py --out /tmp/x --quick          # seconds (what the tests run)
"""

from __future__ import annotations

import argparse

import ddscope


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/own-model")
    ap.add_argument("--quick", action="store_true", help="a tiny sweep (seconds)")
    args = ap.parse_args(argv)
    settings = {
        "model.name": "mymodels:conv1d_net",  # your factory: module:function
        "model.width": [2, 4, 8] if args.quick else [2, 4, 8, 16, 32, 64],
        "model.options": {"dropout": 0.0},
        "data.noise": 0.15,
        "optim.epochs": 3 if args.quick else 300,
        "metrics.groups": ["jacobian", "lipschitz", "distance"],
        "metrics.sparse_groups": ["hessian", "theorem2"],
    }
    if args.quick:
        settings.update({"data.num_samples": 1000, "optim.batch_size": 50, "metrics.jac_samples": 32,
                         "metrics.hess_samples": 32, "metrics.hess_matvecs": 6, "metrics.lanczos_iters": 4,
                         "metrics.num_log_epochs": 2, "metrics.num_sparse_epochs": 1})
    run_dir = ddscope.sweep("mnist1d-mlp", settings, out=args.out)  # the preset, with your model in it
    table = ddscope.load(run_dir)
    last = table[table["epoch"] == table["epoch"].max()]
    summary = last.pivot_table(index="model.width", columns="metric", values="value")
    print(summary[["err/test", "jac_spec_rms/train", "lip_upper", "hess_trace"]].to_string())
    print(f"report: {run_dir / 'report' / 'index.html'}")


if __name__ == "__main__":
    ddscope.quiet_errors()  # Ctrl-C or a bad setting: one line, no traceback
    main()
