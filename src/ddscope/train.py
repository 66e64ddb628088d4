"""One trial: train a model from its config and measure it on a schedule.

``run_trial(config) -> TrialResult`` is a pure function of the config (same config and seed give
the same numbers on the same machine). The loop is deliberately plain: the data live on the device
as tensors and are batched by slicing a ``randperm`` (no DataLoader); after every epoch (or on the
schedule of ``metrics.num_eval_epochs``) it records losses and errors on the noisy training labels,
on the clean and noisy subsets and on the test set; at the scheduled epochs the metric suite runs
on the same tensors. θ⁰ is kept for distance-from-init.

Given a checkpoint folder, the trial saves θ⁰, scheduled checkpoints and its final weights there
(:mod:`ddscope.checkpoint`) and, if a checkpoint exists, continues after it: model, optimiser,
scheduler and RNG states are restored, so the result equals that of an uninterrupted run.
"""

from __future__ import annotations

import math
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import checkpoint
from .config import TrialConfig
from .data import TrialData, prepare
from .errors import UserError, as_user_error
from .models import count_parameters, make_model

ProgressFn = Callable[[int, int], None]  # (epochs done, epochs total)


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
    summary: dict = field(default_factory=dict)  # params, interp_epoch, wall_s, resumed_from_epoch, ...
    error: str | None = None
    noisy_mask: bytes = b""  # np.packbits of the (N_train,) noisy-label mask


def metric_epochs(epochs: int, num_log: int, explicit: tuple[int, ...] = ()) -> list[int]:
    """Epochs at which the metric suite runs: ``explicit`` if given, else 0, ``num_log``
    log-spaced epochs in [1, epochs] and the last epoch."""
    if explicit:
        return sorted({e for e in explicit if e <= epochs} | {epochs})
    pts = np.unique(np.round(np.geomspace(1, epochs, max(num_log, 1))).astype(int))
    return sorted({0, epochs, *pts.tolist()})


def eval_epochs(epochs: int, m) -> set[int] | None:
    """Epochs whose losses and errors are recorded; ``None`` = every epoch.

    With ``m.num_eval_epochs`` > 0: epoch 0, that many log-spaced epochs, the last and every epoch
    of the metric schedules (so each metric row has its errors beside it). Evaluating 16 000
    MNIST-1D samples costs as much as an epoch of training (bench/README.md, benchmark 1)."""
    if m.num_eval_epochs <= 0:
        return None
    return (set(metric_epochs(epochs, m.num_eval_epochs)) | set(metric_epochs(epochs, m.num_log_epochs, m.epochs))
            | set(metric_epochs(epochs, m.num_sparse_epochs, m.epochs)))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("config key 'device': 'cuda' was asked for but no CUDA device is available; use cpu or auto")
    return torch.device(name)


@torch.no_grad()
def per_sample_loss_err(model: nn.Module, x: torch.Tensor, y: torch.Tensor, chunk: int = 1024):
    """Per-sample cross-entropy (N,) and 0/1 error (N,) of ``model`` in its current mode."""
    losses, wrong = [], []
    for i in range(0, x.shape[0], chunk):
        logits = model(x[i : i + chunk]).float()  # (B, C)
        yy = y[i : i + chunk]
        # Classes on dim 1 of a (1, C, B) tensor: on the CPU the log-softmax over a short last
        # dimension (C = 10) of thousands of rows is several times slower than over dim 1.
        losses.append(F.cross_entropy(logits.T[None], yy[None], reduction="none")[0])
        wrong.append((logits.argmax(1) != yy).float())
    if not losses:
        return torch.zeros(0), torch.zeros(0)
    return torch.cat(losses), torch.cat(wrong)


def index_batches(data: TrialData, batch_size: int, order: torch.Generator, augment, device):
    """One epoch of training mini-batches ``(x (B, ...), y (B,))``: a ``randperm`` drawn from
    ``order`` sliced into index batches (no DataLoader), augmented on the device if asked."""
    perm = torch.randperm(data.x_train.shape[0], generator=order).to(device)
    for i in range(0, perm.shape[0], batch_size):
        idx = perm[i : i + batch_size]
        xb, yb = data.x_train[idx], data.y_train[idx]
        if augment is not None:
            xb = augment(xb, order)
        yield xb, yb


@torch.no_grad()
def train_error_is_zero(model: nn.Module, data: TrialData, chunk: int = 1024) -> bool:
    """Whether ``model`` fits every (noisy) training label: the argmax test of ``epoch_errors``
    on the same chunks, without the losses; stops at the first chunk with an error."""
    x, y = data.x_train, data.y_train
    return all(bool((model(x[i : i + chunk]).float().argmax(1) == y[i : i + chunk]).all()) for i in range(0, x.shape[0], chunk))


