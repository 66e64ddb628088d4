"""Batched data augmentation on device tensors: random crop with zero padding + horizontal flip.

The standard CIFAR augmentation (He et al. 2016; used by Nakkiran et al. 2020 for the mCNN
Adam runs): pad every image by 4 pixels of zeros (the mean after standardisation), take a random
HxW crop of the padded image, and mirror it left-right with probability 1/2. Done for the whole
batch at once with two gathers (airbench-style): no Python loop over samples, no DataLoader, and
it runs on whatever device the batch lives on.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

PAD = 4


def crop_flip(x: Tensor, top: Tensor, left: Tensor, flip: Tensor, pad: int = PAD) -> Tensor:
    """Crop each zero-padded image at its own offset and optionally mirror it.

    Args:
        x: images (B, C, H, W).
        top, left: (B,) integer offsets in 0..2*pad into the padded image; ``top = left = pad``
            is the original image.
        flip: (B,) bool, mirror the crop left-right.
        pad: zero padding on every side.

    Returns:
        (B, C, H, W): ``out[b] = flip_b(padded[b, :, top_b : top_b + H, left_b : left_b + W])``.
    """
    b, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))  # (B, C, H + 2 pad, W + 2 pad), zeros outside
    ar_h = torch.arange(h, device=x.device)
    ar_w = torch.arange(w, device=x.device)
    rows = top.to(x.device)[:, None] + ar_h  # (B, H) padded-row index of every output row
    # Flipping reverses the column order inside the crop window: column j reads W-1-j.
    cols_in_crop = torch.where(flip.to(x.device)[:, None], (w - 1) - ar_w, ar_w)  # (B, W)
    cols = left.to(x.device)[:, None] + cols_in_crop  # (B, W)
    # Two gathers (rows, then columns) with per-sample indices broadcast over channels.
    out = padded.gather(2, rows[:, None, :, None].expand(b, c, h, w + 2 * pad))  # (B, C, H, W + 2 pad)
    return out.gather(3, cols[:, None, None, :].expand(b, c, h, w))  # (B, C, H, W)


def augment_batch(x: Tensor, generator: torch.Generator, pad: int = PAD) -> Tensor:
    """Random crop (zero padding ``pad``) and random horizontal flip of a batch of images.

    ``x`` is (B, C, H, W); any other rank (flat vectors (B, d), 1-D signals) is returned
    unchanged. Offsets and flips are drawn from ``generator`` (top, then left, then flip), on the
    generator's device, then moved to the batch's device: the same generator state gives the same
    augmented batch.
    """
    if x.dim() != 4:
        return x
    b = x.shape[0]
    dev = generator.device
    top = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=dev)
    left = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=dev)
    flip = torch.rand(b, generator=generator, device=dev) < 0.5
    return crop_flip(x, top, left, flip, pad)


__all__ = ["augment_batch", "crop_flip", "PAD"]
