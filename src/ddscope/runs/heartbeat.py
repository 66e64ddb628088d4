"""The driver's heartbeat: its running trials are marked alive in the store from a thread of its
own, so only a dead or silent driver loses them (``Store.reclaim``)."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from .store import Store

HEARTBEAT_S = 10.0  # seconds between beats; STALE_AFTER_S in the store is many of these


class Heartbeat:
    """Marks this driver's running trials alive every ``interval`` seconds from its own thread and
    SQLite connection: a long epoch or metric pass in-process must not look like a dead holder."""

    def __init__(self, path: Path, worker: str, interval: float):
        self._ids: set[str] = set()
        self._progress: dict[str, float] = {}  # trial -> fraction of its epochs done
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(path, worker, interval), daemon=True,
                                        name="ddscope-heartbeat")
        self._thread.start()

    def add(self, tid: str) -> None:
        with self._lock:
            self._ids.add(tid)

    def discard(self, tid: str) -> None:
        with self._lock:
            self._ids.discard(tid)
            self._progress.pop(tid, None)

    def progress(self, tid: str, fraction: float) -> None:
        """Remember how far ``tid`` is (written with the next beat)."""
        with self._lock:
            if tid in self._ids:
                self._progress[tid] = fraction

    def ids(self) -> list[str]:
        with self._lock:
            return sorted(self._ids)

    def _run(self, path: Path, worker: str, interval: float) -> None:
        store = Store.open(path)
        try:
            while not self._stop.wait(interval):
                with self._lock:
                    progress = dict(self._progress)
                try:
                    store.heartbeat(worker, self.ids(), progress)
                except sqlite3.OperationalError:
                    continue  # the store was busy for a whole busy-timeout: beat again next time
        finally:
            store.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
