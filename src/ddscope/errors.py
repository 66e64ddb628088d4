"""User-facing errors: the CLI turns these into one line on stderr and exit code 2.

Besides :class:`UserError` itself, a full or read-only disk is the user's to fix, not a trial's
failure: :func:`as_user_error` recognises those from ``OSError`` and SQLite's errors, so a sweep,
a report or an export that runs out of space stops with one line and nothing stored is lost.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path

# errno values that mean "this file system cannot take the write" (not a bug, not a bad trial).
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})
# errno values of a path that cannot be made where the user pointed it (/proc/x, a file named as
# a folder, a name too long).
PATH_ERRNOS = frozenset({errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ENAMETOOLONG, errno.EINVAL,
                         errno.ELOOP, errno.EBUSY, errno.ENXIO})
_SQLITE_DISK = ("database or disk is full", "attempt to write a readonly database", "disk i/o error")


class UserError(Exception):
    """Bad input from the user (config, data files, store, checkpoint).

    The message must be one line naming the problem and what is allowed.
    """


def as_user_error(e: BaseException) -> UserError | None:
    """The :class:`UserError` that ``e`` stands for, or None when it is a genuine crash.

    Covers ``UserError`` itself, one wrapped by Ray (``RayTaskError.cause``), a full or read-only
    disk (``OSError`` with an errno in :data:`DISK_ERRNOS`, or SQLite saying so)."""
    cause = getattr(e, "cause", None)
    if isinstance(cause, UserError):
        return cause
    if isinstance(e, UserError):
        return e
    if isinstance(e, OSError) and e.errno in DISK_ERRNOS:
        where = f" {e.filename}" if e.filename else ""
        return UserError(f"cannot write{where}: {e.strerror} (free space or choose a writable --out; "
                         "finished trials are kept and the sweep resumes)")
    if isinstance(e, OSError) and e.errno in PATH_ERRNOS and e.filename:
        return UserError(f"cannot create or write {e.filename}: {e.strerror} (choose another --out)")
    if isinstance(e, sqlite3.OperationalError) and any(m in str(e).lower() for m in _SQLITE_DISK):
        return UserError(f"cannot write the store: {e} (free space or choose a writable --out; "
                         "finished trials are kept and the sweep resumes)")
    return None


def check_writable(path: Path, what: str) -> None:
    """UserError unless ``path`` is, or can be made, a writable folder (nothing is created)."""
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    if not p.is_dir():
        raise UserError(f"{what} {path} cannot be made: {p} is a file, not a folder")
    if not os.access(p, os.W_OK | os.X_OK):  # also false on a read-only mount, even for root
        raise UserError(f"{what} {path} is not writable ({p} is read-only or not ours); choose another")
    # os.access trusts permission bits; /proc and similar say yes to root and refuse the mkdir.
    # A probe folder, made and removed at once, asks the file system itself.
    probe = p / f".ddscope-probe-{os.getpid()}"
    try:
        probe.mkdir()
    except OSError as e:
        raise UserError(f"{what} {path} cannot be made in {p}: {e.strerror}; choose another") from None
    else:
        probe.rmdir()


def one_line(message: str) -> str:
    """``message`` on one line: line breaks and other control characters (from a key, a value or
    a path the user gave) are shown escaped, as ``\\n``, never printed."""
    out = []
    for ch in message:
        if ch in "\n\r\t" or (ord(ch) < 32 or ord(ch) == 127):
            out.append(repr(ch)[1:-1])
        else:
            out.append(ch)
    return "".join(out)


def quiet_errors() -> None:
    """For scripts that call ddscope (the examples do): Ctrl-C ends the script with one line and
    the usual SIGINT status instead of a traceback through torch; a :class:`UserError` with its
    one ``ddscope: error:`` line and exit code 2, as the CLI does. Other exceptions keep their
    traceback (they are bugs to report)."""
    import sys

    previous = sys.excepthook

    def hook(kind, value, tb):
        if issubclass(kind, KeyboardInterrupt):
            print("interrupted: finished trials are stored; rerun the same command to resume", file=sys.stderr)
            return  # the interpreter then exits with SIGINT's status (130)
        user = as_user_error(value) if isinstance(value, Exception) else None
        if user is not None:
            print(f"ddscope: error: {one_line(str(user))}", file=sys.stderr)
            sys.stderr.flush()
            sys.stdout.flush()
            os._exit(2)
        previous(kind, value, tb)

    sys.excepthook = hook
