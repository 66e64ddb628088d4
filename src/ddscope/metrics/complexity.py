"""Complexity measures of the generalisation-measure studies: norms, margins, Fisher–Rao.

The measures of Jiang, Neyshabur, Mobahi, Krishnan & Bengio, "Fantastic Generalization Measures
and Where to Find Them" (ICLR 2020; their Appendix C numbers in brackets), written for any
network whose weight layers are ``nn.Linear`` / ``nn.Conv{1,2,3}d`` (W_l, l = 1 … d, in call
order; biases and normalisation parameters are not weight layers, as in the paper). A conv
layer's spectral norm is the operator norm on the layer's actual input shape (Lanczos on the
exact operator, the paper's "fft" variant); its Frobenius and (2,1) norms are those of the
kernel reshaped to (C_out, C_in·k), as in the paper. With γ the margin below and W⁰ the
initialisation:

==========================  ===================================================================
``cm_params``                number of parameters [20] — every parameter, biases and
                             normalisation parameters included (Jiang et al. count the weights)
``cm_spec_prod``             ∏_l ‖W_l‖₂²  [32]
``cm_spec_sum``              Σ_l ‖W_l‖₂²  (the paper's "sum" d·(∏‖W_l‖₂²)^{1/d} is a monotone
                             function of the product at fixed depth, so ranks equal; this plain
                             sum ranks differently)
``cm_fro_prod``              ∏_l ‖W_l‖_F²  [37]
``cm_fro_sum``               Σ_l ‖W_l‖_F²  [42: the parameter norm]
``cm_dist_fro``              Σ_l ‖W_l − W⁰_l‖_F²  [40]
``cm_dist_spec``             Σ_l ‖W_l − W⁰_l‖₂²  [41]
``cm_bft``                   Bartlett, Foster & Telgarsky (NeurIPS 2017) spectral complexity
                             R = ∏_l ‖W_l‖₂ · (Σ_l (‖(W_l − W⁰_l)ᵀ‖_{2,1} / ‖W_l‖₂)^{2/3})^{3/2},
                             ‖Aᵀ‖_{2,1} = Σ_rows ‖A_i,:‖₂ (reference matrices M_l = W⁰_l; 0
                             without θ⁰)
``cm_path``                  ℓ₂ path norm Σ_c f_{θ∘θ}(𝟙)_c = Σ over input-output paths (and
                             paths from biases) of ∏ w² (Neyshabur, Tomioka & Srebro, COLT
                             2015) [44]; ReLU-type nets only (Linear/Conv, ReLU, LeakyReLU,
                             average pooling, reshapes, additions); fixed maps (average
                             pooling's 1/k) enter unsquared, as in the paper's f_{w²}(𝟙)
``cm_fisher_rao``            (1/N) Σ_n ⟨θ, ∇_θ ℓ_n⟩² (Liang, Poggio, Rakhlin & Stokes,
                             AISTATS 2019) over every parameter; the paper's factor (d+1)² is
                             constant at fixed depth [45]
``cm_margin``                γ = 10th percentile over the training points of
                             f_y(x) − max_{c≠y} f_c(x), on the labels the net was fit on —
                             interpolated (``torch.quantile``); the authors' code takes the
                             order statistic ``kthvalue(N // 10)``, which can differ by one
                             neighbouring margin
``cm_inv_margin``            1/γ²  [22]
``cm_spec_margin``           ∏_l ‖W_l‖₂² / γ²  [31]
``cm_fro_margin``            ∏_l ‖W_l‖_F² / γ²  [36]
``cm_path_margin``           cm_path / γ²  [43]
``cm_bft_margin``            R · ‖X‖_F / (γ N), Bartlett et al.'s margin-normalised bound
==========================  ===================================================================

Margin-normalised measures are NaN where γ ≤ 0 (the net misclassifies over a tenth of its
training points; ranking protocols exclude such nets anyway). The PAC-Bayes sharpness measures
are in :mod:`ddscope.metrics.sharpness`.
"""

from __future__ import annotations

import contextlib
import math
import operator

import torch
from torch import Tensor, nn
from torch.func import functional_call, jvp

from ddscope.metrics.jacobian import eval_mode
from ddscope.metrics.lipschitz import linear_map_norm, record_input_shapes
from ddscope.metrics.losses import loss_fn

WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
MARGIN_QUANTILE = 0.1  # Jiang et al.: the 10th percentile of the training margins
# The margin-normalised measures: NaN where the margin γ ≤ 0
MARGIN_MEASURES = ("cm_inv_margin", "cm_spec_margin", "cm_fro_margin", "cm_path_margin", "cm_bft_margin")

