"""Which trials of a sweep train together, decided from what each group trainer supports.

Two kinds of group (see :mod:`.packed` and :mod:`.stacked`):

- ``"packed"``: ``mlp`` trials identical except for ``model.width``. Same seed and data config,
  so they share data, labels and the batch order; widths are packed side by side.
- ``"stacked"``: trials of one family and width identical except for ``seed``, ``data.seed``,
  ``data.noise`` and ``data.noise_kind``; each member has its own batches, labels and
  initialisation, the group is one ``vmap`` over stacked parameters.

:data:`SUPPORTS` declares, for every config key and each kind, whether members may differ in it
(``VARIES``), must agree on it (``SAME``: any value, the group step honours it) or must hold one
of the listed values. A key missing from a kind's table is not supported: trials that set it
train alone: a key is declared only by naming it, in :data:`SAME_KEYS` or a kind's own rules, so a
new setting trains alone until someone decides how the group trainers treat it
(``tests/train/test_group_plan.py`` fails until then). Everything else runs alone
(``"single"``). :func:`group_trials` first forms packed groups, then stacks what is left, splits
groups larger than ``max_group`` into parts of balanced cost, and splits further while there are
fewer groups than ``workers`` so every worker gets one.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from ..catalogue import FAMILIES
from ..config import MAX_GROUP, TrialConfig, all_keys, get_key

VARIES = "varies"  # members may differ
SAME = "same"  # members must agree; every value is supported

# The families whose training step runs under vmap (tests/train/test_stacked.py), BatchNorm
# included: running statistics are updated per member in the stacked buffers; and those whose
# widths the packed trainer lays side by side (the catalogue's ``stacks`` / ``packs``).
STACKED_FAMILIES = tuple(name for name, f in FAMILIES.items() if f.stacks)
PACKED_FAMILIES = tuple(name for name, f in FAMILIES.items() if f.packs)

# Settings both group trainers honour whatever their value, provided the members agree: the
# group step reads them exactly as the single-trial step does. Named one by one: a key that is
# not here and not in a kind's own rules is not supported (its trials train alone).
SAME_KEYS = (
    "data.name", "data.root", "data.num_samples", "data.train_split", "data.n_train", "data.subset", "data.val_size",
    "data.noise", "data.noise_kind", "data.augment", "data.seed", "data.path", "data.options",
    "model.name", "model.width", "model.depth", "model.batchnorm", "model.options",
    "optim.name", "optim.lr", "optim.momentum", "optim.weight_decay", "optim.batch_size", "optim.epochs",
    "optim.warmup_epochs", "optim.amp", "optim.loss", "optim.label_smoothing",
    "metrics.groups", "metrics.sparse_groups", "metrics.splits", "metrics.epochs", "metrics.num_log_epochs",
    "metrics.num_sparse_epochs", "metrics.num_eval_epochs", "metrics.output", "metrics.jac_samples",
    "metrics.path_pairs", "metrics.path_k", "metrics.hess_samples", "metrics.hess_matvecs", "metrics.lanczos_iters",
    "metrics.hess_method", "metrics.lip_constants", "metrics.vol_samplers", "metrics.vol_k", "metrics.vol_samples",
    "metrics.vol_output",
    "checkpoint.epochs", "checkpoint.every_epochs", "checkpoint.every_minutes",
    "log.tensorboard", "log.mlflow", "log.mlflow_experiment",
    "seed", "device",
)


def _table(varies: tuple[str, ...], only: dict[str, tuple]) -> dict[str, object]:
    """A kind's rules: its own (``varies``, ``only``) over :data:`SAME_KEYS`; only named keys."""
    named = dict.fromkeys((*SAME_KEYS, *varies, *only))
    return {key: VARIES if key in varies else only.get(key, SAME) for key in named}


SUPPORTS: dict[str, dict[str, object]] = {
    # Packed: one shared batch order (seed) and one data set; only the width differs. The
    # packed step is written for Flatten, (Linear, ReLU) x depth, Linear (model.batchnorm is
    # not used by the mlp family).
    # (its hand-written backward is the plain cross-entropy's)
    "packed": _table(("model.width",), {"model.name": PACKED_FAMILIES, "optim.loss": ("cross_entropy",),
                                        "optim.label_smoothing": (0.0,)}),
    # Stacked: every member draws its own initialisation, batches and labels.
    "stacked": _table(("seed", "data.seed", "data.noise", "data.noise_kind"), {"model.name": STACKED_FAMILIES}),
}
KINDS = tuple(SUPPORTS)


def supports(kind: str, configs: Sequence[TrialConfig]) -> bool:
    """Whether the ``kind`` trainer can train ``configs`` (>= 2 trials) as one group."""
    table = SUPPORTS[kind]
    if len(configs) < 2 or set(all_keys()) - set(table):  # a key the trainer was never told about
        return False
    for key, rule in table.items():
        values = [get_key(c, key) for c in configs]
        if rule != VARIES and len({json.dumps(v) for v in values}) > 1:
            return False
        if isinstance(rule, tuple) and values[0] not in rule:
            return False
    return True


