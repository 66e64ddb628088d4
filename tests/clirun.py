"""The one way the tests run the CLI: in a subprocess (``cli``, ``start``) or in this process
(``cli_inline``). A plain module rather than a conftest, imported by name from every folder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path


def env(extra: dict | None = None) -> dict:
    # One torch thread per process: the two cores are shared by concurrent processes, and the
    # numbers of two runs are compared bit for bit (same thread count on both sides).
    return {**os.environ, "OMP_NUM_THREADS": "1", **(extra or {})}


def _argv(args: tuple, ungrouped: bool) -> list[str]:
    """``ungrouped``: a sweep without --group/--no-group gets --no-group (tests that pin per-trial
    mechanics; tests/runs/test_grouped.py covers vectorised groups)."""
    if ungrouped and args and args[0] == "sweep" and not any(a.startswith(("--group", "--no-group")) for a in args):
        args = (*args, "--no-group")
    return [sys.executable, "-m", "ddscope.cli", *args]


def cli(*args, cwd=None, extra_env: dict | None = None, timeout: float = 300,
        ungrouped: bool = False) -> subprocess.CompletedProcess:
    """``ddscope ARGS`` in a subprocess, waited for; stdout and stderr captured as text."""
    return subprocess.run(_argv(args, ungrouped), capture_output=True, text=True, cwd=cwd, env=env(extra_env),
                          timeout=timeout)


def _default_signals() -> None:
    # The tests signal the child: it must not inherit an ignored SIGINT/SIGTERM from however the
    # suite itself was started (``nohup ... &`` runs it with SIGINT ignored).
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)


def start(*args, log: Path, ungrouped: bool = False) -> subprocess.Popen:
    """The CLI in its own session (process group), so a test can signal it with all its workers."""
    return subprocess.Popen(_argv(args, ungrouped), stdout=subprocess.DEVNULL, stderr=open(log, "w"), env=env(),
                            start_new_session=True, preexec_fn=_default_signals)


def cli_inline(capsys, *args):
    """``ddscope ARGS`` in this process; returns (exit code, stdout, stderr)."""
    from ddscope.cli import main

    try:
        main(list(args))
        code = 0
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


__all__ = ["cli", "cli_inline", "env", "start"]