# Modules and functions under which f_{θ∘θ}(𝟙) sums products of squared weights over paths: every
# map is linear with nonnegative coefficients on nonnegative inputs, or the identity there.
_PATH_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ReLU, nn.LeakyReLU, nn.Flatten, nn.Identity,
                 nn.Dropout, nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.Sequential,
                 nn.ModuleList, nn.ModuleDict)
_PATH_FUNCTIONS = {"relu", "relu_", "leaky_relu", "flatten", "reshape", "view", "contiguous", "add", "iadd", "dropout",
                   "avg_pool1d", "avg_pool2d", "adaptive_avg_pool1d", "adaptive_avg_pool2d", "getattr", "getitem",
                   "size", "float", "to"}


def weight_layers(model: nn.Module, input_shape: tuple[int, ...]) -> list[tuple[str, nn.Module, tuple[int, ...]]]:
    """``(module path, layer, its input shape)`` of every Linear / Conv layer, in call order."""
    shapes, order = record_input_shapes(model, tuple(input_shape))
    paths = {id(m): p for p, m in model.named_modules()}
    return [(paths[id(m)], m, shapes[id(m)]) for m in order if isinstance(m, WEIGHT_LAYERS)]


def _matrix(w: Tensor) -> Tensor:
    return w.reshape(w.shape[0], -1).double()


def spectral_norm(layer: nn.Module, input_shape: tuple[int, ...], weight: Tensor | None = None) -> float:
    """‖W‖₂ of a Linear layer (its matrix) or of a conv layer's operator on ``input_shape`` (the
    layer's own stride, padding, dilation and groups; Lanczos on the operator, as
    :func:`~ddscope.metrics.lipschitz.conv_operator_norm`); ``weight`` replaces the layer's
    kernel, e.g. W − W⁰."""
    w = (layer.weight if weight is None else weight).detach()
    if isinstance(layer, nn.Linear):
        return float(torch.linalg.matrix_norm(w.double(), ord=2))
    return linear_map_norm(lambda X: layer._conv_forward(X, w, None), tuple(input_shape), dtype=w.dtype,
                           device=w.device, generator=torch.Generator(w.device).manual_seed(0))


def norm_measures(model: nn.Module, input_shape: tuple[int, ...], init_state: dict[str, Tensor] | None = None) -> dict[str, float]:
    """``cm_params``, ``cm_spec_*``, ``cm_fro_*``, ``cm_bft`` and, with θ⁰, ``cm_dist_*`` (module
    docstring). Raises ValueError for a network without Linear / Conv layers."""
    layers = weight_layers(model, input_shape)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no Linear or Conv layer: the norm measures need weight layers")
    spec, fro, dist_fro, dist_spec, bft_terms = [], [], [], [], []
    for path, layer, shape in layers:
        w = layer.weight.detach()
        w0 = None if init_state is None else init_state.get(f"{path}.weight" if path else "weight")
        s = spectral_norm(layer, shape)
        spec.append(s * s)
        fro.append(float(_matrix(w).square().sum()))
        ref = torch.zeros_like(w) if w0 is None else w0.to(w)
        bft_terms.append((float(_matrix(w - ref).norm(dim=1).sum()) / s) ** (2 / 3) if s > 0 else math.inf)
        if w0 is not None:
            dist_fro.append(float(_matrix(w - ref).square().sum()))
            d = spectral_norm(layer, shape, weight=w - ref)
            dist_spec.append(d * d)
    out = {
        "cm_params": float(sum(p.numel() for p in model.parameters())),
        "cm_spec_prod": math.prod(spec),
        "cm_spec_sum": sum(spec),
        "cm_fro_prod": math.prod(fro),
        "cm_fro_sum": sum(fro),
        "cm_bft": math.prod(math.sqrt(s) for s in spec) * sum(bft_terms) ** 1.5,
    }
    if init_state is not None and len(dist_fro) == len(layers):
        out.update(cm_dist_fro=sum(dist_fro), cm_dist_spec=sum(dist_spec))
    return out


def _check_path_network(model: nn.Module) -> None:
    """Raise ValueError unless every leaf module (and, when fx can trace it, every function the
    forward calls) keeps f_{θ∘θ}(𝟙) a sum over paths of products of squared weights."""
    bad = sorted({type(m).__name__ for m in model.modules() if not isinstance(m, _PATH_MODULES)
                  and not list(m.children()) and m is not model})
    if bad:
        raise ValueError(f"the path norm needs a ReLU network of Linear/Conv layers; {', '.join(bad)} is not one "
                         "(max pooling, normalisation and smooth activations do not sum over paths)")
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception:  # noqa: BLE001 — not traceable: the module check above is what we can say
        return
    for node in graph.nodes:
        if node.op in ("call_function", "call_method"):
            name = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", str(node.target))
            if node.target in (operator.add, operator.iadd, operator.getitem, getattr):
                continue
            if name not in _PATH_FUNCTIONS:
                raise ValueError(f"the path norm needs a ReLU network of Linear/Conv layers; the forward calls "
                                 f"{name!r} (node {node.name})")


