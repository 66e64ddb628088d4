"""How a training step is computed on the members of a run: the part that differs between a
lone trial and a vectorised group. Everything else (data, θ⁰, schedule, evaluation, records,
checkpoints, summary) is :mod:`.loop`'s, once for all.

A trainer is built from the members (``Trainer(members)``) and has:

- ``optimizer``, ``scheduler``: over the tensors it trains (each member's parameters are views
  of them; ``member.slots`` says where);
- ``orders``: per member, the CPU generator of its batch order and augmentation (the same object
  for members that share batches);
- ``losses(epoch)``: yields, step by step, the (M,) batch losses of all members, forward done
  (the loop runs backward between two yields);
- ``bury(j)``: zero member j's weights, gradients and optimiser state (it diverged).

:class:`TrialTrainer` is plain autograd through one model; :mod:`.packed` and :mod:`.stacked`
train many members at once.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..metrics.losses import batch_losses, trial_loss
from .batches import augmenter, index_batches
from .members import Member, bury
from .optim import Slots, make_optimizer


class Trainer(ABC):
    """What every trainer shares: the optimiser over ``module``'s parameters (one LR schedule,
    the config of the first member: a group's members share their optim settings), the
    augmentation, mixed precision, and each member's :class:`Slots`."""

    kind = "?"

    def __init__(self, members: Sequence[Member], module: nn.Module):
        cfg, data = members[0].cfg, members[0].data
        self.members = list(members)
        self.device = data.x_train.device
        self.batch_size = cfg.optim.batch_size
        self.n = data.x_train.shape[0]
        self.optimizer, self.scheduler = make_optimizer(cfg, module, math.ceil(self.n / self.batch_size))
        self.augment = augmenter(cfg, data)
        self.use_amp = cfg.optim.amp and self.device.type == "cuda"
        self.loss = trial_loss(cfg.optim.loss, cfg.optim.label_smoothing)  # the members share their optim settings
        tensors = self.optimizer.param_groups[0]["params"]
        for m in members:
            m.slots = Slots(m.model, tensors)
        self.orders: list[torch.Generator] = []

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.use_amp)

    @abstractmethod
    def losses(self, epoch: int) -> Iterator[Tensor]:
        """Step by step, the (M,) batch losses of all members, forward done."""

    @abstractmethod
    def bury(self, j: int) -> None:
        """Zero member j's weights, gradients and optimiser state (it diverged)."""


class TrialTrainer(Trainer):
    """One trial: autograd through its own module, batches from its own generator."""

    kind = "trial"

    def __init__(self, members: Sequence[Member]):
        (m,) = members
        super().__init__(members, m.model)
        self.model, self.data = m.model, m.data
        self.orders = [torch.Generator(device="cpu").manual_seed(m.cfg.seed)]  # batch order + augmentation

    def losses(self, epoch: int) -> Iterator[Tensor]:
        self.model.train()
        for xb, yb in index_batches(self.data, self.batch_size, self.orders[0], self.augment, self.device):
            with self.autocast():
                out = self.model(xb)
                # the plain cross-entropy as it always was (its mean reduction, bit for bit)
                loss = F.cross_entropy(out, yb) if self.loss == "cross_entropy" else batch_losses(out, yb, self.loss).mean()
            yield loss.reshape(1)

    def bury(self, j: int) -> None:
        bury(self.optimizer, self.optimizer.param_groups[0]["params"], slice(None))


__all__ = ["Trainer", "TrialTrainer"]
