"""Per-member bookkeeping shared by the vectorised trainers: one :class:`Member` per trial.

A group trains several trials as one batched model, but every member keeps what a lone
:func:`~ddscope.train.run_trial` would keep: its own config, data, θ⁰, records and result. The
per-epoch losses/errors and the scheduled metrics run on the member's *own* ``nn.Module`` (built
by ``make_model`` and sharing storage with the batched parameters), through the very functions
``run_trial`` uses (``Schedule``, ``record_errors``, ``measure_epoch``), so every number is
computed by the same code path on the same weights.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from ..config import TrialConfig
from ..data import TrialData
from ..models import count_parameters
from ..train import Diverged, Schedule, TrialResult, measure_epoch, record_errors


@dataclass
class Member:
    """One trial inside a group: its config, tensors, standalone module and growing result."""

    cfg: TrialConfig
    data: TrialData
    model: nn.Module  # parameters share storage with the group's batched tensors
    result: TrialResult
    init_state: dict[str, Tensor] = field(default_factory=dict)  # θ⁰, for distance-from-init
    schedule: Schedule | None = None
    interp_epoch: int | None = None
    alive: bool = True

    @classmethod
    def start(cls, cfg: TrialConfig, data: TrialData, model: nn.Module) -> Member:
        """Fresh result with the summary fields ``run_trial`` fills before training."""
        result = TrialResult(trial_id=cfg.trial_id, config=cfg.to_dict(), status="done")
        result.noisy_mask = np.packbits(data.noisy_mask.cpu().numpy()).tobytes()
        result.summary.update(
            n_train=int(data.x_train.shape[0]),
            n_noisy=int(data.noisy_mask.sum()),
            params=count_parameters(model),
            resumed_from_epoch=None,
        )
        return cls(cfg=cfg, data=data, model=model, result=result, schedule=Schedule(cfg))

    def snapshot_init(self) -> None:
        self.init_state = {k: v.detach().clone() for k, v in self.model.named_parameters()}  # θ⁰

    def fail(self, error: str, epoch: int | None) -> None:
        self.alive = False
        self.result.status, self.result.error = "failed", error
        if epoch is not None:
            self.result.summary["failed_epoch"] = epoch


def log_epoch(member: Member, epoch: int, step: int) -> None:
    """Scheduled losses/errors (eval mode) and metrics of one member at the end of an epoch.

    The end-of-epoch block of ``run_trial``: a non-finite training loss fails the member
    with the same message, any other exception fails it with the traceback.
    """
    model, rec = member.model, member.result.records
    try:
        model.eval()
        member.interp_epoch = record_errors(model, member.data, member.schedule, epoch, step, rec, member.interp_epoch)
        groups = member.schedule.groups(epoch)
        if groups:
            rec.extend(measure_epoch(member.cfg, model, member.data, member.init_state, epoch, groups))
    except Diverged as e:
        member.fail(f"diverged: {e}", e.epoch)
    except Exception:  # noqa: BLE001 — one member's crash must not stop the group
        member.fail(traceback.format_exc(), None)


def finish(members: Sequence[Member], t0: float) -> list:
    """Close every member's result: interp_epoch record and summary, and the wall time.

    ``wall_s`` is the member's share of the group's wall time (the group total divided by its
    size), so summing ``wall_s`` over a sweep still gives its total; ``group_wall_s`` and
    ``group_size`` record the group itself.
    """
    wall = time.perf_counter() - t0
    out = []
    for m in members:
        s = m.result.summary
        if m.result.status == "done":
            s["interp_epoch"] = m.interp_epoch
            if m.interp_epoch is not None:
                m.result.records.append((m.cfg.optim.epochs, "interp_epoch", float(m.interp_epoch)))
        s.update(wall_s=wall / len(members), group_wall_s=wall, group_size=len(members))
        out.append(m.result)
    return out


def check_losses(members: Sequence[Member], losses: Tensor, epoch: int, step: int) -> list[int]:
    """Fail every live member whose batch loss is NaN/inf at this step; returns their indices.

    ``losses`` is (M,) over all members, dead ones included (their parameters are zero, so their
    loss is finite and ignored). One host sync per step, as in ``run_trial``.
    """
    finite = torch.isfinite(losses)
    if bool(finite.all()):
        return []
    values = losses.detach().cpu().tolist()
    failed = []
    for j in torch.nonzero(~finite.cpu()).flatten().tolist():
        if members[j].alive:
            members[j].fail(f"diverged: {Diverged(epoch, step, values[j])}", epoch)
            failed.append(j)
    return failed


def bury(optimizer: torch.optim.Optimizer, tensors: Sequence[Tensor], index) -> None:
    """Zero a dead member's part ``index`` of its trained tensors, their gradients and their
    optimiser state (momentum buffers, Adam moments). With zero weights, gradients and state,
    SGD (momentum, weight decay) and Adam keep it at exactly zero, so nothing non-finite can
    reach the other members. Call it after ``backward`` (autograd saved the old values)."""
    with torch.no_grad():
        for p in tensors:
            p[index] = 0
            if p.grad is not None:
                p.grad[index] = 0
            for value in optimizer.state.get(p, {}).values():
                if isinstance(value, Tensor) and value.shape == p.shape:
                    value[index] = 0


def train_members(
    members: Sequence[Member],
    epochs: int,
    step_losses: Callable[[int], Iterator[Tensor]],
    optimizer: torch.optim.Optimizer,
    scheduler,
    bury_member: Callable[[int], None],
    progress: Callable[[int, int], None] | None,
    t0: float,
) -> list[TrialResult]:
    """The loop of ``run_trial`` for a whole group: epochs 1..E of steps, then every live member's
    per-epoch records (epoch 0 first, before any step).

    ``step_losses(epoch)`` yields, step by step, the (M,) batch losses of all members (forward
    done; the loop runs backward between two yields). A member whose loss is NaN/inf is failed
    and excluded from the summed loss, and ``bury_member(j)`` zeroes its weights, gradients and
    optimiser state right after backward; one that diverges or crashes in its epoch-end
    evaluation is buried at once. The group stops when no member is left.
    """
    device = next(iter(optimizer.param_groups[0]["params"])).device
    alive = torch.ones(len(members), dtype=torch.bool, device=device)
    step = 0
    for epoch in range(epochs + 1):
        if epoch > 0:
            for losses in step_losses(epoch):
                failed = check_losses(members, losses, epoch, step)
                if not any(m.alive for m in members):
                    return finish(members, t0)
                alive[failed] = False
                optimizer.zero_grad(set_to_none=True)
                torch.where(alive, losses, 0.0).sum().backward()
                for j in failed:  # zeroed only now: backward needed the values it saved
                    bury_member(j)
                optimizer.step()
                scheduler.step()
                step += 1
        for j, m in enumerate(members):
            if m.alive:
                log_epoch(m, epoch, step)
                if not m.alive:  # diverged on the epoch-end evaluation, or crashed
                    alive[j] = False
                    bury_member(j)
        if not any(m.alive for m in members):
            break
        if progress is not None:
            progress(epoch, epochs)
    return finish(members, t0)


__all__ = ["Member", "bury", "check_losses", "finish", "log_epoch", "train_members"]
