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


def data_summary(data, params: int, trainer: str) -> dict:
    """The summary keys a trial has from its start: the sizes of its splits, how many training
    labels are noisy, its parameter count and which trainer ran it (``data`` a ``TrialData``)."""
    return {"n_train": int(data.x_train.shape[0]), "n_test": int(data.x_test.shape[0]),
            "n_noisy": int(data.noisy_mask.sum()), "params": int(params), "resumed_from_epoch": None,
            "trainer": trainer}


def close_interpolation(result: TrialResult, interp_epoch: int | None, last_epoch: int) -> None:
    """A finished trial's interpolation epoch: in the summary, and as the ``interp_epoch``
    record at its last epoch when it interpolated."""
    result.summary["interp_epoch"] = interp_epoch
    if interp_epoch is not None:
        result.records.append((last_epoch, "interp_epoch", float(interp_epoch)))


__all__ = ["Diverged", "TrialResult", "close_interpolation", "data_summary"]
