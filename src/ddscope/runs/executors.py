"""One executor interface, several backends: ``submit(fn, *args) -> concurrent.futures.Future``.

The job is any plain picklable callable, so the sweep driver never knows where trials run:

- ``InProcessExecutor`` — runs at submit time in this process (debugging, tests, one core).
- ``LocalPoolExecutor`` — a pool of spawned processes; torch threads are split between workers.
- ``RayExecutor`` — one Ray task per trial with its CPU/GPU request (``pip install 'ddscope[ray]'``).
- ``SubmititExecutor`` — one Slurm job per trial or group, or submitit's local processes
  (``pip install 'ddscope[slurm]'``); preempted jobs are requeued and resume from checkpoints.

Every executor has ``max_workers`` (trials in flight), ``inline`` (jobs run inside ``submit``, so
progress callbacks can be plain closures), ``progress_queue`` (a queue its workers put
``(trial_id, epoch, total)`` on, found there by :func:`worker_progress_queue`; or None) and
``shutdown(cancel)``; ``cancel=True`` stops running
jobs now (Ctrl-C), which is safe because trials resume from their checkpoints.
"""

from __future__ import annotations

import concurrent.futures as cf
import functools
import math
import multiprocessing as mp
import os
import shutil
import signal
import sys
import threading
import time
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Protocol

from ..errors import UserError

EXECUTORS = ("inprocess", "local", "ray", "slurm", "submitit-local")


class Executor(Protocol):
    """What the sweep driver needs of a backend (``ddscope.runs.runner.run_sweep``)."""

    max_workers: int  # trials (or vectorised groups) in flight at once
    inline: bool  # jobs run inside submit(): progress callbacks may be plain closures
    progress_queue: Any  # where workers put (trial_id, epoch, total), or None

    def submit(self, fn: Callable, *args: Any) -> cf.Future:
        """Run the picklable ``fn(*args)``; its result or exception arrives through the future."""

    def shutdown(self, cancel: bool = False) -> None:
        """Release the workers; ``cancel=True`` stops running jobs now (they resume from checkpoints)."""


class InProcessExecutor:
    """Runs each job synchronously; ``submit`` returns an already-completed future.

    Only ``Exception`` goes into the future: Ctrl-C (KeyboardInterrupt) propagates to the driver,
    which hands the trial back instead of recording it as failed.
    """

    max_workers = 1
    inline = True
    progress_queue = None

    def submit(self, fn: Callable, *args: Any) -> cf.Future:
        fut: cf.Future = cf.Future()
        try:
            fut.set_result(fn(*args))
        except Exception as e:  # noqa: BLE001 — surfaced through the future like the pools do
            fut.set_exception(e)
        return fut

    def shutdown(self, cancel: bool = False) -> None:
        pass


def _exit_with_parent(parent: int) -> None:
    """A worker whose driver died (SIGKILL, OOM) exits instead of training on as an orphan; its
    trial is reclaimed by the next sweep and resumes from its last checkpoint. The driver's pid
    is passed in (``os.getppid()`` read here would already be 1 if the driver died while this
    worker started), and on Linux the kernel also delivers SIGKILL when the driver exits."""
    _set_parent_death_signal()
    while True:
        if os.getppid() != parent:  # checked at once: the driver may have died before prctl
            os._exit(1)
        time.sleep(0.5)


