"""Checkpoint files of one trial: atomic, checksummed, loaded with ``weights_only=True``.

A trial's folder ``<run_dir>/trials/<trial_id>/`` holds

- ``init.pt``: the state after epoch 0 — θ⁰ and the epoch-0 records (resumable);
- ``epoch_NNNNN.pt``: the full state after epoch N, kept for the epochs in ``checkpoint.epochs``;
  the other ones are rolling resume points (``checkpoint.every_epochs`` / ``every_minutes``), each
  deleted once the next checkpoint is complete;
- ``final.pt``: the trained weights and every record, without optimiser state (nothing is left to
  train): a trial whose driver died before storing it resumes from here without training.

Checksums live in a sidecar ``X.pt.sha256`` in ``sha256sum`` format (``<hex>  X.pt``), so the
``.pt`` files stay plain torch files and ``sha256sum -c X.pt.sha256`` checks one by hand. Writes go
to a temporary file (fsync) that is renamed into place, then the sidecar likewise: a checkpoint
exists once its sidecar does. A crash between the two renames leaves a payload without sidecar,
which is never loaded and is rewritten or pruned later; a payload whose hash differs from its
sidecar is corrupted, and :func:`load_checkpoint` raises :class:`~ddscope.errors.UserError` instead
of loading it.

Contents (tensors and plain data only, so ``torch.load(weights_only=True)`` reads them):
``format``, ``trial_id``, ``config`` (the full trial config as a dict), ``epoch``, ``step``,
``model`` (state_dict), ``optimizer``/``scheduler`` (state_dicts), ``rng`` (``order``: the CPU
generator of the batch order and augmentation; ``torch``: the global CPU RNG; ``cuda``: one state
per device when CUDA is in use), ``records`` ((epoch, metric, value) tuples so far),
``interp_epoch`` and ``elapsed_s`` (training wall time so far).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import time
import uuid
from pathlib import Path
from typing import Callable

import torch

from .config import TrialConfig
from .errors import UserError
from .paths import check_component, inside

FORMAT = 1
SIDECAR = ".sha256"
_EPOCH_FILE = re.compile(r"^epoch_(\d+)\.pt$")
_TMP_MAX_AGE_S = 3600.0  # a temporary file this old belongs to a writer that was killed


def trial_dir(run_dir: str | Path, trial_id: str) -> Path:
    """``run_dir/trials/<trial_id>``; an id that is not a plain name (one read from a crafted
    store, ``../../victim``) is a UserError, never a path outside the run folder."""
    return inside(run_dir, "trials") / check_component(trial_id, "trial id")


def sidecar(path: Path) -> Path:
    return path.with_name(path.name + SIDECAR)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _replace_durably(tmp: Path, path: Path) -> None:
    """fsync ``tmp``, rename it onto ``path`` (atomic on POSIX and Windows), fsync the folder."""
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    if hasattr(os, "O_DIRECTORY"):  # the rename itself survives a power cut (POSIX only)
        fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _tmp_name(path: Path) -> Path:
    # Unique per writer: two processes saving the same trial never share a temporary file.
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def save_checkpoint(path: str | Path, state: dict) -> Path:
    """Write ``state`` to ``path`` atomically, then its ``.sha256`` sidecar atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp, side = _tmp_name(path), sidecar(path)
    side_tmp = _tmp_name(side)
    try:
        buf = io.BytesIO()
        torch.save(state, buf)  # serialised in memory, then written with plain file calls, so a
        try:  # full disk is an OSError(ENOSPC) naming the file, not torch's "file write failed"
            with open(tmp, "wb") as f:
                f.write(buf.getbuffer())
        except OSError as e:
            raise OSError(e.errno, e.strerror, str(path)) from None
        del buf
        digest = sha256_file(tmp)
        # Rewriting a name: drop the old sidecar first, so the gap between the two renames reads
        # as an interrupted write (skipped) rather than as a checksum mismatch (corruption).
        side.unlink(missing_ok=True)
        _replace_durably(tmp, path)
        side_tmp.write_text(f"{digest}  {path.name}\n")
        _replace_durably(side_tmp, side)
    finally:  # an exception mid-write leaves no temporary file behind
        tmp.unlink(missing_ok=True)
        side_tmp.unlink(missing_ok=True)
    return path


