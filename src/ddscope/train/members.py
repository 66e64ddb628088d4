"""One :class:`Member` per trial: what every trial has, alone or inside a vectorised group.

A member owns its config, its data (its own subset and noisy labels), its ``nn.Module`` (built by
``make_model`` under ``torch.manual_seed(cfg.seed)``; in a group its parameters are views of the
group's tensors), θ⁰, its records and result, and its checkpoint folder. The per-epoch losses,
errors and metrics run on the member's own module, through the same functions for every trainer.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from ..checkpoint import Checkpointer
from ..config import DataConfig, TrialConfig
from ..data import TrialData, prepare
from ..models import count_parameters, make_model
from .batches import resolve_device
from .evaluate import loss_of, measure_epoch, record_errors
from .optim import Slots
from .result import Diverged, TrialResult, close_interpolation, data_summary
from .schedule import Schedule


@dataclass
class Member:
    """One trial inside a training run: its config, tensors, module and growing result."""

    cfg: TrialConfig
    data: TrialData
    model: nn.Module
    result: TrialResult
    index: int  # position in the group
    init_state: dict[str, Tensor] = field(default_factory=dict)  # θ⁰, for distance-from-init
    schedule: Schedule | None = None
    folder: Checkpointer | None = None  # its checkpoint files, or None: no checkpoints
    slots: Slots | None = None  # where its parameters live in the trainer's tensors
    interp_epoch: int | None = None
    elapsed0: float = 0.0  # training wall time before this run (from the checkpoint resumed)
    alive: bool = True

    def fail(self, error: str, epoch: int | None) -> None:
        self.alive = False
        self.result.status, self.result.error = "failed", error
        if epoch is not None:
            self.result.summary["failed_epoch"] = epoch


def _share_inputs(datas: list[TrialData]) -> list[TrialData]:
    """Members whose inputs equal the first member's reuse its tensors (labels stay their own),
    so a group that differs only in label noise holds one copy of the images."""
    first = datas[0]
    out = [first]
    for d in datas[1:]:
        same = all(
            a.shape == b.shape and torch.equal(a, b)
            for a, b in ((d.x_train, first.x_train), (d.x_test, first.x_test), (d.x_val, first.x_val))
        )
        if same:
            d = TrialData(**{**d.__dict__, "x_train": first.x_train, "x_test": first.x_test, "x_val": first.x_val})
        out.append(d)
    return out


def build_members(configs: Sequence[TrialConfig], kind: str, ckpt_dirs: Sequence[str | None] | None = None) -> list[Member]:
    """Data (prepared once per data config), model and θ⁰ of every trial, as a lone trial draws
    them: the data first, then ``torch.manual_seed(cfg.seed)`` and ``make_model``."""
    device = resolve_device(configs[0].device)
    prepared: dict[DataConfig, TrialData] = {}
    for c in configs:
        if c.data not in prepared:
            prepared[c.data] = prepare(c.data).to(device)
    datas = _share_inputs([prepared[c.data] for c in configs])
    dirs = list(ckpt_dirs) if ckpt_dirs is not None else [None] * len(configs)
    members = []
    for j, (c, d, folder) in enumerate(zip(configs, datas, dirs)):
        torch.manual_seed(c.seed)  # the model's initialisation
        model = make_model(c.model, d.input_shape, d.num_classes).to(device)
        ref = next(model.parameters(), None)
        if ref is not None and ref.is_floating_point():
            d = d.inputs_as(ref.dtype)  # a factory's float64 model gets float64 inputs
        result = TrialResult(trial_id=c.trial_id, config=c.to_dict(), status="done")
        result.noisy_mask = np.packbits(d.noisy_mask.cpu().numpy()).tobytes()
        result.summary.update(data_summary(d, count_parameters(model), kind))
        members.append(Member(cfg=c, data=d, model=model, result=result, index=j, schedule=Schedule(c),
                              folder=None if folder is None else Checkpointer(folder, c),
                              init_state={k: v.detach().clone() for k, v in model.named_parameters()}))
    return members


def log_epoch(member: Member, epoch: int, step: int) -> None:
    """Scheduled losses/errors (eval mode) and metrics of one member at the end of an epoch; a
    non-finite training loss fails the member (``diverged: ...``), any other exception fails it
    with the traceback."""
    model, rec = member.model, member.result.records
    try:
        model.eval()  # BatchNorm uses running statistics
        member.interp_epoch = record_errors(model, member.data, member.schedule, epoch, step, rec, member.interp_epoch,
                                            loss=loss_of(member.cfg))
        groups = member.schedule.groups(epoch)
        if groups:
            skipped = member.result.summary.setdefault("skipped_groups", {})  # group -> why it could not run
            notes = member.result.summary.setdefault("metric_notes", {})  # group -> what ran differently
            rec.extend(measure_epoch(member.cfg, model, member.data, member.init_state, epoch, groups, skipped, notes))
    except Diverged as e:
        member.fail(f"diverged: {e}", e.epoch)
    except Exception:  # noqa: BLE001 — one member's crash must not stop the group
        member.fail(traceback.format_exc(), None)


def check_losses(members: Sequence[Member], losses: Tensor, epoch: int, step: int) -> list[int]:
    """Fail every live member whose batch loss is NaN/inf at this step; returns their indices.

    ``losses`` is (M,) over all members, dead ones included (their parameters are zero, so their
    loss is finite and ignored). One host sync per step.
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


def finish(members: Sequence[Member], t0: float) -> list[TrialResult]:
    """Close every member's result: the interp_epoch record and summary, and the wall time.

    ``wall_s`` is the member's share of this run's wall time (the total divided by the group's
    size, so summing ``wall_s`` over a sweep still gives its total) plus the time before a
    resume; a group also records ``group_wall_s`` and ``group_size``.
    """
    wall = time.perf_counter() - t0
    for m in members:
        s = m.result.summary
        if m.result.status == "done":
            close_interpolation(m.result, m.interp_epoch, m.cfg.optim.epochs)
        s["wall_s"] = m.elapsed0 + wall / len(members)
        if len(members) > 1:
            s.update(group_wall_s=wall, group_size=len(members))
    return [m.result for m in members]


__all__ = ["Member", "build_members", "bury", "check_losses", "finish", "log_epoch"]
