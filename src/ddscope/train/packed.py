"""Train MLPs of different widths as one packed model: a width sweep in a single loop.

In a width sweep at one seed every trial sees the same data, the same label noise and the same
batch order (the batch generator is seeded by ``cfg.seed`` alone), so the trials can share every
batch. The members are split into *pools* of similar width; a pool of n members padded to width
P stores its layers as stacked tensors::

    W_0 (n, P, d), b_0 (n, P)          first layer: one (B, d) x (d, n·P) matmul on the batch
    W_l (n, P, P), b_l (n, P)          hidden layers: one batched matmul (n, B, P) x (n, P, P)
    W_C (n, C, P), b_C (n, C)          heads: (n, B, P) x (n, P, C) -> (n, B, C)

Member i of width k owns the slices ``W_0[i, :k]``, ``W_l[i, :k, :k]``, ``W_C[i, :, :k]``; the
rest is padding. Padding is exactly inert: padded weights and biases start at 0, so padded units
have pre-activation 0, ReLU output 0 and ReLU derivative 0, hence zero gradient; with zero
weights and zero gradients SGD (momentum, weight decay) and Adam leave them at 0. The loss is
Σ_i mean_b CE_i, so each member's gradient is its own, and the optimiser (elementwise) acts on
each member as its own optimiser would: the run equals separate lone trials up to float
summation order.

Pools trade padded FLOPs against per-operation overhead: tiny widths share one pool, large ones
get a pool each (:func:`plan_pools`). All pool tensors are views of one flat parameter (the
first layers of all pools side by side, so one matmul serves them all), trained through
:class:`PackedLoss`, whose backward pass is written by hand. Every member's ``nn.Module`` (from
``make_model``, with the same initialisation as a lone trial) has its parameters replaced by
views of the pool tensors, so evaluation and metrics run on the member itself, with no copies.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .batches import index_batches
from .members import Member, bury
from .trainer import Trainer

# Pools merge while the padded work they add stays below this many multiply-adds per sample.
# A pool costs ~15 PyTorch calls per step (~0.1 ms on a CPU core), i.e. about as much as
# 300·8 000 MACs at ~20 GMAC/s (batch 100, forward + backward); measured in bench/bench_sweep.py.
POOL_EXTRA_MACS = 8_000


def mlp_linears(model: nn.Module) -> list[nn.Linear]:
    """The Linear layers of an ``mlp`` model, checking its shape Flatten, (Linear, ReLU)×D, Linear."""
    mods = list(model.children()) if isinstance(model, nn.Sequential) else []
    ok = len(mods) >= 2 and isinstance(mods[0], nn.Flatten) and len(mods) % 2 == 0
    ok = ok and all(isinstance(m, nn.Linear) for m in mods[1::2])
    ok = ok and all(isinstance(m, nn.ReLU) for m in mods[2:-1:2])
    if not ok:
        raise ValueError("packed training needs the 'mlp' family: Flatten, (Linear, ReLU) x depth, Linear")
    return list(mods[1::2])


def pool_macs(n: int, width: int, d: int, depth: int, classes: int) -> int:
    """Multiply-adds per sample of a pool of n members padded to ``width``."""
    return n * width * (d + (depth - 1) * width + classes)


def plan_pools(widths: Sequence[int], d: int, depth: int, classes: int,
               extra_macs: int = POOL_EXTRA_MACS) -> list[list[int]]:
    """Member indices per pool, pools in increasing width; greedy over the sorted widths: the
    next member joins the current pool while that adds at most ``extra_macs`` padded work."""
    order = sorted(range(len(widths)), key=lambda i: widths[i])
    pools: list[list[int]] = []
    for i in order:
        if pools:
            cur = pools[-1]
            k = widths[i]  # >= every width in cur
            merged = pool_macs(len(cur) + 1, k, d, depth, classes)
            apart = pool_macs(len(cur), max(widths[j] for j in cur), d, depth, classes) + pool_macs(1, k, d, depth, classes)
            if merged - apart <= extra_macs:
                cur.append(i)
                continue
        pools.append([i])
    return pools


class Pool:
    """n ≥ 1 MLPs of width ≤ P as stacked, zero-padded tensors (see the module docstring), all
    views of the packed model's flat buffer. The first layers of all pools are adjacent rows of
    one (R, d) matrix and one (R,) bias (R = Σ n·P), so one matmul serves every pool; this pool
    owns rows ``row0 : row0 + n·P`` there, and W_1, …, W_C, b_1, …, b_C from ``offset`` on."""

    def __init__(self, models: Sequence[nn.Module], row0: int, offset: int):
        self.layers = [mlp_linears(m) for m in models]
        ls = self.layers[0]
        n, depth = len(models), len(ls) - 1
        P = max(m[0].out_features for m in self.layers)
        self.n, self.P, self.d, self.C = n, P, ls[0].in_features, ls[-1].out_features
        rest = [(P, P)] * (depth - 1) + [(self.C, P)]
        self.shapes = [(n, *s) for s in rest] + [(n, s[0]) for s in rest]  # W_1..W_C, b_1..b_C
        self.row0, self.offset = row0, offset
        self.numel = sum(math.prod(s) for s in self.shapes)  # beyond the first layer
        self.weights: list[Tensor] = []  # views of the flat buffer, set by bind()
        self.biases: list[Tensor] = []

    def views(self, flat: Tensor, first: tuple[int, int]) -> list[Tensor]:
        """W_0, …, W_C, b_0, …, b_C as views of ``flat`` (autograd flows to it if it requires
        grad); ``first`` = offsets of the first-layer matrix and bias in ``flat``."""
        n, P, d = self.n, self.P, self.d
        w0, b0 = first
        W0 = flat[w0 + self.row0 * d : w0 + (self.row0 + n * P) * d].view(n, P, d)
        bias0 = flat[b0 + self.row0 : b0 + self.row0 + n * P].view(n, P)
        out, at = [], self.offset
        for s in self.shapes:
            k = math.prod(s)
            out.append(flat[at : at + k].view(s))
            at += k
        L = len(out) // 2
        return [W0, *out[:L], bias0, *out[L:]]

    def bind(self, flat: Tensor, first: tuple[int, int]) -> None:
        """Copy the members' weights into the (zeroed) buffer and point their modules at it."""
        views = self.views(flat.detach(), first)
        L = len(views) // 2
        self.weights, self.biases = views[:L], views[L:]
        with torch.no_grad():
            for i, ls in enumerate(self.layers):
                for W, b, lin in zip(self.weights, self.biases, ls):
                    rows, cols = lin.weight.shape
                    W[i, :rows, :cols] = lin.weight
                    b[i, :rows] = lin.bias
                    # The member's own module now reads (and sees every update of) its slice.
                    lin.weight = nn.Parameter(W[i, :rows, :cols])
                    lin.bias = nn.Parameter(b[i, :rows])

    def member_ranges(self, i: int, first: tuple[int, int]) -> list[tuple[int, int]]:
        """[start, end) ranges of the flat buffer holding member i (its padding included)."""
        P, d = self.P, self.d
        r = self.row0 + i * P
        out = [(first[0] + r * d, first[0] + (r + P) * d), (first[1] + r, first[1] + r + P)]
        at = self.offset
        for s in self.shapes:
            k = math.prod(s) // self.n
            out.append((at + i * k, at + (i + 1) * k))
            at += k * self.n
        return out

    @staticmethod
    def logits(x: Tensor, params: Sequence[Tensor]) -> tuple[Tensor, list[Tensor]]:
        """x (B, d) shared by the members -> logits (n, B, C) and the hidden activations
        h_1, …, h_{C−1}, each (n, B, P)."""
        L = len(params) // 2
        Ws, bs = params[:L], params[L:]
        n, P, d = Ws[0].shape
        h = F.relu(torch.addmm(bs[0].reshape(n * P), x, Ws[0].reshape(n * P, d).t()))  # (B, n·P)
        return Pool.head(h.view(-1, n, P).transpose(0, 1), Ws, bs)

    @staticmethod
    def head(h: Tensor, Ws: Sequence[Tensor], bs: Sequence[Tensor]) -> tuple[Tensor, list[Tensor]]:
        """From the first layer's activation h (n, B, P): logits (n, B, C) and [h, h_2, …]."""
        hs = [h]
        for W, b in zip(Ws[1:-1], bs[1:-1]):
            hs.append(F.relu(torch.baddbmm(b.unsqueeze(1), hs[-1], W.transpose(1, 2))))
        return torch.baddbmm(bs[-1].unsqueeze(1), hs[-1], Ws[-1].transpose(1, 2)), hs


