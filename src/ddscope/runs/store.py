"""The results store: one SQLite file per sweep, the single source of truth.

Schema (version 2, WAL mode, busy timeout):

- ``meta(key, value)``: ``schema_version``, ``sweep`` (the sweep config as JSON), ``created``.
- ``trials``: one row per trial with its config (JSON), state ``pending | running | done |
  failed``, the claiming ``worker`` and its ``heartbeat``, attempts, error text, a JSON
  ``summary`` (params, interp_epoch, wall time), the packed noisy-label mask and, while it runs,
  its ``unit`` (the id of the vectorised group it trains in, so ``status`` knows which running
  trials finish together).
- ``records(trial_id, epoch, metric, value)``: the tidy rows, primary key (trial, epoch, metric),
  so a row can never be stored twice.

A trial's rows and its state change commit in one transaction; claims use ``BEGIN IMMEDIATE`` so
two sweep processes on one store never run the same trial; a trial whose worker died (same host,
dead PID) or whose heartbeat is older than ``stale_after`` seconds is reclaimed. The file is built
under a temporary name and linked into place, so a second process never sees a half-made store.
Commits are ``synchronous = FULL``: a stored trial survives a power cut, not only a crash.

SQLite locking needs a local file system: run every sweep process of one store on one host (or
let one driver fan out to many hosts with the Ray executor).
"""

from __future__ import annotations

import json
import math
import os
import socket
import sqlite3
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from ..errors import UserError, as_user_error
from ..paths import is_component

