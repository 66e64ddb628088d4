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


def dense_jacobian(model: nn.Module, x: Tensor, *, output: str = "logits", y: Tensor | None = None,
                   loss="cross_entropy") -> Tensor:
    """J(x_n) ∈ R^{C×d} for every sample, (N, C, d), by autograd one sample at a time."""
    jacs = []
    with eval_mode(model):
        for n in range(len(x)):
            fn = output_fn(model, output, None if y is None else y[n : n + 1], loss)
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


def volume_reference(model: nn.Module, pts: Tensor, y: Tensor, *, path: bool, output: str = "loss",
                     loss="cross_entropy") -> dict[str, float]:
    """The volume quantities (:mod:`ddscope.metrics.volume`) by plain loops over points,
    directions and anchors: ``pts`` (N, K, *shape) ball points or (N, K, A, *shape) path anchors
    (as :func:`ddscope.metrics.neighbourhood.draw` gives them), ``y`` (N,) the labels. Dense
    Jacobians one point at a time, the trapezoid rule written out segment by segment."""
    from ddscope.metrics.losses import loss_fn

    ell = loss_fn(loss)
    n, k = pts.shape[:2]
    shape = pts.shape[3:] if path else pts.shape[2:]

    def at(z: Tensor, label: Tensor) -> tuple[float, float, float, float, Tensor]:
        J = dense_jacobian(model, z.reshape(1, *shape), output=output, y=label.reshape(1), loss=loss)[0]
        with torch.no_grad(), eval_mode(model):
            logits = model(z.reshape(1, *shape))
            g = output_fn(model, output, label.reshape(1), loss)(z.reshape(1, *shape))[0]
        return (float(torch.linalg.svdvals(J)[0]) ** 2, float(torch.linalg.matrix_norm(J)) ** 2,
                float(ell(logits, label.reshape(1))[0]), float(int(logits.reshape(-1).argmax()) == int(label)), g)

    sums = {"spec": 0.0, "fro": 0.0, "loss": 0.0, "acc": 0.0, "tan": 0.0, "hess": 0.0}
    hess_terms = 0
    for i in range(n):
        for j in range(k):
            if not path:
                s2, f2, lo, ac, _ = at(pts[i, j], y[i])
                for key, v in zip(("spec", "fro", "loss", "acc"), (s2, f2, lo, ac)):
                    sums[key] += v / (n * k)
                continue
            anchors = pts[i, j]
            vals = [at(a, y[i]) for a in anchors]
            lengths = [float((anchors[a + 1] - anchors[a]).norm()) for a in range(len(anchors) - 1)]
            total = sum(lengths)
            for q, key in enumerate(("spec", "fro", "loss", "acc")):
                integral = sum(0.5 * (vals[a][q] + vals[a + 1][q]) * lengths[a] for a in range(len(lengths)))
                sums[key] += (integral / total if total > 0 else vals[0][q]) / (n * k)
            slopes = [(vals[a + 1][4] - vals[a][4]) / lengths[a] for a in range(len(lengths))]
            sums["tan"] += sum(lengths[a] / total * float(slopes[a].norm()) ** 2 for a in range(len(lengths))) / (n * k)
            for a in range(1, len(lengths)):
                second = 2 * (slopes[a] - slopes[a - 1]) / (lengths[a] + lengths[a - 1])
                sums["hess"] += float(second.norm()) ** 2
                hess_terms += 1
    out = {"vol_jac_spec_rms": sums["spec"] ** 0.5, "vol_jac_fro_rms": sums["fro"] ** 0.5, "vol_loss": sums["loss"],
           "vol_acc": sums["acc"]}
    if path:
        out["vol_tangent_jac"] = sums["tan"] ** 0.5
        if hess_terms:
            out["vol_tangent_hess"] = (sums["hess"] / hess_terms) ** 0.5
    return out
