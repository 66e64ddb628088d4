"""Smoothness metrics of a trained network: pure functions ``(model, tensors, ...) -> values``.

Definitions are docs/design.md §1; each is checked against a dense brute-force version in
``ddscope.metrics.reference`` on tiny float64 models (tests/metrics).
"""

from ddscope.metrics.distance import distance_from_init, snapshot_params
from ddscope.metrics.hessian import hess_top, hess_trace, loss_hvp
from ddscope.metrics.jacobian import (
    OUTPUTS,
    JacNorms,
    aggregate,
    eval_mode,
    jacobian_norms,
    path_jacobian_norms,
    path_points,
)
from ddscope.metrics.lipschitz import LipschitzBound, conv_operator_norm, lipschitz_upper
from ddscope.metrics.suite import METRIC_GROUPS, measure
from ddscope.metrics.theorem import per_sample_grad_sq, theorem2, theorem2_per_sample

__all__ = [
    # input Jacobian (empirical local Lipschitz constants)
    "OUTPUTS",
    "JacNorms",
    "jacobian_norms",
    "aggregate",
    "path_points",
    "path_jacobian_norms",
    # global Lipschitz upper bound
    "LipschitzBound",
    "lipschitz_upper",
    "conv_operator_norm",
    # loss curvature
    "loss_hvp",
    "hess_trace",
    "hess_top",
    # Theorem 2
    "per_sample_grad_sq",
    "theorem2",
    "theorem2_per_sample",
    # distance from initialisation
    "snapshot_params",
    "distance_from_init",
    # everything at once
    "METRIC_GROUPS",
    "measure",
    # helpers
    "eval_mode",
]
