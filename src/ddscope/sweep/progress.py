"""Progress of a sweep on a terminal: one rich bar over all epochs (its ETA) and one per running
trial. The driver feeds it from the executor's progress queue or from inline callbacks."""

from __future__ import annotations


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