STALE_AFTER_S = 600.0  # a running trial whose heartbeat is older than this is taken as abandoned
SCHEMA_VERSION = 3  # 2: trials.unit (the vectorised group a running trial belongs to); 3: trials.progress
STATES = ("pending", "running", "done", "failed")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS trials (
    trial_id   TEXT PRIMARY KEY,
    position   INTEGER NOT NULL,
    config     TEXT NOT NULL,
    status     TEXT NOT NULL DEFAULT 'pending',
    worker     TEXT,
    heartbeat  REAL,
    started    REAL,
    finished   REAL,
    attempts   INTEGER NOT NULL DEFAULT 0,
    error      TEXT,
    summary    TEXT,
    noisy_mask BLOB,
    unit       TEXT,
    progress   REAL
);
CREATE TABLE IF NOT EXISTS records (
    trial_id TEXT NOT NULL,
    epoch    INTEGER NOT NULL,
    metric   TEXT NOT NULL,
    value    REAL,
    PRIMARY KEY (trial_id, epoch, metric)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS trials_status ON trials(status, position);
"""
# What Store.open requires of a file before it calls it a store.
_COLUMNS = {
    "meta": {"key", "value"},
    "trials": {"trial_id", "position", "config", "status", "worker", "heartbeat", "started", "finished", "attempts",
               "error", "summary", "noisy_mask"},
    "records": {"trial_id", "epoch", "metric", "value"},
}


def worker_id() -> str:
    """``host:pid:random`` — unique per process, and tells whether a same-host holder is alive."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def holder_dead(worker: str | None) -> bool:
    """True when ``worker`` ran on this host and its process no longer exists."""
    if not worker:
        return True
    try:
        host, pid, _ = worker.split(":")
        pid = int(pid)
    except ValueError:
        return False
    if host != socket.gethostname():
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class Store:
    """Thin, explicit wrapper around the SQLite file; open with :meth:`open` or :meth:`create`."""

    def __init__(self, path: Path, conn: sqlite3.Connection):
        self.path = path
        self.conn = conn
        self._before_claim: dict[str, float | None] = {}  # trial -> its `started` before this process claimed it

    # ------------------------------------------------------------------ opening

    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        conn = sqlite3.connect(path, timeout=60.0, isolation_level=None)  # autocommit; explicit BEGIN
        conn.execute("PRAGMA busy_timeout = 60000")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        return conn

    @classmethod
    def open(cls, path: str | Path, *, readonly: bool = False) -> "Store":
        """Open an existing store; a missing, foreign or corrupted file is a :class:`UserError`.

        The file is first checked through a read-only connection, so a file that is not a ddscope
        store is never touched (not even switched to WAL mode) before the error. ``readonly``:
        for commands that only read (status, report, export) — nothing is written, not even the
        WAL index, so a run folder on a read-only disk can still be inspected."""
        path = Path(path)
        if path.is_dir():
            path = path / "store.sqlite"
        if not path.exists():
            raise UserError(f"no ddscope store at {path} (run `ddscope sweep` first)")
        version = cls._check(path)
        try:
            conn = cls._connect(path)
        except sqlite3.DatabaseError as e:
            if not readonly:
                raise UserError(f"the store {path} cannot be opened for writing ({e})") from None
            # a read-only folder or disk: reading needs no write (status, report, export)
            if version < 2:
                raise UserError(f"the store {path} has schema version {version} and cannot be upgraded where it "
                                "is (read-only); copy the run folder somewhere writable") from None
            return cls(path, _connect_readonly(path))  # a version-2 store reads without progress
        store = cls(path, conn)
        store._migrate(version)
        return store

    @staticmethod
    def _check(path: Path) -> int:
        """The schema version of the store at ``path``, read without writing to it."""
        def bad(why: str) -> UserError:
            return UserError(f"the store {path} is corrupted or not a ddscope store ({why})")

        try:
            conn = _connect_readonly(path, probe="SELECT count(*) FROM sqlite_master")
        except sqlite3.DatabaseError as e:
            if (disk := as_user_error(e)) is not None:
                raise disk from None
            raise bad(str(e)) from None
        try:
            tables = {name: sql for name, sql in conn.execute("SELECT name, sql FROM sqlite_master WHERE type='table'")}
            for table, columns in _COLUMNS.items():
                if table not in tables:
                    raise bad(f"no table '{table}'")
                have = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
                if not columns <= have:
                    raise bad(f"table '{table}' lacks {', '.join(sorted(columns - have))}")
            row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            if row is not None:
                _check_contents(conn, bad)
        except sqlite3.DatabaseError as e:
            if (disk := as_user_error(e)) is not None:  # a full disk or an I/O error is not a corruption
                raise disk from None
            raise bad(str(e)) from None
        finally:
            conn.close()
        if row is None:
            raise bad("no schema version")
        try:
            version = int(row[0])
        except (TypeError, ValueError):
            raise bad(f"schema version {row[0]!r} is not an integer") from None
        if version > SCHEMA_VERSION:
            raise UserError(f"the store {path} has schema version {version}; this ddscope reads up to {SCHEMA_VERSION}")
        return version

    @classmethod
    def create(cls, path: str | Path, sweep: dict) -> "Store":
        """Create (or open, if it exists) the store for ``sweep``; the sweep config is kept in meta.

        Two processes creating the same store at once both end up with one complete file.
        """
        path = Path(path)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
            conn = sqlite3.connect(tmp, isolation_level=None)
            try:
                conn.executescript(_SCHEMA)
                with _tx(conn):
                    conn.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                    conn.execute("INSERT INTO meta VALUES ('sweep', ?)", (json.dumps(sweep),))
                    conn.execute("INSERT INTO meta VALUES ('created', ?)", (str(time.time()),))
            finally:
                conn.close()
            try:
                os.link(tmp, path)  # atomic "create if absent"; the loser opens the winner's file
            except FileExistsError:
                pass
            except OSError:  # no hard links on this file system: rename unless a store appeared
                if not path.exists():
                    os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
        return cls.open(path)

    def _migrate(self, version: int) -> None:
        """Bring an older schema up to :data:`SCHEMA_VERSION`."""
        if version < SCHEMA_VERSION:
            with _tx(self.conn):
                if version < 2:
                    self.conn.execute("ALTER TABLE trials ADD COLUMN unit TEXT")
                if version < 3:
                    self.conn.execute("ALTER TABLE trials ADD COLUMN progress REAL")
                self.conn.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION),))

    def close(self) -> None:
        self.conn.close()

    # ------------------------------------------------------------------ meta

    def meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else row[0]

    def sweep_config(self) -> dict:
        """The sweep config kept at creation (or the last extension), as plain data."""
        return _json(self.meta("sweep") or "{}", dict, f"the store {self.path} is corrupted: unreadable sweep config")

    def update_sweep_config(self, update) -> dict:
        """Replace the sweep config by ``update(stored) -> dict`` in one transaction (two sweeps
        extending one store never lose each other's axes); ``update`` may raise to refuse."""
        with _tx(self.conn):
            new = update(self.sweep_config())
            self.conn.execute("INSERT OR REPLACE INTO meta VALUES ('sweep', ?)", (json.dumps(new),))
        return new

    # ------------------------------------------------------------------ trials

    def add_trials(self, trials: Iterable[tuple[str, dict]]) -> int:
        """Insert (trial_id, config) pairs not yet present; returns how many were new."""
        with _tx(self.conn):
            start = self.conn.execute("SELECT coalesce(max(position), -1) + 1 FROM trials").fetchone()[0]
            n = 0
            for i, (tid, cfg) in enumerate(trials):
                cur = self.conn.execute(
                    "INSERT OR IGNORE INTO trials (trial_id, position, config) VALUES (?, ?, ?)",
                    (tid, start + i, json.dumps(cfg, sort_keys=True)),
                )
                n += cur.rowcount
        return n

    def reclaim(self, stale_after: float) -> list[str]:
        """Put back to pending the running trials whose holder is dead or silent too long."""
        with _tx(self.conn):
            return self._reclaim(stale_after)

    def _reclaim(self, stale_after: float) -> list[str]:
        now = time.time()
        rows = self.conn.execute("SELECT trial_id, worker, heartbeat FROM trials WHERE status='running'").fetchall()
        back = [tid for tid, w, hb in rows if holder_dead(w) or (hb or 0) < now - stale_after]
        for tid in back:
            self.conn.execute(
                "UPDATE trials SET status='pending', worker=NULL, heartbeat=NULL, unit=NULL WHERE trial_id=?", (tid,)
            )
        return back

    def claim(self, worker: str, only: set[str] | None = None, stale_after: float = STALE_AFTER_S,
              unit: str | None = None) -> tuple[str, dict] | None:
        """Atomically take the next pending trial (in sweep order) for ``worker``; ``unit`` names
        the vectorised group it will train in (None: alone)."""
        with _tx(self.conn):
            self._reclaim(stale_after)
            rows = self.conn.execute(
                "SELECT trial_id, config, started FROM trials WHERE status='pending' ORDER BY position"
            ).fetchall()
            for tid, cfg, started in rows:
                if only is not None and tid not in only:
                    continue
                self._before_claim[tid] = started
                cfg = _json(cfg, dict, f"the store {self.path} is corrupted: trial {tid!r} has an unreadable config")
                now = time.time()
                self.conn.execute(
                    "UPDATE trials SET status='running', worker=?, heartbeat=?, started=?, unit=?, progress=NULL, "
                    "attempts=attempts+1 WHERE trial_id=?",
                    (worker, now, now, unit, tid),
                )
                return tid, cfg
        return None

    def heartbeat(self, worker: str, trial_ids: Iterable[str], progress: dict[str, float] | None = None) -> None:
        """Mark ``worker``'s running trials alive; ``progress``: their fraction of epochs done, for
        ``ddscope status``'s ETA before any trial has finished."""
        ids = list(trial_ids)
        if not ids:
            return
        progress = progress or {}
        with _tx(self.conn):
            self.conn.executemany(
                "UPDATE trials SET heartbeat=?, progress=coalesce(?, progress) WHERE trial_id=? AND worker=?",
                [(time.time(), progress.get(t), t, worker) for t in ids],
            )

    def release(self, worker: str, trial_ids: Iterable[str], *, undo_claim: bool = False) -> None:
        """Give running trials back (clean stop): they are pending again, nothing is stored.
        ``undo_claim``: the run was refused (a UserError), so the claim itself is taken back too —
        attempts and start time as they were before this process claimed the trial."""
        ids = list(trial_ids)
        with _tx(self.conn):
            self.conn.executemany(
                "UPDATE trials SET status='pending', worker=NULL, heartbeat=NULL, unit=NULL "
                "WHERE trial_id=? AND worker=? AND status='running'",
                [(t, worker) for t in ids],
            )
            if undo_claim:
                self.conn.executemany(
                    "UPDATE trials SET attempts=max(attempts-1, 0), started=? WHERE trial_id=? AND status='pending'",
                    [(self._before_claim.get(t), t) for t in ids if t in self._before_claim],
                )

    def finish(self, result) -> bool:
        """Store a :class:`~ddscope.train.TrialResult`: rows and state in one transaction.

        Returns False (and stores nothing) if the trial is already done — a second writer never
        duplicates or overwrites finished work.
        """
        with _tx(self.conn):
            row = self.conn.execute("SELECT status FROM trials WHERE trial_id=?", (result.trial_id,)).fetchone()
            if row is None:
                self.conn.execute(
                    "INSERT INTO trials (trial_id, position, config) VALUES (?, "
                    "(SELECT coalesce(max(position), -1) + 1 FROM trials), ?)",
                    (result.trial_id, json.dumps(result.config, sort_keys=True)),
                )
            elif row[0] == "done":
                return False
            self.conn.execute("DELETE FROM records WHERE trial_id=?", (result.trial_id,))
            self.conn.executemany(
                "INSERT INTO records VALUES (?, ?, ?, ?)",
                [
                    (result.trial_id, int(e), m, None if (v is None or math.isnan(v)) else float(v))
                    for e, m, v in result.records
                ],
            )
            self.conn.execute(
                "UPDATE trials SET status=?, finished=?, error=?, summary=?, noisy_mask=?, worker=NULL, "
                "heartbeat=NULL, unit=NULL WHERE trial_id=?",
                (
                    result.status,
                    time.time(),
                    result.error,
                    json.dumps(result.summary),
                    result.noisy_mask,
                    result.trial_id,
                ),
            )
        return True

    def add_records(self, trial_id: str, epoch: int, values: dict[str, float]) -> int:
        """Metric rows measured after the fact (``ddscope spectrum``) for a done trial's epoch;
        a metric already stored at that epoch is replaced, never duplicated. Returns the count."""
        with _tx(self.conn):
            row = self.conn.execute("SELECT status FROM trials WHERE trial_id=?", (trial_id,)).fetchone()
            if row is None or row[0] != "done":
                raise UserError(f"trial {trial_id} is not done in {self.path}; only a done trial's rows can be added to")
            self.conn.executemany(
                "INSERT OR REPLACE INTO records VALUES (?, ?, ?, ?)",
                [(trial_id, int(epoch), m, None if (v is None or math.isnan(v)) else float(v)) for m, v in values.items()])
        return len(values)

    def reset_failed(self, only: set[str] | None = None) -> int:
        """Failed trials (of ``only``, if given) back to pending (``--retry-failed``); their
        partial rows are dropped."""
        with _tx(self.conn):
            ids = [r[0] for r in self.conn.execute("SELECT trial_id FROM trials WHERE status='failed'")]
            ids = [t for t in ids if only is None or t in only]
            for tid in ids:
                self.conn.execute("DELETE FROM records WHERE trial_id=?", (tid,))
                self.conn.execute("UPDATE trials SET status='pending', error=NULL WHERE trial_id=?", (tid,))
        return len(ids)

    # ------------------------------------------------------------------ reading

    def counts(self) -> dict[str, int]:
        out = {s: 0 for s in STATES}
        for status, n in self.conn.execute("SELECT status, count(*) FROM trials GROUP BY status"):
            out[status] = n
        return out

    def trials(self, status: str | None = None) -> list[dict]:
        if not hasattr(self, "_progress_column"):  # a version-2 store read where it cannot be upgraded
            self._progress_column = any(r[1] == "progress" for r in self.conn.execute("PRAGMA table_info(trials)"))
        q = ("SELECT trial_id, position, config, status, worker, heartbeat, started, finished, attempts, error, summary, "
             f"unit, {'progress' if self._progress_column else 'NULL'} FROM trials")
        args: tuple = ()
        if status:
            q += " WHERE status=?"
            args = (status,)
        q += " ORDER BY position"
        out = []
        for r in self.conn.execute(q, args):
            why = f"the store {self.path} is corrupted: trial {r[0]!r} has an unreadable"
            out.append(
                dict(
                    trial_id=r[0], position=r[1], config=_json(r[2], dict, f"{why} config"), status=r[3],
                    worker=r[4], heartbeat=r[5], started=r[6], finished=r[7], attempts=r[8], error=r[9],
                    summary=_json(r[10], dict, f"{why} summary") if r[10] else {}, unit=r[11], progress=r[12],
                )
            )
        return out

    def noisy_mask(self, trial_id: str, n: int):
        import numpy as np

        row = self.conn.execute("SELECT noisy_mask FROM trials WHERE trial_id=?", (trial_id,)).fetchone()
        if row is None or row[0] is None:
            return None
        return np.unpackbits(np.frombuffer(row[0], dtype=np.uint8))[:n].astype(bool)

    def records(self) -> Iterator[tuple[str, int, str, float | None]]:
        yield from self.conn.execute("SELECT trial_id, epoch, metric, value FROM records ORDER BY trial_id, epoch, metric")


