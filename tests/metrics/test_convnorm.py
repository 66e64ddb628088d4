"""Certified conv norms: never below the dense SVD on hundreds of random layers, within 1 % at
defaults; the Fourier formula exact where the embedding is the layer itself."""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn

from ddscope.metrics import reference as R
from ddscope.metrics.convnorm import DENSE_MAX_ENTRIES, conv_norm_certified, conv_norm_fft, dense_entries
from ddscope.metrics.lipschitz import conv_operator_norm, lipschitz_upper


def _random_layers(count: int, seed: int):
    rnd = random.Random(seed)
    torch.manual_seed(seed)
    made = 0
    while made < count:
        dims = rnd.choice([1, 2])
        k, s, d = rnd.choice([1, 2, 3, 5]), rnd.choice([1, 1, 2, 3]), rnd.choice([1, 1, 2])
        g = rnd.choice([1, 1, 2])
        ci, co = g * rnd.choice([1, 2, 3]), g * rnd.choice([1, 2, 4])
        mode = rnd.choice(["zeros", "zeros", "circular", "reflect", "replicate"])
        n = rnd.choice([4, 5, 8, 12]) if dims == 2 else rnd.choice([6, 9, 16, 40])
        p = rnd.choice([0, 1, 2]) if mode == "zeros" else rnd.choice([0, 1, 2, (k - 1) * d // 2])
        if mode != "zeros" and p >= n:
            continue
        if (n + 2 * p - d * (k - 1) - 1) // s + 1 < 1:  # no output
            continue
        conv = (nn.Conv1d if dims == 1 else nn.Conv2d)(ci, co, k, stride=s, padding=p, dilation=d, groups=g,
                                                       padding_mode=mode).double()
        made += 1
        yield conv, (ci, *(n,) * dims), (mode, dims, k, s, d, p, g, n)


def test_never_below_the_dense_svd_and_within_one_percent_at_defaults():
    gaps = []
    for conv, shape, desc in _random_layers(240, seed=0):
        exact = R.conv_operator_norm_dense(conv, shape)
        fft = conv_norm_fft(conv, shape).value
        assert fft >= exact, desc  # the circular embedding alone is an upper bound
        cert = conv_norm_certified(conv, shape, estimate=conv_operator_norm(conv, shape))
        assert exact <= cert.value <= exact * 1.01, (desc, cert)
        gaps.append(fft / exact - 1)
    assert max(gaps) > 0.05  # the cases where the dense matrix was needed did occur


@pytest.mark.parametrize("dims, k, s, d, n", [(1, 3, 1, 1, 12), (1, 5, 2, 1, 16), (2, 3, 1, 2, 8), (2, 3, 2, 1, 8),
                                            (2, 4, 2, 1, 8)])
def test_fourier_formula_is_exact_for_circular_padding(dims, k, s, d, n):
    torch.manual_seed(k + s + n)
    total = d * (k - 1)
    conv = (nn.Conv1d if dims == 1 else nn.Conv2d)(3, 4, k, stride=s, padding=total // 2, dilation=d,
                                                   padding_mode="circular").double()
    shape = (3, *(n,) * dims)
    got = conv_norm_fft(conv, shape)
    if total % 2 == 0:  # L_out · s = n: every circulant row once
        assert got.method == "exact"
        exact = R.conv_operator_norm_dense(conv, shape)
        assert exact <= got.value <= exact * (1 + 2e-9)
    else:
        assert got.value >= R.conv_operator_norm_dense(conv, shape)


def test_large_layers_take_the_fourier_bound_and_stay_above_lanczos():
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 32, 3, padding=1).double()
    shape = (16, 32, 32)
    assert dense_entries(conv, shape) > DENSE_MAX_ENTRIES
    lanczos = conv_operator_norm(conv, shape)
    cert = conv_norm_certified(conv, shape, estimate=lanczos)
    assert cert.method == "fft" and lanczos <= cert.value <= lanczos * 1.01  # 32×32: the embedding is tight


def test_same_padding_string_and_groups():
    torch.manual_seed(1)
    for conv, shape in ((nn.Conv1d(4, 4, 4, padding="same", dilation=2).double(), (4, 10)),
                        (nn.Conv2d(4, 6, 3, padding=1, groups=2).double(), (4, 5, 5)),
                        (nn.Conv2d(3, 3, 3, padding=1, groups=3).double(), (3, 6, 6))):
        exact = R.conv_operator_norm_dense(conv, shape)
        assert conv_norm_fft(conv, shape).value >= exact
        assert exact <= conv_norm_certified(conv, shape).value <= exact * (1 + 1e-8)  # no estimate: dense


def test_lipschitz_upper_is_certified_and_keeps_the_lanczos_value(nets):
    for name in ("conv1d", "conv2d", "residual"):
        build, shape, _ = nets.all[name]
        model = build()
        bound = lipschitz_upper(model, shape)
        dense = R.lipschitz_upper_dense(model, shape).value  # every layer's exact norm
        assert dense <= bound.value
        assert bound.lanczos_value == pytest.approx(dense, rel=1e-7) and bound.lanczos_value <= bound.value
        assert bound.lanczos_layers and all(k in {p for p, _, _ in bound.layers} for k in bound.lanczos_layers)
    mlp = nets.mlp()
    b = lipschitz_upper(mlp, (6,))
    assert b.lanczos_value == b.value and b.lanczos_layers == {}
