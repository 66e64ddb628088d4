"""Real-data sources read from files in their published formats, written here to tmp_path."""

from __future__ import annotations

import gzip
import os
import pickle

import numpy as np
import pytest
import torch

from ddscope.config import DataConfig
from ddscope.data import SOURCES, cifar, digits, idx, prepare
from ddscope.errors import UserError

RNG = np.random.default_rng(0)


# ----------------------------------------------------------------------------- IDX (MNIST)


def make_idx_folder(root, sub="mnist", n_train=12, n_test=5, size=28, gz=(True, False, True, False)):
    """Four IDX files in <root>/<sub>/, alternately gzipped; returns the arrays written."""
    folder = root / sub
    folder.mkdir(parents=True)
    arrays = {
        "train_images": RNG.integers(0, 256, (n_train, size, size), dtype=np.uint8),
        "train_labels": RNG.integers(0, 10, n_train, dtype=np.uint8),
        "test_images": RNG.integers(0, 256, (n_test, size, size), dtype=np.uint8),
        "test_labels": RNG.integers(0, 10, n_test, dtype=np.uint8),
    }
    for (key, stem), zipped in zip(idx.FILES.items(), gz):
        idx.write_idx(folder / (stem + (".gz" if zipped else "")), arrays[key])
    return arrays


def test_idx_bytes_follow_the_published_header(tmp_path):
    images = RNG.integers(0, 256, (3, 4, 5), dtype=np.uint8)
    idx.write_idx(tmp_path / "a", images)
    blob = (tmp_path / "a").read_bytes()
    assert blob[:4] == (2051).to_bytes(4, "big") == b"\x00\x00\x08\x03"
    assert blob[4:16] == b"\x00\x00\x00\x03" b"\x00\x00\x00\x04" b"\x00\x00\x00\x05"
    assert blob[16:] == images.tobytes()
    idx.write_idx(tmp_path / "b.gz", images[0, 0])
    assert gzip.decompress((tmp_path / "b.gz").read_bytes())[:4] == (2049).to_bytes(4, "big")
    np.testing.assert_array_equal(idx.read_idx(tmp_path / "a", 3), images)
    np.testing.assert_array_equal(idx.read_idx(tmp_path / "b.gz", 1), images[0, 0])


@pytest.mark.parametrize("name,sub", [("mnist", "mnist"), ("fashion_mnist", "fashion-mnist")])
def test_idx_round_trip_bit_exact(tmp_path, name, sub):
    arrays = make_idx_folder(tmp_path, sub)
    x_train, y_train, x_test, y_test = idx.read_raw(tmp_path, name)
    assert x_train.dtype == np.uint8 and x_train.shape == (12, 1, 28, 28)
    np.testing.assert_array_equal(x_train[:, 0], arrays["train_images"])
    np.testing.assert_array_equal(x_test[:, 0], arrays["test_images"])
    np.testing.assert_array_equal(y_train, arrays["train_labels"])
    np.testing.assert_array_equal(y_test, arrays["test_labels"])
    ds = SOURCES[name](DataConfig(name=name, root=str(tmp_path)))
    assert ds.name == name and ds.num_classes == 10
    assert ds.x_train.shape == (12, 1, 28, 28) and ds.x_test.shape == (5, 1, 28, 28)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    # Standardised by the training set's statistics, the test set with the same affine map.
    assert abs(ds.x_train.mean().item()) < 1e-5 and abs(ds.x_train.std().item() - 1) < 1e-5
    raw = torch.from_numpy(x_train).double() / 255
    expected = (torch.from_numpy(x_test).double() / 255 - raw.mean()) / raw.std()
    torch.testing.assert_close(ds.x_test.double(), expected, rtol=0, atol=1e-5)


def test_idx_missing_file_names_the_expected_path(tmp_path):
    make_idx_folder(tmp_path)
    os.remove(tmp_path / "mnist" / "t10k-labels-idx1-ubyte")
    with pytest.raises(UserError, match="mnist/t10k-labels-idx1-ubyte.*yann.lecun.com") as e:
        idx.read_raw(tmp_path, "mnist")
    assert "\n" not in str(e.value)
    with pytest.raises(UserError, match="fashion-mnist/train-images-idx3-ubyte.*zalandoresearch"):
        SOURCES["fashion_mnist"](DataConfig(name="fashion_mnist", root=str(tmp_path)))


@pytest.mark.parametrize("damage", ["truncate", "magic", "gzip", "extra", "count", "label"])
def test_idx_corrupted_file_is_a_user_error(tmp_path, damage):
    arrays = make_idx_folder(tmp_path, gz=(False, False, True, False))
    folder = tmp_path / "mnist"
    target = folder / "train-images-idx3-ubyte"
    blob = target.read_bytes()
    if damage == "truncate":
        target.write_bytes(blob[:-7])
    elif damage == "magic":
        target.write_bytes((2049).to_bytes(4, "big") + blob[4:])
    elif damage == "gzip":
        target = folder / "t10k-images-idx3-ubyte.gz"
        target.write_bytes(target.read_bytes()[:30])
    elif damage == "extra":
        target.write_bytes(blob + b"\x00")
    elif damage == "count":  # a label file that disagrees with its image file
        idx.write_idx(folder / "train-labels-idx1-ubyte", arrays["train_labels"][:-1])
    else:
        idx.write_idx(folder / "train-labels-idx1-ubyte", np.full(12, 10, dtype=np.uint8))
    with pytest.raises(UserError) as e:
        idx.read_raw(tmp_path, "mnist")
    assert "\n" not in str(e.value) and str(folder) in str(e.value)


# ----------------------------------------------------------------------------- CIFAR