def _connect_readonly(path: Path, probe: str = "SELECT count(*) FROM trials") -> sqlite3.Connection:
    """A connection that never writes: ``mode=ro``; where even that needs a write (a WAL store in
    a read-only folder has no ``-shm`` file to map), ``immutable=1`` — nothing can change a file
    on a read-only disk while we read it."""
    uri = path.resolve().as_uri()
    try:
        conn = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=60.0)
        conn.execute(probe).fetchone()
        return conn
    except sqlite3.OperationalError as e:
        if "unable to open" not in str(e) and "readonly" not in str(e):
            raise
        conn = sqlite3.connect(f"{uri}?mode=ro&immutable=1", uri=True)
        conn.execute(probe).fetchone()
        return conn


def _check_contents(conn: sqlite3.Connection, bad) -> None:
    """What a store must hold before anything reads it: SQLite's own page check, every trial id a
    plain name (ids become folder names), every status one of :data:`STATES`, every config and
    summary readable JSON, every config one this ddscope understands. ``bad(why)`` makes the
    UserError."""
    (check,) = conn.execute("PRAGMA quick_check(1)").fetchone()
    if check != "ok":
        raise bad(f"SQLite's integrity check: {check}")
    from ..config import TrialConfig  # the bottom layer; imported here to keep opening a store light

    for tid, status, config, summary in conn.execute("SELECT trial_id, status, config, summary FROM trials"):
        if not is_component(tid):
            raise bad(f"trial id {tid!r} is not a ddscope trial id")
        if status not in STATES:
            raise bad(f"trial {tid} has status {status!r}; a trial is {', '.join(STATES)}")
        cfg = _json(config, dict, f"trial {tid} has an unreadable config")
        try:
            TrialConfig.from_dict(cfg)
        except UserError as e:
            raise bad(f"trial {tid}'s config: {e}") from None
        if summary is not None:
            _json(summary, dict, f"trial {tid} has an unreadable summary")
    for (tid,) in conn.execute("SELECT DISTINCT trial_id FROM records"):
        if not is_component(tid):
            raise bad(f"a record's trial id {tid!r} is not a ddscope trial id")


def _json(text, kind: type, why: str):
    """``json.loads(text)`` of the expected ``kind``, or UserError ``why`` (a corrupted row)."""
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        raise UserError(why) from None
    if not isinstance(value, kind):
        raise UserError(why)
    return value


@contextmanager
def _tx(conn: sqlite3.Connection):
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (rollback on error): the write lock is taken up front so
    read-then-write sequences (claims) are atomic across processes."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    else:
        conn.execute("COMMIT")
