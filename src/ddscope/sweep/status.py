"""``ddscope status``: trials by state, an ETA from finished trials, failures with reasons."""

from __future__ import annotations

import time
from pathlib import Path

from .store import Store


def status_text(run_dir: Path) -> str:
    store = Store.open(run_dir)
    try:
        counts = store.counts()
        trials = store.trials()
    finally:
        store.close()
    total = sum(counts.values())
    lines = [f"{run_dir}: {total} trials — " + ", ".join(f"{n} {s}" for s, n in counts.items())]
    done = [t for t in trials if t["status"] == "done" and t["summary"].get("wall_s")]
    left = counts["pending"] + counts["running"]
    if done and left:
        mean = sum(t["summary"]["wall_s"] for t in done) / len(done)
        running = [t for t in trials if t["status"] == "running"]
        workers = max(1, len({t["worker"] for t in running}) or 1, len(running))
        lines.append(f"ETA ≈ {_fmt(mean * left / workers)} (mean {mean:.1f} s per trial, {workers} running)")
    for t in trials:
        if t["status"] == "running":
            age = time.time() - (t["heartbeat"] or 0)
            lines.append(f"running {t['trial_id']} on {t['worker']} (heartbeat {age:.0f} s ago)")
    for t in trials:
        if t["status"] == "failed":
            reason = (t["error"] or "").strip().splitlines()
            lines.append(f"failed  {t['trial_id']} width={t['config']['model']['width']}: {reason[-1] if reason else '?'}")
    return "\n".join(lines)


def _fmt(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"
