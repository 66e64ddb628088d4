"""Your own factory and your own data in a sweep file: write a .npz (here MNIST-1D arrays stand in
for yours), then run ``ddscope sweep npz_sweep.toml`` on it through the CLI and measure a trained
checkpoint with ``ddscope measure``.

    cd examples && python factory_npz_sweep.py --out runs/npz
    python examples/factory_npz_sweep.py --out /tmp/z --quick
"""

from __future__ import annotations

import ddscope

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from ddscope.config import DataConfig
from ddscope.data import prepare

HERE = Path(__file__).resolve().parent


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/npz")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    d = prepare(DataConfig(num_samples=1000 if args.quick else 16000, noise=0.0))  # clean labels: ddscope adds noise
    npz = out / "my_data.npz"
    np.savez(npz, x_train=d.x_train.numpy(), y_train=d.y_train.numpy(), x_test=d.x_test.numpy(), y_test=d.y_test.numpy())
    sets = [f"data.path={json.dumps(str(npz))}"]
    if args.quick:
        sets += ["model.width=[4,8]", "optim.epochs=3", "optim.batch_size=50", "metrics.jac_samples=32",
                 "metrics.hess_samples=32", "metrics.hess_matvecs=6", "metrics.lanczos_iters=4",
                 "metrics.num_log_epochs=2", "metrics.num_sparse_epochs=1"]
    cmd = [sys.executable, "-m", "ddscope.cli", "sweep", str(HERE / "npz_sweep.toml"), "--out", str(out / "run")]
    for s in sets:
        cmd += ["--set", s]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    subprocess.run(cmd, check=True, env=env)  # mymodels is importable through PYTHONPATH, in every worker
    ckpt = next((out / "run" / "trials").glob("*/final.pt"))
    measured = subprocess.run([sys.executable, "-m", "ddscope.cli", "measure", str(ckpt), "--json"], check=True,
                              env=env, capture_output=True, text=True)
    values = json.loads(measured.stdout)["values"]
    print(f"{ckpt.parent.name}: lip_upper {values['lip_upper']:.3g} >= max ‖J‖ {values['jac_spec_max/train']:.3g}")


if __name__ == "__main__":
    ddscope.quiet_errors()  # Ctrl-C or a bad setting: one line, no traceback
    main()
