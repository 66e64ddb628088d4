"""What a trial gives back to the sweep's store, and why a trial stops early."""

from __future__ import annotations

from dataclasses import dataclass, field


class Diverged(RuntimeError):
    """The training loss became NaN or infinite."""

    def __init__(self, epoch: int, step: int, loss: float):
        super().__init__(f"loss became {loss} at epoch {epoch} (step {step})")
        self.epoch = epoch


@dataclass
class TrialResult:
    """What a trial returns to the store: tidy rows plus a per-trial summary."""

    trial_id: str
    config: dict
    status: str  # "done" or "failed"
    records: list[tuple[int, str, float]] = field(default_factory=list)  # (epoch, metric, value)
    # params, n_train, n_noisy, interp_epoch, wall_s, resumed_from_epoch, trainer, group_size, ...
    summary: dict = field(default_factory=dict)
    error: str | None = None
    noisy_mask: bytes = b""  # np.packbits of the (N_train,) noisy-label mask


__all__ = ["Diverged", "TrialResult"]
