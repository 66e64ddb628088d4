"""Batched random crop (zero padding 4) + horizontal flip."""

from __future__ import annotations

import torch

from ddscope.data.augment import PAD, augment_batch, crop_flip


def images(b=6, c=3, h=8, w=8, seed=0):
    return torch.randn(b, c, h, w, generator=torch.Generator().manual_seed(seed))


def full(b, v):
    return torch.full((b,), v, dtype=torch.long)


def test_shapes_and_identity_for_non_images():
    g = torch.Generator().manual_seed(0)
    x = images()
    out = augment_batch(x, g)
    assert out.shape == x.shape and out.dtype == x.dtype
    flat = torch.randn(5, 40)
    assert augment_batch(flat, g) is flat
    signal = torch.randn(5, 1, 40)
    assert augment_batch(signal, g) is signal


def test_forced_flip_is_an_exact_mirror():
    x = images()
    b = x.shape[0]
    assert torch.equal(crop_flip(x, full(b, PAD), full(b, PAD), torch.ones(b, dtype=torch.bool)), x.flip(-1))
    assert torch.equal(crop_flip(x, full(b, PAD), full(b, PAD), torch.zeros(b, dtype=torch.bool)), x)


def test_crop_shifts_content_and_pads_with_zeros():
    x = images(b=3, h=8, w=10)
    for dy, dx in [(-4, 0), (0, 3), (2, -1), (4, 4), (-3, -4)]:
        out = crop_flip(x, full(3, PAD + dy), full(3, PAD + dx), torch.zeros(3, dtype=torch.bool))
        ref = torch.zeros_like(x)
        # out[i, j] = x[i + dy, j + dx] where that pixel exists, else zero padding
        src_r = slice(max(dy, 0), 8 + min(dy, 0))
        src_c = slice(max(dx, 0), 10 + min(dx, 0))
        dst_r = slice(max(-dy, 0), 8 + min(-dy, 0))
        dst_c = slice(max(-dx, 0), 10 + min(-dx, 0))
        ref[..., dst_r, dst_c] = x[..., src_r, src_c]
        assert torch.equal(out, ref), (dy, dx)


def test_per_sample_offsets_and_flips():
    x = images(b=2)
    top, left, flip = torch.tensor([0, 8]), torch.tensor([8, 4]), torch.tensor([True, False])
    out = crop_flip(x, top, left, flip)
    assert torch.equal(out[:1], crop_flip(x[:1], top[:1], left[:1], flip[:1]))
    assert torch.equal(out[1:], crop_flip(x[1:], top[1:], left[1:], flip[1:]))


def test_random_output_is_one_of_the_valid_crops_and_deterministic():
    x = images(b=32, c=2, h=6, w=6)
    out = augment_batch(x, torch.Generator().manual_seed(3))
    assert torch.equal(out, augment_batch(x, torch.Generator().manual_seed(3)))
    assert not torch.equal(out, augment_batch(x, torch.Generator().manual_seed(4)))
    # All 9 x 9 x 2 candidates of every sample: (81*2, B, C, H, W).
    b = x.shape[0]
    cands = torch.stack(
        [
            crop_flip(x, full(b, t), full(b, l), torch.full((b,), f, dtype=torch.bool))
            for t in range(2 * PAD + 1)
            for l in range(2 * PAD + 1)
            for f in (False, True)
        ]
    )
    match = (cands == out).flatten(2).all(-1)  # (162, B)
    assert match.any(0).all()
    # With 32 samples the draws are not all the same transform.
    assert len({int(i) for i in match.float().argmax(0)}) > 1