class PackedLoss(torch.autograd.Function):
    """Per-member mean cross-entropy of a packed model, with a hand-written backward pass.

    forward(x (B, d), y (B,), flat, packed) -> losses (M,), losses_j = mean_b CE_j in pool order.
    Backward (g = ∂L/∂losses; S = softmax of the logits, Y = one-hot labels)::

        δ_C = (S − Y) · g / B                                   (M, B, C)
        ∂W_l = δ_lᵀ h_{l−1},  ∂b_l = Σ_b δ_l,  δ_{l−1} = (δ_l W_l) ⊙ [h_{l−1} > 0]

    written straight into one flat gradient: the optimiser then updates a single tensor. The
    first layers of all pools are one (B, d) × (d, R) matmul forward and one (R, B) × (B, d)
    backward, and the cross-entropy of all members one log-softmax: the per-pool work is only
    its hidden and output layers (~15 PyTorch calls instead of ~45; on a CPU core each call
    costs several microseconds, bench/README.md, benchmark 1). The same numbers as autograd
    through :meth:`PackedMLP.forward` and ``F.cross_entropy`` (tested in float64).
    """

    @staticmethod
    def forward(ctx, x: Tensor, y: Tensor, flat: Tensor, packed: PackedMLP) -> Tensor:
        B = x.shape[0]
        W0, b0 = packed.first_layer(flat)
        H = F.relu(torch.addmm(b0, x, W0.t()))  # (B, R): every pool's first layer
        logits, hss = [], []
        for pool in packed.pools:
            # (n, B, P), made contiguous once: the batched matmuls of both passes read it.
            h = H[:, pool.row0 : pool.row0 + pool.n * pool.P].view(B, pool.n, pool.P).transpose(0, 1).contiguous()
            out, hs = Pool.head(h, pool.weights, pool.biases)
            logits.append(out)
            hss.append(hs)
        # Classes on dim 1: the CPU log-softmax over a last dimension of ~10 is slow.
        logp = torch.log_softmax(torch.cat(logits).transpose(1, 2), dim=1)  # (M, C, B)
        idx = y.view(1, 1, B).expand(logp.shape[0], 1, B)
        ctx.packed, ctx.hss = packed, hss
        ctx.save_for_backward(x, idx, logp)
        return -logp.gather(1, idx).squeeze(1).mean(1)  # (M,)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, idx, logp = ctx.saved_tensors
        packed = ctx.packed
        M, C, B = logp.shape
        delta_all = logp.exp()  # softmax (M, C, B)
        delta_all.scatter_add_(1, idx, torch.full_like(logp[:, :1], -1.0))  # S − Y
        delta_all = (delta_all * (grad / B).view(M, 1, 1)).transpose(1, 2)  # (M, B, C)
        grad_flat, (gW0, gb0), views = packed.grad_buffer()
        D = torch.empty(B, gW0.shape[0], dtype=x.dtype, device=x.device)  # first-layer δ (B, R)
        at = 0
        for pool, hs, (gW, gb) in zip(packed.pools, ctx.hss, views):
            n, P = pool.n, pool.P
            delta = delta_all[at : at + n]
            at += n
            for li in range(len(pool.weights) - 1, 0, -1):  # layers whose input is h_{l−1}
                h = hs[li - 1]
                torch.bmm(delta.transpose(1, 2), h, out=gW[li - 1])  # (n, out, P)
                torch.sum(delta, 1, out=gb[li - 1])
                delta = torch.ops.aten.threshold_backward(torch.bmm(delta, pool.weights[li]), h, 0.0)  # (n, B, P)
            D[:, pool.row0 : pool.row0 + n * P].view(B, n, P).copy_(delta.transpose(0, 1))
        torch.mm(D.t(), x, out=gW0)
        torch.sum(D, 0, out=gb0)
        return None, None, grad_flat, None


