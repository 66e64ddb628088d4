"""ViT_k: a small Vision Transformer with embedding dimension k.

Dosovitskiy et al., "An Image is Worth 16x16 Words: Transformers for Image Recognition at
Scale", ICLR 2021, scaled down for 32x32 images and with mean pooling instead of a class token.
For a (C_in, 32, 32) input, patch size p = 4, N = 64 tokens::

    Conv(C_in -> k, kernel p, stride p) -> tokens        (B, N, k)   patch embedding
    + learned position embedding                         (B, N, k)
    depth x pre-norm block:
        x = x + MHSA(LayerNorm(x))                       (B, N, k)
        x = x + MLP(LayerNorm(x)),  MLP = Linear(k -> 4k) -> GELU -> Linear(4k -> k)
    LayerNorm -> mean over tokens                        (B, k)
    Linear(k -> C)

Patch size: the largest of 4, 2, 1 that divides H and W and leaves at least 16 tokens (32x32 and
28x28 -> 4, digits' 8x8 -> 2). Heads: about one per 32 embedding dimensions, rounded down to a
divisor of k (``num_heads``), so every width k >= 1 is valid. ``depth`` (the config's
``model.depth``, default 2) sets the number of blocks; ``batchnorm`` is ignored. Linear layers
keep PyTorch's default initialisation (it scales with 1/sqrt(fan_in), as for the other families
of the width sweep); the position embedding is drawn from N(0, 0.02^2) as in the paper's code.

Attention is written with plain tensor operations (no fused kernels), so the model works under
``torch.func`` transforms (vmap / jacrev / jvp / vjp over the input) and double backward, in
float32 and float64. The blocks are :class:`~ddscope.models.blocks.Residual` modules and the
reshaping layers declare themselves 1-Lipschitz (an empty ``lipschitz_parts()``), but
dot-product attention and LayerNorm have no finite global Lipschitz constant (Kim et al., "The
Lipschitz Constant of Self-Attention", ICML 2021): ``lipschitz_upper`` returns +inf for this
family, with the unbounded layers listed as such; input-Jacobian norms are the smoothness measure here.

Parameters: C_in p^2 k + k + N k + depth (12 k^2 + 13 k) + 2k + k C + C.
"""

from __future__ import annotations

import torch
from torch import nn

from .blocks import Residual
from .convnet import image_shape

MLP_RATIO = 4
HEAD_DIM = 32  # target dimension per attention head


def patch_size(h: int, w: int) -> int:
    """Largest of 4, 2, 1 dividing H and W that leaves at least 16 tokens."""
    for p in (4, 2):
        if h % p == 0 and w % p == 0 and (h // p) * (w // p) >= 16:
            return p
    return 1


def num_heads(dim: int) -> int:
    """About ``dim / HEAD_DIM`` heads, rounded down to a divisor of ``dim`` (at least 1)."""
    h = max(1, dim // HEAD_DIM)
    while dim % h:
        h -= 1
    return h


class Tokens(nn.Module):
    """Feature map to a token sequence: (B, k, h, w) -> (B, h*w, k), row-major patch order."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(2).transpose(1, 2)

    def lipschitz_parts(self) -> list[nn.Module]:
        return []  # a permutation of the entries: exactly 1-Lipschitz


class PositionEmbedding(nn.Module):
    """Adds a learned (1, N, k) embedding to every sequence of the batch."""

    def __init__(self, num_tokens: int, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(1, num_tokens, dim))
        nn.init.trunc_normal_(self.weight, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.weight

    def lipschitz_parts(self) -> list[nn.Module]:
        return []  # a translation: exactly 1-Lipschitz


class SelfAttention(nn.Module):
    """Multi-head scaled dot-product self-attention (Vaswani et al. 2017) on (B, N, k)."""

    # Dot-product attention has no global Lipschitz constant (Kim et al., ICML 2021).
    lipschitz_unbounded = "dot-product self-attention is not globally Lipschitz"

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"embedding dimension {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, k = x.shape
        d = k // self.heads
        # (B, N, 3k) -> (3, B, heads, N, d): one matmul for queries, keys and values
        q, key, v = self.qkv(x).reshape(b, n, 3, self.heads, d).permute(2, 0, 3, 1, 4)
        att = (q @ key.transpose(-2, -1)) * d**-0.5  # (B, heads, N, N)
        out = att.softmax(dim=-1) @ v  # (B, heads, N, d)
        return self.proj(out.transpose(1, 2).reshape(b, n, k))


class MeanTokens(nn.Module):
    """Mean pooling over the token axis: (B, N, k) -> (B, k)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=1)

    def lipschitz_parts(self) -> list[nn.Module]:
        return []  # averaging N tokens has norm 1/sqrt(N) <= 1: 1 is a valid bound


def transformer_block(dim: int, heads: int) -> nn.Sequential:
    """Pre-norm block: two residual sublayers (attention, then the MLP)."""
    attention = Residual(nn.Sequential(nn.LayerNorm(dim), SelfAttention(dim, heads)))
    mlp = Residual(
        nn.Sequential(
            nn.LayerNorm(dim),
            nn.Linear(dim, MLP_RATIO * dim),
            nn.GELU(),
            nn.Linear(MLP_RATIO * dim, dim),
        )
    )
    return nn.Sequential(attention, mlp)


def vit(width: int, input_shape: tuple[int, ...], num_classes: int, *, depth: int = 2, **_) -> nn.Sequential:
    """ViT_k with ``depth`` blocks, embedding dimension ``width`` and mean pooling."""
    c_in, h, w = image_shape("vit", input_shape, min_size=1)
    p = patch_size(h, w)
    n_tokens = (h // p) * (w // p)
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, width, p, stride=p),  # (B, k, H/p, W/p)
        Tokens(),
        PositionEmbedding(n_tokens, width),
    ]
    layers += [transformer_block(width, num_heads(width)) for _ in range(depth)]
    layers += [nn.LayerNorm(width), MeanTokens(), nn.Linear(width, num_classes)]
    return nn.Sequential(*layers)


def vit_num_params(width: int, input_shape: tuple[int, int, int], num_classes: int, depth: int = 2) -> int:
    """Closed-form parameter count of :func:`vit`."""
    c_in, h, w = input_shape
    p = patch_size(h, w)
    k = width
    n_tokens = (h // p) * (w // p)
    per_block = 12 * k * k + 13 * k  # qkv 3k^2+3k, proj k^2+k, MLP 8k^2+5k, 2 LayerNorms 4k
    return c_in * p * p * k + k + n_tokens * k + depth * per_block + 2 * k + k * num_classes + num_classes


__all__ = ["vit", "vit_num_params", "patch_size", "num_heads", "SelfAttention"]
