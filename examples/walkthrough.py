# %% [markdown]
# # ddscope in ten minutes
#
# From `pip install` to a figure: run a small width sweep, load it with pandas, plot one metric
# yourself, and measure a model of your own. The `# %%` markers make this a notebook in VS Code
# or Jupyter (jupytext); `python examples/walkthrough.py --quick` runs it top to bottom (the tests
# do). Install first:
#
#     pip install torch ddscope        # or: pip install -e '.[test]' in a checkout

# %%
import sys

import matplotlib

matplotlib.use("Agg")  # files, not windows: works on a server
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import ddscope  # noqa: E402

ddscope.quiet_errors()  # Ctrl-C or a bad setting: one line, no traceback
QUICK = "--quick" in sys.argv
OUT = sys.argv[sys.argv.index("--out") + 1] if "--out" in sys.argv else "runs/walkthrough"

# %% [markdown]
# ## 1. A width sweep
# The `mnist1d-mlp` preset is the paper's MNIST-1D experiment; here it is made small. Every
# setting is a config key (`ddscope presets` lists the presets; the README lists the keys).

# %%
settings = {"model.width": [2, 8, 32] if QUICK else [2, 4, 8, 16, 32, 64, 128],
            "optim.epochs": 3 if QUICK else 200,
            "metrics.groups": ["jacobian", "lipschitz", "distance"], "metrics.sparse_groups": []}
if QUICK:
    settings.update({"data.num_samples": 1000, "optim.batch_size": 50, "metrics.jac_samples": 32,
                     "metrics.num_log_epochs": 2})
run_dir = ddscope.sweep("mnist1d-mlp", settings, out=OUT)
print("run directory:", run_dir, "- the report is", run_dir / "report" / "index.html")

# %% [markdown]
# ## 2. The results as a pandas table
# One row per (trial, epoch, metric), with the trial's config axes as columns.

# %%
df = ddscope.load(run_dir)
last = df[df["epoch"] == df["epoch"].max()]
table = last.pivot_table(index="model.width", columns="metric", values="value")
print(table[["err/train", "err/test", "jac_spec_rms/train", "lip_upper"]])

# %% [markdown]
# ## 3. Your own figure: test error and input-Jacobian norm against width

# %%
fig, ax = plt.subplots(figsize=(5, 3.5))
ax.plot(table.index, table["err/test"], "o-", label="test error")
ax2 = ax.twinx()
ax2.plot(table.index, table["jac_spec_rms/train"], "s--", color="C1", label="‖J‖ rms (train)")
ax.set_xscale("log", base=2)
ax.set_xlabel("width k")
ax.set_ylabel("test error")
ax2.set_ylabel("‖J(x)‖₂ rms on train")
fig.tight_layout()
figure = run_dir / "my_figure.png"
fig.savefig(figure)
print("figure:", figure)

# %% [markdown]
# ## 4. Measure a model of your own
# Any `nn.Module`: the metric groups run on it directly (`ddscope.metrics.measure`).

# %%
from ddscope.config import DataConfig  # noqa: E402
from ddscope.data import prepare  # noqa: E402
from ddscope.metrics import measure  # noqa: E402


class MyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(40, 32), nn.Linear(32, 10)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)) + 0.1 * x[:, :32])  # a residual-ish skip


data = prepare(DataConfig(num_samples=1000))
net = MyNet()
values = measure(net, {"train": (data.x_train, data.y_train), "test": (data.x_test, data.y_test)},
                 metrics=["jacobian", "lipschitz", "hessian"], input_shape=data.input_shape,
                 options={"jac_samples": 100, "hess_samples": 100, "hess_matvecs": 12, "lanczos_iters": 5})
print({k: round(v, 4) for k, v in values.items() if k in ("jac_spec_rms/train", "lip_upper", "hess_trace")})
print("skipped groups:", values.skipped or "none")
print("report:", run_dir / "report" / "index.html")
