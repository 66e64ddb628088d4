"""The catalogue: every fact about what ddscope measures, trains and loads, stated once.

The bottom layer (no torch, no other ddscope module): config validation, the metric suite, the
training plan, ``extend``, status, the report's tables, coverage, evidence and ranking all read
these tables, so adding a metric group, a model family or a data source is one row here plus its
code and its test (docs/design.md §5 walks through it).

- :data:`GROUPS` — the metric groups, in the order the suite runs them (the random stream, hence
  every sampled value, depends on it): the function that computes the group (an import path,
  resolved when the group runs), the keys it writes, the key that shows it ran, what it
  measures, its default schedule, what data it needs, and its measures — the keys the report's
  evidence table and ranking compare with the test error, with their words and direction.
- :data:`OPTIONS` — the default of every option of :func:`ddscope.metrics.measure`; the
  ``[metrics]`` config keys and the metric functions' own defaults are read from it.
- :data:`FAMILIES` — the model families; :data:`SOURCES` — the data sources.
- :data:`ID_FREE` — the config sections left out of a trial's id.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

# ----------------------------------------------------------------------------- splits

# The data splits a trial measures on, and the places between training points the "paths" group
# writes as if they were splits (``jac_spec_rms/path_same``). The words finish "‖∂f/∂x‖₂ ...".
SPLITS = ("train", "train_clean", "train_noisy", "test", "val")
PATHS = ("path_same", "path_any")
WHERE = {
    "train": "at training points",
    "train_clean": "at clean-label training points",
    "train_noisy": "at noisy-label training points",
    "test": "at test points",
    "val": "at validation points",
    "path_same": "on paths between same-class training points",
    "path_any": "on paths between any two training points",
}
SPLIT = "<split>"  # the placeholder of a measure's key for every split and path
SAMPLER = "<sampler>"  # ... and for the label of every neighbourhood sampler a store holds


# ----------------------------------------------------------------------------- metric groups


@dataclass(frozen=True)
class Measure:
    """A stored key (``SPLIT`` stands for each split and path) that the report compares with the
    test error: ``words`` describe it (``{where}`` becomes the split's words), and
    ``lower_is_smoother`` says which way is the smoother / simpler function."""

    key: str
    words: str
    lower_is_smoother: bool = True

    def expand(self) -> list[tuple[str, str]]:
        """``[(key, words)]``: one per split and path for a ``<split>`` key, else the key itself
        (a ``<sampler>`` stays: :func:`measures` fills it in from the keys a store holds)."""
        if SPLIT not in self.key:
            return [(self.key, self.words)]
        return [(self.key.replace(SPLIT, s), self.words.replace("{where}", WHERE[s])) for s in (*SPLITS, *PATHS)]


@dataclass(frozen=True)
class Group:
    """One metric group. ``compute`` is ``"package.module:function"``, a function
    ``(ddscope.metrics.context.Context) -> {key: float}``; ``schedule`` is ``"every"`` metric
    epoch or the ``"sparse"`` schedule by default (``metrics.groups`` / ``metrics.sparse_groups``),
    or ``"off"`` (opt-in); ``needs`` names what it cannot run without: ``"train"`` (the training
    split) and ``"init_state"`` (θ⁰)."""

    name: str
    compute: str
    keys: str  # the keys it writes (<split>: every measured split; <layer>: a module path)
    probe: str  # a key every run of the group writes, or the head of such keys (vol_jac_spec_rms/...): it ran
    about: str  # what it measures, in words
    schedule: str = "off"
    needs: tuple[str, ...] = ()
    measures: tuple[Measure, ...] = ()


_G = "ddscope.metrics.groups:"
_GROUPS = (
    Group("jacobian", _G + "compute_jacobian",
          "jac_spec_rms/<split>, jac_spec_mean/<split>, jac_spec_max/<split>, jac_fro_rms/<split>, "
          "jac_spec_rms_se/<split> (where jac_samples subsamples the split)",
          "jac_spec_rms/train", "input-Jacobian norms on the data splits", schedule="every",
          measures=(Measure("jac_spec_rms/<split>", "‖∂f/∂x‖₂ (rms) {where}"),
                    Measure("jac_spec_mean/<split>", "mean ‖∂f/∂x‖₂ {where}"),
                    Measure("jac_spec_max/<split>", "max ‖∂f/∂x‖₂ {where}"),
                    Measure("jac_fro_rms/<split>", "‖∂f/∂x‖_F (rms) {where}"))),
    Group("paths", _G + "compute_paths",
          "jac_spec_rms/<path>, jac_spec_mean/<path>, jac_spec_max/<path>, jac_fro_rms/<path> for <path> = path_same, "
          "path_any, and jac_spec_rms_se/<path> (the random pairs' standard error)",
          "jac_spec_rms/path_same", "Jacobian norms on paths between training points", schedule="sparse",
          needs=("train",)),  # its measures are the jacobian group's, on the paths
    Group("lipschitz", _G + "compute_lipschitz",
          "lip_upper, lip_upper_lanczos, lip_upper_tight, lip_upper_tight_eclipse (1: ECLipsE-Fast), "
          "lip_layer/<layer>, lip_layer_lanczos/<layer> (conv and pools), lip_lower, lip_lower_dist (with data)",
          "lip_upper", "the Lipschitz bracket: certified lower and upper bounds and the per-layer factors",
          schedule="every",
          measures=(Measure("lip_lower", "certified lower bound on Lip(f): largest ‖∂f/∂x‖₂ found by ascent"),
                    Measure("lip_upper_tight", "certified upper bound on Lip(f): ECLipsE-Fast (MLPs), else ∏ ‖W_l‖₂"),
                    Measure("lip_upper", "Lipschitz upper bound ∏ ‖W_l‖₂ (certified layer norms)"),
                    Measure("lip_upper_lanczos", "∏ ‖W_l‖₂ with Lanczos estimates of the conv norms (not certified)"),
                    Measure("lip_gap", "bracket gap lip_upper_tight / lip_lower (the report derives it)"))),
    Group("hessian", _G + "compute_hessian",
          "hess_trace, hess_trace_exact (1: verified tr(GGN) or dense, 0: an estimate), hess_trace_se (its standard "
          "error, 0 when exact), hess_trace/<layer> (exact only), hess_top", "hess_trace",
          "trace and top eigenvalue of the training loss's Hessian", schedule="sparse", needs=("train",),
          measures=(Measure("hess_trace", "tr H, loss Hessian in θ (exact where hess_trace_exact = 1, else an "
                                          "estimate ± hess_trace_se)"),
                    Measure("hess_top", "λ_max(H)"))),
    Group("theorem2", _G + "compute_theorem2",
          "thm2_lhs, thm2_mid, thm2_rhs, thm2_rhs_se (0 when tr H is exact), thm2_lhs_le_mid, thm2_mid_le_rhs (1: "
          "the inequality held), input_grad_sq_mean, theta1_norm, x_min, loss_max",
          "thm2_mid", "the Theorem 2 terms", schedule="sparse", needs=("train",),
          measures=(Measure("thm2_lhs", "Theorem 2 LHS"),
                    Measure("thm2_mid", "Theorem 2 MID: mean ‖∇_θ L_n‖²"),
                    Measure("thm2_rhs", "Theorem 2 RHS: 2 L_max tr H"),
                    Measure("input_grad_sq_mean", "mean ‖∇_x L_n‖²"))),
    Group("spectrum", _G + "compute_spectrum",
          "hess_eig/<i> (top-k, 1 = largest), hess_slq_node/<probe>.<step>, hess_slq_weight/<probe>.<step>",
          "hess_eig/1", "top eigenvalues and spectral density (SLQ) of the training loss's Hessian",
          needs=("train",)),  # hess_eig/1 is hess_top again; the density is drawn, not ranked
    Group("complexity", _G + "compute_complexity",
          "cm_params, cm_spec_prod, cm_spec_sum, cm_fro_prod, cm_fro_sum, cm_bft, cm_dist_fro, cm_dist_spec "
          "(with θ⁰), cm_path (ReLU nets), cm_fisher_rao, cm_margin, cm_inv_margin, cm_spec_margin, "
          "cm_fro_margin, cm_path_margin, cm_bft_margin", "cm_spec_prod",
          "the norm, margin and Fisher–Rao measures of the generalisation-measure studies", needs=("train",),
          measures=(Measure("cm_params", "number of parameters"),
                    Measure("cm_spec_prod", "∏ ‖W_l‖₂²"),
                    Measure("cm_spec_sum", "Σ ‖W_l‖₂²"),
                    Measure("cm_fro_prod", "∏ ‖W_l‖_F²"),
                    Measure("cm_fro_sum", "Σ ‖W_l‖_F² (parameter norm)"),
                    Measure("cm_dist_fro", "Σ ‖W_l − W⁰_l‖_F²"),
                    Measure("cm_dist_spec", "Σ ‖W_l − W⁰_l‖₂²"),
                    Measure("cm_bft", "Bartlett–Foster–Telgarsky spectral complexity"),
                    Measure("cm_path", "ℓ₂ path norm"),
                    Measure("cm_fisher_rao", "Fisher–Rao norm"),
                    Measure("cm_inv_margin", "1 / γ² (γ: 10th-percentile output margin)"),
                    Measure("cm_spec_margin", "∏ ‖W_l‖₂² / γ²"),
                    Measure("cm_fro_margin", "∏ ‖W_l‖_F² / γ²"),
                    Measure("cm_path_margin", "path norm / γ²"),
                    Measure("cm_bft_margin", "spectral complexity · ‖X‖_F / (γ N)"))),
    Group("sharpness", _G + "compute_sharpness",
          "cm_pacbayes_sigma, cm_pacbayes_flat, cm_pacbayes_mag_sigma, cm_pacbayes_mag_flat, "
          "cm_pacbayes_init (with θ⁰)", "cm_pacbayes_flat",
          "PAC-Bayes sharpness: the Gaussian weight noise the net tolerates", needs=("train",),
          measures=(Measure("cm_pacbayes_flat", "PAC-Bayes sharpness 1 / σ'²"),
                    Measure("cm_pacbayes_init", "PAC-Bayes bound ‖θ − θ⁰‖² / 4σ'² + log(N/σ') + 10"),
                    Measure("cm_pacbayes_mag_flat", "magnitude-aware PAC-Bayes sharpness 1 / σ'²"))),
    Group("volume", _G + "compute_volume",
          "vol_jac_spec_rms/<split>/<sampler>, vol_jac_fro_rms/<split>/<sampler>, vol_loss/<split>/<sampler>, "
          "vol_acc/<split>/<sampler>, and along paths vol_tangent_jac/<split>/<sampler>, "
          "vol_tangent_hess/<split>/<sampler> (<split>: train_clean, train_noisy, or train without label noise; "
          "<sampler>: the label of each metrics.vol_samplers entry, e.g. shift1, shift_path1-4)",
          "vol_jac_spec_rms", "sharpness over volumes around training points, clean and noisy labels apart",
          needs=("train",),
          measures=(Measure("vol_jac_spec_rms/<split>/<sampler>",
                            "‖∂g/∂x‖₂ (rms) over {sampler} neighbourhoods, {where}"),
                    Measure("vol_jac_fro_rms/<split>/<sampler>",
                            "‖∂g/∂x‖_F (rms) over {sampler} neighbourhoods, {where}"),
                    Measure("vol_loss/<split>/<sampler>", "mean loss over {sampler} neighbourhoods, {where}"),
                    Measure("vol_acc/<split>/<sampler>", "fraction of {sampler} neighbourhoods that predict the "
                            "training label, {where}", lower_is_smoother=False),
                    Measure("vol_tangent_jac/<split>/<sampler>", "derivative of g along {sampler} paths (finite "
                            "differences), {where}"),
                    Measure("vol_tangent_hess/<split>/<sampler>", "second derivative of g along {sampler} paths "
                            "(finite differences), {where}"))),
    Group("distance", _G + "compute_distance", "dist_abs/<layer>, dist_rel/<layer>, dist_abs/all, dist_rel/all",
          "dist_rel/all", "distance from initialisation", schedule="every", needs=("init_state",),
          measures=(Measure("dist_rel/all", "relative distance from initialisation"),
                    Measure("dist_abs/all", "distance from initialisation"))),
)
GROUPS: dict[str, Group] = {g.name: g for g in _GROUPS}
METRIC_GROUPS = tuple(GROUPS)  # the names, in run order (a snapshot: code that must see added rows reads GROUPS)


def scheduled(schedule: str) -> tuple[str, ...]:
    """The groups whose default schedule is ``schedule`` ("every", "sparse"), in run order: the
    defaults of ``metrics.groups`` and ``metrics.sparse_groups``."""
    return tuple(name for name, g in GROUPS.items() if g.schedule == schedule)


def _rows(columns=None):
    """(key, words, lower_is_smoother) of every measure, in catalogue order; a ``<sampler>`` key
    once per sampler label among ``columns`` (none without columns)."""
    for g in GROUPS.values():
        for m in g.measures:
            for key, words in m.expand():
                if SAMPLER not in key:
                    yield key, words, m.lower_is_smoother
                    continue
                head, _, tail = key.partition(SAMPLER)
                for col in (() if columns is None else columns):
                    col = str(col)
                    label = col[len(head): len(col) - len(tail)] if col.startswith(head) and col.endswith(tail) else ""
                    if label and "/" not in label and len(col) > len(head) + len(tail):
                        yield col, words.replace("{sampler}", label), m.lower_is_smoother


def measures(columns=None) -> dict[str, str]:
    """Every measure key the report compares with the test error -> its words, in catalogue order
    (``<split>`` expanded to every split and path; ``<sampler>`` to the sampler labels found
    among ``columns``, e.g. a final table's)."""
    return {key: words for key, words, _ in _rows(columns)}


def smoother_direction(columns=None) -> dict[str, bool]:
    """Measure key -> ``lower_is_smoother``."""
    return {key: lower for key, _, lower in _rows(columns)}


# ----------------------------------------------------------------------------- options

# The [metrics] config keys that are not options of measure(): they decide when and on which
# splits the groups run (the trial's schedule), not how a group measures.
SCHEDULE_KEYS = ("groups", "sparse_groups", "splits", "epochs", "num_log_epochs", "num_sparse_epochs",
                 "num_eval_epochs")

# The options of ddscope.metrics.measure and their defaults. The [metrics] config keys of the same
# name take their defaults from here, as do the metric functions' own keyword arguments (a test
# compares the signatures), so a default is changed here and nowhere else.
OPTIONS: dict[str, object] = {
    "output": "logits",  # Jacobian output map: logits, softmax, log_softmax, loss
    "jac_method": "auto",  # exact / lanczos / power / auto (see jacobian_norms)
    "jac_samples": None,  # points per split for "jacobian" (None: all; the config's 0)
    "jac_iters": 50,  # Lanczos / power steps for the iterative Jacobian methods
    "chunk_size": None,  # samples per Jacobian pass (None: sized from memory, see auto_chunk_size)
    "path_pairs": 100,  # pairs per path family
    "path_k": 8,  # points per segment, endpoints included
    "lip_iters": 100,  # Lanczos steps per conv / pooling layer
    "lip_lower_starts": 8,  # ascent chains of lip_lower, from the largest measured ‖J‖₂
    "lip_lower_steps": 30,  # ascent steps per chain (each 9 Jacobians per chain)
    "hess_samples": 1000,  # training samples for "hessian" and "theorem2" (None: all; the config's 0)
    # auto (exact tr(GGN) where it equals tr(H), else hutchpp) / ggn / hutchpp / hutchinson / exact
    "hess_method": "auto",
    "hess_matvecs": 60,  # Hessian-vector products for the trace
    "lanczos_iters": 30,  # Lanczos steps for the top Hessian eigenvalue
    "spec_top_k": 5,  # eigenvalues of group "spectrum"
    "spec_probes": 3,  # SLQ probes (each spec_steps Hessian-vector products, batched)
    "spec_steps": 40,  # Lanczos steps per probe (quadrature nodes)
    "cm_samples": None,  # training points of "complexity" (margins, Fisher–Rao; None: all)
    "sharp_samples": 1000,  # training points of "sharpness" (each bisection step evaluates sharp_draws nets)
    "sharp_draws": 10,  # Monte-Carlo perturbations per bisection step (Jiang et al.: 10)
    "sharp_depth": 15,  # bisection steps on σ (Jiang et al.: 15)
    "hess_batch": None,  # samples per Hessian-vector-product batch (None: sized from memory, auto_hess_batch)
    "hess_vmap": 8,  # probes per vmapped HVP pass (memory ~ hess_vmap x one batch's HVP)
    "grad_chunk": 64,  # samples per per-sample-gradient pass in theorem2 (memory ~ grad_chunk x #params)
    "loss": "cross_entropy",  # the loss of hessian, theorem2 and output="loss": cross_entropy, mse or a callable
    "lip_constants": None,  # declared Lipschitz constants {node, module path or op name: L} (lipschitz_upper)
    # group "volume": neighbourhood samplers ('family@strength' a ball, 'family@s1,s2,...' a path;
    # ddscope.metrics.neighbourhood), balls or paths per point, training points per split, output map
    "vol_samplers": ("shift@1", "shift@1,2,3,4"),
    "vol_k": 4,
    "vol_samples": 200,
    "vol_output": "loss",
}
JAC_OUTPUTS = ("logits", "softmax", "log_softmax", "loss")
# optim.loss: the training loss of a trial, and of every metric that takes a loss (Theorem 2, the
# Hessian, output = "loss", the volume group): cross-entropy (with optim.label_smoothing) or the
# squared error to one-hot targets (Belkin et al. 2019; Nakkiran et al. 2020, appendix).
TRAIN_LOSSES = ("cross_entropy", "mse")
HESS_METHODS = ("auto", "ggn", "hutchpp", "hutchinson")  # the config's; measure() also takes "exact"


# ----------------------------------------------------------------------------- models and data


@dataclass(frozen=True)
class Family:
    """A model family: ``build`` is ``"package.module:function"``, a constructor
    ``(width, input_shape, num_classes, *, depth, batchnorm) -> nn.Module``; ``stacks``: its
    training step runs under ``vmap`` (tests/train/test_stacked.py), so seeds and noise draws of
    one width train as one stacked group; ``packs``: widths of one seed train packed side by side."""

    name: str
    build: str
    stacks: bool = True
    packs: bool = False


FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("mlp", "ddscope.models.mlp:mlp", packs=True),
    Family("cnn1d", "ddscope.models.cnn1d:cnn1d"),
    Family("convnet", "ddscope.models.convnet:convnet"),
    Family("mcnn", "ddscope.models.mcnn:mcnn"),
    Family("resnet18", "ddscope.models.resnet:resnet18"),
    Family("vit", "ddscope.models.vit:vit"),
)}
MODEL_NAMES = tuple(FAMILIES)


