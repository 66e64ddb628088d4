"""The sweep driver: claim trials from the store, fan them out to an executor, store results.

Only the driver writes the store. Each finished trial's rows and its done-mark commit in one
transaction, so a sweep killed at any moment resumes where it stopped: finished trials are
skipped, and a trial that was running is reclaimed (its holder is dead) and continues from its
last checkpoint in ``<run_dir>/trials/<trial_id>/``. A heartbeat thread keeps this driver's running
trials marked alive whatever the executor is doing, so only a dead or silent driver loses them.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import queue as queue_mod
import traceback
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

from ..checkpoint import trial_dir
from ..catalogue import BASE_AXES
from ..config import MAX_GROUP, PROGRESS_INTERVAL_S, SweepConfig, TrialConfig, dumps_toml, flatten
from ..extend import extend_sweep
from ..errors import UserError, as_user_error
from ..train import TrialResult, group_trials, run_group
from .executors import Executor, unguarded_main_script, worker_progress_queue
from .heartbeat import HEARTBEAT_S, Heartbeat
from .progress import make_progress
from .loggers import loggers_for
from .store import STALE_AFTER_S, Store, worker_id

WORKER_DIED = (
    "worker process died abruptly (killed, or out of memory?) each of the times this trial ran; "
    "--retry-failed resumes it from its last checkpoint"
)
WORKER_DEATH_RETRIES = 3  # claims of a trial whose worker died before it is failed rather than requeued


def _job(configs: list[dict], ckpt_dirs: list[str], report_progress: bool = False, progress=None) -> list[TrialResult]:
    """Runs in a worker (or inline): rebuild the configs, train them — one trial, or a group as
    one vectorised model — resuming from their checkpoints, and return the picklable results.
    Per-epoch progress and the running errors go to the pool's queue (``(trial_id, epoch,
    total)`` and ``("errors", trial_id, train, test)``), or inline to ``progress.epoch`` and
    ``progress.errors`` (the progress display)."""
    cfgs = [TrialConfig.from_dict(c) for c in configs]
    q = worker_progress_queue() if report_progress else None
    tids = [c.trial_id for c in cfgs]

    def each(epoch: int, total: int) -> None:
        for tid in tids:
            if q is not None:
                q.put((tid, epoch, total))
            elif progress is not None:
                progress.epoch(tid, epoch)

    def errs(tid: str, epoch: int, train: float | None, test: float | None) -> None:
        if q is not None:
            q.put(("errors", tid, train, test))
        elif progress is not None:
            progress.errors(tid, train, test)

    live = q is not None or progress is not None
    return run_group(cfgs, each if live else None, ckpt_dirs, errs if live else None)


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


def _final_test_error(result: TrialResult) -> float | None:
    """The test error at the last epoch that recorded one (None without any)."""
    errs = [(e, v) for e, m, v in result.records if m == "err/test"]
    return max(errs)[1] if errs else None


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def run_sweep(
    sweep: SweepConfig,
    run_dir: str | Path,
    executor: Executor,
    *,
    retry_failed: bool = False,
    show_progress: bool = True,
    console=None,
    stale_after: float = STALE_AFTER_S,
    group: bool = True,
    max_group: int = MAX_GROUP,
    progress_interval: float = PROGRESS_INTERVAL_S,
) -> SweepOutcome:
    """Run every trial of ``sweep`` not yet done in ``run_dir/store.sqlite``.

    Trials use this call's config (its ``device`` and ``checkpoint`` settings, which are not part
    of the trial id). A :class:`UserError` raised by a trial (a corrupted checkpoint, missing data)
    stops the sweep, as does Ctrl-C: running trials are handed back to the store, finished ones
    stay, and the executor is shut down before the exception propagates.

    With ``group`` (default), pending trials that can train together — MLPs of several widths at
    one seed, or one architecture and width over seeds / noise draws — run as one vectorised
    model of at most ``max_group`` members (:mod:`ddscope.train`); results are stored per trial
    exactly as for separate training, and every trial keeps its own checkpoints.

    Progress (``show_progress``) is drawn as bars when ``console`` is a terminal, and otherwise
    written as plain lines every ``progress_interval`` seconds and whenever a trial finishes.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    store = Store.create(run_dir / "store.sqlite", sweep.to_dict())
    try:  # another sweep's fixed settings are refused; grid axes are extended in place
        merged = store.update_sweep_config(
            lambda stored: extend_sweep(stored, sweep, where=f"run directory {run_dir}").to_dict())
    except BaseException:
        store.close()
        raise
    if not (run_dir / "config.toml").exists() or (run_dir / "config.toml").read_text() != dumps_toml(merged):
        _write_atomic(run_dir / "config.toml", dumps_toml(merged))
    trials = {t.trial_id: t for t in sweep.trials()}
    # plain dicts: what the store keeps and what crosses to a worker process (rebuilt there once)
    configs = {tid: t.to_dict() for tid, t in trials.items()}
    store.add_trials(configs.items())
    mine = set(configs)
    if retry_failed:
        store.reset_failed(only=mine)
    store.reclaim(stale_after)
    axes = list(sweep.grid)
    loggers = loggers_for(sweep.base.log, sweep.name)  # [log]: TensorBoard / MLflow, each trial as it finishes
    log_axes = list(BASE_AXES) + [k for k in axes if k not in BASE_AXES]
    todo = [t for t in store.trials("pending") if t["trial_id"] in mine]
    bar = make_progress(show_progress, sum(configs[t["trial_id"]]["optim"]["epochs"] for t in todo), len(todo),
                        console, progress_interval)

    # The plan: units of trial ids, a unit of several trains as one vectorised group.
    units: list[list[str]] = []
    if group and todo:
        cfgs = [trials[t["trial_id"]] for t in todo]
        units = [[c.trial_id for c in g] for g in group_trials(cfgs, max_group=max_group, workers=executor.max_workers)]
        units = [u for u in units if len(u) > 1]  # singletons go through the plain claim loop

    worker = worker_id()
    beat = Heartbeat(store.path, worker, HEARTBEAT_S)
    inflight: dict[cf.Future, list[str]] = {}
    failed: list[tuple[str, str]] = []
    ran = 0
    q = executor.progress_queue

    def drain() -> None:
        bar.tick()
        if q is None:
            return
        while True:
            try:
                msg = q.get_nowait()
            except (queue_mod.Empty, EOFError, OSError):
                return
            if msg[0] == "errors":
                bar.errors(*msg[1:])
            else:
                tracked.epoch(msg[0], msg[1])

    class _Tracked:
        """The progress display, and each trial's fraction of epochs done for the heartbeat (so
        ``ddscope status`` has an ETA before the first trial finishes)."""

        def epoch(self, tid: str, epoch: int) -> None:
            bar.epoch(tid, epoch)
            beat.progress(tid, epoch / max(configs[tid]["optim"]["epochs"], 1))

        def errors(self, tid: str, train, test) -> None:
            bar.errors(tid, train, test)

    tracked = _Tracked()

    def store_results(tids: list[str], fut: cf.Future) -> None:
        nonlocal ran
        try:
            out = fut.result()
            results = out if isinstance(out, list) else [out]
        except BrokenProcessPool:
            if (script := unguarded_main_script()) is not None:
                raise UserError(f"the local executor's workers died while starting: {script} has no "
                                "`if __name__ == \"__main__\":` guard, so every spawned worker runs it again; "
                                "put the sweep under that guard (or use executor 'inprocess')") from None
            # A worker died (killed, out of memory): the pool is broken, and every trial in it with
            # it. Each goes back to the queue and resumes from its checkpoints — unless it has
            # now been claimed WORKER_DEATH_RETRIES times, when it is the likely killer: failed.
            tries = {t["trial_id"]: t["attempts"] for t in store.trials("running") if t["trial_id"] in set(tids)}
            again = [t for t in tids if tries.get(t, WORKER_DEATH_RETRIES) < WORKER_DEATH_RETRIES]
            store.release(worker, again)
            for t in again:
                beat.discard(t)
                bar.drop(t)
            tids = [t for t in tids if t not in again]
            results = [TrialResult(trial_id=t, config=configs[t], status="failed", error=WORKER_DIED) for t in tids]
        except Exception as e:  # noqa: BLE001 — a crash outside run_trial marks the trial failed
            if (user := as_user_error(e)) is not None:
                raise user from None
            err = traceback.format_exc()
            results = [TrialResult(trial_id=t, config=configs[t], status="failed", error=err) for t in tids]
        for tid, result in zip(tids, results):
            store.finish(result)
            for logger in loggers:
                logger.log_trial(tid, flatten(configs[tid]), log_axes, result.records, result.status)
            beat.discard(tid)
            ran += 1
            bar.finish(tid, configs[tid]["optim"]["epochs"], _final_test_error(result))
            if result.status == "failed":
                failed.append((tid, (result.error or "").strip().splitlines()[-1] if result.error else ""))

    def claim_unit() -> list[str]:
        """The next planned group (the members still pending), else the next single trial."""
        while units:
            got = []
            unit = units.pop(0)
            for tid in unit:
                claimed = store.claim(worker, only={tid}, stale_after=stale_after, unit=unit[0])
                if claimed is not None:
                    got.append(tid)
            if got:
                return got
        claimed = store.claim(worker, only=mine, stale_after=stale_after)
        return [] if claimed is None else [claimed[0]]

    try:
        while True:
            while len(inflight) < executor.max_workers:
                tids = claim_unit()
                if not tids:
                    break
                for tid in tids:
                    beat.add(tid)
                    bar.start(tid, trial_label(configs[tid], axes), configs[tid]["optim"]["epochs"])
                cfgs = [configs[t] for t in tids]
                ckpts = [str(trial_dir(run_dir, t)) for t in tids]
                if executor.inline:  # runs inside submit; progress calls come straight back
                    store_results(tids, executor.submit(_job, cfgs, ckpts, False, tracked))
                    continue
                inflight[executor.submit(_job, cfgs, ckpts, q is not None)] = tids
            if not inflight:
                break
            done, _ = cf.wait(list(inflight), timeout=0.5, return_when=cf.FIRST_COMPLETED)
            drain()
            for fut in done:
                store_results(inflight.pop(fut), fut)
    except BaseException as e:
        # Ctrl-C, a user error or a crash of the driver: hand running trials back (they resume
        # from their checkpoints), keep everything finished, stop the workers now. Every step is
        # tried even when one fails (a full disk fails the release too: those trials are then
        # reclaimed by the next run, their holder being dead), and the first error is raised.
        refused = isinstance(e, UserError) or isinstance(getattr(e, "cause", None), UserError)
        for step in (lambda: store.release(worker, beat.ids(), undo_claim=refused), beat.stop,
                     lambda: executor.shutdown(cancel=True),
                     bar.stop, store.close):
            try:
                step()
            except Exception:  # noqa: BLE001,S110 — cleanup must go on; `e` is what the user sees
                pass
        if not isinstance(e, (KeyboardInterrupt, UserError)) and (user := as_user_error(e)) is not None:
            raise user from None
        raise
    beat.stop()
    bar.stop()
    executor.shutdown()
    counts = store.counts()
    store.close()
    return SweepOutcome(run_dir=run_dir, counts=counts, ran=ran, failed=failed)
