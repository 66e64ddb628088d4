"""A tighter certified Lipschitz upper bound for MLPs: ECLipsE-Fast.

Xu & Sivaranjani, "ECLipsE: Efficient Compositional Lipschitz Constant Estimation for Deep
Neural Networks", NeurIPS 2024 (Algorithm ECLipsE-Fast). For f = W_l φ(W_{l−1} ⋯ φ(W_1 x)) with
every activation slope-restricted in [α, β] = [0, 1] (ReLU, LeakyReLU with slope in [0, 1],
Hardtanh, ReLU6, tanh; sigmoid = ¼·ψ with ψ in [0, 1], the ¼ moved into the next layer), the
LipSDP-Neuron matrix inequality (Fazlyab et al., NeurIPS
2019) is decomposed into one small closed-form step per layer (m = (α + β)/2 = 1/2):

    X_0 = I,   λ_i = 1 / (2 m² λ_max(W_i X_{i−1}⁻¹ W_iᵀ)),
    X_i = λ_i I − λ_i² m² W_i X_{i−1}⁻¹ W_iᵀ        (i = 1 … l−1),
    Lip(f)² ≤ λ_max(W_lᵀ W_l X_{l−1}⁻¹).

The bound holds for *every* activation slope-restricted in [0, 1] — in particular for each
fixed 0/1 diagonal pattern D, so it is ≥ max_D ‖W_l D_{l−1} ⋯ D_1 W_1‖₂ — and it is never above
∏ ‖W_i‖₂ in the paper's analysis. Biases do not change a Lipschitz constant; an eval-mode
BatchNorm1d is an affine map folded into the Linear layer before it. Everything in float64.
"""

from __future__ import annotations

import torch
from torch import Tensor, fx, nn

from ddscope.metrics.fxgraph import node_name as _name, trace
from ddscope.metrics.convnorm import ROUNDING_MARGIN

# Elementwise with slope in [0, β] everywhere: β·ψ with ψ slope-restricted in [0, 1], and β
# moved into the next layer's weights.
SLOPE_01 = {nn.ReLU: 1.0, nn.ReLU6: 1.0, nn.Hardtanh: 1.0, nn.Tanh: 1.0, nn.Sigmoid: 0.25}
_SLOPE_01_FUNCTIONS = {"relu": 1.0, "relu_": 1.0, "relu6": 1.0, "hardtanh": 1.0, "tanh": 1.0, "sigmoid": 0.25}
_PASS = (nn.Identity, nn.Flatten, nn.Dropout)
_PASS_FUNCTIONS = {"flatten", "reshape", "view", "contiguous", "dropout", "float", "double", "to"}


def mlp_chain(model: nn.Module, input_shape: tuple[int, ...]) -> list[Tensor] | None:
    """The weight matrices [W_1, …, W_l] (float64) of a chain Linear → [0,1]-slope activation →
    … → Linear read from the fx graph (reshapes at the input, dropout and identities ignored;
    consecutive Linears multiplied, a BatchNorm1d after a Linear folded in), or ``None`` when
    the model is not such a chain (convolutions, residual connections, other activations)."""
    try:
        gm = trace(model, tuple(input_shape))
    except Exception:  # noqa: BLE001 — not traceable: not a plain chain either
        return None
    modules = dict(gm.named_modules())
    weights: list[Tensor] = []
    pending: Tensor | None = None  # the product of the Linears since the last activation
    carry = 1.0  # β of the last activation, for the next layer's weights
    seen_linear = False

    def activation(beta: float) -> bool:
        nonlocal pending, carry
        if pending is None:
            return False  # an activation on the input, or two in a row: not this form
        weights.append(pending * carry)
        pending, carry = None, beta
        return True

    prev: fx.Node | None = None
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            prev = node
            continue
        if node.op == "output":
            break
        args: list[fx.Node] = []
        fx.node.map_arg((node.args, node.kwargs), args.append)
        if node.op == "get_attr" or args != [prev] or len(prev.users) != 1:
            return None  # a branch, a parameter read, or several inputs: not a chain
        prev = node
        if node.op == "call_module":
            m = modules[node.target]
            if isinstance(m, nn.Linear):
                W = m.weight.detach().to("cpu", torch.float64)
                pending = W if pending is None else W @ pending
                seen_linear = True
            elif isinstance(m, nn.BatchNorm1d) and pending is not None and m.running_var is not None:
                scale = (m.running_var.detach().double().cpu() + m.eps).rsqrt()
                if m.weight is not None:
                    scale = scale * m.weight.detach().double().cpu()
                pending = scale[:, None] * pending
            elif type(m) in SLOPE_01 or (isinstance(m, nn.LeakyReLU) and 0 <= m.negative_slope <= 1):
                if not activation(SLOPE_01.get(type(m), 1.0)):
                    return None
            elif isinstance(m, _PASS) or (isinstance(m, nn.Unflatten) and not seen_linear):
                continue
            else:
                return None
        elif node.op in ("call_function", "call_method"):
            name = _name(node)
            if name in _SLOPE_01_FUNCTIONS or (name in ("leaky_relu", "leaky_relu_")
                                               and 0 <= float(node.args[1] if len(node.args) > 1 else
                                                              node.kwargs.get("negative_slope", 0.01)) <= 1):
                if not activation(_SLOPE_01_FUNCTIONS.get(name, 1.0)):
                    return None
            elif name in _PASS_FUNCTIONS and not seen_linear or name in ("dropout", "contiguous"):
                continue
            else:
                return None
        else:
            return None
    if pending is not None:
        weights.append(pending * carry)
    elif weights:  # the chain ends in an activation: f = β·I ∘ ψ(⋯), one more (linear) layer
        weights.append(carry * torch.eye(weights[-1].shape[0], dtype=torch.float64))
    return weights if weights else None


def eclipse_fast(weights: list[Tensor]) -> float:
    """ECLipsE-Fast's bound for W_l φ(⋯ φ(W_1 x)) with [0, 1]-slope activations (module docstring)."""
    m2 = 0.25  # m = (α + β) / 2 = 1/2
    X = torch.eye(weights[0].shape[1], dtype=torch.float64)
    for W in weights[:-1]:
        L = torch.linalg.cholesky(X)
        B = torch.linalg.solve_triangular(L, W.T, upper=False)  # L⁻¹ Wᵀ: K = W X⁻¹ Wᵀ = BᵀB
        K = B.T @ B
        lam = 1.0 / (2 * m2 * float(torch.linalg.eigvalsh((K + K.T) / 2)[-1]))
        X = lam * torch.eye(W.shape[0], dtype=torch.float64) - lam**2 * m2 * K
    L = torch.linalg.cholesky((X + X.T) / 2)
    B = torch.linalg.solve_triangular(L, weights[-1].T, upper=False)  # λ_max(WᵀW X⁻¹) = ‖L⁻¹Wᵀ‖₂²
    return float(torch.linalg.matrix_norm(B, 2)) * (1 + ROUNDING_MARGIN)


def lipschitz_upper_tight(model: nn.Module, input_shape: tuple[int, ...]) -> float | None:
    """ECLipsE-Fast on an MLP chain (:func:`mlp_chain`), ``None`` for other models."""
    weights = mlp_chain(model, input_shape)
    return None if weights is None else eclipse_fast(weights)


__all__ = ["eclipse_fast", "lipschitz_upper_tight", "mlp_chain"]