def _key(cfg: TrialConfig, kind: str) -> str | None:
    """The settings members of a ``kind`` group must share (canonical JSON), or None when a
    setting of ``cfg`` is not one the trainer supports."""
    table = SUPPORTS[kind]
    if set(all_keys()) - set(table):
        return None
    shared = {}
    for key, rule in table.items():
        value = get_key(cfg, key)
        if isinstance(rule, tuple) and value not in rule:
            return None
        if rule != VARIES:
            shared[key] = value
    return json.dumps(shared, sort_keys=True, separators=(",", ":"))


def packable(configs: Sequence[TrialConfig]) -> bool:
    """True if ``configs`` can train as one packed group (>= 2 ``mlp`` trials, only width varies)."""
    return supports("packed", configs)


def stackable(configs: Sequence[TrialConfig]) -> bool:
    """True if ``configs`` can train as one stacked group (>= 2 trials, only seed/noise vary)."""
    return supports("stacked", configs)


def group_kind(configs: Sequence[TrialConfig]) -> str:
    """``"single"`` (one trial), ``"packed"`` or ``"stacked"``; ValueError if none applies."""
    if len(configs) == 1:
        return "single"
    for kind in KINDS:
        if supports(kind, configs):
            return kind
    raise ValueError("these trials cannot train together: they differ in more than the width (mlp) or the seed/noise, "
                     "or set something a group trainer does not support (ddscope.train.plan.SUPPORTS)")


def trial_cost(cfg: TrialConfig) -> float:
    """Relative training cost for load balancing: ~ width² (the k×k layers) plus a linear term
    for the input and output layers, times the epochs."""
    k = cfg.model.width
    return float((k * k + 64 * k) * cfg.optim.epochs)


def _balanced_split(group: list[int], parts: int, cost: list[float], capacity: int) -> list[list[int]]:
    """Split indices into ``parts`` lists of at most ``capacity`` and similar total cost
    (longest processing time first, into the least-loaded list with room); each list keeps the
    original order. Needs ``parts * capacity >= len(group)``."""
    bins: list[list[int]] = [[] for _ in range(parts)]
    loads = [0.0] * parts
    for i in sorted(group, key=lambda i: -cost[i]):
        b = min((b for b in range(parts) if len(bins[b]) < capacity), key=lambda b: loads[b])
        bins[b].append(i)
        loads[b] += cost[i]
    return [sorted(b) for b in bins if b]


def group_trials(configs: Sequence[TrialConfig], *, max_group: int = MAX_GROUP, enabled: bool = True,
                 workers: int = 1) -> list[list[TrialConfig]]:
    """Partition ``configs`` into groups that :func:`~ddscope.train.run_group` trains together.

    Args:
        configs: the trials (e.g. ``sweep.trials()`` or the pending ones).
        max_group: at most this many trials per group (bounds memory); larger groups are split
            into parts of balanced cost.
        enabled: ``False`` gives one singleton group per trial (grouping switched off).
        workers: split groups further until there are at least this many (when possible), so a
            pool of workers stays busy.

    Returns:
        Groups in the order of their first trial; every config appears exactly once, and the
        members of a group keep their relative order.
    """
    if max_group < 1:
        raise ValueError(f"max_group must be >= 1, got {max_group}")
    n = len(configs)
    if not enabled or max_group == 1:
        return [[c] for c in configs]
    cost = [trial_cost(c) for c in configs]
    left = list(range(n))
    groups: list[list[int]] = []
    for kind in KINDS:
        buckets: dict[str, list[int]] = {}
        for i in left:
            if (key := _key(configs[i], kind)) is not None:
                buckets.setdefault(key, []).append(i)
        taken = set()
        for members in buckets.values():
            if len(members) >= 2:
                groups.append(members)
                taken.update(members)
        left = [i for i in left if i not in taken]
    groups += [[i] for i in left]

    split: list[list[int]] = []
    for g in groups:
        parts = -(-len(g) // max_group)
        split += _balanced_split(g, parts, cost, max_group) if parts > 1 else [g]
    while len(split) < workers:
        big = max(split, key=lambda g: sum(cost[i] for i in g) if len(g) > 1 else -1.0)
        if len(big) < 2:
            break
        split.remove(big)
        split += _balanced_split(big, 2, cost, max_group)
    split.sort(key=lambda g: g[0])
    return [[configs[i] for i in g] for g in split]


__all__ = ["KINDS", "PACKED_FAMILIES", "SAME", "SAME_KEYS", "STACKED_FAMILIES", "SUPPORTS", "VARIES", "group_kind", "group_trials", "packable", "stackable", "trial_cost"]
