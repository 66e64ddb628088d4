"""Input-Jacobian norms: the empirical smoothness of the learned function.

For a model f_θ: R^d → R^C and a sample x_n, J(x_n) = ∂g(f_θ(x_n))/∂x_n ∈ R^{C×d}, where g is
the output map (logits, softmax, log-softmax, or the per-sample cross-entropy, C = 1). The
poster's statistic (Gamba, Azizpour & Björkman, "On the Lipschitz Constant of Deep Networks and
Double Descent"; Gamba et al., "Deep Double Descent via Smooth Interpolation", TMLR 2023) is

    jac_spec_rms = ( (1/N) Σ_n ‖J(x_n)‖₂² )^½,

the root-mean-square local Lipschitz constant over the data. ``path_jacobian_norms`` integrates
the same statistics along segments between training points with the trapezoid rule.

All functions evaluate the model in eval mode (samples are then independent, so one reverse or
forward pass of a chunk gives every sample's product at once) and restore the training flags.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import jvp, vjp, vmap

from ..catalogue import JAC_OUTPUTS, OPTIONS
from ddscope.estimators import batched_lanczos_top_eig, batched_power_iteration, default_generator
from ddscope.metrics.losses import Loss, loss_fn

OUTPUTS = JAC_OUTPUTS  # the output maps a Jacobian is taken of (the catalogue's)
METHODS = ("auto", "exact", "lanczos", "power")
# method="auto" computes all C rows of J at once (memory chunk·C·d) when C ≤ AUTO_MAX_CLASSES
# or C·d ≤ AUTO_MAX_CD; otherwise it runs Lanczos (memory chunk·num_iters·min(C, d)).
AUTO_MAX_CLASSES = 32
AUTO_MAX_CD = 65536
# chunk_size=None sizes chunks from memory: a quarter of the free GPU memory on CUDA; on the CPU
# a cache-sized budget, since there the backward convolutions are memory-bound and big chunks
# evict their activations (bench/bench_jacobian.py: chunk 8 beats 1024 by 2.2-2.6x on conv nets,
# while an MLP wants hundreds).
CPU_CHUNK_BYTES = 64 * 2**20
MIN_CHUNK, MAX_CHUNK = 8, 4096


def activations_per_sample(model: nn.Module, x: Tensor) -> int:
    """Numbers one forward pass of one sample writes (the outputs of every leaf module), counted
    with forward hooks on ``x[:1]``: the unit of the memory estimates that size chunks."""
    count = [0]

    def hook(_module, _args, out):
        if isinstance(out, Tensor):
            count[0] += out[:1].numel()

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.no_grad():
            model(x[:1])
    finally:
        for h in handles:
            h.remove()
    return count[0]


def memory_budget(x: Tensor, cpu_bytes: int = CPU_CHUNK_BYTES) -> int:
    """Bytes one pass may use: a quarter of the free memory on CUDA, ``cpu_bytes`` on the CPU."""
    if x.is_cuda:
        free, _ = torch.cuda.mem_get_info(x.device)
        return free // 4
    return cpu_bytes


def auto_chunk_size(model: nn.Module, x: Tensor, num_outputs: int) -> int:
    """Samples per pass from the memory one sample needs: about (C + 1)·(a + d) floats, with a the
    number of activations one forward pass writes (:func:`activations_per_sample`) — the saved
    forward plus one backward per output row. Clamped to [MIN_CHUNK, MAX_CHUNK]."""
    act = activations_per_sample(model, x)
    per_sample = (num_outputs + 1) * (act + x[0].numel()) * x.element_size()
    return int(min(MAX_CHUNK, max(MIN_CHUNK, memory_budget(x) // max(per_sample, 1))))


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every submodule in eval mode, then restore each module's own training flag."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, flag in flags:
            m.training = flag


@contextlib.contextmanager
def math_attention():
    """Scaled dot-product attention on the math backend: fused kernels lack forward-mode AD and
    double backward, which Hessian products, Theorem 2 and the Fisher–Rao norm need; the math
    backend is the same function written with differentiable operations. ``nn.MultiheadAttention``'s
    eval-mode fast path (``_native_multi_head_attention``, no forward-mode AD) is switched off too."""
    mha = getattr(torch.backends, "mha", None)
    fast = mha.get_fastpath_enabled() if mha is not None and hasattr(mha, "get_fastpath_enabled") else None
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # torch < 2.3 has no sdpa_kernel: nothing to switch
        sdpa_kernel = None
    try:
        if fast is not None:
            mha.set_fastpath_enabled(False)
        if sdpa_kernel is None:
            yield
        else:
            with sdpa_kernel(SDPBackend.MATH):
                yield
    finally:
        if fast is not None:
            mha.set_fastpath_enabled(fast)


@dataclass(frozen=True)
class JacNorms:
    """Per-sample norms of the input Jacobian: ``spec`` = ‖J(x_n)‖₂, ``fro`` = ‖J(x_n)‖_F, (N,)."""

    spec: Tensor
    fro: Tensor


def output_fn(model: nn.Module, output: str, y: Tensor | None = None, loss: Loss = "cross_entropy") -> Callable[[Tensor], Tensor]:
    """x (B, ...) -> g(f(x)) (B, C): the output map whose input Jacobian is measured
    (``output="loss"``: the per-sample ``loss``, C = 1)."""
    if output not in OUTPUTS:
        raise ValueError(f"unknown output {output!r}; allowed: {', '.join(OUTPUTS)}")
    if output == "loss" and y is None:
        raise ValueError("output='loss' needs the labels y")

    loss_fn(loss)  # an unknown loss is refused here, not at the first call
    return lambda x: output_of(model(x), output, y, loss)


def output_of(out: Tensor, output: str, y: Tensor | None = None, loss: Loss = "cross_entropy") -> Tensor:
    """g applied to the model's outputs ``out`` (B, ...): (B, C) logits, softmax or log-softmax,
    or (B, 1) per-sample ``loss`` against ``y`` — the map of :func:`output_fn`, for outputs
    already computed."""
    if output == "loss":
        return loss_fn(loss)(out, y)[:, None]  # (B, 1)
    logits = out.reshape(out.shape[0], -1)  # (B, C)
    if output == "softmax":
        return logits.softmax(dim=-1)
    if output == "log_softmax":
        return logits.log_softmax(dim=-1)
    return logits


def _rows_autograd(fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """All rows of J by plain autograd, one backward per output: (C, B, *x.shape[1:])."""
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        out = fn(xg)
        rows = [torch.autograd.grad(out[:, c].sum(), xg, retain_graph=True)[0] for c in range(out.shape[1])]
    return torch.stack(rows)


def jacobian_rows(fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """Row c of J(x_n) for every c and sample n: (C, B, *x.shape[1:]).

    Samples are independent, so row c of every sample's Jacobian is the VJP of the chunk's
    outputs with the cotangent e_c; the C VJPs run as one vmapped backward pass. Models that
    torch.func cannot transform (e.g. an autograd.Function without ``setup_context``) fall back
    to a loop of ``torch.autograd.grad`` calls.
    """
    with torch.no_grad():  # no graph towards the parameters; torch.func still differentiates x
        try:
            out, vjp_fn = vjp(fn, x)
        except RuntimeError:
            return _rows_autograd(fn, x)
        B, C = out.shape
        cotangents = torch.eye(C, dtype=out.dtype, device=out.device)[:, None, :].expand(C, B, C)
        try:
            return vmap(vjp_fn)(cotangents)[0]
        except RuntimeError:
            return torch.stack([vjp_fn(cotangents[c])[0] for c in range(C)])


def linear_stem(model: nn.Module) -> tuple[nn.Module, nn.Linear, nn.Module] | None:
    """``(pre, first, rest)`` when ``model`` is ``Sequential(Flatten?, Linear, ...)`` whose first
    Linear narrows (out_features < in_features), else ``None``.

    Then f(x) = rest(W pre(x) + b) and J(x) = U(x) W with U = ∂rest/∂z ∈ R^{C×h}, so with
    Wᵀ = QR (Q ∈ R^{d×h} orthonormal), J Jᵀ = (U Rᵀ)(U Rᵀ)ᵀ: the C reverse passes stop at the
    h-dimensional output of the first layer, and the C×h×d product with W becomes C×h×h (an MLP
    on CIFAR inputs: 3072 -> 512).
    """
    # Only the stock chain: a subclass that overrides forward (say, standardising its input
    # before super().forward) computes another function than its children's composition.
    if not isinstance(model, nn.Sequential) or type(model).forward is not nn.Sequential.forward:
        return None
    mods = list(model)
    k = 0
    while k < len(mods) and type(mods[k]) in (nn.Flatten, nn.Identity):
        k += 1
    if k >= len(mods) - 1 or type(mods[k]) is not nn.Linear:
        return None
    first = mods[k]
    if first.out_features >= first.in_features:
        return None
    return nn.Sequential(*mods[:k]), first, nn.Sequential(*mods[k + 1 :])


def _exact_chunk(fn: Callable[[Tensor], Tensor], x: Tensor, stem_factor: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Per-sample (‖J‖₂, ‖J‖_F) of ``fn`` at x (B, ...). With ``stem_factor`` = Rᵀ (h, h) from
    Wᵀ = QR, x is the first layer's output z (B, h), ``fn`` the rest of the net, and
    J = U W = (U Rᵀ) Qᵀ, so J Jᵀ = (U Rᵀ)(U Rᵀ)ᵀ: a Gram matrix of (B, C, h) rows, without
    squaring W's entries (W Wᵀ overflows float32 for a diverged net)."""
    rows = jacobian_rows(fn, x)  # (C, B, ...)
    C, B = rows.shape[:2]
    J = rows.reshape(C, B, -1).transpose(0, 1)  # (B, C, d), or U (B, C, h) after a stem
    if stem_factor is not None:
        J = J @ stem_factor  # (B, C, h): same Gram matrix as U W
    gram = J @ J.mT  # (B, C, C) = J Jᵀ: its top eigenvalue is ‖J‖₂², its trace ‖J‖_F²
    top = torch.linalg.eigvalsh(gram)[:, -1]
    fro2 = gram.diagonal(dim1=-2, dim2=-1).sum(-1)
    return top.clamp_min(0).sqrt(), fro2.clamp_min(0).sqrt()


