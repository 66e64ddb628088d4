"""Vectorised training: many trials of a sweep as one batched model.

On small models one training step is mostly per-operation overhead, so trials that can share a
step train together (:mod:`.plan` decides which):

- :mod:`.packed_mlp` — MLPs of different widths at one seed share every batch; their layers are
  packed into zero-padded pools and trained with batched matmuls.
- :mod:`.stacked` — trials of one architecture and width that differ in seed or label-noise
  draw; parameters stacked (M, ...), one ``vmap`` over ``functional_call`` per step, each member
  with its own batches.

Either way each member keeps its own initialisation, batch order, labels and optimiser state, and
its results come back as the :class:`~ddscope.train.TrialResult` that ``run_trial`` would give
(same records, up to float summation order in training).

Usage (what a sweep driver does)::

    for group in group_trials(pending_configs, max_group=16, workers=n_workers):
        results = run_group(group, progress)   # list[TrialResult], results[i] is group[i]'s
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Sequence

from ..config import TrialConfig
from ..errors import UserError, as_user_error
from ..train import TrialResult, run_trial
from .packed_mlp import train_packed
from .plan import group_kind, group_trials, packable, stackable
from .stacked import train_stacked

ProgressFn = Callable[[int, int], None]  # (epochs done, epochs total), once per epoch of the group


def run_group(configs: Sequence[TrialConfig], progress: ProgressFn | None = None) -> list[TrialResult]:
    """Train and measure a group of trials from :func:`group_trials`; ``result[i]`` belongs to
    ``configs[i]`` (same ``trial_id``).

    A single trial goes to :func:`~ddscope.train.run_trial`. In a group, a member whose loss
    becomes NaN/inf is marked failed (``"diverged: loss became nan at epoch E (step S)"``,
    ``summary["failed_epoch"]``) and the others go on. A crash of the group itself marks every
    member failed with the traceback; a :class:`~ddscope.errors.UserError` (bad input) is
    raised, as ``run_trial`` does. ``progress(epoch, total)`` is called once per epoch of the
    group (all members advance together).
    """
    configs = list(configs)
    kind = group_kind(configs)
    if kind == "single":
        return [run_trial(configs[0], progress)]
    t0 = time.perf_counter()
    try:
        results = (train_packed if kind == "packed" else train_stacked)(configs, progress)
        for r in results:  # which training path made these numbers, for the store and the report
            r.summary["trainer"] = kind
        return results
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 — a group's crash must not stop the sweep
        if (user := as_user_error(e)) is not None:  # a full disk is not the trials' failure
            raise user from None
        error = traceback.format_exc()
        wall = time.perf_counter() - t0
        return [
            TrialResult(trial_id=c.trial_id, config=c.to_dict(), status="failed", error=error,
                        summary={"wall_s": wall / len(configs), "group_wall_s": wall, "group_size": len(configs),
                                 "trainer": kind})
            for c in configs
        ]


__all__ = ["group_kind", "group_trials", "packable", "run_group", "stackable", "train_packed", "train_stacked"]
