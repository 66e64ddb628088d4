"""Certified upper bounds on the operator norm of a convolution on its actual input shape.

A zero-padded convolution on an input of n positions (per spatial dimension) with stride s,
padding p, dilation d and kernel k reads, for output o, the padded positions o·s + t·d. Placed
in a circular convolution of N ≥ max((L_out − 1)s + (k − 1)d + 1, n + p) positions, none of those
reads wraps around, so the layer's matrix is a submatrix of the circulant's rows o·s and of its
columns at the input's positions: ‖A‖₂ ≤ ‖S C_N‖₂ (a submatrix never has a larger norm). With N
a multiple of s, S C_N is itself a stride-1 circular convolution on N/s positions of the s^D
polyphase components of the input (C_in·s^D channels, kernel taps t·d = a·s + r going to phase r
at offset a), whose singular values are exactly those of the C_out × C_in·s^D matrices K̂(ω) at
the N/s (per dimension) Fourier frequencies (Sedghi, Gupta & Long, "The singular values of
convolutional layers", ICLR 2019):

    ‖A‖₂  ≤  max_ω σ_max(K̂(ω))      (equality for circular padding with L_out · s = n).

Groups make K̂ block diagonal (zeros off the groups). The bound tightens as n grows; on small
inputs it can exceed ‖A‖₂ by a few per cent, so :func:`conv_norm_certified` also forms the dense
matrix when it is small (≤ :data:`DENSE_MAX_ENTRIES`) and takes its SVD. Reflect and replicate
padding are a valid convolution after a padding map that copies each entry at most m times:
‖A‖₂ ≤ √m · ‖valid conv‖₂.

Every value is computed in float64 and multiplied by (1 + :data:`ROUNDING_MARGIN`), which
covers the backward error of a float64 SVD, so rounding cannot put it below the exact norm.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

DENSE_MAX_ENTRIES = 2**22  # in_dim · out_dim of the dense matrix (32 MiB in float64; SVD < 1 s)
ROUNDING_MARGIN = 1e-9  # relative: float64 SVD backward error is ~dim · 1e-16 · ‖A‖
TIGHT = 0.01  # the Fourier bound is taken as it is when within 1 % of the Lanczos estimate


@dataclass(frozen=True)
class CertifiedNorm:
    """``value`` ≥ ‖A‖₂ (certified); ``method``: ``"fft"`` (circular embedding), ``"dense"`` (SVD
    of the dense matrix) or ``"exact"`` (circular padding, where the Fourier formula is exact)."""

    value: float
    method: str


def _tuple(v, dims: int) -> tuple[int, ...]:
    return tuple(v) if isinstance(v, (tuple, list)) else (int(v),) * dims


def _padding(conv: nn.Module, spatial: tuple[int, ...]) -> tuple[int, ...]:
    dims = len(spatial)
    if isinstance(conv.padding, str):
        if conv.padding == "valid":
            return (0,) * dims
        # "same" (stride 1): total (k − 1)·d, the extra one on the right; a submatrix of the
        # symmetric padding with the larger half on both sides, so the bound holds with that.
        k, d = _tuple(conv.kernel_size, dims), _tuple(conv.dilation, dims)
        return tuple(-(-(dd * (kk - 1)) // 2) for kk, dd in zip(k, d))
    return _tuple(conv.padding, dims)


def _full_weight(conv: nn.Module) -> Tensor:
    """(C_out, C_in, *k) float64 on the CPU, zeros outside the groups (block diagonal)."""
    W = conv.weight.detach().to("cpu", torch.float64)
    g = conv.groups
    if g == 1:
        return W
    c_out, c_in_g = W.shape[:2]
    full = W.new_zeros(c_out, c_in_g * g, *W.shape[2:])
    per = c_out // g
    for i in range(g):
        full[i * per : (i + 1) * per, i * c_in_g : (i + 1) * c_in_g] = W[i * per : (i + 1) * per]
    return full


def fourier_bound(weight: Tensor, stride: tuple[int, ...], dilation: tuple[int, ...], size: tuple[int, ...]) -> float:
    """max_ω σ_max(K̂(ω)) of the strided circular convolution of ``weight`` (C_out, C_in, *k)
    on ``size`` positions per dimension (each a multiple of its stride): the exact norm of S C_N."""
    c_out, c_in = weight.shape[:2]
    kernel = weight.shape[2:]
    dims = len(kernel)
    phases = math.prod(stride)
    M = tuple(n // ss for n, ss in zip(size, stride))
    poly = weight.new_zeros(c_out, c_in * phases, *M)  # taps at offset a ≥ M wrap, as on the circle
    for taps in torch.cartesian_prod(*[torch.arange(kk) for kk in kernel]).reshape(-1, dims).tolist():
        pos = [t * dd for t, dd in zip(taps, dilation)]
        phase = 0
        for q, ss in zip(pos, stride):
            phase = phase * ss + q % ss
        where = tuple((q // ss) % m for q, ss, m in zip(pos, stride, M))
        poly[(slice(None), slice(phase * c_in, (phase + 1) * c_in), *where)] += weight[(slice(None), slice(None), *taps)]
    # x_r[q] multiplies w_r[a] in y[j] = Σ_r Σ_a w_r[a] x_r[j + a]: the transfer function uses
    # e^{+iωa}; its conjugate has the same singular values, so the FFT's sign does not matter.
    spectrum = torch.fft.rfftn(poly, dim=tuple(range(2, 2 + dims)))  # (C_out, C_in·phases, *M')
    mats = spectrum.flatten(2).permute(2, 0, 1)  # (frequencies, C_out, C_in·phases)
    return float(torch.linalg.matrix_norm(mats, 2).max())


def conv_norm_fft(conv: nn.Module, input_shape: tuple[int, ...]) -> CertifiedNorm:
    """An upper bound on ‖A‖₂ of ``conv`` (Conv1d/2d/3d, bias ignored) on ``input_shape``
    (C_in, *spatial) by the circular embedding of the module docstring; exact for circular
    padding whose output has every row of S C_n once (L_out · s = n)."""
    spatial = tuple(input_shape[1:])
    dims = len(spatial)
    s, d = _tuple(conv.stride, dims), _tuple(conv.dilation, dims)
    k = tuple(conv.weight.shape[2:])
    p = _padding(conv, spatial)
    W = _full_weight(conv)
    mode = conv.padding_mode
    if mode == "circular":
        out = [(n + 2 * pp - dd * (kk - 1) - 1) // ss + 1 for n, pp, dd, kk, ss in zip(spatial, p, d, k, s)]
        if all(o * ss == n for n, o, ss in zip(spatial, out, s)):
            # every row o·s − p (mod n) once: A is S C_n up to a shift, exactly
            return CertifiedNorm(fourier_bound(W, s, d, spatial) * (1 + ROUNDING_MARGIN), "exact")
        mult = math.prod(-(-(o * ss) // n) for n, o, ss in zip(spatial, out, s))  # rows repeat at most this often
        return CertifiedNorm(math.sqrt(mult) * fourier_bound(W, (1,) * dims, d, spatial) * (1 + ROUNDING_MARGIN), "fft")
    copies = 1.0
    if mode in ("reflect", "replicate"):
        copies = _padding_copies(mode, spatial, p)
        spatial, p = tuple(n + 2 * pp for n, pp in zip(spatial, p)), (0,) * dims
    out = [(n + 2 * pp - dd * (kk - 1) - 1) // ss + 1 for n, pp, dd, kk, ss in zip(spatial, p, d, k, s)]
    size = []
    for n, pp, dd, kk, ss, o in zip(spatial, p, d, k, s, out):
        need = max((o - 1) * ss + (kk - 1) * dd + 1, n + pp)
        size.append(-(-need // ss) * ss)
    return CertifiedNorm(math.sqrt(copies) * fourier_bound(W, s, d, tuple(size)) * (1 + ROUNDING_MARGIN), "fft")


def _padding_copies(mode: str, spatial: tuple[int, ...], p: tuple[int, ...]) -> float:
    """The most copies of one input entry that reflect / replicate padding makes (the padding
    map's ‖·‖₂² — it is a 0/1 matrix with one 1 per row)."""
    ones = torch.arange(math.prod(spatial), dtype=torch.float64).reshape(1, 1, *spatial)
    pad = [q for pp in reversed(p) for q in (pp, pp)]
    padded = F.pad(ones, pad, mode=mode).flatten()
    return float(torch.bincount(padded.long()).max())


def conv_norm_dense(conv: nn.Module, input_shape: tuple[int, ...]) -> CertifiedNorm:
    """σ_max of the layer's dense matrix (float64 SVD) · (1 + rounding margin)."""
    W = conv.weight.detach().to("cpu", torch.float64)
    dim = math.prod(input_shape)
    eye = torch.eye(dim, dtype=torch.float64).view(dim, *input_shape)
    with torch.no_grad():
        cols = conv._conv_forward(eye, W, None).reshape(dim, -1)
    return CertifiedNorm(float(torch.linalg.matrix_norm(cols, 2)) * (1 + ROUNDING_MARGIN), "dense")


def dense_entries(conv: nn.Module, input_shape: tuple[int, ...]) -> int:
    with torch.no_grad():
        out = conv._conv_forward(torch.zeros(1, *input_shape, device="meta"), conv.weight.to("meta"), None)
    return math.prod(input_shape) * out[0].numel()


def conv_norm_certified(conv: nn.Module, input_shape: tuple[int, ...], *, estimate: float | None = None) -> CertifiedNorm:
    """A certified upper bound on ‖A‖₂, within :data:`TIGHT` of the norm wherever possible: the
    Fourier bound when it is exact or within 1 % of ``estimate`` (a lower estimate such as the
    Lanczos value), else the dense SVD when the matrix has ≤ :data:`DENSE_MAX_ENTRIES` entries,
    else the Fourier bound as it is (the gap to ``estimate`` then shows how far it may be)."""
    if not isinstance(conv, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        raise ValueError(f"conv_norm_certified takes Conv1d, Conv2d or Conv3d, got {type(conv).__name__}")
    if len(input_shape) != conv.weight.dim() - 1 or input_shape[0] != conv.in_channels:
        raise ValueError(f"input_shape {tuple(input_shape)} does not fit {conv}")
    fft = conv_norm_fft(conv, tuple(input_shape))
    if fft.method == "exact" or (estimate is not None and fft.value <= estimate * (1 + TIGHT)):
        return fft
    if dense_entries(conv, tuple(input_shape)) <= DENSE_MAX_ENTRIES:
        dense = conv_norm_dense(conv, tuple(input_shape))
        return dense if dense.value <= fft.value else fft
    return fft


__all__ = ["CertifiedNorm", "conv_norm_certified", "conv_norm_dense", "conv_norm_fft", "fourier_bound"]
