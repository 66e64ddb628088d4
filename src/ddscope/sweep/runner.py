"""The sweep driver: claim trials from the store, fan them out to an executor, store results.

Only the driver writes the store. Each finished trial's rows and its done-mark commit in one
transaction, so a sweep killed at any moment resumes where it stopped: finished trials are
skipped, a trial that was running is reclaimed (its holder is dead) and run again from scratch.
"""

from __future__ import annotations

import concurrent.futures as cf
import queue as queue_mod
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from ..config import SweepConfig, TrialConfig, dumps_toml
from ..train import TrialResult, run_trial
from .store import Store, worker_id

HEARTBEAT_S = 10.0
STALE_AFTER_S = 600.0


def _job(config: dict, progress_queue=None) -> TrialResult:
    """Runs in the worker: rebuild the config, train, return the result (picklable)."""
    cfg = TrialConfig.from_dict(config)
    progress = None
    if progress_queue is not None:
        tid = cfg.trial_id

        def progress(epoch: int, total: int) -> None:
            progress_queue.put((tid, epoch, total))

    return run_trial(cfg, progress)


@dataclass
class SweepOutcome:
    run_dir: Path
    counts: dict
    ran: int
    failed: list[tuple[str, str]]  # (trial_id, first line of the reason)


def trial_label(cfg: dict, axes: list[str]) -> str:
    """Short label from the grid axes, e.g. ``width=32 seed=1``."""
    parts = []
    for key in axes:
        node = cfg
        for p in key.split("."):
            node = node[p]
        parts.append(f"{key.split('.')[-1]}={node}")
    return " ".join(parts) or cfg.get("model", {}).get("name", "trial")


class _Progress:
    """rich progress: one bar over all epochs of the sweep (its ETA) and one per running trial."""

    def __init__(self, enabled: bool, total_epochs: int, n_trials: int, console=None):
        self.enabled = enabled
        if not enabled:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.p = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self.p.start()
        self.n_trials, self.done = n_trials, 0
        self.overall = self.p.add_task(self._desc(), total=max(total_epochs, 1))
        self.tasks: dict[str, int] = {}
        self.seen: dict[str, int] = {}

    def _desc(self) -> str:
        return f"sweep: {self.done}/{self.n_trials} trials, epochs"

    def start(self, tid: str, label: str, epochs: int) -> None:
        if self.enabled:
            self.tasks[tid] = self.p.add_task(f"  {label}", total=epochs)
            self.seen[tid] = 0

    def epoch(self, tid: str, epoch: int) -> None:
        if self.enabled and tid in self.tasks:
            delta = max(0, epoch - self.seen[tid])
            self.seen[tid] = max(self.seen[tid], epoch)
            self.p.update(self.tasks[tid], completed=epoch)
            self.p.advance(self.overall, delta)

    def finish(self, tid: str, epochs: int) -> None:
        if self.enabled and tid in self.tasks:
            self.p.advance(self.overall, max(0, epochs - self.seen[tid]))
            self.p.remove_task(self.tasks.pop(tid))
            self.done += 1
            self.p.update(self.overall, description=self._desc())

    def stop(self) -> None:
        if self.enabled:
            self.p.stop()


def run_sweep(
    sweep: SweepConfig,
    run_dir: str | Path,
    executor,
    *,
    retry_failed: bool = False,
    show_progress: bool = True,
    console=None,
    stale_after: float = STALE_AFTER_S,
) -> SweepOutcome:
    """Run every trial of ``sweep`` not yet done in ``run_dir/store.sqlite``."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    store = Store.create(run_dir / "store.sqlite", sweep.to_dict())
    cfg_path = run_dir / "config.toml"
    if not cfg_path.exists():
        cfg_path.write_text(dumps_toml(sweep.to_dict()))
    trials = sweep.trials()
    store.add_trials((t.trial_id, t.to_dict()) for t in trials)
    if retry_failed:
        store.reset_failed()
    store.reclaim(stale_after)
    mine = {t.trial_id for t in trials}
    axes = list(sweep.grid)
    todo = [t for t in store.trials("pending") if t["trial_id"] in mine]
    total_epochs = sum(t["config"]["optim"]["epochs"] for t in todo)
    bar = _Progress(show_progress, total_epochs, len(todo), console)

    worker = worker_id()
    inflight: dict[cf.Future, tuple[str, dict]] = {}
    failed: list[tuple[str, str]] = []
    ran = 0
    last_beat = time.time()
    q = getattr(executor, "progress_queue", None)

    def beat(force: bool = False) -> None:
        nonlocal last_beat
        if force or time.time() - last_beat > HEARTBEAT_S:
            store.heartbeat(worker, [tid for tid, _ in inflight.values()] + list(current))
            last_beat = time.time()

    current: set[str] = set()  # the in-process executor's running trial

    def on_epoch(tid: str, epoch: int) -> None:
        bar.epoch(tid, epoch)
        beat()

    def drain() -> None:
        if q is None:
            return
        while True:
            try:
                tid, epoch, _ = q.get_nowait()
            except (queue_mod.Empty, EOFError, OSError):
                return
            bar.epoch(tid, epoch)

    def store_result(tid: str, cfg: dict, fut: cf.Future) -> None:
        nonlocal ran
        try:
            result = fut.result()
        except BaseException:  # noqa: BLE001 — a worker crash marks the trial failed
            result = TrialResult(trial_id=tid, config=cfg, status="failed", error=traceback.format_exc())
        store.finish(result, worker)
        ran += 1
        bar.finish(tid, cfg["optim"]["epochs"])
        if result.status == "failed":
            failed.append((tid, (result.error or "").strip().splitlines()[-1] if result.error else ""))

    try:
        while True:
            while len(inflight) < executor.max_workers:
                claimed = store.claim(worker, only=mine, stale_after=stale_after)
                if claimed is None:
                    break
                tid, cfg = claimed
                bar.start(tid, trial_label(cfg, axes), cfg["optim"]["epochs"])
                if q is None:
                    # In-process: the job runs inside submit; progress calls come straight back.
                    current.add(tid)
                    fut = executor.submit(_inprocess_job, cfg, lambda e, tot, tid=tid: on_epoch(tid, e))
                    current.discard(tid)
                    store_result(tid, cfg, fut)
                    continue
                inflight[executor.submit(_job, cfg, q)] = (tid, cfg)
            if not inflight:
                break
            done, _ = cf.wait(list(inflight), timeout=0.5, return_when=cf.FIRST_COMPLETED)
            drain()
            for fut in done:
                tid, cfg = inflight.pop(fut)
                store_result(tid, cfg, fut)
            beat()
    except BaseException:
        # Ctrl-C or a crash of the driver: hand running trials back, keep everything finished.
        store.release(worker, [tid for tid, _ in inflight.values()] + list(current))
        executor.shutdown(cancel=True)
        bar.stop()
        store.close()
        raise
    bar.stop()
    executor.shutdown()
    counts = store.counts()
    store.close()
    return SweepOutcome(run_dir=run_dir, counts=counts, ran=ran, failed=failed)


def _inprocess_job(config: dict, progress) -> TrialResult:
    return run_trial(TrialConfig.from_dict(config), progress)
