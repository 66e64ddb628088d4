"""Which trials of a sweep train together: packed width groups, stacked seed/noise groups.

Two kinds of group (see :mod:`.packed_mlp` and :mod:`.stacked`):

- ``"packed"``: ``mlp`` trials identical except for ``model.width``. Same seed and data config,
  so they share data, labels and the batch order; widths are packed side by side.
- ``"stacked"``: trials of one family and width identical except for ``seed``, ``data.seed``,
  ``data.noise`` and ``data.noise_kind``; each member has its own batches, labels and
  initialisation, the group is one ``vmap`` over stacked parameters.

Everything else runs alone (``"single"``). :func:`group_trials` first forms packed groups, then
stacks what is left, splits groups larger than ``max_group`` into parts of balanced cost, and
splits further while there are fewer groups than ``workers`` so every worker gets one.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from ..config import TrialConfig

PACKED_FAMILIES = frozenset({"mlp"})
# Families whose training step runs under vmap (tested in tests/batched/test_stacked.py),
# BatchNorm included: running statistics are updated per member in the stacked buffers.
STACKED_FAMILIES = frozenset({"mlp", "cnn1d", "convnet", "mcnn", "resnet18", "vit"})
PACKED_VARIES = ("model.width",)
STACKED_VARIES = ("seed", "data.seed", "data.noise", "data.noise_kind")


def _key(cfg: TrialConfig, varies: Sequence[str]) -> str:
    """The config without the keys that may vary inside a group (canonical JSON)."""
    d = cfg.to_dict()
    for dotted in varies:
        node, parts = d, dotted.split(".")
        for p in parts[:-1]:
            node = node[p]
        node.pop(parts[-1])
    return json.dumps(d, sort_keys=True, separators=(",", ":"))


def packable(configs: Sequence[TrialConfig]) -> bool:
    """True if ``configs`` can train as one packed group (≥ 2 ``mlp`` trials, only width varies)."""
    return (
        len(configs) >= 2
        and all(c.model.name in PACKED_FAMILIES for c in configs)
        and len({_key(c, PACKED_VARIES) for c in configs}) == 1
    )


def stackable(configs: Sequence[TrialConfig]) -> bool:
    """True if ``configs`` can train as one stacked group (≥ 2 trials, only seed/noise vary)."""
    return (
        len(configs) >= 2
        and all(c.model.name in STACKED_FAMILIES for c in configs)
        and len({_key(c, STACKED_VARIES) for c in configs}) == 1
    )


def group_kind(configs: Sequence[TrialConfig]) -> str:
    """``"single"`` (one trial), ``"packed"`` or ``"stacked"``; ValueError if none applies."""
    if len(configs) == 1:
        return "single"
    if packable(configs):
        return "packed"
    if stackable(configs):
        return "stacked"
    raise ValueError("these trials cannot train together: they differ in more than the width (mlp) or the seed/noise")


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


def group_trials(configs: Sequence[TrialConfig], *, max_group: int = 16, enabled: bool = True,
                 workers: int = 1) -> list[list[TrialConfig]]:
    """Partition ``configs`` into groups that :func:`~ddscope.batched.run_group` trains together.

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
    for kind_ok, varies in ((PACKED_FAMILIES, PACKED_VARIES), (STACKED_FAMILIES, STACKED_VARIES)):
        buckets: dict[str, list[int]] = {}
        for i in left:
            if configs[i].model.name in kind_ok:
                buckets.setdefault(_key(configs[i], varies), []).append(i)
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


__all__ = ["PACKED_FAMILIES", "STACKED_FAMILIES", "group_kind", "group_trials", "packable", "stackable", "trial_cost"]
