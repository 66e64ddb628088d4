"""Train same-architecture trials that differ in seed or label-noise draw as one vmapped model.

The members' parameters and buffers are stacked along a new leading axis (M, ...), as
``torch.func.stack_module_state`` does, and one forward pass of the whole group is
``vmap(functional_call(base, ...))`` over that axis, with each member's own batch::

    x (M, B, ...), y (M, B)  ->  logits (M, B, C)  ->  losses (M,)  ->  Σ_i losses_i

Each member keeps everything a lone ``run_trial`` has: its initialisation (``make_model`` under
``torch.manual_seed(cfg.seed)``), its batch order and augmentation (its own generator seeded by
``cfg.seed``), its labels and noise mask (its own ``prepare(cfg.data)``) and its optimiser state
(the optimiser is elementwise over the stacked tensors). BatchNorm in train mode updates each
member's running statistics in its own slice of the stacked buffers.

Every member's ``nn.Module`` has its parameters and buffers replaced by views of its slice, so
evaluation and metrics run on the member itself, with no copies.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, vmap

from ..config import DataConfig, TrialConfig
from ..data import TrialData, prepare
from ..models import make_model
from ..train import TrialResult, make_optimizer, resolve_device
from .members import Member, bury, train_members


class Stack(nn.Module):
    """The stacked parameters (M, ...) of same-shaped models, trainable; buffers stacked too.

    After construction every model's parameters and buffers are views of its slice.
    """

    def __init__(self, models: Sequence[nn.Module]):
        super().__init__()
        self.param_names = [n for n, _ in models[0].named_parameters()]
        self.buffer_names = [n for n, _ in models[0].named_buffers()]
        self.params = nn.ParameterList(
            nn.Parameter(torch.stack([m.get_parameter(n).detach() for m in models])) for n in self.param_names
        )
        self.buffers_ = [torch.stack([m.get_buffer(n) for m in models]) for n in self.buffer_names]
        for j, m in enumerate(models):
            for n, p in zip(self.param_names, self.params):
                owner, leaf = _split(m, n)
                setattr(owner, leaf, nn.Parameter(p.detach()[j]))
            for n, b in zip(self.buffer_names, self.buffers_):
                owner, leaf = _split(m, n)
                owner._buffers[leaf] = b[j]

    def state(self) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        return dict(zip(self.param_names, self.params)), dict(zip(self.buffer_names, self.buffers_))

    def zero_buffers(self, j: int) -> None:
        """A dead member's running statistics: zeroed, never read again (it is not evaluated)."""
        with torch.no_grad():
            for b in self.buffers_:
                if b.is_floating_point():
                    b[j] = 0


def _split(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    path, _, leaf = name.rpartition(".")
    return (model.get_submodule(path) if path else model), leaf


def _share_inputs(datas: list[TrialData]) -> list[TrialData]:
    """Members whose inputs equal the first member's reuse its tensors (labels stay their own),
    so a group that differs only in label noise holds one copy of the images."""
    first = datas[0]
    out = [first]
    for d in datas[1:]:
        same = all(
            a.shape == b.shape and torch.equal(a, b)
            for a, b in ((d.x_train, first.x_train), (d.x_test, first.x_test), (d.x_val, first.x_val))
        )
        if same:
            d = TrialData(**{**d.__dict__, "x_train": first.x_train, "x_test": first.x_test, "x_val": first.x_val})
        out.append(d)
    return out


def train_stacked(configs: Sequence[TrialConfig], progress: Callable[[int, int], None] | None = None) -> list[TrialResult]:
    """Train trials that differ only in seed / data.seed / data.noise / data.noise_kind together;
    one result per config, in order. Raises ValueError for configs ``plan.stackable`` rejects."""
    from .plan import stackable

    if not stackable(configs):
        raise ValueError("train_stacked needs trials of one architecture and width that differ only in seed or noise")
    t0 = time.perf_counter()
    cfg = configs[0]
    device = resolve_device(cfg.device)
    prepared: dict[DataConfig, TrialData] = {}
    for c in configs:
        if c.data not in prepared:
            prepared[c.data] = prepare(c.data).to(device)
    datas = _share_inputs([prepared[c.data] for c in configs])
    members = []
    for c, d in zip(configs, datas):
        torch.manual_seed(c.seed)  # each member's initialisation, exactly as run_trial draws it
        members.append(Member.start(c, d, make_model(c.model, d.input_shape, d.num_classes).to(device)))
    stack = Stack([m.model for m in members])
    for m in members:
        m.snapshot_init()
    with torch.device("meta"):  # a parameter-free skeleton: functional_call supplies every tensor
        base = make_model(cfg.model, datas[0].input_shape, datas[0].num_classes)

    def one(params: dict[str, Tensor], buffers: dict[str, Tensor], x: Tensor) -> Tensor:
        return functional_call(base, (params, buffers), (x,))

    forward = vmap(one)  # (M, ...) params and buffers, x (M, B, ...) -> (M, B, C)

    o = cfg.optim
    n = datas[0].x_train.shape[0]
    opt, sched = make_optimizer(cfg, stack, math.ceil(n / o.batch_size))
    for group in opt.param_groups:  # one multi-tensor update over every stacked tensor
        group["foreach"] = True
    orders = [torch.Generator(device="cpu").manual_seed(c.seed) for c in configs]  # batch order + augmentation
    shared_x = all(d.x_train is datas[0].x_train for d in datas)
    x_all = datas[0].x_train if shared_x else None
    y_all = torch.stack([d.y_train for d in datas])  # (M, N)
    augment = None
    if cfg.data.augment and datas[0].x_train.dim() == 4:
        from ..data.augment import augment_batch as augment
    use_amp = o.amp and device.type == "cuda"

    def step_losses(epoch: int):
        base.train()
        perms = torch.stack([torch.randperm(n, generator=g) for g in orders]).to(device)  # (M, N)
        for i in range(0, n, o.batch_size):
            idx = perms[:, i : i + o.batch_size]  # (M, B)
            xb = x_all[idx] if shared_x else torch.stack([d.x_train[ix] for d, ix in zip(datas, idx)])
            yb = y_all.gather(1, idx)  # (M, B)
            if augment is not None:
                xb = torch.stack([augment(xj, g) for xj, g in zip(xb, orders)])
            params, buffers = stack.state()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                logits = forward(params, buffers, xb)  # (M, B, C)
                # Classes on dim 1: CPU log-softmax over a last dim of ~10 is several times slower.
                yield F.cross_entropy(logits.transpose(1, 2), yb, reduction="none").mean(1)

    def bury_member(j: int) -> None:
        bury(opt, list(stack.params), j)
        stack.zero_buffers(j)

    return train_members(members, o.epochs, step_losses, opt, sched, bury_member, progress, t0)


__all__ = ["Stack", "train_stacked"]
