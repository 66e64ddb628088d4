"""Distance of the parameters from their initialisation, per layer and for the whole net.

Gamba et al. (poster "On the Lipschitz Constant of Deep Networks and Double Descent"; TMLR 2023)
show that ‖θ_l − θ_l⁰‖ mirrors double descent as width grows: large models interpolate sooner
and travel less. For a module l with parameters θ_l (weight and bias grouped together),

    dist_abs/l = ‖θ_l − θ_l⁰‖_F = ( Σ_{p∈l} ‖p − p⁰‖_F² )^½,
    dist_rel/l = ‖θ_l − θ_l⁰‖_F / ‖θ_l⁰‖_F,

and ``dist_abs/all``, ``dist_rel/all`` do the same over every parameter. θ⁰ is the snapshot
:func:`snapshot_params` takes at step 0.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

ROOT = "root"  # the key of parameters owned by the top-level module itself


def snapshot_params(model: nn.Module) -> dict[str, Tensor]:
    """θ⁰ = ``{name: param.detach().clone()}`` over ``model.named_parameters()``: take it at step 0."""
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def module_path(param_name: str) -> str:
    """'net.0.weight' -> 'net.0'; a parameter of the top-level module -> ``ROOT``."""
    return param_name.rsplit(".", 1)[0] if "." in param_name else ROOT


def distance_from_init(model: nn.Module, init_state: dict[str, Tensor]) -> dict[str, float]:
    """``dist_abs/<module path>``, ``dist_rel/<module path>`` per parameterised module, and
    ``dist_abs/all``, ``dist_rel/all`` (see the module docstring).

    A relative distance whose initial norm is 0 is ``inf`` (or 0 when nothing moved).

    Args:
        model: the current network.
        init_state: θ⁰ from :func:`snapshot_params`; must hold every parameter with its shape.
    """
    moved: dict[str, float] = {}  # module path -> Σ ‖p − p⁰‖²
    initial: dict[str, float] = {}  # module path -> Σ ‖p⁰‖²
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name not in init_state:
                raise ValueError(f"init_state has no entry for parameter {name!r}")
            p0 = init_state[name].to(p.device)
            if p0.shape != p.shape:
                raise ValueError(f"init_state[{name!r}] has shape {tuple(p0.shape)}, the parameter {tuple(p.shape)}")
            path = module_path(name)
            moved[path] = moved.get(path, 0.0) + float((p - p0).square().sum())
            initial[path] = initial.get(path, 0.0) + float(p0.square().sum())
    moved["all"] = sum(moved.values())
    initial["all"] = sum(initial.values())
    out: dict[str, float] = {}
    for path in moved:
        out[f"dist_abs/{path}"] = math.sqrt(moved[path])
    for path in moved:
        out[f"dist_rel/{path}"] = _ratio(math.sqrt(moved[path]), math.sqrt(initial[path]))
    return out


def _ratio(num: float, den: float) -> float:
    if den > 0:
        return num / den
    return math.inf if num > 0 else 0.0