def verify_checkpoint(path: str | Path) -> None:
    """Raise :class:`UserError` unless ``path`` exists and matches its sidecar checksum."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} not found")
    side = sidecar(path)
    if not side.exists():
        if not _looks_like_torch_file(path):
            raise UserError(f"{path} is not a ddscope checkpoint (ddscope writes <trial>/*.pt files, each with a "
                            f"{SIDECAR} checksum beside it)")
        raise UserError(f"checkpoint {path} has no checksum file {side.name} (an interrupted write?); not loaded")
    if not side.is_file():
        raise UserError(f"checkpoint {path} is corrupted: its checksum file {side.name} is not a file")
    try:
        fields = side.read_bytes().decode("ascii").split()
    except (UnicodeDecodeError, OSError):
        fields = []
    if not fields or not re.fullmatch(r"[0-9a-f]{64}", fields[0]):
        raise UserError(f"checkpoint {path} is corrupted: unreadable checksum file {side.name}")
    if sha256_file(path) != fields[0]:
        raise UserError(f"checkpoint {path} is corrupted: checksum mismatch")


def _looks_like_torch_file(path: Path) -> bool:
    """A file ``torch.save`` wrote: a zip archive (PK header) or the legacy pickle format."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return False
    return head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Verify the checksum, then ``torch.load(..., weights_only=True)``; never unpickles code."""
    path = Path(path)
    verify_checkpoint(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 — a checksummed file that still fails to load
        raise UserError(f"checkpoint {path} cannot be loaded with weights_only=True ({type(e).__name__})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(f"checkpoint {path} is not a ddscope checkpoint (format {FORMAT})")
    _check_contents(state, path)
    return state


def _is_records(v) -> bool:
    return isinstance(v, list) and all(
        isinstance(r, (tuple, list)) and len(r) == 3 and isinstance(r[0], int) and isinstance(r[1], str)
        and isinstance(r[2], (int, float)) for r in v)


# Epochs and steps beyond this are not counts a run reaches (2**62 steps at a nanosecond each
# take a century): a crafted file, whose 2**70 would overflow the schedule's arithmetic.
MAX_COUNT = 2**62
# key -> (check, what it must be); "optimizer", "scheduler" and "rng" only in resume points.
_CONTENTS: dict[str, tuple[Callable, str]] = {
    "trial_id": (lambda v: isinstance(v, str), "a string"),
    "config": (lambda v: isinstance(v, dict), "a table"),
    "epoch": (lambda v: isinstance(v, int) and 0 <= v <= MAX_COUNT, "an epoch >= 0"),
    "step": (lambda v: isinstance(v, int) and 0 <= v <= MAX_COUNT, "a step >= 0"),
    "model": (lambda v: isinstance(v, dict) and all(isinstance(t, torch.Tensor) for t in v.values())
              and all(bool(torch.isfinite(t).all()) for t in v.values() if t.is_floating_point() or t.is_complex()),
              "a state_dict of finite tensors"),
    "records": (_is_records, "a list of (epoch, metric, value)"),
    "interp_epoch": (lambda v: v is None or isinstance(v, int), "an epoch or None"),
    "elapsed_s": (lambda v: isinstance(v, (int, float)), "seconds"),
}
_RESUME = {
    "optimizer": (lambda v: isinstance(v, dict), "a state_dict"),
    "scheduler": (lambda v: isinstance(v, dict), "a state_dict"),
    "rng": (lambda v: isinstance(v, dict) and isinstance(v.get("order"), torch.Tensor)
            and isinstance(v.get("torch"), torch.Tensor) and isinstance(v.get("cuda", []), list),
            "RNG states"),
}


def _check_contents(state: dict, path: Path) -> None:
    """A checksum proves the file is as written, not that it was written by this ddscope or for
    this trial: every entry is checked, so a stray file is one line, never a KeyError later."""
    checks = dict(_CONTENTS, **(_RESUME if "optimizer" in state else {}))
    for key, (ok, what) in checks.items():
        if key not in state:
            raise UserError(f"checkpoint {path} is inconsistent: it has no '{key}'; delete it to fall back "
                            "to the previous one")
        if not ok(state[key]):
            raise UserError(f"checkpoint {path} is inconsistent: '{key}' is not {what}; delete it to fall back "
                            "to the previous one")


def load_weights(model, state: dict, path: str | Path) -> None:
    """``model.load_state_dict(state["model"])``, or UserError when the weights do not fit the
    model the config builds (another width, another family: a checkpoint from elsewhere)."""
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, KeyError, ValueError) as e:
        first = str(e).strip().splitlines()
        raise UserError(f"checkpoint {path} does not fit the trial's model "
                        f"({' '.join(first[:2]) if first else type(e).__name__}); move it away") from None


def checkpoint_config(state: dict, path: str | Path = "checkpoint") -> TrialConfig:
    """The trial config stored in a checkpoint (validated like any config)."""
    try:
        return TrialConfig.from_dict(state["config"])
    except (UserError, KeyError, TypeError) as e:
        raise UserError(f"checkpoint {path} holds a config this ddscope cannot read ({e})") from None


# ----------------------------------------------------------------------------- one trial's folder


def _complete(folder: Path) -> list[tuple[float, Path]]:
    """(order key, path) of every checkpoint with a sidecar, oldest first (final.pt last)."""
    out = []
    for p in folder.glob("*.pt"):
        if not sidecar(p).is_file():
            continue  # an interrupted write: never loaded
        m = _EPOCH_FILE.match(p.name)
        if m:
            out.append((int(m.group(1)), p))
        elif p.name == "init.pt":
            out.append((0, p))
        elif p.name == "final.pt":
            out.append((float("inf"), p))
    return sorted(out, key=lambda kp: kp[0])


def latest_checkpoint(folder: str | Path) -> Path | None:
    """The most advanced complete checkpoint in ``folder`` (not verified), or None."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    done = _complete(folder)
    return done[-1][1] if done else None