@dataclass(frozen=True)
class Source:
    """A data source: ``load`` is ``"package.module:function"``, a loader ``(DataConfig) -> Dataset``."""

    name: str
    load: str
    about: str


SOURCES: dict[str, Source] = {s.name: s for s in (
    Source("mnist1d", "ddscope.data.mnist1d:load_config", "MNIST-1D generated offline by the mnist1d package"),
    Source("digits", "ddscope.data.digits:load_config", "scikit-learn's 8×8 digits, embedded"),
    Source("mnist", "ddscope.data.idx:load_mnist", "MNIST from idx files under data.root"),
    Source("fashion_mnist", "ddscope.data.idx:load_fashion_mnist", "Fashion-MNIST from idx files under data.root"),
    Source("cifar10", "ddscope.data.cifar:load_cifar10", "CIFAR-10 from its Python pickles under data.root"),
    Source("cifar100", "ddscope.data.cifar:load_cifar100", "CIFAR-100 from its Python pickles under data.root"),
    Source("npz", "ddscope.data.user:load_npz", "your arrays in one .npz file (data.path)"),
)}
DATA_NAMES = tuple(SOURCES)
# The data.name of a trial recorded by ddscope.Tracker from the user's own tensors: nothing can
# load it again. (It keeps the form it had when Tracker ids were first published.)
TRACKED = "ddscope.api:tracked_tensors"


