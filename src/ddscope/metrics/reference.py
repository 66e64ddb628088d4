"""Dense brute-force versions of every metric, for tests and ``ddscope check``.

Nothing here is matrix-free or batched across samples: Jacobians come from
``torch.autograd.functional.jacobian`` one sample at a time (or central finite differences),
operator norms from the dense matrix of a layer built by pushing the identity basis through
it, Hessians from ``torch.func.hessian`` of the loss as a function of the flat parameter
vector, per-sample gradients from a loop of ``torch.autograd.grad``. Use tiny models, float64.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ddscope.metrics.hessian import flat_loss_fn, flat_params
from ddscope.metrics.jacobian import JacNorms, eval_mode, output_fn
from ddscope.metrics.lipschitz import AVG_POOLS, MAX_POOLS, LipschitzBound, leaf_lipschitz, record_input_shapes, walk_lipschitz


def dense_jacobian(model: nn.Module, x: Tensor, *, output: str = "logits", y: Tensor | None = None) -> Tensor:
    """J(x_n) ∈ R^{C×d} for every sample, (N, C, d), by autograd one sample at a time."""
    jacs = []
    with eval_mode(model):
        for n in range(len(x)):
            fn = output_fn(model, output, None if y is None else y[n : n + 1])
            J = torch.autograd.functional.jacobian(lambda v: fn(v.view(1, *x.shape[1:]))[0], x[n].reshape(-1))
            jacs.append(J)  # (C, d)
    return torch.stack(jacs)


def finite_difference_jacobian(
    model: nn.Module, x: Tensor, *, output: str = "logits", y: Tensor | None = None, eps: float = 1e-6
) -> Tensor:
    """Central differences (g(x + ε e_i) − g(x − ε e_i)) / 2ε, (N, C, d); error O(ε²) off kinks."""
    d = x[0].numel()
    jacs = []
    with eval_mode(model), torch.no_grad():
        for n in range(len(x)):
            fn = output_fn(model, output, None if y is None else y[n : n + 1].expand(d))
            E = torch.eye(d, dtype=x.dtype, device=x.device) * eps  # (d, d): one perturbation per row
            base = x[n].reshape(1, d)
            diff = fn((base + E).view(d, *x.shape[1:])) - fn((base - E).view(d, *x.shape[1:]))  # (d, C)
            jacs.append(diff.T / (2 * eps))
    return torch.stack(jacs)


def jacobian_norms_dense(model: nn.Module, x: Tensor, *, output: str = "logits", y: Tensor | None = None) -> JacNorms:
    """‖J(x_n)‖₂ = svdvals(J)[0] and ‖J(x_n)‖_F from :func:`dense_jacobian`."""
    J = dense_jacobian(model, x, output=output, y=y)
    return JacNorms(spec=torch.linalg.svdvals(J)[:, 0], fro=torch.linalg.matrix_norm(J, "fro"))


def dense_matrix(fn: Callable[[Tensor], Tensor], input_shape: tuple[int, ...], *, dtype=torch.float64, device=None) -> Tensor:
    """The matrix A (out_dim, in_dim) of the affine map fn minus its offset: A e_i = fn(e_i) − fn(0)."""
    dim = math.prod(input_shape)
    eye = torch.eye(dim, dtype=dtype, device=device).view(dim, *input_shape)
    with torch.no_grad():
        cols = fn(eye) - fn(torch.zeros_like(eye[:1]))  # (dim, ...): column i in row i
    return cols.reshape(dim, -1).T


def operator_norm_dense(fn: Callable[[Tensor], Tensor], input_shape: tuple[int, ...], **kw) -> float:
    """σ_max of :func:`dense_matrix`."""
    return float(torch.linalg.matrix_norm(dense_matrix(fn, input_shape, **kw), 2))


def conv_operator_norm_dense(conv: nn.Conv1d | nn.Conv2d, input_shape: tuple[int, ...]) -> float:
    """Top singular value of the conv layer's dense matrix on ``input_shape`` (bias removed)."""
    W = conv.weight.detach()
    return operator_norm_dense(lambda X: conv._conv_forward(X, W, None), tuple(input_shape), dtype=W.dtype, device=W.device)