class PackedMLP(nn.Module):
    """MLP members trained on a shared batch, pool by pool (a member alone in its pool is a pool
    of one, without padding). Every pool tensor is a view of one flat parameter, so the optimiser
    updates a single tensor per step; the flat buffer holds the first layers of all pools as one
    (R, d) matrix and (R,) bias, then each pool's other layers."""

    def __init__(self, models: Sequence[nn.Module], extra_macs: int = POOL_EXTRA_MACS):
        super().__init__()
        first = [mlp_linears(m) for m in models]
        widths = [ls[0].out_features for ls in first]
        d, C, depth = first[0][0].in_features, first[0][-1].out_features, len(first[0]) - 1
        self.groups = plan_pools(widths, d, depth, C, extra_macs)
        rows = [len(g) * max(widths[i] for i in g) for g in self.groups]
        R = sum(rows)
        self.first = (0, R * d)  # offsets of the (R, d) first-layer matrix and its (R,) bias
        self.rows, self.d = R, d
        self.pools: list[Pool] = []
        row, at = 0, R * d + R
        for g, r in zip(self.groups, rows):
            self.pools.append(Pool([models[i] for i in g], row, at))
            row, at = row + r, at + self.pools[-1].numel
        self.flat = nn.Parameter(first[0][0].weight.new_zeros(at))
        for pool in self.pools:
            pool.bind(self.flat, self.first)
        position = torch.tensor([i for g in self.groups for i in g])  # pool order -> member index
        self.register_buffer("unpool", torch.argsort(position).to(self.flat.device), persistent=False)
        self._grad: tuple | None = None

    def first_layer(self, flat: Tensor) -> tuple[Tensor, Tensor]:
        """The first layers of all pools in ``flat``: W (R, d), b (R,)."""
        w0, b0 = self.first
        return flat[w0:b0].view(self.rows, self.d), flat[b0 : b0 + self.rows]

    def grad_buffer(self) -> tuple[Tensor, tuple[Tensor, Tensor], list[tuple[list[Tensor], list[Tensor]]]]:
        """A flat gradient buffer and its views, made once (making ~40 views costs more per
        step than the copy autograd makes of the returned buffer): ``(buffer, (gW0 (R, d),
        gb0 (R,)), [(gW_1..gW_C, gb_1..gb_C) per pool])``."""
        if self._grad is None:  # the pools' views are bound to ``flat`` at construction, never moved
            buf = torch.zeros_like(self.flat.detach())
            views = []
            for pool in self.pools:
                v = pool.views(buf, self.first)
                L = len(v) // 2
                views.append((v[1:L], v[L + 1 :]))
            self._grad = (buf, self.first_layer(buf), views)
        return self._grad

    def forward(self, x: Tensor) -> Tensor:
        """x (B, ...) -> logits (M, B, C) in member order (autograd through views of ``flat``)."""
        x = x.flatten(1)
        return torch.cat([Pool.logits(x, p.views(self.flat, self.first))[0] for p in self.pools])[self.unpool]

    def losses(self, x: Tensor, y: Tensor) -> Tensor:
        """x (B, ...), y (B,) -> (M,) per-member mean cross-entropy in member order, through
        :class:`PackedLoss` (hand-written backward); equals ``CE(forward(x))`` up to rounding."""
        return PackedLoss.apply(x.flatten(1), y, self.flat, self)[self.unpool]

    def member_ranges(self, member: int) -> list[tuple[int, int]]:
        """[start, end) ranges of ``flat`` holding a member."""
        for g, pool in zip(self.groups, self.pools):
            if member in g:
                return pool.member_ranges(g.index(member), self.first)
        raise IndexError(member)