# ----------------------------------------------------------------------------- trial ids

# Config sections (or top-level keys) that change where and how often a trial is saved or logged,
# never its numbers: left out of the trial id, never a grid axis, never a condition in tables, free
# to differ when a run directory's sweep is extended.
ID_FREE = ("device", "checkpoint", "log")


# The config keys every table of trials (and every TensorBoard / MLflow run) shows as columns,
# whether or not the sweep varies them.
BASE_AXES = ("model.name", "model.width", "data.name", "data.noise", "seed")


def is_id_free(key: str) -> bool:
    """Whether the dotted config key ``key`` is outside the trial id (:data:`ID_FREE`)."""
    return any(key == s or key.startswith(s + ".") for s in ID_FREE)


def resolve(spec: str):
    """The object ``"package.module:name"`` names (a row's ``compute``, ``build`` or ``load``)."""
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


__all__ = ["BASE_AXES", "DATA_NAMES", "FAMILIES", "GROUPS", "HESS_METHODS", "ID_FREE", "JAC_OUTPUTS", "METRIC_GROUPS",
           "MODEL_NAMES", "OPTIONS", "PATHS", "SCHEDULE_KEYS", "SOURCES", "SPLITS", "TRACKED", "TRAIN_LOSSES", "WHERE", "Family", "Group", "Measure",
           "Source", "is_id_free", "measures", "resolve", "scheduled", "smoother_direction"]