def _set_parent_death_signal() -> None:
    """``prctl(PR_SET_PDEATHSIG, SIGKILL)`` on Linux: killed the moment the parent exits."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):  # no libc prctl: the watch thread alone does it
        pass


_worker_queue = None  # in a pool worker: the driver's progress queue


def worker_progress_queue():
    """The progress queue of the pool this process works for (None outside a pool worker)."""
    return _worker_queue


def _init_worker(threads: int, progress_queue, driver_pid: int) -> None:
    global _worker_queue
    # First of all: a worker must never outlive the driver that spawned it.
    _set_parent_death_signal()
    if os.getppid() != driver_pid:
        os._exit(1)
    threading.Thread(target=_exit_with_parent, args=(driver_pid,), daemon=True).start()
    # Ctrl-C in a terminal reaches the whole process group; the driver alone decides how to stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import torch

    torch.set_num_threads(threads)
    # A multiprocessing.Queue may only reach a child at its start, hence here and not per job.
    _worker_queue = progress_queue


def unguarded_main_script() -> str | None:
    """The path of the script this process runs when it lacks an ``if __name__ == "__main__":``
    guard, else None. Spawned workers re-import the main script: without the guard each one runs
    the sweep again and dies while starting, which looks like a worker killed for memory."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if not path or getattr(main, "__spec__", None) is not None:  # -m module, REPL, notebook: fine
        return None
    try:
        text = open(path, encoding="utf-8", errors="replace").read()
    except OSError:
        return None
    return None if "__main__" in text else path


