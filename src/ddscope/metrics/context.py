"""What a metric group's function sees (:class:`Context`): one object per :func:`measure` call,
shared by the groups in the catalogue's order."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn


@dataclass
class Context:
    """What a group's function sees: the model, the named splits, the options, one generator
    for all randomness (consumed in table order), and values groups share (``shared``)."""

    model: nn.Module
    splits: dict[str, tuple[Tensor, Tensor]]
    subsets: dict[str, tuple[str, Tensor]]
    input_shape: tuple[int, ...]
    init_state: dict[str, Tensor] | None
    opt: dict
    gen: torch.Generator
    shared: dict = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)  # group -> what ran otherwise than asked

    @property
    def jac_kw(self) -> dict:
        o = self.opt
        return dict(output=o["output"], method=o["jac_method"], chunk_size=o["chunk_size"], num_iters=o["jac_iters"],
                    loss=o["loss"])

    def split(self, name: str, group: str) -> tuple[Tensor, Tensor]:
        if name not in self.splits:
            raise ValueError(f"metric group {group!r} needs a {name!r} split; got {', '.join(self.splits) or 'none'}")
        return self.splits[name]


__all__ = ["Context"]
