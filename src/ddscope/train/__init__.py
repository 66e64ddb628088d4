"""Training: one path for a lone trial and for vectorised groups of trials.

``run_trial(config) -> TrialResult`` and ``run_group(configs) -> list[TrialResult]`` are pure
functions of the configs (same configs give the same numbers on the same machine). Data live on
the device as tensors, batched by slicing a ``randperm`` (no DataLoader); after every epoch (or
on the schedule of ``metrics.num_eval_epochs``) losses and errors are recorded on the noisy
training labels, the clean and noisy subsets and the test set, and at the scheduled epochs the
metric suite runs on the same tensors. With checkpoint folders every trial saves θ⁰, resume
points and its final weights, and continues after its latest checkpoint exactly as if never
stopped.

Modules, by what they own:

- :mod:`.loop` — the epoch loop, once for all trainers (:func:`run_group`, :func:`run_trial`);
- :mod:`.members` — one member per trial: data, model, θ⁰, records, result;
- :mod:`.trainer`, :mod:`.packed`, :mod:`.stacked` — how a step is computed on the members
  (one model; MLP widths packed side by side; one architecture over seeds / noise, vmapped);
- :mod:`.plan` — which trials may train together (:data:`~.plan.SUPPORTS`, :func:`group_trials`);
- :mod:`.schedule` — what is due at each epoch (metrics, errors, checkpoints);
- :mod:`.evaluate` — losses, errors and metrics at the end of an epoch;
- :mod:`.state` — a member's checkpoint contents, and resuming a group;
- :mod:`.optim`, :mod:`.batches` — the optimiser and a member's share of it; device and batches.
"""

from .batches import index_batches, resolve_device
from .evaluate import epoch_errors, measure_epoch, per_sample_loss_err, record_errors
from .loop import TRAINERS, run_group, run_trial
from .optim import make_optimizer
from .plan import SUPPORTS, group_kind, group_trials, packable, stackable
from .result import Diverged, TrialResult
from .schedule import Schedule, eval_epochs, metric_epochs

__all__ = [
    "SUPPORTS",
    "TRAINERS",
    "Diverged",
    "Schedule",
    "TrialResult",
    "epoch_errors",
    "eval_epochs",
    "group_kind",
    "group_trials",
    "index_batches",
    "make_optimizer",
    "measure_epoch",
    "metric_epochs",
    "packable",
    "per_sample_loss_err",
    "record_errors",
    "resolve_device",
    "run_group",
    "run_trial",
    "stackable",
]
