"""``ddscope status``: trials by state, an ETA from finished trials, running and failed trials
with their holders and reasons."""

from __future__ import annotations

import time
from pathlib import Path

from .store import STALE_AFTER_S, Store, holder_dead
from ..config import flatten, varying_keys


def _labels(trials: list[dict]) -> dict[str, str]:
    """``width=32 seed=1``-style labels from the config keys that differ between trials."""
    flat = {t["trial_id"]: flatten(t["config"]) for t in trials}
    keys = varying_keys(list(flat.values()))
    keys = keys or ["model.width"]
    return {tid: " ".join(f"{k.split('.')[-1]}={f.get(k)}" for k in keys) for tid, f in flat.items()}


def worker_share(trials: list[dict], now: float | None = None) -> float | None:
    """Mean ``wall_s`` of the done trials: a trial's share of a worker's time. Before any trial is
    done, the running ones' pace: a unit of g trials that started s seconds ago and is a fraction
    p of its epochs through will take s/p, i.e. s/(p·g) per trial (None: no pace known yet)."""
    done = [t["summary"]["wall_s"] for t in trials if t["status"] == "done" and t["summary"].get("wall_s")]
    if done:
        return sum(done) / len(done)
    now = time.time() if now is None else now
    units: dict[str, list[dict]] = {}
    for t in trials:
        if t["status"] == "running" and (t.get("progress") or 0) > 0 and t["started"]:
            units.setdefault(t.get("unit") or t["trial_id"], []).append(t)
    paces = [(now - min(m["started"] for m in ms)) / (min(m["progress"] for m in ms) * len(ms))
             for ms in units.values()]
    return sum(paces) / len(paces) if paces else None


def eta_seconds(trials: list[dict], now: float) -> float | None:
    """Seconds until the trials left are finished, from the done ones; None without any.

    ``c`` = :func:`worker_share` (a member of a vectorised group of g carries 1/g of the group's
    wall time). Running trials are grouped
    into the units that train together (``unit``); a unit of g trials started at s needs
    ≈ g·c − (now − s) more. The units in flight are the parallel slots, and the pending trials'
    g·c is spread over them: ETA = max(longest unit left, (Σ units left + pending·c) / slots).
    Trials whose holder is gone are not in flight."""
    c = worker_share(trials, now)
    if c is None:
        return None
    units: dict[str, list[dict]] = {}
    for t in trials:
        if t["status"] == "running" and not _gone(t, now):
            units.setdefault(t.get("unit") or t["trial_id"], []).append(t)
    left = [max(0.0, len(ms) * c - (now - min(m["started"] or now for m in ms))) for ms in units.values()]
    pending = sum(t["status"] == "pending" or (t["status"] == "running" and _gone(t, now)) for t in trials)
    slots = max(len(units), 1)
    return max(max(left, default=0.0), (sum(left) + pending * c) / slots)


def _gone(t: dict, now: float) -> bool:
    """A running trial whose holder has exited (same host) or fell silent for STALE_AFTER_S."""
    return holder_dead(t["worker"]) or now - (t["heartbeat"] or 0) > STALE_AFTER_S


def status_text(run_dir: Path) -> str:
    store = Store.open(run_dir, readonly=True)
    try:
        counts = store.counts()
        trials = store.trials()
    finally:
        store.close()
    labels = _labels(trials)
    total = sum(counts.values())
    lines = [f"{run_dir}: {total} trials — " + ", ".join(f"{n} {s}" for s, n in counts.items())]
    now = time.time()
    running = [t for t in trials if t["status"] == "running"]
    alive = [t for t in running if not _gone(t, now)]
    left = counts["pending"] + counts["running"]
    eta = eta_seconds(trials, now) if left else None
    if eta is not None:
        mean = worker_share(trials, now)
        if alive:
            n_units = len({t.get("unit") or t["trial_id"] for t in alive})
            lines.append(f"ETA ≈ {fmt_duration(eta)} ({left} left, {mean:.1f} s of worker time per trial, "
                         f"{len(alive)} running in {n_units} unit(s))")
        else:
            lines.append(f"not running: {left} left, ≈ {fmt_duration(mean * left)} of worker time "
                         f"({mean:.1f} s per trial); rerun the sweep command to resume")
    elif left and not alive:
        lines.append(f"not running: {left} left; rerun the sweep command to resume")
    for t in running:
        age = now - (t["heartbeat"] or 0)
        if holder_dead(t["worker"]):
            state = (f"holder gone: process {t['worker'].split(':')[1] if t['worker'] else '?'} has exited "
                     f"(heartbeat {age:.0f} s ago); the next sweep run takes it back")
        elif age > STALE_AFTER_S:
            state = f"holder silent for {age:.0f} s (gone?); a sweep run takes it back after {STALE_AFTER_S:.0f} s"
        else:
            state = f"heartbeat {age:.0f} s ago"
        lines.append(f"running {t['trial_id']} {labels[t['trial_id']]} on {t['worker']} ({state})")
    for t in trials:
        if t["status"] == "failed":
            reason = (t["error"] or "").strip().splitlines()
            lines.append(f"failed  {t['trial_id']} {labels[t['trial_id']]}: {reason[-1] if reason else '?'}")
    return "\n".join(lines)


def fmt_duration(seconds: float) -> str:
    """``1h02m`` or ``3m05s``."""
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"