def _mean(t: torch.Tensor) -> float:
    return t.mean().item() if t.numel() else math.nan


def epoch_errors(model: nn.Module, data: TrialData) -> dict[str, tuple[float, float]]:
    """(loss, error) on train (noisy labels), its clean and noisy subsets, test and val; the
    subsets reuse the training pass."""
    loss, err = per_sample_loss_err(model, data.x_train, data.y_train)
    m = data.noisy_mask
    out = {
        "train": (_mean(loss), _mean(err)),
        "train_clean": (_mean(loss[~m]), _mean(err[~m])),
        "train_noisy": (_mean(loss[m]), _mean(err[m])),
    }
    for name, x, y in (("test", data.x_test, data.y_test), ("val", data.x_val, data.y_val)):
        if x.shape[0]:
            lo, er = per_sample_loss_err(model, x, y)
            out[name] = (_mean(lo), _mean(er))
    return out


class Schedule:
    """What is due at each epoch of a trial: the metric groups and whether losses and errors are
    recorded; shared by ``run_trial`` and the vectorised trainers."""

    def __init__(self, cfg: TrialConfig):
        m, epochs = cfg.metrics, cfg.optim.epochs
        self.metrics = m
        self.dense = set(metric_epochs(epochs, m.num_log_epochs, m.epochs))
        self.sparse = set(metric_epochs(epochs, m.num_sparse_epochs, m.epochs))
        self.evals = eval_epochs(epochs, m)  # None: every epoch

    def evaluates(self, epoch: int) -> bool:
        """Whether losses and errors are recorded at ``epoch``."""
        return self.evals is None or epoch in self.evals

    def groups(self, epoch: int) -> list[str]:
        m = self.metrics
        return [g for g in m.groups if epoch in self.dense] + [
            g for g in m.sparse_groups if epoch in self.sparse and g not in m.groups
        ]


def record_errors(model: nn.Module, data: TrialData, schedule: Schedule, epoch: int, step: int,
                  rec: list, interp_epoch: int | None) -> int | None:
    """End of an epoch, model in eval mode: append its losses and errors to ``rec`` if the
    schedule records them, else only test for interpolation; returns the (possibly new)
    interpolation epoch. A non-finite training loss raises :class:`Diverged`."""
    if schedule.evaluates(epoch):
        for name, (loss_v, err_v) in epoch_errors(model, data).items():
            if name == "train" and not math.isfinite(loss_v):
                raise Diverged(epoch, step, loss_v)
            rec.append((epoch, f"loss/{name}", loss_v))
            rec.append((epoch, f"err/{name}", err_v))
            if name == "train" and err_v == 0.0 and interp_epoch is None:
                interp_epoch = epoch
    elif interp_epoch is None and train_error_is_zero(model, data):  # off the schedule: interp_epoch only
        interp_epoch = epoch
    return interp_epoch


def make_optimizer(cfg: TrialConfig, model: nn.Module, steps_per_epoch: int):
    o = cfg.optim
    if o.name == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=o.lr, weight_decay=o.weight_decay)
    warm = o.warmup_epochs * steps_per_epoch
    # Linear warm-up from lr/warm to lr over the first `warm` steps, then constant.
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm) if warm else 1.0)
    return opt, sched


def measure_epoch(cfg: TrialConfig, model, data: TrialData, init_state, epoch: int,
                  groups) -> list[tuple[int, str, float]]:
    """The metric ``groups`` of ``model`` at ``epoch`` as records, with the options of
    ``cfg.metrics``; the same numbers whether called in training or on a checkpoint later."""
    from .metrics.suite import measure

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
    options = {
        "output": m.output,
        "jac_samples": m.jac_samples or None,
        "path_pairs": m.path_pairs,
        "path_k": m.path_k,
        "hess_samples": m.hess_samples or None,  # 0 = all, as for jac_samples
        "hess_matvecs": m.hess_matvecs,
        "lanczos_iters": m.lanczos_iters,
    }
    # A fresh generator per (trial, epoch): metric sampling never perturbs training randomness.
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed * 100_003 + epoch)
    values = measure(
        model,
        splits,
        subsets=subsets,
        metrics=groups,
        input_shape=data.input_shape,
        init_state=init_state,
        options=options,
        generator=gen,
    )
    return [(epoch, k, float(v)) for k, v in values.items()]


