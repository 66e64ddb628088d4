"""Train same-architecture trials that differ in seed or label-noise draw as one vmapped model.

The members' parameters and buffers are stacked along a new leading axis (M, ...), as
``torch.func.stack_module_state`` does, and one forward pass of the whole group is
``vmap(functional_call(base, ...))`` over that axis, with each member's own batch::

    x (M, B, ...), y (M, B)  ->  logits (M, B, C)  ->  losses (M,)  ->  Σ_i losses_i

Each member keeps everything a lone trial has: its initialisation (``make_model`` under
``torch.manual_seed(cfg.seed)``), its batch order and augmentation (its own generator seeded by
``cfg.seed``), its labels and noise mask (its own ``prepare(cfg.data)``) and its optimiser state
(the optimiser is elementwise over the stacked tensors). BatchNorm in train mode updates each
member's running statistics in its own slice of the stacked buffers.

Every member's ``nn.Module`` has its parameters and buffers replaced by views of its slice, so
evaluation and metrics run on the member itself, with no copies.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from ..metrics.losses import batch_losses
from ..models import make_model
from .members import Member, bury
from .trainer import Trainer


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


class StackedTrainer(Trainer):
    """Members of one architecture and width, each with its own batches, as one ``vmap``."""

    kind = "stacked"

    def __init__(self, members: Sequence[Member]):
        self.stack = Stack([m.model for m in members])
        super().__init__(members, self.stack)
        for group in self.optimizer.param_groups:  # one multi-tensor update over every stacked tensor
            group["foreach"] = True
        cfg, datas = members[0].cfg, [m.data for m in members]
        with torch.device("meta"):  # a parameter-free skeleton: functional_call supplies every tensor
            self.base = make_model(cfg.model, datas[0].input_shape, datas[0].num_classes)

        def one(params: dict[str, Tensor], buffers: dict[str, Tensor], x: Tensor) -> Tensor:
            return functional_call(self.base, (params, buffers), (x,))

        self.forward = vmap(one)  # (M, ...) params and buffers, x (M, B, ...) -> (M, B, C)
        self.orders = [torch.Generator(device="cpu").manual_seed(m.cfg.seed) for m in members]
        self.datas = datas
        self.shared_x = all(d.x_train is datas[0].x_train for d in datas)
        self.y_all = torch.stack([d.y_train for d in datas])  # (M, N)

    def losses(self, epoch: int) -> Iterator[Tensor]:
        self.base.train()
        n, bs, datas = self.n, self.batch_size, self.datas
        perms = torch.stack([torch.randperm(n, generator=g) for g in self.orders]).to(self.device)  # (M, N)
        for i in range(0, n, bs):
            idx = perms[:, i : i + bs]  # (M, B)
            xb = datas[0].x_train[idx] if self.shared_x else torch.stack([d.x_train[ix] for d, ix in zip(datas, idx)])
            yb = self.y_all.gather(1, idx)  # (M, B)
            if self.augment is not None:
                xb = torch.stack([self.augment(xj, g) for xj, g in zip(xb, self.orders)])
            params, buffers = self.stack.state()
            with self.autocast():
                logits = self.forward(params, buffers, xb)  # (M, B, C)
                # Classes on dim 1: CPU log-softmax over a last dim of ~10 is several times slower.
                yield batch_losses(logits, yb, self.loss).mean(1)  # (M,)

    def bury(self, j: int) -> None:
        bury(self.optimizer, list(self.stack.params), j)
        self.stack.zero_buffers(j)


__all__ = ["Stack", "StackedTrainer"]