def _iterative_chunk(
    fn: Callable[[Tensor], Tensor], x: Tensor, method: str, num_iters: int, tol: float, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """‖J‖₂ by Lanczos / power iteration on the smaller Gram matrix, ‖J‖_F exactly.

    J v is a JVP (forward mode), Jᵀ u a VJP (reverse mode); both act on the whole chunk with one
    vector per sample. The iteration runs on J Jᵀ ∈ R^{C×C} when C ≤ d, else on JᵀJ ∈ R^{d×d}
    (same nonzero spectrum, smaller Krylov basis). ‖J‖_F² = Σ_i ‖J e_i‖² over the min(C, d)
    unit vectors of the smaller side, one VJP (or JVP) each.
    """
    shape = x.shape  # (B, ...)
    with torch.no_grad():
        out, vjp_fn = vjp(fn, x)
        B, C = out.shape
        d = x[0].numel()

        def jt(u: Tensor) -> Tensor:  # (B, C) -> (B, d)
            return vjp_fn(u)[0].reshape(B, d)

        def jv(v: Tensor) -> Tensor:  # (B, d) -> (B, C)
            return jvp(fn, (x,), (v.reshape(shape),))[1]

        small, matvec = (C, lambda u: jv(jt(u))) if C <= d else (d, lambda v: jt(jv(v)))
        solver = batched_lanczos_top_eig if method == "lanczos" else batched_power_iteration
        top = solver(matvec, B, small, num_iters, tol=tol, generator=generator, dtype=x.dtype, device=x.device)
        fro2 = torch.zeros(B, dtype=x.dtype, device=x.device)
        for i in range(small):
            e = torch.zeros(B, small, dtype=x.dtype, device=x.device)
            e[:, i] = 1
            fro2 += (jt(e) if C <= d else jv(e)).pow(2).sum(dim=1)
    return top.clamp_min(0).sqrt(), fro2.sqrt()


def jacobian_norms(
    model: nn.Module,
    x: Tensor,
    *,
    output: str = "logits",
    y: Tensor | None = None,
    method: str = "auto",
    chunk_size: int | None = None,
    num_iters: int = OPTIONS["jac_iters"],
    tol: float = 1e-6,
    generator: torch.Generator | None = None,
    loss: Loss = "cross_entropy",
    verify: bool = True,
    _stem: bool = True,
) -> JacNorms:
    """Spectral and Frobenius norms of the input Jacobian at every sample.

    ‖J(x_n)‖₂ = σ_max(J(x_n)), ‖J(x_n)‖_F = (Σ_{c,i} J_ci²)^½, with J(x_n) ∈ R^{C×d} and
    d = x[0].numel().

    Methods:
        ``"exact"``: all C rows by one vmapped reverse pass per chunk; ‖J‖₂² = λ_max(J Jᵀ)
        (``eigvalsh``), ‖J‖_F² = tr(J Jᵀ). Exact to rounding. A model that starts with a
        narrowing Linear layer (:func:`linear_stem`) stops the passes at its output and uses
        J Jᵀ = (U Rᵀ)(U Rᵀ)ᵀ with Wᵀ = QR.
        ``"lanczos"``: matrix-free Lanczos with full reorthogonalisation on the smaller of J Jᵀ,
        JᵀJ (JVP + VJP per step, every sample of a chunk at once), stopping when the Ritz
        residual is ≤ tol·λ or after ``num_iters`` steps (exact once num_iters > min(C, d));
        Frobenius exact by min(C, d) products. Memory chunk·num_iters·min(C, d).
        ``"power"``: as Lanczos but power iteration, stopping when λ changes by ≤ tol·λ;
        a lower bound that converges as (σ₂/σ₁)^{2k}.
        ``"auto"``: ``"exact"`` when C ≤ 32 or C·d ≤ 65536, else ``"lanczos"``.

    Args:
        model: f_θ; evaluated in eval mode, training flags restored afterwards.
        x: inputs (N, ...).
        output: one of :data:`OUTPUTS`; ``"loss"`` needs ``y`` and gives J = ∇_x L_n (C = 1).
        y: labels (N,), for ``output="loss"``.
        loss: the per-sample loss of ``output="loss"`` (:mod:`ddscope.metrics.losses`).
        chunk_size: samples per pass (bounds memory); ``None`` sizes it from memory
            (:func:`auto_chunk_size`).
        num_iters, tol: for the iterative methods.
        generator: start vectors of the iterative methods (``None``: seeded 0).
        verify: check sample 0 against its Jacobian by plain autograd (:func:`probe_mismatch`):
            a fast path that disagrees is dropped for the plain batched one; a disagreement
            that remains raises ValueError. One sample's C backward passes.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; allowed: {', '.join(METHODS)}")
    if output == "loss" and y is None:
        raise ValueError("output='loss' needs the labels y")
    generator = default_generator(generator)
    spec, fro = [], []
    with eval_mode(model):
        if (method == "auto" or chunk_size is None) and len(x) > 0:
            with torch.no_grad():
                C = output_fn(model, output, None if y is None else y[:1], loss)(x[:1]).shape[1]
            if method == "auto":
                small = C <= AUTO_MAX_CLASSES or C * x[0].numel() <= AUTO_MAX_CD
                method = "exact" if small else "lanczos"
            if chunk_size is None:
                # The iterative methods hold num_iters vectors of min(C, d) per sample instead of C rows.
                rows = C if method == "exact" else min(num_iters, C)
                chunk_size = auto_chunk_size(model, x, rows)
        chunk_size = chunk_size or MIN_CHUNK
        stem = linear_stem(model) if method == "exact" and _stem else None
        if stem is not None:
            pre, first, rest = stem
            with torch.no_grad():
                stem_factor = torch.linalg.qr(first.weight.T).R.T  # Rᵀ (h, h), Wᵀ = Q R
        for start in range(0, len(x), chunk_size):
            xc = x[start : start + chunk_size]
            yc = None if y is None else y[start : start + chunk_size]
            if stem is not None:  # reverse passes stop at the first layer's output z (B, h)
                with torch.no_grad():
                    z = first(pre(xc))
                s, f = _exact_chunk(output_fn(rest, output, yc, loss), z, stem_factor)
            elif method == "exact":
                s, f = _exact_chunk(output_fn(model, output, yc, loss), xc)
            else:
                s, f = _iterative_chunk(output_fn(model, output, yc, loss), xc, method, num_iters, tol, generator)
            spec.append(s)
            fro.append(f)
    if not spec:
        empty = x.new_zeros(0)
        return JacNorms(empty, empty)
    norms = JacNorms(torch.cat(spec), torch.cat(fro))
    if verify:
        y0 = None if y is None else y[:1]
        with eval_mode(model):
            why = probe_mismatch(output_fn(model, output, y0, loss), x[:1], norms, method)
        if why is not None and stem is not None:  # the fast path is not this model's function: the plain one
            return jacobian_norms(model, x, output=output, y=y, method=method, chunk_size=chunk_size, num_iters=num_iters,
                                  tol=tol, generator=generator, loss=loss, verify=verify, _stem=False)
        if why is not None:
            raise ValueError(f"jacobian_norms: the batched Jacobian disagrees with plain autograd on sample 0 ({why})")
    return norms


# Relative agreement the sample-0 probe asks for, by dtype: the batched and the plain Jacobian
# are the same products in another order, so they agree to a few hundred ulps of ‖J‖.
PROBE_RTOL = {torch.float64: 1e-8, torch.float32: 2e-3, torch.float16: 5e-2, torch.bfloat16: 5e-2}


def probe_mismatch(fn: Callable[[Tensor], Tensor], x0: Tensor, norms: JacNorms, method: str) -> str | None:
    """``None`` when sample 0's batched norms match its Jacobian by plain autograd, else why not.

    J(x₀) (C × d) is formed row by row with ``torch.autograd.grad`` on the model's own call
    (no torch.func transform, no fast path), and its spectral and Frobenius norms compared with
    the batched values within :data:`PROBE_RTOL`. Power iteration approaches ‖J‖₂ from below, so
    only its overshoot is checked."""
    rows = _rows_autograd(fn, x0)  # (C, 1, ...)
    J = rows.reshape(rows.shape[0], -1).to(torch.float64)
    spec = float(torch.linalg.matrix_norm(J, 2)) if J.numel() else 0.0
    fro = float(J.norm())
    rtol = PROBE_RTOL.get(x0.dtype, 2e-3)
    scale = max(fro, 1e-30)
    got_s, got_f = float(norms.spec[0]), float(norms.fro[0])
    if abs(got_f - fro) > rtol * scale:
        return f"‖J‖_F {got_f:.6g} batched vs {fro:.6g} plain"
    if method == "power" or method == "lanczos":
        ok = got_s <= spec + rtol * scale
    else:
        ok = abs(got_s - spec) <= rtol * scale
    if not ok:
        return f"‖J‖₂ {got_s:.6g} batched vs {spec:.6g} plain"
    return None


def aggregate(norms: JacNorms, weights: Tensor | None = None) -> dict[str, float]:
    """Summary statistics of per-sample Jacobian norms.

    With weights w_n normalised to sum 1 (uniform 1/N when ``None``; trapezoid weights for
    path integrals): ``jac_spec_rms`` = (Σ w_n ‖J_n‖₂²)^½, ``jac_spec_mean`` = Σ w_n ‖J_n‖₂,
    ``jac_spec_max`` = max_n ‖J_n‖₂ (unweighted), ``jac_fro_rms`` = (Σ w_n ‖J_n‖_F²)^½.
    """
    spec, fro = norms.spec, norms.fro
    if spec.numel() == 0:
        raise ValueError("aggregate needs at least one sample")
    w = torch.full_like(spec, 1.0 / spec.numel()) if weights is None else weights.to(spec) / weights.sum()
    return {
        "jac_spec_rms": float((w * spec.square()).sum().sqrt()),
        "jac_spec_mean": float((w * spec).sum()),
        "jac_spec_max": float(spec.max()),
        "jac_fro_rms": float((w * fro.square()).sum().sqrt()),
    }


def rms_standard_error(values: Tensor) -> float:
    """Standard error of ((1/m) Σ v_i)^½ estimated from m i.i.d. draws v_i (squared norms, or
    one path's integral of them): s/√m of the mean, through the square root by the delta method
    (se(√μ) ≈ se(μ) / (2√μ)); NaN for fewer than two draws, 0 when every draw is 0."""
    v = values.detach().to(torch.float64).flatten()
    if v.numel() < 2:
        return float("nan")
    mean = float(v.mean())
    if mean <= 0:
        return 0.0
    return float(v.std(unbiased=True)) / v.numel() ** 0.5 / (2 * mean**0.5)


def path_pairs(y: Tensor, n_pairs: int, *, same_class: bool, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """Random index pairs (i, j), i ≠ j, each drawn uniformly (same label when ``same_class``).

    Returns two Long tensors (n_pairs,) on ``y``'s device.
    """
    g = default_generator(generator)
    labels = y.detach().to(g.device)
    N = labels.numel()
    if not same_class:
        if N < 2:
            raise ValueError("path pairs need at least two samples")
        i = torch.randint(0, N, (n_pairs,), generator=g, device=g.device)
        j = (i + torch.randint(1, N, (n_pairs,), generator=g, device=g.device)) % N  # uniform over j ≠ i
        return i.to(y.device), j.to(y.device)
    order = torch.argsort(labels, stable=True)  # indices grouped by class
    classes, counts = torch.unique_consecutive(labels[order], return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    eligible = (counts >= 2)[torch.searchsorted(classes, labels)]  # sample's class has a partner
    pool = torch.nonzero(eligible).flatten()
    if pool.numel() == 0:
        raise ValueError("same-class path pairs need a class with at least two samples")
    i = pool[torch.randint(0, pool.numel(), (n_pairs,), generator=g, device=g.device)]
    cls = torch.searchsorted(classes, labels[i])
    rank = torch.argsort(order)[i] - starts[cls]  # position of i within its class block
    r = (torch.rand(n_pairs, generator=g, device=g.device) * (counts[cls] - 1)).long()
    r = r + (r >= rank).long()  # uniform over the class's other members
    j = order[starts[cls] + r]
    return i.to(y.device), j.to(y.device)


def _segments(x: Tensor, i: Tensor, j: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """K points on each segment x_i → x_j (endpoints included) and trapezoid weights."""
    if k < 2:
        raise ValueError(f"a path needs k >= 2 points, got {k}")
    t = torch.linspace(0, 1, k, dtype=x.dtype, device=x.device).view(1, k, *([1] * (x.dim() - 1)))
    points = (1 - t) * x[i][:, None] + t * x[j][:, None]  # (n_pairs, k, ...)
    w = torch.full((k,), 1.0 / (k - 1), dtype=x.dtype, device=x.device)
    w[0] = w[-1] = 0.5 / (k - 1)  # trapezoid rule on [0, 1]: sums to 1
    weights = (w / len(i)).repeat(len(i))  # each segment sums to 1/n_pairs
    return points.reshape(len(i) * k, *x.shape[1:]), weights


def path_points(
    x: Tensor, y: Tensor, *, n_pairs: int, k: int, same_class: bool, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Points on segments between random training pairs, with trapezoid weights.

    Point m of pair p is (1 − t_m) x_i + t_m x_j with t_m = m/(k−1); its weight is
    h/n_pairs (h = 1/(k−1)) inside the segment and h/(2·n_pairs) at the endpoints, so
    Σ_m w_m g(point_m) is the trapezoid rule for the mean over pairs of ∫₀¹ g dt.

    Returns:
        points (n_pairs·k, ...) grouped by pair, weights (n_pairs·k,) summing to 1.
    """
    i, j = path_pairs(y, n_pairs, same_class=same_class, generator=generator)
    return _segments(x, i, j, k)


def path_jacobian_norms(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    n_pairs: int = OPTIONS["path_pairs"],
    k: int = OPTIONS["path_k"],
    same_class: bool = True,
    generator: torch.Generator | None = None,
    output: str = "logits",
    witnesses: list | None = None,
    **kw,
) -> dict[str, float]:
    """:func:`aggregate` of the Jacobian norms along training-pair paths (trapezoid rule).

    ``jac_spec_rms`` = ( (1/P) Σ_p ∫₀¹ ‖J((1−t)x_i + t x_j)‖₂² dt )^½ etc. For
    ``output="loss"`` every point of a segment is labelled y_i (the label of both ends when
    ``same_class``). Extra keyword arguments go to :func:`jacobian_norms`. ``witnesses``: a
    list that gets :func:`top_points` of the path points (for ``lip_lower``'s starts).
    """
    i, j = path_pairs(y, n_pairs, same_class=same_class, generator=generator)
    points, weights = _segments(x, i, j, k)
    labels = y[i].repeat_interleave(k) if output == "loss" else None
    norms = jacobian_norms(model, points, output=output, y=labels, generator=generator, **kw)
    if witnesses is not None:
        witnesses.extend(top_points(norms.spec, points))
    out = aggregate(norms, weights)
    # The pairs are random: each pair's trapezoid integral of ‖J‖₂² is one draw (n_pairs of them)
    per_pair = (weights * norms.spec.square()).reshape(len(i), k).sum(1) * len(i)
    out["jac_spec_rms_se"] = rms_standard_error(per_pair)
    return out


def top_points(spec: Tensor, points: Tensor, k: int = 4) -> list[tuple[float, Tensor]]:
    """The k points with the largest ‖J‖₂, as (value, point) pairs."""
    top = spec.topk(min(k, len(spec))).indices
    return [(float(spec[t]), points[t]) for t in top.tolist()]
