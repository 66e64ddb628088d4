"""Your own data: a .npz file written here with numpy (the published format) or a loader function;
noise, subsets and the validation split work on it; every malformed input is one UserError."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ddscope.config import DataConfig, TrialConfig, set_key
from ddscope.data import prepare
from ddscope.errors import UserError

RNG = np.random.default_rng(0)


def write_npz(path, n_train=60, n_test=20, shape=(3, 5), classes=4, val=0, **override):
    arrays = {
        "x_train": RNG.normal(size=(n_train, *shape)).astype(np.float64),
        "y_train": RNG.integers(0, classes, n_train),
        "x_test": RNG.normal(size=(n_test, *shape)).astype(np.float32),
        "y_test": RNG.integers(0, classes, n_test).astype(np.int32),
    }
    arrays["y_train"][:classes] = np.arange(classes)  # every class present
    if val:
        arrays["x_val"], arrays["y_val"] = RNG.normal(size=(val, *shape)), RNG.integers(0, classes, val)
    arrays.update(override)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    np.savez(path, **arrays)
    return arrays


def _cfg(path, **kw) -> DataConfig:
    return set_key(TrialConfig(), {"data.name": "npz", "data.path": str(path), **kw}).data


def test_npz_data_with_noise_subset_and_any_input_shape(tmp_path):
    arrays = write_npz(tmp_path / "d.npz")
    d = prepare(_cfg(tmp_path / "d.npz", **{"data.noise": 0.25, "data.n_train": 40, "data.val_size": 10}))
    assert d.input_shape == (3, 5) and d.num_classes == 4 and d.name == "npz:d.npz"
    assert d.x_train.dtype == torch.float32 and d.y_train.dtype == torch.int64
    assert len(d.x_train) == 40 and len(d.x_val) == 10
    torch.testing.assert_close(d.x_test, torch.from_numpy(arrays["x_test"]))
    assert 0 < int(d.noisy_mask.sum()) < 40 and torch.equal(d.y_train[~d.noisy_mask], d.y_train_clean[~d.noisy_mask])
    # each training sample is one of the file's, with its clean label
    rows = {r.astype(np.float32).tobytes(): int(y) for r, y in zip(arrays["x_train"], arrays["y_train"])}
    for x, y in zip(d.x_train.numpy(), d.y_train_clean.tolist()):
        assert rows[x.tobytes()] == y


def test_the_files_own_validation_split_is_used(tmp_path):
    arrays = write_npz(tmp_path / "v.npz", val=7)
    d = prepare(_cfg(tmp_path / "v.npz"))
    assert len(d.x_val) == 7 and torch.equal(d.y_val, torch.from_numpy(arrays["y_val"]).long())
    assert len(d.x_train) == 60  # nothing held out of the training set


@pytest.mark.parametrize("override, why", [
    ({"y_test": None}, r"missing array\(s\) y_test; needs x_train, y_train, x_test, y_test"),
    ({"y_train": np.zeros(59, dtype=int)}, "x_train has 60 samples but y_train has 59"),
    ({"y_train": np.full(60, 0.5)}, "'y_train' must hold integer class labels, got dtype float64"),
    ({"y_train": -np.ones(60, dtype=int)}, "'y_train' has a negative label"),
    ({"x_test": RNG.normal(size=(20, 4))}, "the splits' samples differ in shape"),
    ({"y_train": np.zeros((60, 2), dtype=int)}, r"'y_train' must be one label per sample \(N,\)"),
], ids=["missing array", "lengths", "float labels", "negative label", "shapes", "one-hot labels"])
def test_malformed_npz_is_one_user_error_naming_the_key(tmp_path, override, why):
    write_npz(tmp_path / "bad.npz", **override)
    with pytest.raises(UserError, match=f"config key 'data.path'.*{why}"):
        prepare(_cfg(tmp_path / "bad.npz"))


def test_missing_file_and_missing_path(tmp_path):
    with pytest.raises(UserError, match=r"config key 'data.path': .*nowhere.npz not found"):
        prepare(_cfg(tmp_path / "nowhere.npz"))
    with pytest.raises(UserError, match=r"config key 'data.path': data.name = \"npz\" needs data.path"):
        set_key(TrialConfig(), {"data.name": "npz"})
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(UserError, match="not a readable .npz file"):
        prepare(_cfg(tmp_path / "junk.npz"))


def test_a_loader_function_with_options(tmp_path, monkeypatch):
    (tmp_path / "myloader.py").write_text(
        "import numpy as np\n"
        "def blobs(cfg):\n"
        "    g = np.random.default_rng(cfg.options['seed'])\n"
        "    n = cfg.options['n']\n"
        "    y = np.arange(n) % 3\n"
        "    x = g.normal(size=(n, 2)) + y[:, None] * 4.0\n"
        "    return {'x_train': x, 'y_train': y, 'x_test': x[:9], 'y_test': y[:9]}\n"
        "def wrong(cfg):\n"
        "    return [1, 2]\n")
    monkeypatch.chdir(tmp_path)  # found in the current folder, as from the CLI
    cfg = set_key(TrialConfig(), {"data.name": "myloader:blobs", "data.options": {"seed": 1, "n": 30}}).data
    d = prepare(cfg)
    assert d.num_classes == 3 and d.input_shape == (2,) and len(d.x_train) == 30
    with pytest.raises(UserError, match="config key 'data.name' .*must return a mapping of arrays"):
        prepare(set_key(TrialConfig(), {"data.name": "myloader:wrong"}).data)
    with pytest.raises(UserError, match=r"config key 'data.name': cannot import module 'nomodule' "
                                        r"\(ModuleNotFoundError"):
        prepare(set_key(TrialConfig(), {"data.name": "nomodule:fn"}).data)
    with pytest.raises(UserError, match="config key 'data.name': module 'myloader' has no function 'nope'"):
        prepare(set_key(TrialConfig(), {"data.name": "myloader:nope"}).data)
