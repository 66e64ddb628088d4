"""The one training loop: a lone trial and a vectorised group run the same code.

``run_group(configs)`` trains the trials of one group (:func:`~.plan.group_trials`) and returns
one :class:`~.result.TrialResult` per config; ``run_trial(cfg)`` is the group of one. Per
member, everything happens here once — data, model and θ⁰ (:func:`~.members.build_members`),
resume from the latest checkpoint every member has (:mod:`.state`), the epoch loop, the
per-epoch losses, errors and metrics on the member's own module (:func:`~.members.log_epoch`),
checkpoints, the summary — and only how one step's losses are computed differs
(:data:`TRAINERS`: plain autograd, packed MLPs, stacked vmap).

Failures are results, never exceptions: a member whose loss becomes NaN/inf is marked failed
(``"diverged: loss became nan at epoch E (step S)"``, ``summary["failed_epoch"]``) and the
others go on; a crash of the run marks every member failed with the traceback. A
:class:`~ddscope.errors.UserError` (bad input, a corrupted checkpoint) and a full disk are
raised: they are the user's to fix, and stop the sweep with one line.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Sequence

import torch

from ..config import TrialConfig
from ..errors import UserError, as_user_error
from . import state
from .members import Member, build_members, check_losses, finish, log_epoch
from .packed import PackedTrainer
from .plan import group_kind
from .result import TrialResult
from .schedule import CheckpointSchedule
from .stacked import StackedTrainer
from .trainer import Trainer, TrialTrainer

ProgressFn = Callable[[int, int], None]  # (epochs done, epochs total), once per epoch of the run
TRAINERS: dict[str, type[Trainer]] = {"single": TrialTrainer, "packed": PackedTrainer, "stacked": StackedTrainer}


ErrorsFn = Callable[[str, int, "float | None", "float | None"], None]  # (trial id, epoch, train error, test error)


def run_group(configs: Sequence[TrialConfig], progress: ProgressFn | None = None,
              ckpt_dirs: Sequence[str | None] | None = None, errors: ErrorsFn | None = None) -> list[TrialResult]:
    """Train and measure a group of trials; ``result[i]`` belongs to ``configs[i]``.

    Args:
        configs: one trial, or trials :func:`~.plan.group_kind` accepts as a group.
        progress: ``progress(epoch, total)`` after every epoch (all members advance together).
        errors: ``errors(trial_id, epoch, train error, test error)`` for every live member at
            every epoch that recorded its errors (the live progress bars show them).
        ckpt_dirs: per trial, the folder of its checkpoints (``<run_dir>/trials/<trial_id>``),
            or None: no checkpoints. With folders the run resumes from their latest common epoch.
    """
    configs = list(configs)
    kind = group_kind(configs)
    t0 = time.perf_counter()
    members: list[Member] = []
    try:
        members = build_members(configs, TRAINERS[kind].kind, ckpt_dirs)
        trainer = TRAINERS[kind](members)
        _train(members, trainer, progress, t0, errors)
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 — a run's crash must not stop the sweep
        if (user := as_user_error(e)) is not None:  # a full disk is not the trials' failure
            raise user from None
        error = traceback.format_exc()
        if len(members) != len(configs):  # it crashed while building the members
            wall = time.perf_counter() - t0
            out = [TrialResult(trial_id=c.trial_id, config=c.to_dict(), status="failed", error=error,
                               summary={"wall_s": wall / len(configs), "trainer": TRAINERS[kind].kind})
                   for c in configs]
            if len(configs) > 1:
                for r in out:
                    r.summary.update(group_wall_s=wall, group_size=len(configs))
            return out
        for m in members:
            if m.alive:
                m.fail(error, None)
    return finish(members, t0)


def run_trial(cfg: TrialConfig, progress: ProgressFn | None = None, ckpt_dir: str | None = None) -> TrialResult:
    """Train and measure one trial (:func:`run_group` of one); with ``ckpt_dir`` it writes its
    checkpoints there and resumes from the latest one."""
    return run_group([cfg], progress, [ckpt_dir])[0]


def _train(members: list[Member], trainer: Trainer, progress: ProgressFn | None, t0: float,
           errors: ErrorsFn | None = None) -> None:
    """Epochs ``start..E``: the steps of every live member (epoch 0 has none), then each one's
    end-of-epoch records, the checkpoints due, progress. The run stops when no member is left."""
    opt, sched = trainer.optimizer, trainer.scheduler
    epochs = members[0].cfg.optim.epochs
    start, step = state.resume(members, trainer)
    saves = CheckpointSchedule(members[0].cfg)
    alive = torch.tensor([m.alive for m in members], device=trainer.device)

    def elapsed(m: Member) -> float:
        return m.elapsed0 + (time.perf_counter() - t0) / len(members)

    for epoch in range(start, epochs + 1):
        if epoch > 0:
            for losses in trainer.losses(epoch):
                failed = check_losses(members, losses, epoch, step)
                if not any(m.alive for m in members):
                    return
                alive[failed] = False
                opt.zero_grad(set_to_none=True)
                torch.where(alive, losses, 0.0).sum().backward()
                for j in failed:  # zeroed only now: backward needed the values it saved
                    trainer.bury(j)
                opt.step()
                sched.step()
                step += 1
        for j, m in enumerate(members):
            if m.alive:
                log_epoch(m, epoch, step)
                if not m.alive:  # diverged on the epoch-end evaluation, or crashed
                    alive[j] = False
                    trainer.bury(j)
        if not any(m.alive for m in members):
            return
        if (due := saves.due(epoch)) is not None:  # init.pt at epoch 0, resume points, final.pt
            state.save(members, *due, epoch, step, trainer, elapsed)
            saves.saved()
        if errors is not None:
            for m in (m for m in members if m.alive):
                latest = _errors_at(m.result.records, epoch)
                if latest:
                    errors(m.cfg.trial_id, epoch, latest.get("err/train"), latest.get("err/test"))
        if progress is not None:
            progress(epoch, epochs)


def _errors_at(records: list, epoch: int) -> dict[str, float]:
    """err/train and err/test recorded at ``epoch`` (this epoch's records are the last ones)."""
    out: dict[str, float] = {}
    for e, k, v in reversed(records):
        if e != epoch:
            break
        if k in ("err/train", "err/test"):
            out[k] = v
    return out


__all__ = ["TRAINERS", "run_group", "run_trial"]