def run_trial(cfg: TrialConfig, progress: ProgressFn | None = None, ckpt_dir: str | None = None) -> TrialResult:
    """Train and measure one trial; failures are returned as ``status="failed"``, never raised
    (a diverging loss gives the reason and epoch, any other exception its traceback).

    With ``ckpt_dir`` the trial writes its checkpoints there and resumes from the latest one.
    A :class:`UserError` (bad input, a corrupted checkpoint) is raised: it is not the trial's
    failure but the user's to fix, and it stops the sweep with one line.
    """
    t0 = time.perf_counter()
    result = TrialResult(trial_id=cfg.trial_id, config=cfg.to_dict(), status="done")
    result.summary["wall_s"] = 0.0  # training time before this attempt (set on resume)
    result.summary["trainer"] = "trial"  # one model at a time (vectorised groups: "packed", "stacked")
    try:
        _train(cfg, result, progress, ckpt_dir, t0)
    except UserError:
        raise
    except Diverged as e:
        result.status, result.error = "failed", f"diverged: {e}"
        result.summary["failed_epoch"] = e.epoch
    except Exception as e:  # noqa: BLE001 — a trial's crash must not stop the sweep
        if (user := as_user_error(e)) is not None:  # a full disk is not the trial's failure
            raise user from None
        result.status, result.error = "failed", traceback.format_exc()
    result.summary["wall_s"] += time.perf_counter() - t0
    return result


def _train(cfg: TrialConfig, result: TrialResult, progress: ProgressFn | None, ckpt_dir: str | None, t0: float) -> None:
    device = resolve_device(cfg.device)
    saver = checkpoint.Checkpointer(ckpt_dir, cfg) if ckpt_dir is not None else None
    resume = saver.resume() if saver is not None else None  # latest checkpoint, checksum verified
    data = prepare(cfg.data).to(device)
    result.noisy_mask = np.packbits(data.noisy_mask.cpu().numpy()).tobytes()
    result.summary.update(n_train=int(data.x_train.shape[0]), n_noisy=int(data.noisy_mask.sum()))

    torch.manual_seed(cfg.seed)  # the model's initialisation
    model = make_model(cfg.model, data.input_shape, data.num_classes).to(device)
    result.summary["params"] = count_parameters(model)
    init_state = {k: v.detach().clone() for k, v in model.named_parameters()}  # θ⁰

    o = cfg.optim
    n = data.x_train.shape[0]
    steps_per_epoch = math.ceil(n / o.batch_size)
    opt, sched = make_optimizer(cfg, model, steps_per_epoch)
    order = torch.Generator(device="cpu").manual_seed(cfg.seed)  # batch order and augmentation
    schedule = Schedule(cfg)
    use_amp = o.amp and device.type == "cuda"
    augment = None
    if cfg.data.augment and data.x_train.dim() == 4:
        from .data.augment import augment_batch as augment

    rec = result.records
    interp_epoch = None
    step = 0
    start = 0
    result.summary["resumed_from_epoch"] = None
    if resume is not None:  # continue after the checkpoint's epoch as if never stopped
        checkpoint.restore(resume, model, opt, sched, order, path=saver.resumed_from)
        step, interp_epoch, start = resume["step"], resume["interp_epoch"], resume["epoch"] + 1
        rec.extend(resume["records"])
        result.summary["resumed_from_epoch"] = resume["epoch"]
        result.summary["wall_s"] = resume["elapsed_s"]
    for epoch in range(start, o.epochs + 1):
        if epoch > 0:
            model.train()
            for xb, yb in index_batches(data, o.batch_size, order, augment, device):
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                    loss = F.cross_entropy(model(xb), yb)
                if not torch.isfinite(loss):
                    raise Diverged(epoch, step, loss.item())
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                step += 1
        # Losses and errors, eval mode (BatchNorm uses running statistics).
        model.eval()
        interp_epoch = record_errors(model, data, schedule, epoch, step, rec, interp_epoch)
        groups = schedule.groups(epoch)
        if groups:
            rec.extend(measure_epoch(cfg, model, data, init_state, epoch, groups))
        if saver is not None:  # init.pt at epoch 0, scheduled resume points, final.pt at the end
            saver.after_epoch(epoch, lambda full: checkpoint.capture(
                cfg, epoch, model=model, step=step, records=rec, interp_epoch=interp_epoch,
                elapsed_s=result.summary["wall_s"] + time.perf_counter() - t0,
                **(dict(optimizer=opt, scheduler=sched, order=order) if full else {})))
        if progress is not None:
            progress(epoch, o.epochs)
    result.summary["interp_epoch"] = interp_epoch
    if interp_epoch is not None:
        rec.append((o.epochs, "interp_epoch", float(interp_epoch)))
