import pytest
import torch

from ddscope.config import DataConfig
from ddscope.data import apply_label_noise, prepare


@pytest.mark.parametrize("p", [0.0, 0.1, 0.3])
def test_flip_changes_exactly_round_pn_labels(p):
    g = torch.Generator().manual_seed(1)
    y = torch.randint(0, 10, (1001,), generator=g)
    yn, mask = apply_label_noise(y, p, "flip", 10, g)
    assert int(mask.sum()) == round(p * 1001)
    assert bool((yn[mask] != y[mask]).all())  # every flipped label is wrong
    assert bool((yn[~mask] == y[~mask]).all())
    assert int(yn.min()) >= 0 and int(yn.max()) < 10


def test_uniform_rate_and_kept_labels():
    g = torch.Generator().manual_seed(0)
    n, p, c = 200_000, 0.15, 10
    y = torch.randint(0, c, (n,), generator=g)
    yn, mask = apply_label_noise(y, p, "uniform", c, g)
    # Redraw rate p (binomial std ~ 0.0008); wrong-label rate p(1 - 1/C): some redraws keep theirs.
    assert abs(mask.float().mean().item() - p) < 0.005
    wrong = (yn != y).float().mean().item()
    assert abs(wrong - p * (1 - 1 / c)) < 0.005
    assert bool((yn[~mask] == y[~mask]).all())
    # Redrawn labels are uniform over all classes.
    counts = torch.bincount(yn[mask], minlength=c).float() / mask.sum()
    assert (counts - 1 / c).abs().max() < 0.01


def test_noise_is_seeded():
    y = torch.arange(1000) % 10
    a = apply_label_noise(y, 0.2, "uniform", 10, torch.Generator().manual_seed(5))
    b = apply_label_noise(y, 0.2, "uniform", 10, torch.Generator().manual_seed(5))
    c = apply_label_noise(y, 0.2, "uniform", 10, torch.Generator().manual_seed(6))
    assert torch.equal(a[0], b[0]) and not torch.equal(a[0], c[0])


def test_prepare_mnist1d_mask_marks_wrong_labels():
    d = prepare(DataConfig(num_samples=2000, noise=0.2, noise_kind="flip", seed=3))
    assert d.x_train.shape == (500, 40) and d.x_test.shape == (1500, 40)
    assert int(d.noisy_mask.sum()) == 100
    assert torch.equal(d.noisy_mask, d.y_train != d.y_train_clean)
    assert torch.equal(d.y_train[~d.noisy_mask], d.y_train_clean[~d.noisy_mask])


def test_prepare_subset_and_validation():
    d = prepare(DataConfig(num_samples=2000, n_train=100, subset="balanced", val_size=50, noise=0.0))
    assert d.x_train.shape[0] == 100 and d.x_val.shape[0] == 50
    assert torch.bincount(d.y_train_clean, minlength=10).tolist() == [10] * 10
