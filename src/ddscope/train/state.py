"""A member's training state in its own checkpoint files: save, and resume a whole group.

Each trial — alone or in a vectorised group — writes the same files in its own folder
(:mod:`ddscope.checkpoint`): θ⁰ (``init.pt``), resume points and ``final.pt``. A group saves all
its members at the same epochs and resumes from the latest epoch that every member has a
complete checkpoint of, so a killed group continues as if never stopped; a trial saved in one
group composition resumes in another, or alone (the optimiser state is cut per member, in the
format of a lone trial's ``optimizer.state_dict()``).
"""

from __future__ import annotations

import torch

from ..checkpoint import FORMAT, load_weights
from ..errors import UserError
from .members import Member
from .optim import load_member_optimizer_state, member_optimizer_state


def capture(m: Member, epoch: int, step: int, trainer, *, full: bool, elapsed_s: float) -> dict:
    """Everything needed to continue member ``m`` after ``epoch`` exactly as if never stopped;
    without ``full`` only its weights and records (the final checkpoint). Tensors are copied out
    of the group's storage, so a file holds one member and nothing else."""
    state = {
        "format": FORMAT,
        "trial_id": m.cfg.trial_id,
        "config": m.cfg.to_dict(),
        "epoch": epoch,
        "step": step,
        "model": {k: v.detach().clone() for k, v in m.model.state_dict().items()},
        "records": list(m.result.records),
        "interp_epoch": m.interp_epoch,
        "elapsed_s": float(elapsed_s),
    }
    if full:
        state["optimizer"] = member_optimizer_state(trainer.optimizer, m.slots)
        state["scheduler"] = trainer.scheduler.state_dict()
        state["rng"] = {
            "order": trainer.orders[m.index].get_state(),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        }
    return state


def restore(m: Member, state: dict, trainer, path) -> None:
    """Load a member's weights, records and (for a resume point) optimiser, scheduler and RNG
    states in place; state that does not fit is a :class:`UserError` (exit 2), not a failure."""
    load_weights(m.model, state, path)
    m.result.records[:] = list(state["records"])
    m.interp_epoch = state["interp_epoch"]
    m.elapsed0 = state["elapsed_s"]
    m.result.summary["resumed_from_epoch"] = state["epoch"]
    if "optimizer" not in state:  # final.pt: training is over, nothing else to restore
        return
    try:
        load_member_optimizer_state(trainer.optimizer, m.slots, state["optimizer"])
        trainer.scheduler.load_state_dict(state["scheduler"])
        rng = state["rng"]
        trainer.orders[m.index].set_state(rng["order"])
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
    except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as e:
        raise UserError(f"checkpoint {path} has optimiser or RNG state that does not fit the trial "
                        f"({type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}); "
                        "move it away") from None


def resume(members: list[Member], trainer) -> tuple[int, int]:
    """Restore every member from the latest epoch E all of them have a checkpoint of; returns
    (first epoch to train, steps done). Without one, (0, 0): a fresh start. Rolling
    checkpoints after E (left by another grouping of these trials) are deleted."""
    folders = [m.folder for m in members]
    if any(f is None for f in folders):
        return 0, 0
    have = [f.by_epoch() for f in folders]
    common = set.intersection(*(set(h) for h in have))
    if not common:
        for f in folders:
            f.discard_after(-1)
        return 0, 0
    epoch = max(common)
    step = None
    for m, h in zip(members, have):
        state = m.folder.load(h[epoch])
        restore(m, state, trainer, h[epoch])
        step = state["step"]
        m.folder.discard_after(epoch)
    return epoch + 1, step


def save(members: list[Member], name: str, full: bool, epoch: int, step: int, trainer, elapsed_s) -> None:
    """Write checkpoint ``name`` of every live member, then prune their older rolling ones (only
    once all are written: a group killed between two members still shares an older epoch)."""
    live = [m for m in members if m.alive and m.folder is not None]
    for m in live:
        m.folder.save(name, capture(m, epoch, step, trainer, full=full, elapsed_s=elapsed_s(m)))
    for m in live:
        m.folder.prune(epoch)


__all__ = ["capture", "restore", "resume", "save"]
