"""Every preset runs end to end on the CPU when made tiny: a few widths, a few hundred samples,
one epoch. CIFAR presets read small files the test writes in the published pickle format."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ddscope.cli import main
from ddscope.config import list_presets, load_sweep
from ddscope.data.cifar import SETS, write_batch

from .tiny import CHEAP_COSTLY, overrides

CIFAR_PRESETS = [p for p in list_presets() if p.startswith("cifar")]


def _write_cifar(root, name: str, n_train: int = 300, n_test: int = 100) -> None:
    _, sub, train_files, test_file, label_key, classes, _ = SETS[name]
    folder = root / sub
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    per = n_train // len(train_files)
    for stem in train_files:
        write_batch(folder / stem, rng.integers(0, 256, (per, 3072), dtype=np.uint8),
                    rng.integers(0, classes, per).tolist(), label_key=label_key)
    write_batch(folder / test_file, rng.integers(0, 256, (n_test, 3072), dtype=np.uint8),
                rng.integers(0, classes, n_test).tolist(), label_key=label_key)


# The presets' own metric groups, made cheap.
TINY_METRICS = overrides({**CHEAP_COSTLY, "metrics.jac_samples": 16, "metrics.hess_samples": 16, "metrics.path_pairs": 4,
                          "metrics.lanczos_iters": 3, "metrics.num_log_epochs": 1})


def _run(preset: str, out, extra: list[str]) -> pd.DataFrame:
    args = ["sweep", preset, "--out", str(out), "--executor", "inprocess", "--quiet", "--no-report"]
    for s in extra + TINY_METRICS + ["optim.epochs=1", "optim.warmup_epochs=0", "device='cpu'"]:
        args += ["--set", s]
    with pytest.raises(SystemExit) as e:
        main(args)
        raise SystemExit(0)
    assert e.value.code in (0, None)
    return pd.read_sql("SELECT trial_id, status, error FROM trials", __import__("sqlite3").connect(out / "store.sqlite"))


def test_every_row_of_the_design_table_has_a_preset():
    assert {"mnist1d-mlp", "mnist1d-cnn", "cifar10-convnet", "cifar10-resnet18", "cifar100-convnet",
            "cifar10-mcnn-adam"} <= set(list_presets())
    for name in list_presets():
        s = load_sweep(name)
        assert len(s.trials()) >= 2 and s.base.optim.epochs >= 100, name


@pytest.mark.parametrize("preset", CIFAR_PRESETS)
def test_cifar_preset_runs_tiny_end_to_end(preset, tmp_path):
    name = load_sweep(preset).base.data.name
    _write_cifar(tmp_path / "data", name)
    # CIFAR-100's 100 logits make the lip_lower ascent (8 chains x 30 steps of Jacobians) take 2 min
    # on 2 cores; cifar10-convnet runs the lipschitz group on the same family, so here it is left out.
    lighter = ['metrics.groups=["jacobian", "distance"]'] if name == "cifar100" else []
    trials = _run(preset, tmp_path / "run", [
        f"data.root='{tmp_path / 'data'}'", "model.width=[1,2]", "data.val_size=20", "data.noise=0.2",
        "optim.batch_size=64", *lighter,
    ])
    assert len(trials) == 2 and (trials["status"] == "done").all(), trials["error"].tolist()


def test_mnist1d_cnn_preset_runs_tiny_end_to_end(tmp_path):
    trials = _run("mnist1d-cnn", tmp_path / "run", ["data.num_samples=1000", "model.width=[2,4]"])
    assert len(trials) == 2 and (trials["status"] == "done").all(), trials["error"].tolist()


def test_missing_cifar_files_exit_2_with_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["sweep", "cifar10-convnet", "--out", str(tmp_path / "run"), "--executor", "inprocess", "--quiet",
              "--set", f"data.root='{tmp_path / 'nothing'}'", "--set", "model.width=1", "--set", "optim.epochs=1"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cifar-10-batches-py" in err[0] and "data_batch_1" in err[0]
    assert not (tmp_path / "run").exists()  # nothing written
