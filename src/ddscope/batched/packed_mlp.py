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
each member as its own optimiser would: the run equals separate ``run_trial`` calls up to float
summation order.

Pools trade padded FLOPs against per-operation overhead: tiny widths share one pool, large ones
get a pool each (:func:`plan_pools`). Every member's ``nn.Module`` (from ``make_model``, with the
same initialisation as ``run_trial``) has its parameters replaced by views of the pool tensors,
so evaluation and metrics run on the member itself, with no copies.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from types import EllipsisType

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import TrialConfig
from ..data import prepare
from ..models import make_model
from ..train import TrialResult, index_batches, make_optimizer, resolve_device
from .members import Member, bury, train_members

# Pools merge while the padded work they add stays below this many multiply-adds per sample.
# A pool costs ~10 autograd ops per step (~0.1-0.2 ms on a CPU core), i.e. about as much as
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


class Pool(nn.Module):
    """n ≥ 2 MLPs of width ≤ P as stacked, zero-padded tensors (see the module docstring)."""

    def __init__(self, models: Sequence[nn.Module]):
        super().__init__()
        layers = [mlp_linears(m) for m in models]
        n, depth = len(models), len(layers[0]) - 1
        P = max(ls[0].out_features for ls in layers)
        d, C = layers[0][0].in_features, layers[0][-1].out_features
        ref = layers[0][0].weight
        shapes = [(P, d)] + [(P, P)] * (depth - 1) + [(C, P)]
        self.weights = nn.ParameterList(nn.Parameter(ref.new_zeros(n, *s)) for s in shapes)
        self.biases = nn.ParameterList(nn.Parameter(ref.new_zeros(n, s[0])) for s in shapes)
        with torch.no_grad():
            for i, ls in enumerate(layers):
                for W, b, lin in zip(self.weights, self.biases, ls):
                    rows, cols = lin.weight.shape
                    W[i, :rows, :cols] = lin.weight
                    b[i, :rows] = lin.bias
                    # The member's own module now reads (and sees every update of) its slice.
                    lin.weight = nn.Parameter(W.detach()[i, :rows, :cols])
                    lin.bias = nn.Parameter(b.detach()[i, :rows])

    def forward(self, x: Tensor) -> Tensor:
        """x (B, d), shared by the members -> logits (n, B, C)."""
        W0, b0 = self.weights[0], self.biases[0]
        n, P, d = W0.shape
        h = F.relu(torch.addmm(b0.reshape(n * P), x, W0.reshape(n * P, d).t()))  # (B, n·P)
        h = h.view(-1, n, P).transpose(0, 1)  # (n, B, P)
        for W, b in zip(self.weights[1:-1], self.biases[1:-1]):
            h = F.relu(torch.baddbmm(b.unsqueeze(1), h, W.transpose(1, 2)))  # (n, B, P)
        return torch.baddbmm(self.biases[-1].unsqueeze(1), h, self.weights[-1].transpose(1, 2))  # (n, B, C)


class PackedMLP(nn.Module):
    """MLP members trained on a shared batch: multi-member pools as stacked tensors, a member
    alone in its pool as its own module (its step is then exactly ``run_trial``'s)."""

    def __init__(self, models: Sequence[nn.Module], extra_macs: int = POOL_EXTRA_MACS):
        super().__init__()
        first = [mlp_linears(m) for m in models]
        widths = [ls[0].out_features for ls in first]
        d, C, depth = first[0][0].in_features, first[0][-1].out_features, len(first[0]) - 1
        self.groups = plan_pools(widths, d, depth, C, extra_macs)
        self.pools = nn.ModuleList(Pool([models[i] for i in g]) if len(g) > 1 else models[g[0]] for g in self.groups)
        position = torch.tensor([i for g in self.groups for i in g])  # pool order -> member index
        self.register_buffer("unpool", torch.argsort(position).to(first[0][0].weight.device), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """x (B, ...) -> logits (M, B, C) in member order."""
        x = x.flatten(1)
        outs = [p(x) if isinstance(p, Pool) else p(x).unsqueeze(0) for p in self.pools]
        return torch.cat(outs)[self.unpool]

    def member_tensors(self, member: int) -> tuple[list[Tensor], int | EllipsisType]:
        """The trained tensors holding a member and the index of its part in each."""
        for g, pool in zip(self.groups, self.pools):
            if member in g:
                return list(pool.parameters()), (g.index(member) if isinstance(pool, Pool) else ...)
        raise IndexError(member)


def train_packed(configs: Sequence[TrialConfig], progress: Callable[[int, int], None] | None = None) -> list[TrialResult]:
    """Train MLP trials that differ only in ``model.width`` together; one result per config, in
    order. Raises ValueError if the configs cannot share batches (see ``plan.packable``)."""
    from .plan import packable

    if not packable(configs):
        raise ValueError("train_packed needs 'mlp' trials that differ only in model.width")
    t0 = time.perf_counter()
    cfg = configs[0]
    device = resolve_device(cfg.device)
    data = prepare(cfg.data).to(device)  # identical for every member: same data config
    members = []
    for c in configs:
        torch.manual_seed(c.seed)  # each member's initialisation, exactly as run_trial draws it
        members.append(Member.start(c, data, make_model(c.model, data.input_shape, data.num_classes).to(device)))
    packed = PackedMLP([m.model for m in members])  # on the members' device, sharing their storage
    for m in members:
        m.snapshot_init()

    o = cfg.optim
    n = data.x_train.shape[0]
    opt, sched = make_optimizer(cfg, packed, math.ceil(n / o.batch_size))
    for group in opt.param_groups:  # one multi-tensor update over every member's tensors
        group["foreach"] = True
    order = torch.Generator(device="cpu").manual_seed(cfg.seed)  # the shared batch order
    augment = None
    if cfg.data.augment and data.x_train.dim() == 4:
        from ..data.augment import augment_batch as augment
    use_amp = o.amp and device.type == "cuda"

    def step_losses(epoch: int):
        packed.train()
        for xb, yb in index_batches(data, o.batch_size, order, augment, device):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                logits = packed(xb)  # (M, B, C)
                # Classes on dim 1: CPU log-softmax over a last dim of ~10 is several times slower.
                yield F.cross_entropy(logits.transpose(1, 2), yb.expand(len(members), -1), reduction="none").mean(1)

    return train_members(members, o.epochs, step_losses, opt, sched,
                         lambda j: bury(opt, *packed.member_tensors(j)), progress, t0)


__all__ = ["POOL_EXTRA_MACS", "PackedMLP", "Pool", "plan_pools", "train_packed"]
