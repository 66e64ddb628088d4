"""One executor interface, several backends: ``submit(fn, *args) -> concurrent.futures.Future``.

The job is any plain picklable callable, so the sweep driver never knows where trials run:

- ``InProcessExecutor`` — runs at submit time in this process (debugging, tests, one core).
- ``LocalPoolExecutor`` — a pool of spawned processes; torch threads are split between workers.
- ``RayExecutor`` — one Ray task per trial with its CPU/GPU request (``pip install 'ddscope[ray]'``).
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os
from typing import Any, Callable

from ..errors import UserError

EXECUTORS = ("inprocess", "local", "ray")


class InProcessExecutor:
    """Runs each job synchronously; ``submit`` returns an already-completed future."""

    max_workers = 1
    progress_queue = None

    def submit(self, fn: Callable, *args: Any) -> cf.Future:
        fut: cf.Future = cf.Future()
        try:
            fut.set_result(fn(*args))
        except BaseException as e:  # noqa: BLE001 — surfaced through the future like the pools do
            fut.set_exception(e)
        return fut

    def shutdown(self, cancel: bool = False) -> None:
        pass


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))


class LocalPoolExecutor:
    """``ProcessPoolExecutor`` with the spawn start method (safe with torch threads) and
    ``cpu_count // workers`` torch threads per worker."""

    def __init__(self, max_workers: int | None = None, threads_per_worker: int | None = None):
        cpus = os.cpu_count() or 1
        self.max_workers = max(1, max_workers or cpus)
        threads = threads_per_worker or max(1, cpus // self.max_workers)
        ctx = mp.get_context("spawn")
        self._pool = cf.ProcessPoolExecutor(
            max_workers=self.max_workers, mp_context=ctx, initializer=_init_worker, initargs=(threads,)
        )
        # Workers report per-epoch progress through a managed queue (picklable into spawned workers).
        self._manager = ctx.Manager()
        self.progress_queue = self._manager.Queue()

    def submit(self, fn: Callable, *args: Any) -> cf.Future:
        return self._pool.submit(fn, *args)

    def shutdown(self, cancel: bool = False) -> None:
        self._pool.shutdown(wait=not cancel, cancel_futures=cancel)
        try:
            self._manager.shutdown()
        except Exception:  # noqa: BLE001 — the manager may already be gone after Ctrl-C
            pass


class RayExecutor:
    """Each job a Ray task (``num_cpus``/``num_gpus`` per trial); results come back to the driver,
    which alone writes the store. ``address=None`` starts or joins a local Ray instance."""

    progress_queue = None

    def __init__(self, address: str | None = None, num_cpus: float = 1, num_gpus: float = 0, max_workers: int | None = None, init_kwargs: dict | None = None):
        try:
            import ray
        except ImportError:
            raise UserError("the Ray executor needs Ray: pip install 'ddscope[ray]'") from None
        self._ray = ray
        if not ray.is_initialized():
            ray.init(address=address, ignore_reinit_error=True, log_to_driver=False, **(init_kwargs or {}))
        self._opts = {"num_cpus": num_cpus, "num_gpus": num_gpus, "max_retries": 0}
        total = int(ray.cluster_resources().get("CPU", 1) // max(num_cpus, 1e-9))
        self.max_workers = max_workers or max(1, total)
        self._remote = {}

    def submit(self, fn: Callable, *args: Any) -> cf.Future:
        if fn not in self._remote:
            self._remote[fn] = self._ray.remote(fn).options(**self._opts)
        return self._remote[fn].remote(*args).future()

    def shutdown(self, cancel: bool = False) -> None:
        pass


def make_executor(name: str, workers: int | None = None, address: str | None = None, gpus_per_trial: float = 0):
    if name == "inprocess":
        return InProcessExecutor()
    if name == "local":
        return LocalPoolExecutor(workers)
    if name == "ray":
        return RayExecutor(address=address, num_gpus=gpus_per_trial, max_workers=workers)
    raise UserError(f"unknown executor '{name}'; allowed: {', '.join(EXECUTORS)}")
