"""Progress of a sweep. On a terminal: one rich bar over all epochs (its ETA) and one per running
trial. Anywhere else (a batch job's log, ``nohup``, a pipe): plain lines without control
characters, every ``log_interval`` seconds and whenever a trial finishes. The driver feeds it from
the executor's progress queue or from inline callbacks."""

from __future__ import annotations

import time

from ..config import PROGRESS_INTERVAL_S
from .status import fmt_duration  # one duration format for status and progress


class PlainProgress:
    """Progress lines for a log file, e.g.

    ``progress: 3/16 trials done, 2 running, epochs 1200/8000 (15 %), elapsed 1m02s, ETA 5m51s;
    last finished: width=45 (test error 0.537)``

    The ETA is elapsed × (epochs left / epochs done) over this run's epochs."""

    def __init__(self, total_epochs: int, n_trials: int, stream, log_interval: float = PROGRESS_INTERVAL_S):
        self.total, self.n_trials, self.stream, self.interval = max(total_epochs, 1), n_trials, stream, log_interval
        self.t0 = self.last = time.monotonic()
        self.done, self.seen, self.finished_epochs = 0, {}, 0
        self.labels: dict[str, str] = {}
        self.last_finished = ""

    def start(self, tid: str, label: str, epochs: int) -> None:
        self.labels[tid], self.seen[tid] = label, 0

    def epoch(self, tid: str, epoch: int) -> None:
        if tid in self.seen:
            self.seen[tid] = max(self.seen[tid], epoch)
        self.tick()

    def errors(self, tid: str, train: float | None, test: float | None) -> None:
        """Running trials' errors: shown by the bars; the log lines keep to the finished ones."""

    def finish(self, tid: str, epochs: int, test_err: float | None = None) -> None:
        self.seen.pop(tid, None)
        self.finished_epochs += epochs
        self.done += 1
        err = "" if test_err is None else f" (test error {test_err:.3f})"
        self.last_finished = f"{self.labels.pop(tid, tid)}{err}"
        self.write()

    def drop(self, tid: str) -> None:
        """A running trial handed back to the queue (its worker died): no longer running, not done."""
        self.seen.pop(tid, None)

    def tick(self) -> None:
        """Write a line if ``log_interval`` seconds passed since the last one."""
        if time.monotonic() - self.last >= self.interval:
            self.write()

    def write(self) -> None:
        now = time.monotonic()
        self.last = now
        epochs = min(self.finished_epochs + sum(self.seen.values()), self.total)
        elapsed = now - self.t0
        eta = f", ETA {fmt_duration(elapsed * (self.total - epochs) / epochs)}" if epochs else ""
        line = (f"progress: {self.done}/{self.n_trials} trials done, {len(self.seen)} running, epochs "
                f"{epochs}/{self.total} ({100 * epochs // self.total} %), elapsed {fmt_duration(elapsed)}{eta}")
        starting = sum(1 for e in self.seen.values() if e == 0)
        if starting:  # no epoch counted yet: loading data, building models, measuring the initial nets
            line += f"; {starting} trial(s) at epoch 0 (data, models, the epoch-0 metrics)"
        if self.last_finished:
            line += f"; last finished: {self.last_finished}"
        self.stream.write(line + "\n")
        self.stream.flush()

    def stop(self) -> None:
        pass


def make_progress(enabled: bool, total_epochs: int, n_trials: int, console=None, log_interval: float = PROGRESS_INTERVAL_S):
    """Bars on a terminal, plain lines otherwise (``console``: a rich Console; None: stderr)."""
    if enabled and console is not None and not console.is_terminal:
        return PlainProgress(total_epochs, n_trials, console.file, log_interval)
    return Progress(enabled, total_epochs, n_trials, console)


class Progress:
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
        self.labels: dict[str, str] = {}

    def _desc(self) -> str:
        return f"sweep: {self.done}/{self.n_trials} trials, epochs"

    def start(self, tid: str, label: str, epochs: int) -> None:
        if self.enabled:
            self.tasks[tid] = self.p.add_task(f"  {label}", total=epochs)
            self.seen[tid] = 0
            self.labels[tid] = label

    def epoch(self, tid: str, epoch: int) -> None:
        if self.enabled and tid in self.tasks:
            delta = max(0, epoch - self.seen[tid])
            self.seen[tid] = max(self.seen[tid], epoch)
            self.p.update(self.tasks[tid], completed=epoch)
            self.p.advance(self.overall, delta)

    def errors(self, tid: str, train: float | None, test: float | None) -> None:
        """Show a running trial's current train (noisy labels) and test error beside its bar."""
        if self.enabled and tid in self.tasks:
            parts = [f"{name} {v:.3f}" for name, v in (("train err", train), ("test err", test)) if v is not None]
            self.p.update(self.tasks[tid], description=f"  {self.labels[tid]}  " + ", ".join(parts))

    def tick(self) -> None:
        pass

    def drop(self, tid: str) -> None:
        """A running trial handed back to the queue: its bar goes, its epochs leave the total done."""
        if self.enabled and tid in self.tasks:
            self.p.advance(self.overall, -self.seen.pop(tid, 0))
            self.p.remove_task(self.tasks.pop(tid))

    def finish(self, tid: str, epochs: int, test_err: float | None = None) -> None:
        if self.enabled and tid in self.tasks:
            self.p.advance(self.overall, max(0, epochs - self.seen[tid]))
            self.p.remove_task(self.tasks.pop(tid))
            self.done += 1
            self.p.update(self.overall, description=self._desc())

    def stop(self) -> None:
        if self.enabled:
            self.p.stop()