class Checkpointer:
    """The checkpoint files of one trial: which exist, loading (verified, this trial's only),
    saving and pruning. When a checkpoint is due is the trainer's decision
    (:class:`ddscope.train.schedule.CheckpointSchedule`), so the members of a group save together.
    """

    def __init__(self, folder: str | Path, cfg: TrialConfig):
        self.folder = Path(folder)
        self.cfg = cfg
        self.keep = set(cfg.checkpoint.epochs)

    def by_epoch(self) -> dict[int, Path]:
        """Epoch -> path of every complete checkpoint (``final.pt`` at the last epoch)."""
        self._remove_stale_tmp()
        if not self.folder.is_dir():
            return {}
        return {(self.cfg.optim.epochs if key == float("inf") else int(key)): p for key, p in _complete(self.folder)}

    def load(self, path: Path) -> dict:
        """A checkpoint of this trial, checksum verified; a corrupted one or another trial's
        raises UserError: it is reported, never loaded, never silently skipped."""
        state = load_checkpoint(path)
        if state.get("trial_id") != self.cfg.trial_id or checkpoint_config(state, path).trial_id != self.cfg.trial_id:
            raise UserError(f"checkpoint {path} belongs to another trial than {self.cfg.trial_id}; move it away")
        return state

    def resume(self) -> dict | None:
        """The latest complete checkpoint of this trial (verified), or None to start afresh."""
        path = latest_checkpoint(self.folder) if self.folder.is_dir() else None
        return None if path is None else self.load(path)

    def save(self, name: str, state: dict) -> Path:
        return save_checkpoint(self.folder / name, state)

    def prune(self, epoch: int) -> None:
        """Delete rolling checkpoints older than ``epoch`` (sidecar first, so a half-deleted one
        reads as an interrupted write, not as corruption)."""
        self._drop(lambda e: e < epoch)

    def discard_after(self, epoch: int) -> None:
        """Delete rolling checkpoints after ``epoch``, where training restarts: a later run of this
        trial in another group may have left them, and they would be rewritten anyway."""
        self._drop(lambda e: e > epoch)

    def _drop(self, which: Callable[[int], bool]) -> None:
        for p in self.folder.glob("epoch_*.pt"):
            m = _EPOCH_FILE.match(p.name)
            if m and which(int(m.group(1))) and int(m.group(1)) not in self.keep:
                sidecar(p).unlink(missing_ok=True)
                p.unlink(missing_ok=True)

    def _remove_stale_tmp(self) -> None:
        if not self.folder.is_dir():
            return
        now = time.time()
        for t in self.folder.glob(".*.tmp"):
            try:
                if now - t.stat().st_mtime > _TMP_MAX_AGE_S:
                    t.unlink()
            except FileNotFoundError:
                pass


__all__ = [
    "Checkpointer",
    "save_checkpoint",
    "load_checkpoint",
    "verify_checkpoint",
    "latest_checkpoint",
    "checkpoint_config",
    "load_weights",
    "trial_dir",
]
