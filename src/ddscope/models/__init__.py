"""Width-parameterised model families: ``make_model(cfg, input_shape, num_classes)``.

``MODELS`` maps a family name to its constructor
``(width, input_shape, num_classes, *, depth, batchnorm) -> nn.Module``, as the catalogue's
:data:`~ddscope.catalogue.FAMILIES` name them. Every model is a tree of
``nn.Sequential``, :class:`~ddscope.models.blocks.Residual` and leaf layers so that the Lipschitz
upper bound can walk it.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from ..catalogue import FAMILIES, resolve
from ..config import ModelConfig
from ..errors import UserError
from ..imports import is_import_spec, load_callable

MODELS: dict[str, Callable[..., nn.Module]] = {name: resolve(f.build) for name, f in FAMILIES.items()}


def make_model(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Build the family ``cfg.name`` at width ``cfg.width`` (initialised from torch's global RNG).

    ``cfg.name = "package.module:function"`` calls your factory
    ``function(cfg, input_shape, num_classes) -> nn.Module`` (``cfg.width``, ``cfg.depth`` and the
    free table ``cfg.options`` are yours to read); see :mod:`ddscope.imports`.
    """
    if is_import_spec(cfg.name):
        model = load_callable(cfg.name, "model.name")(cfg, tuple(input_shape), num_classes)
        if not isinstance(model, nn.Module):
            raise UserError(f"config key 'model.name': {cfg.name} returned {type(model).__name__}, not an nn.Module")
        return model
    return MODELS[cfg.name](
        cfg.width, tuple(input_shape), num_classes, depth=cfg.depth, batchnorm=cfg.batchnorm
    )


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["MODELS", "make_model", "count_parameters"]
