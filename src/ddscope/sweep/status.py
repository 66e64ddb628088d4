"""``ddscope status``: trials by state, an ETA from finished trials, running and failed trials
with their holders and reasons."""

from __future__ import annotations

import time
from pathlib import Path

from .store import Store
from .table import _flatten


def _labels(trials: list[dict]) -> dict[str, str]:
    """``width=32 seed=1``-style labels from the config keys that differ between trials."""
    flat = {t["trial_id"]: _flatten(t["config"]) for t in trials}
    keys = []
    if flat:
        first = next(iter(flat.values()))
        keys = [k for k in first if not k.startswith(("checkpoint.", "device"))
                and len({repr(f.get(k)) for f in flat.values()}) > 1]
    keys = keys or ["model.width"]
    return {tid: " ".join(f"{k.split('.')[-1]}={f.get(k)}" for k in keys) for tid, f in flat.items()}


def status_text(run_dir: Path) -> str:
    store = Store.open(run_dir)
    try:
        counts = store.counts()
        trials = store.trials()
    finally:
        store.close()
    labels = _labels(trials)
    total = sum(counts.values())
    lines = [f"{run_dir}: {total} trials — " + ", ".join(f"{n} {s}" for s, n in counts.items())]
    done = [t for t in trials if t["status"] == "done" and t["summary"].get("wall_s")]
    running = [t for t in trials if t["status"] == "running"]
    left = counts["pending"] + counts["running"]
    if done and left:
        mean = sum(t["summary"]["wall_s"] for t in done) / len(done)
        if running:
            eta = _fmt(mean * left / len(running))
            lines.append(f"ETA ≈ {eta} ({left} left, mean {mean:.1f} s per trial, {len(running)} running)")
        else:
            lines.append(f"not running: {left} left, ≈ {_fmt(mean * left)} of trial time "
                         f"(mean {mean:.1f} s per trial); rerun the sweep command to resume")
    now = time.time()
    for t in running:
        age = now - (t["heartbeat"] or 0)
        lines.append(f"running {t['trial_id']} {labels[t['trial_id']]} on {t['worker']} (heartbeat {age:.0f} s ago)")
    for t in trials:
        if t["status"] == "failed":
            reason = (t["error"] or "").strip().splitlines()
            lines.append(f"failed  {t['trial_id']} {labels[t['trial_id']]}: {reason[-1] if reason else '?'}")
    return "\n".join(lines)


def _fmt(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"
