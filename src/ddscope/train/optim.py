"""The optimiser of a trial, and each member's share of a group's optimiser state.

A vectorised group trains one set of tensors for all members (a flat packed buffer, stacked
(M, ...) parameters); every member's ``nn.Module`` holds views of its part. :class:`Slots`
records where each member parameter sits in those tensors, so the member's optimiser state can
be cut out in exactly the format ``optimizer.state_dict()`` has for a lone trial (and written
back): a checkpoint of a grouped trial is the same file as a lone trial's.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..config import TrialConfig

# Hyperparameters that change during training (the scheduler sets "lr"); the others come from
# the config, and implementation flags (foreach, fused) belong to the trainer that loads.
_MOVING = ("lr", "initial_lr")


def make_optimizer(cfg: TrialConfig, module: nn.Module, steps_per_epoch: int):
    """SGD (momentum, weight decay) or Adam over ``module.parameters()``, and a LambdaLR with
    a linear warm-up from lr/W to lr over the first W = ``warmup_epochs · steps_per_epoch``
    steps, then constant."""
    o = cfg.optim
    if o.name == "sgd":
        opt = torch.optim.SGD(module.parameters(), lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    else:
        opt = torch.optim.Adam(module.parameters(), lr=o.lr, weight_decay=o.weight_decay)
    warm = o.warmup_epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm) if warm else 1.0)
    return opt, sched


class Slots:
    """Where the parameters of one member's module live in the group's trained ``tensors``:
    parameter i is the view ``(size, stride, offset)`` of ``tensors[index[i]]`` (a lone trial:
    each parameter is its own tensor, the view is the whole of it)."""

    def __init__(self, model: nn.Module, tensors: list[Tensor]):
        by_storage = {t.untyped_storage().data_ptr(): k for k, t in enumerate(tensors)}
        self.params = list(model.parameters())
        self.index, self.specs = [], []
        for p in self.params:
            k = by_storage.get(p.untyped_storage().data_ptr())
            if k is None or not tensors[k].is_contiguous():
                raise ValueError("a member parameter is not a view of one of the group's contiguous tensors")
            self.index.append(k)
            self.specs.append((p.size(), p.stride(), p.storage_offset() - tensors[k].storage_offset()))

    def view(self, i: int, t: Tensor) -> Tensor:
        """Parameter i's part of ``t``, a contiguous tensor shaped like its group tensor."""
        size, stride, rel = self.specs[i]
        return t.as_strided(size, stride, t.storage_offset() + rel)


def _elementwise(v, group_tensor: Tensor) -> bool:
    """Whether an optimiser state entry has one value per element (momentum, Adam moments),
    not one per tensor (Adam's step count)."""
    return isinstance(v, Tensor) and v.dim() > 0 and v.shape == group_tensor.shape


def member_optimizer_state(optimizer: torch.optim.Optimizer, slots: Slots) -> dict:
    """One member's optimiser state, as ``optimizer.state_dict()`` would give for a lone trial:
    ``{"state": {i: {key: tensor}}, "param_groups": [{..., "params": [0, ..., n-1]}]}``."""
    tensors = optimizer.param_groups[0]["params"]
    state = {}
    for i, k in enumerate(slots.index):
        s = optimizer.state.get(tensors[k])
        if not s:
            continue
        state[i] = {key: slots.view(i, v.contiguous()).clone() if _elementwise(v, tensors[k])
                    else (v.clone() if isinstance(v, Tensor) else v) for key, v in s.items()}
    group = {key: v for key, v in optimizer.param_groups[0].items() if key != "params"}
    group["params"] = list(range(len(slots.index)))
    return {"state": state, "param_groups": [group]}


def load_member_optimizer_state(optimizer: torch.optim.Optimizer, slots: Slots, saved: dict) -> None:
    """Write a member's state from :func:`member_optimizer_state` into its part of the group's
    optimiser state (created as zeros where it does not exist yet). ValueError when it does not
    fit the member (another architecture)."""
    groups = saved["param_groups"]
    if len(groups) != 1 or list(groups[0]["params"]) != list(range(len(slots.index))):
        raise ValueError(f"optimiser state for {sum(len(g['params']) for g in groups)} parameters, "
                         f"the model has {len(slots.index)}")
    tensors = optimizer.param_groups[0]["params"]
    for i, entry in saved["state"].items():
        i = int(i)
        g = tensors[slots.index[i]]
        s = optimizer.state[g]
        for key, v in entry.items():
            if isinstance(v, Tensor) and v.dim() > 0:
                if v.shape != slots.params[i].shape:
                    raise ValueError(f"optimiser state '{key}' of parameter {i} has shape {tuple(v.shape)}, "
                                     f"the parameter {tuple(slots.params[i].shape)}")
                if key not in s:
                    s[key] = torch.zeros_like(g, memory_format=torch.contiguous_format)
                slots.view(i, s[key]).copy_(v)
            else:  # one value for the whole tensor: the same for every member (they step together)
                s[key] = v.clone() if isinstance(v, Tensor) else v
    for key in _MOVING:
        if key in groups[0]:
            optimizer.param_groups[0][key] = groups[0][key]


__all__ = ["Slots", "load_member_optimizer_state", "make_optimizer", "member_optimizer_state"]