class PackedTrainer(Trainer):
    """MLP members that differ only in width, on shared batches (one generator seeded by the
    common ``cfg.seed``: the batch order of each lone trial), through :class:`PackedMLP`."""

    kind = "packed"

    def __init__(self, members: Sequence[Member]):
        self.packed = PackedMLP([m.model for m in members])  # on the members' device, sharing their storage
        super().__init__(members, self.packed)
        self.data = members[0].data  # identical for every member: same data config
        order = torch.Generator(device="cpu").manual_seed(members[0].cfg.seed)
        self.orders = [order] * len(members)

    def losses(self, epoch: int) -> Iterator[Tensor]:
        self.packed.train()
        M = len(self.members)
        for xb, yb in index_batches(self.data, self.batch_size, self.orders[0], self.augment, self.device):
            if self.use_amp:  # autograd through the modules, under bf16 autocast
                with self.autocast():
                    logits = self.packed(xb)  # (M, B, C)
                    # Classes on dim 1: CPU log-softmax over a last dim of ~10 is several times slower.
                    yield F.cross_entropy(logits.transpose(1, 2), yb.expand(M, -1), reduction="none").mean(1)
            else:
                yield self.packed.losses(xb, yb)  # (M,), hand-written backward (PackedLoss)

    def bury(self, j: int) -> None:
        for a, b in self.packed.member_ranges(j):
            bury(self.optimizer, [self.packed.flat], slice(a, b))


__all__ = ["POOL_EXTRA_MACS", "PackedLoss", "PackedMLP", "PackedTrainer", "Pool", "plan_pools"]
