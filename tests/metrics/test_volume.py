"""The ``volume`` group: samplers tested for their published definitions, the line integral on
functions with a known integral, every quantity against a plain loop with dense Jacobians on
tiny float64 models, and bad options refused."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ddscope.metrics import measure
from ddscope.metrics.neighbourhood import FAMILIES, draw, erase, parse_sampler, path_average
from ddscope.metrics.reference import volume_reference
from ddscope.metrics.volume import volume_measures
from ddscope.samplers import SAMPLER_FAMILIES, check_sampler, parse_samplers


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator(device="cpu").manual_seed(seed)


# ----------------------------------------------------------------------------- samplers


def test_the_family_names_are_the_parsers():
    assert tuple(FAMILIES) == SAMPLER_FAMILIES


@pytest.mark.parametrize("shape", [(12,), (2, 12)])
def test_a_shift_paths_anchors_are_exactly_the_shifted_signals(shape):
    x = torch.randn(5, *shape, dtype=torch.float64)
    anchors = draw(parse_sampler("shift@1,2,3,4"), x, 3, gen(1))  # (N, K, 5, *shape)
    assert anchors.shape == (5, 3, 5, *shape)
    signs = set()
    for n in range(5):
        for k in range(3):
            assert torch.equal(anchors[n, k, 0], x[n])
            sign = next(s for s in (1, -1) if torch.equal(anchors[n, k, 1], torch.roll(x[n], s, -1)))
            signs.add(sign)
            for i, s in enumerate((1, 2, 3, 4), start=1):  # one direction along the whole path
                assert torch.equal(anchors[n, k, i], torch.roll(x[n], sign * s, -1))
    assert signs == {1, -1}  # both directions drawn


def test_an_image_shift_path_keeps_one_of_four_directions():
    x = torch.randn(6, 2, 7, 7, dtype=torch.float64)
    anchors = draw(parse_sampler("shift@1,2,3"), x, 4, gen(2))
    seen = set()
    for n in range(6):
        for k in range(4):
            moves = [(s, dim) for s in (1, -1) for dim in (-2, -1)]
            s, dim = next(m for m in moves if torch.equal(anchors[n, k, 1], torch.roll(x[n], m[0], m[1])))
            seen.add((s, dim))
            for i in (2, 3):
                assert torch.equal(anchors[n, k, i], torch.roll(x[n], s * i, dim))
    assert len(seen) == 4


@pytest.mark.parametrize("k", [0, 1, 3, 5])
def test_erasing_k_singular_values_leaves_rank_minus_k(k):
    x = torch.randn(3, 2, 6, 6, dtype=torch.float64)  # full rank 6 per channel
    out = erase(x, k)
    ranks = torch.linalg.matrix_rank(out)
    assert (ranks == 6 - k).all()
    kept = torch.linalg.svdvals(x)[..., : 6 - k]  # the largest singular values are untouched
    assert torch.allclose(torch.linalg.svdvals(out)[..., : 6 - k], kept, atol=1e-10)


@pytest.mark.parametrize("k", [1, 4, 10])
def test_erasing_k_fourier_components_zeroes_the_k_smallest(k):
    x = torch.randn(4, 1, 20, dtype=torch.float64)
    f = torch.fft.rfft(x, dim=-1)
    out = erase(x, k)
    g = torch.fft.rfft(out, dim=-1)
    smallest = f.abs().argsort(-1)[..., :k]
    assert torch.allclose(g.gather(-1, smallest).abs(), torch.zeros(()).double(), atol=1e-10)
    rest = f.abs().argsort(-1)[..., k:]
    assert torch.allclose(g.gather(-1, rest), f.gather(-1, rest), atol=1e-10)


def test_ball_points_lie_between_the_point_and_its_augmentation():
    x = torch.randn(4, 16, dtype=torch.float64)
    pts = draw(parse_sampler("shift@2"), x, 5, gen(3))  # (N, K, 16)
    for n in range(4):
        for k in range(5):
            d = pts[n, k] - x[n]
            ts = []
            for s in (2, -2):
                a = torch.roll(x[n], s, -1) - x[n]
                t = float(d @ a / (a @ a))
                if torch.allclose(d, t * a, atol=1e-12):
                    ts.append(t)
            assert ts and 0 < ts[0] <= 1


def test_a_users_augmentation_plugs_in_and_a_bad_one_is_named():
    calls = []

    def noise(x, strength, generator):
        calls.append(strength)
        return x + strength * torch.randn(x.shape, generator=generator, dtype=x.dtype)

    import sys
    import types

    mod = types.ModuleType("ddscope_test_aug")
    mod.noise, mod.wrong = noise, lambda x, s, g: x[:1]
    sys.modules["ddscope_test_aug"] = mod
    try:
        sampler = parse_sampler("ddscope_test_aug:noise@0.1,0.2")
        assert sampler.label == "noise_path0.1-0.2"
        anchors = draw(sampler, torch.zeros(2, 5), 3, gen())
        assert calls == [0.1, 0.2] and anchors.shape == (2, 3, 3, 5)
        # one random state per path: the anchors of a path are scaled copies of one draw
        assert torch.allclose(anchors[:, :, 2], 2 * anchors[:, :, 1])
        with pytest.raises(ValueError, match="returned"):
            draw(parse_sampler("ddscope_test_aug:wrong"), torch.zeros(2, 5), 2, gen())
    finally:
        del sys.modules["ddscope_test_aug"]


@pytest.mark.parametrize("spec, match", [
    ("shift", "needs a strength"), ("blur@1", "unknown sampler family"), ("shift@0", "> 0"),
    ("shift@1.5", "whole numbers"), ("shift@3,2", "must increase"), ("shift@x", "numbers"), ("", "name@strength"),
])
def test_bad_sampler_specs_are_named(spec, match):
    with pytest.raises(ValueError, match=match):
        parse_sampler(spec)


def test_two_samplers_with_one_label_are_refused():
    with pytest.raises(ValueError, match="share the label"):
        parse_samplers(["shift@1", "shift@1"])


@pytest.mark.parametrize("spec, shape", [("shift@40", (1, 40)), ("erase@21", (1, 40)), ("erase@8", (3, 8, 8)),
                                         ("shift@1", (2, 3, 4, 5)), ("erase@1", ())])
def test_a_sampler_that_does_not_fit_the_data_is_refused(spec, shape):
    with pytest.raises(ValueError, match="sampler"):
        check_sampler(parse_sampler(spec), shape)
    check_sampler(parse_sampler("shift@1"), (1, 40))
    check_sampler(parse_sampler("erase@20"), (1, 40))


# ----------------------------------------------------------------------------- the line integral


def test_the_path_average_is_exact_for_a_linear_quantity_on_unequal_segments():
    u = torch.tensor([0.6, 0.8], dtype=torch.float64)  # a unit direction
    s = torch.tensor([0.0, 0.5, 2.0, 3.0], dtype=torch.float64)
    anchors = s[:, None] * u  # (4, 2) on a line, unequal steps
    q = 2 * s + 1  # ∫₀³ (2s + 1) ds / 3 = (9 + 3) / 3
    assert float(path_average(q[None], anchors[None])) == pytest.approx(4.0, abs=1e-12)


def test_the_path_average_follows_the_polygon_and_a_still_path_gives_its_start():
    anchors = torch.tensor([[[0.0, 0.0], [3.0, 0.0], [3.0, 4.0]]], dtype=torch.float64)  # lengths 3 and 4
    q = torch.tensor([[1.0, 1.0, 5.0]], dtype=torch.float64)  # 1 on the first leg, 1 → 5 on the second
    assert float(path_average(q, anchors)) == pytest.approx((3 * 1 + 4 * 3) / 7)
    still = torch.zeros(1, 3, 2, dtype=torch.float64)
    assert float(path_average(torch.tensor([[7.0, 1.0, 2.0]]).double(), still)) == 7.0


# ----------------------------------------------------------------------------- quantities vs the loop


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 7), nn.Tanh(), nn.Linear(7, 3)).double()


def _conv():
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv1d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(36, 3)).double()


@pytest.mark.parametrize("build", [_mlp, _conv], ids=["mlp", "conv1d"])
@pytest.mark.parametrize("spec", ["shift@1", "erase@3", "shift@1,2,3", "erase@1,3"])
@pytest.mark.parametrize("output, loss", [("loss", "cross_entropy"), ("logits", "cross_entropy"),
                                          ("softmax", "cross_entropy"), ("loss", "mse")])
def test_every_volume_quantity_matches_a_loop_over_points_directions_and_anchors(build, spec, output, loss):
    model = build()
    x = torch.randn(3, 1, 12, dtype=torch.float64)
    y = torch.tensor([0, 2, 1])
    sampler = parse_sampler(spec)
    got = volume_measures(model, x, y, sampler, k=2, output=output, loss=loss, generator=gen(5))
    pts = draw(sampler, x, 2, gen(5))
    want = volume_reference(model, pts, y, path=sampler.is_path, output=output, loss=loss)
    assert set(got) == set(want)
    for key in want:
        assert got[key] == pytest.approx(want[key], rel=1e-8, abs=1e-12), key


def test_the_group_measures_clean_and_noisy_points_apart_and_a_bad_sampler_skips_it():
    model = _mlp().float()
    x, y = torch.randn(30, 1, 12), torch.arange(30) % 3
    noisy = torch.arange(30) % 6 == 0
    subsets = {"train_clean": ("train", ~noisy), "train_noisy": ("train", noisy)}
    out = measure(model, {"train": (x, y)}, subsets=subsets, metrics=["volume"], input_shape=(1, 12),
                  options={"vol_samplers": ("shift@1", "erase@1,2"), "vol_k": 2, "vol_samples": 4})
    assert not out.skipped
    for split in ("train_clean", "train_noisy"):
        for sampler in ("shift1", "erase_path1-2"):
            assert math.isfinite(out[f"vol_jac_spec_rms/{split}/{sampler}"])
            assert 0 <= out[f"vol_acc/{split}/{sampler}"] <= 1
        assert f"vol_tangent_jac/{split}/erase_path1-2" in out and f"vol_tangent_jac/{split}/shift1" not in out
    alone = measure(model, {"train": (x, y)}, metrics=["volume"], input_shape=(1, 12), options={"vol_samples": 3})
    assert any(k.startswith("vol_loss/train/") for k in alone)  # no subsets: the whole split
    with pytest.warns(UserWarning, match="volume"):
        bad = measure(model, {"train": (x, y)}, metrics=["volume"], input_shape=(1, 12),
                      options={"vol_samplers": ("shift@12",)})
    assert "at most 11 pixels" in bad.skipped["volume"]


def test_a_long_measurement_says_where_it_is():
    lines: list[str] = []
    model = _mlp().float()
    measure(model, {"train": (torch.randn(8, 1, 12), torch.arange(8) % 3)}, metrics=["volume", "jacobian"],
            input_shape=(1, 12), options={"vol_samples": 2, "vol_k": 1}, progress=lines.append)
    assert lines[0] == "metric group jacobian ..." and lines[2] == "metric group volume ..."
    assert lines[3].startswith("metric group volume: ") and lines[3].endswith(" s")


def test_a_python_callable_is_a_sampler_in_measure():
    """From Python, ``vol_samplers`` takes your augmentation itself: a ball, or a path with its strengths."""
    def jitter(x, strength, generator):
        return x + strength * torch.randn(x.shape, generator=generator, dtype=x.dtype)

    model = _mlp().float()
    x, y = torch.randn(10, 1, 12), torch.arange(10) % 3
    out = measure(model, {"train": (x, y)}, metrics=["volume"], input_shape=(1, 12),
                  options={"vol_samplers": (jitter, (jitter, (0.1, 0.2, 0.3))), "vol_samples": 3, "vol_k": 2})
    assert not out.skipped
    assert {"vol_loss/train/jitter1", "vol_tangent_hess/train/jitter_path0.1-0.3"} <= set(out)
    with pytest.raises(ValueError, match="must increase"):
        parse_sampler((jitter, (0.3, 0.1)))