def max_pool_coverage_dense(pool: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Largest number of windows containing one input, by pooling each basis image e_i:
    every window that contains i outputs 1, every other window 0."""
    spatial = input_shape[1:]
    dim = math.prod(spatial)
    eye = torch.eye(dim, dtype=torch.float64).view(dim, 1, *spatial)
    with torch.no_grad():
        return int(pool(eye).flatten(1).sum(1).max())


def leaf_lipschitz_dense(path: str, module: nn.Module, input_shape: tuple[int, ...]) -> float:
    """Leaf constants with every linear layer (Linear, Conv, BatchNorm, average pooling) from its
    dense matrix on the actual input shape; max pooling by dense window coverage."""
    if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.BatchNorm1d, nn.BatchNorm2d, *AVG_POOLS)):
        ref = next(module.parameters(), None)
        dtype = ref.dtype if ref is not None else torch.float64
        with eval_mode(module):
            return operator_norm_dense(module, tuple(input_shape), dtype=dtype, device=None if ref is None else ref.device)
    if isinstance(module, MAX_POOLS):
        return math.sqrt(max_pool_coverage_dense(module, input_shape))
    return leaf_lipschitz(path, module, input_shape)


def lipschitz_upper_dense(model: nn.Module, input_shape: tuple[int, ...]) -> LipschitzBound:
    """The same product bound as ``lipschitz_upper`` with dense leaf norms."""
    return walk_lipschitz(model, tuple(input_shape), leaf_lipschitz_dense)


def dense_hessian(model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]]) -> Tensor:
    """∇²_θ of the mean cross-entropy over all samples, (dim, dim), via ``torch.func.hessian``
    of the loss on the concatenated data as a function of the flat parameter vector."""
    batches = list(batches)
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    names, theta = flat_params(model)
    loss = flat_loss_fn(model, names, len(x))
    with eval_mode(model):
        try:
            return torch.func.hessian(lambda flat: loss(flat, x, y))(theta)
        except (NotImplementedError, RuntimeError):  # an op without forward-mode AD: reverse over reverse
            leaf = theta.clone().requires_grad_()
            g = torch.autograd.grad(loss(leaf, x, y), leaf, create_graph=True)[0]
            rows = [torch.autograd.grad(g[i], leaf, retain_graph=True, allow_unused=True)[0] for i in range(len(g))]
            return torch.stack([r if r is not None else torch.zeros_like(theta) for r in rows])


def per_sample_grads_loop(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """∇_θ L_n for every sample, (N, dim), by one ``torch.autograd.grad`` call per sample."""
    params = [p for p in model.parameters() if p.requires_grad]
    rows = []
    with eval_mode(model):
        for n in range(len(x)):
            loss = F.cross_entropy(model(x[n : n + 1]), y[n : n + 1])
            rows.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)]))
    return torch.stack(rows)


def first_layer_norm_dense(model: nn.Module, input_shape: tuple[int, ...]) -> float:
    """‖θ¹‖₂ from the dense matrix of the first parameterised layer on its input shape."""
    shapes, order = record_input_shapes(model, tuple(input_shape))
    first = next(m for m in order if next(m.parameters(recurse=False), None) is not None)
    return leaf_lipschitz_dense("", first, shapes[id(first)])


def theorem2_dense(model: nn.Module, x: Tensor, y: Tensor) -> dict[str, float | bool]:
    """Theorem 2 from brute force: per-sample loops, the dense Hessian's exact trace."""
    input_grads = dense_jacobian(model, x, output="loss", y=y)[:, 0]  # (N, d)
    grads = per_sample_grads_loop(model, x, y)  # (N, dim)
    with eval_mode(model), torch.no_grad():
        losses = F.cross_entropy(model(x), y, reduction="none")
    x_min = float(x.flatten(1).norm(dim=1).min())
    theta1 = first_layer_norm_dense(model, tuple(x.shape[1:]))
    input_grad_sq_mean = float(input_grads.square().sum(1).mean())
    lhs = x_min**2 / theta1**2 * input_grad_sq_mean
    mid = float(grads.square().sum(1).mean())
    rhs = 2 * float(losses.max()) * float(torch.trace(dense_hessian(model, [(x, y)])))
    return {
        "thm2_lhs": lhs,
        "thm2_mid": mid,
        "thm2_rhs": rhs,
        "thm2_lhs_le_mid": lhs <= mid,
        "thm2_mid_le_rhs": mid <= rhs,
        "loss_max": float(losses.max()),
        "x_min": x_min,
        "theta1_norm": theta1,
        "input_grad_sq_mean": input_grad_sq_mean,
    }