def path_norm(model: nn.Module, input_shape: tuple[int, ...]) -> float:
    """ℓ₂ path norm Σ_c f_{θ∘θ}(𝟙)_c: every parameter squared, an all-ones input, eval mode.

    On nonnegative inputs with nonnegative weights every ReLU is the identity, so the output sums
    ∏ w² over every path from an input unit (value 1) or a bias to each output (Neyshabur et al.
    2015; Jiang et al. 2020, eq. 44). Raises ValueError for networks where that sum does not hold."""
    _check_path_network(model)
    p0 = next(iter(model.parameters()))
    squared = {n: p.detach().double().square() for n, p in model.named_parameters()}
    buffers = {n: b.double() if b.is_floating_point() else b for n, b in model.named_buffers()}
    ones = torch.ones(1, *input_shape, dtype=torch.float64, device=p0.device)
    with eval_mode(model), torch.no_grad():
        out = functional_call(model, {**squared, **buffers}, (ones,))
    return float(out.sum())


def margins(model: nn.Module, x: Tensor, y: Tensor, *, chunk_size: int = 4096) -> Tensor:
    """f_y(x_n) − max_{c≠y} f_c(x_n) per sample (N,)."""
    parts = []
    with eval_mode(model), torch.no_grad():
        for s in range(0, len(x), chunk_size):
            out = model(x[s : s + chunk_size]).reshape(len(x[s : s + chunk_size]), -1)
            yb = y[s : s + chunk_size]
            true = out.gather(1, yb[:, None]).squeeze(1)
            other = out.scatter(1, yb[:, None], float("-inf")).max(1).values
            parts.append(true - other)
    return torch.cat(parts)


def fisher_rao_norm(model: nn.Module, x: Tensor, y: Tensor, *, loss="cross_entropy", chunk_size: int = 1024) -> float:
    """(1/N) Σ_n ⟨θ, ∇_θ ℓ_n⟩²: each ⟨θ, ∇_θ ℓ_n⟩ = d/dt ℓ_n(θ + tθ) at t = 0, one forward-mode
    pass over a chunk of samples with the parameters themselves as the tangent."""
    fn = loss_fn(loss)
    params = {n: p.detach() for n, p in model.named_parameters()}
    buffers = dict(model.named_buffers())
    total = 0.0
    with eval_mode(model):
        for s in range(0, len(x), chunk_size):
            xb, yb = x[s : s + chunk_size], y[s : s + chunk_size]

            def losses(p: dict[str, Tensor]) -> Tensor:  # (B,) per-sample losses
                return fn(functional_call(model, {**p, **buffers}, (xb,)), yb, reduction="none")

            _, dots = jvp(losses, (params,), (params,))
            total += float(dots.double().square().sum())
    return total / len(x)


def complexity_measures(model: nn.Module, x: Tensor, y: Tensor, input_shape: tuple[int, ...],
                        init_state: dict[str, Tensor] | None = None, *, loss="cross_entropy") -> dict[str, float]:
    """Every measure of the module docstring on training inputs ``x`` and the labels ``y`` the net
    was fit on; the path norm (and its margin form) only where it is defined."""
    out = norm_measures(model, input_shape, init_state)
    with contextlib.suppress(ValueError):  # not a ReLU network of weight layers: no path norm, the rest stands
        out["cm_path"] = path_norm(model, input_shape)
    out["cm_fisher_rao"] = fisher_rao_norm(model, x, y, loss=loss)
    m = margins(model, x, y).double()
    gamma = float(torch.quantile(m, MARGIN_QUANTILE))
    out["cm_margin"] = gamma
    g2 = gamma * gamma if gamma > 0 else math.nan
    out["cm_inv_margin"] = 1 / g2
    out["cm_spec_margin"] = out["cm_spec_prod"] / g2
    out["cm_fro_margin"] = out["cm_fro_prod"] / g2
    if "cm_path" in out:
        out["cm_path_margin"] = out["cm_path"] / g2
    x_fro = float(x.double().square().sum().sqrt())
    out["cm_bft_margin"] = out["cm_bft"] * x_fro / (math.sqrt(g2) * len(x)) if gamma > 0 else math.nan
    return out


__all__ = ["MARGIN_MEASURES", "MARGIN_QUANTILE", "complexity_measures", "fisher_rao_norm", "margins", "norm_measures", "path_norm",
           "spectral_norm", "weight_layers"]