class LocalPoolExecutor:
    """``ProcessPoolExecutor`` with the spawn start method (safe with torch threads) and
    ``cpu_count // workers`` torch threads per worker, or ``$OMP_NUM_THREADS`` when it is set."""

    inline = False

    def __init__(self, max_workers: int | None = None, threads_per_worker: int | None = None):
        cpus = os.cpu_count() or 1
        self.max_workers = max(1, max_workers or cpus)
        omp = os.environ.get("OMP_NUM_THREADS", "")
        self._threads = threads_per_worker or (int(omp) if omp.isdigit() and int(omp) > 0 else 0) \
            or max(1, cpus // self.max_workers)
        self._ctx = mp.get_context("spawn")
        # Workers put (trial_id, epoch, total) here after every epoch (see worker_progress_queue).
        self.progress_queue = self._ctx.Queue()
        self._pool = self._new_pool()

    def _new_pool(self) -> cf.ProcessPoolExecutor:
        return cf.ProcessPoolExecutor(max_workers=self.max_workers, mp_context=self._ctx, initializer=_init_worker,
                                      initargs=(self._threads, self.progress_queue, os.getpid()))

    def submit(self, fn: Callable, *args: Any) -> cf.Future:
        try:
            return self._pool.submit(fn, *args)
        except BrokenProcessPool:
            # A worker died abruptly (killed, out of memory): its futures already carry the error;
            # later trials get a fresh pool.
            self._pool.shutdown(wait=False)
            self._pool = self._new_pool()
            return self._pool.submit(fn, *args)

    def shutdown(self, cancel: bool = False) -> None:
        if cancel:
            procs = list((getattr(self._pool, "_processes", None) or {}).values())
            self._pool.shutdown(wait=False, cancel_futures=True)
            for p in procs:  # shutdown() alone would wait for the running trials to finish
                p.terminate()
            for p in procs:
                p.join(timeout=10)
        else:
            self._pool.shutdown(wait=True)
        self.progress_queue.close()


class RayExecutor:
    """Each job a Ray task (``num_cpus``/``num_gpus`` per trial); results come back to the driver,
    which alone writes the store. ``address=None`` starts a local Ray instance (shut down again at
    the end), ``"auto"`` or ``"ray://host:10001"`` joins a running cluster. Tasks are never retried
    by Ray (``max_retries=0``): a trial runs once per claim, and a lost one is reclaimed by the
    store. Workers must be able to import ddscope (install it on every node)."""

    inline = False
    progress_queue = None

    def __init__(self, address: str | None = None, num_cpus: float = 1, num_gpus: float = 0,
                 max_workers: int | None = None, init_kwargs: dict | None = None):
        try:
            import ray
        except ImportError:
            raise UserError("the Ray executor needs Ray: pip install 'ddscope[ray]'") from None
        self._ray = ray
        self._owns = not ray.is_initialized()
        if self._owns:
            kwargs = dict(init_kwargs or {})
            # Your own modules named in a config ("mymodels:factory") are found by the workers as
            # here: the current folder and PYTHONPATH go into the job's environment.
            env = kwargs.setdefault("runtime_env", {}).setdefault("env_vars", {})
            env.setdefault("PYTHONPATH", os.pathsep.join(p for p in (os.getcwd(), os.environ.get("PYTHONPATH", "")) if p))
            try:
                ray.init(address=address, log_to_driver=False, **kwargs)
            except ConnectionError as e:
                raise UserError(f"cannot reach the Ray cluster at {address!r}: {e}") from None
        self._opts = {"num_cpus": num_cpus, "num_gpus": num_gpus, "max_retries": 0}
        res = ray.cluster_resources()
        slots = int(res.get("CPU", 1) // max(num_cpus, 1e-9))
        if num_gpus > 0:  # never claim more trials than the cluster can start at once
            slots = min(slots, int(res.get("GPU", 0) // num_gpus))
            if slots == 0:
                raise UserError(f"--gpus-per-trial {num_gpus}: the Ray cluster has {res.get('GPU', 0)} GPUs")
        self.max_workers = max_workers or max(1, slots)
        self._remote: dict[Callable, Any] = {}
        self._refs: dict[cf.Future, Any] = {}

    def submit(self, fn: Callable, *args: Any) -> cf.Future:
        if fn not in self._remote:
            self._remote[fn] = self._ray.remote(_in_folder).options(**self._opts)
        # In the driver's folder (where it exists on the node: the same host, a shared file
        # system), so relative paths in the config (data.path, data.root) mean what they mean here.
        ref = self._remote[fn].remote(os.getcwd(), fn, *args)
        fut = ref.future()
        self._refs[fut] = ref
        fut.add_done_callback(lambda f: self._refs.pop(f, None))
        return fut

    def shutdown(self, cancel: bool = False) -> None:
        if cancel:
            for ref in list(self._refs.values()):
                self._ray.cancel(ref, force=True)
        if self._owns and self._ray.is_initialized():
            self._ray.shutdown()


try:  # submitit is optional: the requeue-on-preemption job class exists where it is installed
    from submitit.helpers import Checkpointable as _Checkpointable
except ImportError:  # pragma: no cover - without the extra the class is never used
    _Checkpointable = object


class _Requeued(_Checkpointable):
    """A job submitit requeues when Slurm preempts it or its time limit is near (submitit's
    checkpoint protocol: the same call again). The trials inside resume from their own
    checkpoints, so a requeued job continues where it stopped."""

    def __init__(self, fn: Callable):
        self.fn = fn

    def __call__(self, *args: Any):
        return self.fn(*args)


class SubmititExecutor:
    """Each job a submitit job: on Slurm (``cluster="slurm"``, one job per trial or group, at
    most ``max_workers`` in flight) or as local processes (``cluster="local"``, submitit's local
    executor, the same code path). A preempted or timed-out job is requeued by submitit (its
    checkpoint protocol), and a job that dies without a result (killed, node failure) is
    submitted again by the driver, up to ``max_requeues`` times; either way its trials resume
    from their checkpoints. Results come back to the driver, which alone writes the store (as
    with Ray). ``pip install 'ddscope[slurm]'``."""

    inline = False
    progress_queue = None

    def __init__(self, folder: str | os.PathLike, cluster: str = "slurm", max_workers: int | None = None, *,
                 partition: str | None = None, time_limit_min: int = 60, gpus_per_trial: float = 0,
                 cpus_per_trial: int = 1, mem_gb: float | None = None, slurm_kwargs: dict | None = None):
        try:
            import submitit
        except ImportError:
            raise UserError("the Slurm executors need submitit: pip install 'ddscope[slurm]'") from None
        if cluster == "slurm" and shutil.which("sbatch") is None:
            raise UserError("--executor slurm needs Slurm (sbatch is not on PATH); --executor submitit-local runs the "
                            "same jobs on this machine")
        self._local = cluster == "local"
        if cluster == "local":
            self._ex = submitit.LocalExecutor(folder=folder)
        else:
            self._ex = submitit.AutoExecutor(folder=folder, cluster=cluster)
        params: dict[str, Any] = {"timeout_min": int(time_limit_min), "cpus_per_task": int(cpus_per_trial)}
        if gpus_per_trial:
            params["gpus_per_node"] = int(math.ceil(gpus_per_trial))
        if cluster != "local":
            if partition:
                params["slurm_partition"] = partition
            if mem_gb:
                params["mem_gb"] = mem_gb
            params.update(slurm_kwargs or {})
        try:
            self._ex.update_parameters(**params)
        except (TypeError, ValueError) as e:
            raise UserError(f"submitit does not take these job settings: {e}") from None
        self.max_workers = max(1, max_workers or ((os.cpu_count() or 1) if cluster == "local" else 16))
        self.jobs: dict[cf.Future, Any] = {}  # in flight: future -> submitit job
        self.max_requeues = 3  # a job that dies without a result is submitted again this often
        self._stopping = False

    def submit(self, fn: Callable, *args: Any) -> cf.Future:
        fut: cf.Future = cf.Future()
        if self._local:  # a local job must not outlive the driver (submitit's controller is built to)
            fn = functools.partial(_while_driver_lives, os.getpid(), fn)
        self.jobs[fut] = self._ex.submit(_Requeued(fn), *args)

        def wait() -> None:
            try:
                for attempt in range(self.max_requeues + 1):
                    try:
                        fut.set_result(self.jobs[fut].result())
                        return
                    except Exception as e:  # noqa: BLE001 — a killed job (node failure, OOM, scancel)
                        if type(e).__name__ != "UncompletedJobError" or attempt == self.max_requeues or self._stopping:
                            raise
                        # Submitted again: its trials resume from their last checkpoints.
                        self.jobs[fut] = self._ex.submit(_Requeued(fn), *args)
            except Exception as e:  # noqa: BLE001 — the job's error, surfaced through the future
                fut.set_exception(e)
            finally:
                self.jobs.pop(fut, None)

        threading.Thread(target=wait, daemon=True, name="submitit-wait").start()
        return fut

    def shutdown(self, cancel: bool = False) -> None:
        self._stopping = True
        if cancel:
            for job in list(self.jobs.values()):
                try:
                    job.cancel(check=False)
                except Exception:  # noqa: BLE001,S110 — a job that already ended
                    pass


def _while_driver_lives(driver: int, fn: Callable, *args: Any):
    """Run ``fn(*args)`` in a submitit-local job, exiting the moment the driver process is gone.
    The job's parent is submitit's controller, not the driver, so the driver's pid is watched
    directly (checked at once too: the driver may have died while the job started)."""

    def alive() -> bool:
        try:
            os.kill(driver, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # a pid now owned by someone else: ours is gone
            return False
        try:  # a killed driver not yet reaped by its shell is a zombie: gone all the same
            return open(f"/proc/{driver}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return True  # no /proc (not Linux): signal 0 is all there is

    def watch() -> None:
        while alive():
            time.sleep(0.5)
        os._exit(1)

    if not alive():
        os._exit(1)
    threading.Thread(target=watch, daemon=True, name="ddscope-driver-watch").start()
    return fn(*args)


def _in_folder(folder: str, fn: Callable, *args: Any):
    """Run ``fn(*args)`` in ``folder`` when this node has it (a Ray task)."""
    if os.path.isdir(folder):
        os.chdir(folder)
    return fn(*args)


def make_executor(name: str, workers: int | None = None, address: str | None = None,
                  gpus_per_trial: float = 0, folder: str | os.PathLike | None = None, **slurm: Any) -> Executor:
    """The executor ``name``; ``folder`` holds submitit's job files (slurm, submitit-local) and
    ``slurm`` its job settings (partition, time_limit_min, cpus_per_trial, mem_gb, slurm_kwargs)."""
    if name == "inprocess":
        return InProcessExecutor()
    if name == "local":
        return LocalPoolExecutor(workers)
    if name == "ray":
        return RayExecutor(address=address, num_gpus=gpus_per_trial, max_workers=workers)
    if name in ("slurm", "submitit-local"):
        return SubmititExecutor(folder or "submitit", "local" if name == "submitit-local" else "slurm", workers,
                                gpus_per_trial=gpus_per_trial, **slurm)
    raise UserError(f"unknown executor '{name}'; allowed: {', '.join(EXECUTORS)}")