def make_cifar_folder(root, name="cifar10", n=4, bytes_keys=True):
    """Published file layout with n images per file; returns (train data, labels, test data, labels)."""
    _, sub, train_files, test_file, key, classes, _archive = cifar.SETS[name]
    folder = root / sub
    folder.mkdir(parents=True)
    out = []
    for stem in (*train_files, test_file):
        data = RNG.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = RNG.integers(0, classes, n)
        cifar.write_batch(folder / stem, data, labels, key, bytes_keys=bytes_keys)
        out.append((data, labels))
    train = out[:-1]
    return np.concatenate([d for d, _ in train]), np.concatenate([l for _, l in train]), *out[-1]


@pytest.mark.parametrize("name,bytes_keys", [("cifar10", True), ("cifar10", False), ("cifar100", True)])
def test_cifar_round_trip_bit_exact(tmp_path, name, bytes_keys):
    data, labels, test_data, test_labels = make_cifar_folder(tmp_path, name, bytes_keys=bytes_keys)
    x_train, y_train, x_test, y_test = cifar.read_raw(tmp_path, name)
    n_train = 20 if name == "cifar10" else 4
    assert x_train.shape == (n_train, 3, 32, 32) and x_train.dtype == np.uint8
    # Rows are 1024 red, 1024 green, 1024 blue values, each plane row-major.
    c, h, w = 2, 5, 17
    np.testing.assert_array_equal(x_train[:, c, h, w], data[:, c * 1024 + h * 32 + w])
    np.testing.assert_array_equal(x_train.reshape(n_train, -1), data)
    np.testing.assert_array_equal(x_test.reshape(4, -1), test_data)
    np.testing.assert_array_equal(y_train, labels)
    np.testing.assert_array_equal(y_test, test_labels)
    ds = SOURCES[name](DataConfig(name=name, root=str(tmp_path)))
    assert ds.num_classes == (10 if name == "cifar10" else 100)
    assert ds.x_train.shape == (n_train, 3, 32, 32) and ds.x_test.shape == (4, 3, 32, 32)
    per_channel = ds.x_train.transpose(0, 1).reshape(3, -1)  # (3, N*H*W)
    torch.testing.assert_close(per_channel.mean(1), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(per_channel.std(1), torch.ones(3), atol=1e-5, rtol=0)


def test_cifar_prepare_with_validation_split(tmp_path):
    make_cifar_folder(tmp_path, "cifar10")
    cfg = DataConfig(name="cifar10", root=str(tmp_path), val_size=3, noise=0.25, noise_kind="flip")
    td = prepare(cfg)
    assert td.x_train.shape == (17, 3, 32, 32) and td.x_val.shape == (3, 3, 32, 32)
    assert int(td.noisy_mask.sum()) == 4 and bool((td.y_train[td.noisy_mask] != td.y_train_clean[td.noisy_mask]).all())


def test_cifar_missing_file_names_the_expected_path(tmp_path):
    with pytest.raises(UserError, match=r"cifar-10-batches-py/data_batch_1.*cs\.toronto\.edu/~kriz/cifar\.html"):
        cifar.read_raw(tmp_path, "cifar10")
    make_cifar_folder(tmp_path, "cifar100")
    os.remove(tmp_path / "cifar-100-python" / "test")
    with pytest.raises(UserError, match="cifar-100-python/test"):
        SOURCES["cifar100"](DataConfig(name="cifar100", root=str(tmp_path)))


class _Evil:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


@pytest.mark.parametrize("damage", ["truncate", "garbage", "not_dict", "no_labels", "shape", "labels", "code"])
def test_cifar_corrupted_file_is_a_user_error(tmp_path, damage):
    make_cifar_folder(tmp_path, "cifar10")
    target = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    if damage == "truncate":
        target.write_bytes(target.read_bytes()[:-100])
    elif damage == "garbage":
        target.write_bytes(b"\x00" * 64)
    elif damage == "not_dict":
        target.write_bytes(pickle.dumps([1, 2, 3]))
    elif damage == "no_labels":
        target.write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8)}))
    elif damage == "shape":
        cifar.write_batch(target, np.zeros((2, 3000), np.uint8), [0, 1])
    elif damage == "labels":
        cifar.write_batch(target, np.zeros((2, 3072), np.uint8), [0, 10])
    else:  # a pickle that would run code is refused before anything runs
        target.write_bytes(pickle.dumps({b"data": _Evil(str(tmp_path / "pwned")), b"labels": [0]}))
    with pytest.raises(UserError, match="data_batch_3") as e:
        cifar.read_raw(tmp_path, "cifar10")
    assert "\n" not in str(e.value)
    assert not (tmp_path / "pwned").exists()


# ----------------------------------------------------------------------------- digits


def test_digits_split_and_scaling():
    pytest.importorskip("sklearn")
    x_train, y_train, x_test, y_test = digits.read_raw()
    assert x_train.shape == (1347, 1, 8, 8) and x_test.shape == (450, 1, 8, 8)
    assert x_train.dtype == np.uint8 and x_train.max() == 16
    assert set(np.unique(y_train)) == set(range(10))
    ds = SOURCES["digits"](DataConfig(name="digits"))
    assert ds.x_train.shape == (1347, 1, 8, 8) and ds.num_classes == 10
    assert abs(ds.x_train.mean().item()) < 1e-5 and abs(ds.x_train.std().item() - 1) < 1e-5
    torch.testing.assert_close(ds.y_test, torch.from_numpy(y_test))


def test_digits_without_sklearn_is_a_user_error(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "sklearn.datasets", None)  # import raises ImportError
    with pytest.raises(UserError, match="scikit-learn"):
        digits.read_raw()
