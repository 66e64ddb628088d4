"""End of an epoch: losses and errors on every split, and the scheduled metric groups.

The same functions serve a lone trial, every member of a vectorised group and ``ddscope
measure`` on a checkpoint, so a number never depends on which path computed it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..config import TrialConfig
from ..data import TrialData
from ..metrics.losses import Loss, loss_fn, trial_loss
from ..metrics.suite import measure, options_from_config
from .result import Diverged
from .schedule import Schedule


@torch.no_grad()
def per_sample_loss_err(model: nn.Module, x: torch.Tensor, y: torch.Tensor, chunk: int = 1024,
                        loss: Loss = "cross_entropy"):
    """Per-sample ``loss`` (N,) (the trial's; cross-entropy by default) and 0/1 error (N,) of
    ``model`` in its current mode."""
    losses, wrong = [], []
    per = loss_fn(loss)
    for i in range(0, x.shape[0], chunk):
        logits = model(x[i : i + chunk]).float()  # (B, C)
        yy = y[i : i + chunk]
        if loss == "cross_entropy":
            # Classes on dim 1 of a (1, C, B) tensor: on the CPU the log-softmax over a short last
            # dimension (C = 10) of thousands of rows is several times slower than over dim 1.
            losses.append(F.cross_entropy(logits.T[None], yy[None], reduction="none")[0])
        else:
            losses.append(per(logits, yy))
        wrong.append((logits.argmax(1) != yy).float())
    if not losses:
        return torch.zeros(0), torch.zeros(0)
    return torch.cat(losses), torch.cat(wrong)


@torch.no_grad()
def train_error_is_zero(model: nn.Module, data: TrialData, chunk: int = 1024) -> bool:
    """Whether ``model`` fits every (noisy) training label: the argmax test of ``epoch_errors``
    on the same chunks, without the losses; stops at the first chunk with an error."""
    x, y = data.x_train, data.y_train
    return all(bool((model(x[i : i + chunk]).float().argmax(1) == y[i : i + chunk]).all()) for i in range(0, x.shape[0], chunk))


def _mean(t: torch.Tensor) -> float:
    return t.mean().item() if t.numel() else math.nan


def epoch_errors(model: nn.Module, data: TrialData, loss: Loss = "cross_entropy") -> dict[str, tuple[float, float]]:
    """(loss, error) on train (noisy labels), its clean and noisy subsets, test and val; the
    subsets reuse the training pass."""
    per, err = per_sample_loss_err(model, data.x_train, data.y_train, loss=loss)
    m = data.noisy_mask
    out = {
        "train": (_mean(per), _mean(err)),
        "train_clean": (_mean(per[~m]), _mean(err[~m])),
        "train_noisy": (_mean(per[m]), _mean(err[m])),
    }
    for name, x, y in (("test", data.x_test, data.y_test), ("val", data.x_val, data.y_val)):
        if x.shape[0]:
            lo, er = per_sample_loss_err(model, x, y, loss=loss)
            out[name] = (_mean(lo), _mean(er))
    return out


def record_errors(model: nn.Module, data: TrialData, schedule: Schedule | None, epoch: int, step: int,
                  rec: list, interp_epoch: int | None, *, diverge: bool = True,
                  loss: Loss = "cross_entropy") -> int | None:
    """End of an epoch, model in eval mode: append its losses and errors to ``rec`` if the
    schedule (None: every epoch) records them (``loss``: the trial's), else only test for interpolation; returns the
    (possibly new) interpolation epoch: the first at which the training error is 0. A
    non-finite training loss raises :class:`Diverged` (``diverge``) or is recorded as it is."""
    if schedule is None or schedule.evaluates(epoch):
        for name, (loss_v, err_v) in epoch_errors(model, data, loss).items():
            if diverge and name == "train" and not math.isfinite(loss_v):
                raise Diverged(epoch, step, loss_v)
            rec.append((epoch, f"loss/{name}", loss_v))
            rec.append((epoch, f"err/{name}", err_v))
            if name == "train" and err_v == 0.0 and interp_epoch is None:
                interp_epoch = epoch
    elif interp_epoch is None and train_error_is_zero(model, data):  # off the schedule: interp_epoch only
        interp_epoch = epoch
    return interp_epoch


def measure_epoch(cfg: TrialConfig, model, data: TrialData, init_state, epoch: int,
                  groups, skipped: dict[str, str] | None = None,
                  notes: dict[str, str] | None = None, progress=None) -> list[tuple[int, str, float]]:
    """The metric ``groups`` of ``model`` at ``epoch`` as records, with the options of
    ``cfg.metrics``; the same numbers whether called in training or on a checkpoint later.
    Groups that cannot run on this model are left out, with their reasons put in ``skipped``;
    ``notes`` gets what ran differently than asked (an estimate where an exact value was not
    proven, a certificate that failed its check), ``{group: why}``."""
    m = cfg.metrics
    # "train" is always measured: it is the poster's statistic and paths/Hessian sample from it.
    # The clean / noisy subsets are masks of it: they reuse its per-sample Jacobian norms, and
    # their inputs are never copied out of the training set.
    splits = {"train": (data.x_train, data.y_train)}
    if "test" in m.splits:
        splits["test"] = (data.x_test, data.y_test)
    if "val" in m.splits and data.x_val.shape[0]:
        splits["val"] = (data.x_val, data.y_val)
    masks = {"train_clean": ~data.noisy_mask, "train_noisy": data.noisy_mask}
    subsets = {k: ("train", mask) for k, mask in masks.items() if k in m.splits}
    # A fresh generator per (trial, epoch): metric sampling never perturbs training randomness.
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed * 100_003 + epoch)
    options = {**options_from_config(m), "loss": loss_of(cfg)}  # every metric that takes a loss: the trial's
    values = measure(model, splits, subsets=subsets, metrics=groups, input_shape=data.input_shape,
                     init_state=init_state, options=options, generator=gen, progress=progress)
    if skipped is not None:
        skipped.update(values.skipped)
    if notes is not None:
        notes.update(values.notes)
    return [(epoch, k, float(v)) for k, v in values.items()]


def loss_of(cfg: TrialConfig) -> Loss:
    """The trial's loss (``optim.loss``, ``optim.label_smoothing``), as the metrics take it."""
    return trial_loss(cfg.optim.loss, cfg.optim.label_smoothing)


__all__ = ["epoch_errors", "loss_of", "measure_epoch", "per_sample_loss_err", "record_errors", "train_error_is_zero"]
