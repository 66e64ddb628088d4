"""Bad input fuzzed at the CLI: every case exits 2 with one line on stderr (``ddscope: error:
...``), no traceback, and leaves the store as it was (docs/design.md §4). A file that is not a ddscope
store is not touched at all (not even switched to WAL mode), and a sweep refused up front creates
nothing in its run directory.

Each case starts from a copy of one small finished run (two trials with checkpoints)."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest
import torch

from ddscope.checkpoint import load_checkpoint, save_checkpoint

from .runs.helpers_sweep import FAST, cli_inline, sets

BASE = FAST + ["model.width=[4,6]", "optim.epochs=2", 'metrics.groups=["distance"]']


def sweep_args(out, *extra) -> list[str]:
    return ["sweep", "mnist1d-mlp", *sets(BASE + list(extra)), "--out", str(out), "--executor", "inprocess",
            "--no-report", "--quiet", "--no-group"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    run = tmp_path_factory.mktemp("finished") / "run"
    from ddscope.cli import main

    try:
        main(sweep_args(run))
    except SystemExit as e:
        assert e.code in (0, None)
    return run


def snapshot(run: Path) -> dict:
    """What a user would lose or see changed: every store row (trials with their claim bookkeeping —
    a refused run must not count an attempt or move a start time —, records, meta) and the bytes
    of every checkpoint and config file."""
    out = {}
    store = run / "store.sqlite"
    if store.exists():
        conn = sqlite3.connect(f"{store.resolve().as_uri()}?mode=ro", uri=True)
        try:
            for table, cols in (("meta", "*"), ("records", "*"),
                                ("trials", "trial_id, position, config, status, error, summary, noisy_mask, attempts, "
                                          "started, worker, heartbeat, unit")):
                try:
                    out[table] = sorted(map(repr, conn.execute(f"SELECT {cols} FROM {table}")))
                except sqlite3.DatabaseError as e:
                    out[table] = f"unreadable: {e}"
        finally:
            conn.close()
    for p in sorted(run.rglob("*")):
        if p.is_file() and not p.name.startswith("store.sqlite"):
            out[str(p.relative_to(run))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _sql(run: Path, *statements: str) -> None:
    conn = sqlite3.connect(run / "store.sqlite")
    for s in statements:
        conn.execute(s)
    conn.commit()
    conn.close()


def _rewrite_checkpoint(run: Path, name: str, change) -> Path:
    """Re-save a trial's checkpoint with ``change(state)`` applied and a *valid* checksum."""
    (trial,) = [d for d in sorted((run / "trials").iterdir()) if (d / name).exists()][:1]
    path = trial / name
    state = load_checkpoint(path)
    change(state)
    save_checkpoint(path, state)
    return path


def _nan_weights(state):
    state["model"] = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
                      for k, v in state["model"].items()}


def _checksum_folder(ckpt: Path) -> str:
    side = ckpt.with_name(ckpt.name + ".sha256")
    side.unlink()
    side.mkdir()
    return str(ckpt)


def _other_width_weights(state):
    state["model"] = {k: torch.zeros(3, *v.shape[1:]) if v.dim() else v for k, v in state["model"].items()}


# (id, mutate(run, tmp) -> CLI args). ``run`` is a private copy of the finished run.
CASES = {
    "config not UTF-8": lambda run, tmp: ["sweep", _write(tmp / "c.toml", b"# caf\xe9\n[model]\nwidth = 4\n"),
                                          "--out", str(run)],
    "config is a directory": lambda run, tmp: ["sweep", str(tmp), "--out", str(run)],
    "config not TOML": lambda run, tmp: ["sweep", _write(tmp / "c.toml", b"[model\nwidth = 4\n"), "--out", str(run)],
    "out under a file": lambda run, tmp: sweep_args(Path(_write(tmp / "f", b"x")) / "run"),
    "weight_decay nan": lambda run, tmp: sweep_args(tmp / "new", "optim.weight_decay=nan"),
    "weight_decay < 0": lambda run, tmp: sweep_args(tmp / "new", "optim.weight_decay=-0.1"),
    "lr inf": lambda run, tmp: sweep_args(tmp / "new", "optim.lr=inf"),
    "every_minutes nan": lambda run, tmp: sweep_args(tmp / "new", "checkpoint.every_minutes=nan"),
    "num_samples 5": lambda run, tmp: sweep_args(tmp / "new", "data.num_samples=5"),
    "val_size too big": lambda run, tmp: sweep_args(tmp / "new", "data.val_size=250"),
    "n_train too big": lambda run, tmp: sweep_args(tmp / "new", "data.n_train=100000"),
    "train_split leaves no training data": lambda run, tmp: sweep_args(tmp / "new", "data.num_samples=20",
                                                                        "data.train_split=0.01"),
    "device cuda without a GPU": lambda run, tmp: sweep_args(tmp / "new", "device='cuda'"),
    "workers 0": lambda run, tmp: [*sweep_args(tmp / "new"), "--workers", "0"],
    "workers -3": lambda run, tmp: [*sweep_args(tmp / "new"), "--workers", "-3"],
    "max-group 0": lambda run, tmp: [*sweep_args(tmp / "new"), "--max-group", "0"],
    "override without =": lambda run, tmp: ["sweep", "mnist1d-mlp", "--set", "model.width", "--out", str(tmp / "new")],
    "empty grid axis": lambda run, tmp: sweep_args(tmp / "new", "model.width=[]"),
    "volume: K = 0": lambda run, tmp: sweep_args(tmp / "new", 'metrics.sparse_groups=["volume"]', "metrics.vol_k=0"),
    "volume: a sampler without strength": lambda run, tmp: sweep_args(tmp / "new", 'metrics.vol_samplers=["shift"]'),
    "volume: a path that does not increase": lambda run, tmp: sweep_args(tmp / "new",
                                                                         'metrics.vol_samplers=["shift@2,1"]'),
    "volume: an unknown family": lambda run, tmp: sweep_args(tmp / "new", 'metrics.vol_samplers=["blur@2"]'),
    "volume: a shift longer than the signal": lambda run, tmp: sweep_args(
        tmp / "new", 'metrics.sparse_groups=["volume"]', 'metrics.vol_samplers=["shift@40"]'),
    "volume: more Fourier components erased than there are": lambda run, tmp: sweep_args(
        tmp / "new", 'metrics.sparse_groups=["volume"]', 'metrics.vol_samplers=["erase@5,10,15,20,25"]'),
    "volume: an augmentation that does not import": lambda run, tmp: sweep_args(
        tmp / "new", 'metrics.sparse_groups=["volume"]', 'metrics.vol_samplers=["nosuchmodule:blur@1"]'),
    "volume: an output map that does not exist": lambda run, tmp: sweep_args(tmp / "new", "metrics.vol_output='grad'"),
    "unknown key": lambda run, tmp: sweep_args(tmp / "new", "model.widht=4"),
    "unknown option": lambda run, tmp: [*sweep_args(tmp / "new"), "--bogus"],
    "another sweep's run directory (epochs)": lambda run, tmp: sweep_args(run, "optim.epochs=3"),
    "another sweep's run directory (data)": lambda run, tmp: sweep_args(run, "data.name='digits'"),
    "schema_version not an integer": lambda run, tmp: _then(
        _sql(run, "UPDATE meta SET value='two' WHERE key='schema_version'"), ["status", str(run)]),
    "garbage trials.config (status)": lambda run, tmp: _then(
        _sql(run, "UPDATE trials SET config='{nope' WHERE position=0"), ["status", str(run)]),
    "garbage trials.config (sweep)": lambda run, tmp: _then(
        _sql(run, "UPDATE trials SET config='{nope' WHERE position=0"), sweep_args(run)),
    "garbage trials.config (report)": lambda run, tmp: _then(
        _sql(run, "UPDATE trials SET config='[1]' WHERE position=0"), ["report", str(run)]),
    "garbage trials.config (export)": lambda run, tmp: _then(
        _sql(run, "UPDATE trials SET config='{nope' WHERE position=0"), ["export", str(run)]),
    "records table dropped (sweep)": lambda run, tmp: _then(_sql(run, "DROP TABLE records"), sweep_args(run)),
    "records table dropped (report)": lambda run, tmp: _then(_sql(run, "DROP TABLE records"), ["report", str(run)]),
    "garbage meta.sweep (sweep)": lambda run, tmp: _then(
        _sql(run, "UPDATE meta SET value='not json' WHERE key='sweep'"), sweep_args(run)),
    "garbage meta.sweep (report)": lambda run, tmp: _then(
        _sql(run, "UPDATE meta SET value='[1, 2]' WHERE key='sweep'"), ["report", str(run)]),
    "no store (report)": lambda run, tmp: ["report", str(tmp / "nowhere")],
    "no store (export)": lambda run, tmp: ["export", str(tmp / "nowhere")],
    "export under a file": lambda run, tmp: ["export", str(run), "--out", str(Path(_write(tmp / "f", b"x")) / "t.csv")],
    "report out under a file": lambda run, tmp: ["report", str(run), "--out", str(Path(_write(tmp / "f", b"x")) / "r")],
    "measure: checkpoint without 'model'": lambda run, tmp: [
        "measure", str(_rewrite_checkpoint(run, "final.pt", lambda s: s.pop("model"))), "--device", "cpu"],
    "measure: weights of another model": lambda run, tmp: [
        "measure", str(_rewrite_checkpoint(run, "final.pt", _other_width_weights)), "--device", "cpu"],
    "measure: records garbage": lambda run, tmp: [
        "measure", str(_rewrite_checkpoint(run, "final.pt", lambda s: s.update(records=[("a", 1)]))),
        "--device", "cpu"],
    "measure: not a checkpoint": lambda run, tmp: ["measure", _write(tmp / "x.pt", b"hello"), "--device", "cpu"],
    "measure: negative samples": lambda run, tmp: ["measure", str(next(run.rglob("final.pt"))), "--samples", "-1"],
    "resume: weights of another model": lambda run, tmp: _then(
        _pending(run, _rewrite_checkpoint(run, "init.pt", _other_width_weights)), sweep_args(run)),
    "resume: optimiser state garbage": lambda run, tmp: _then(
        _pending(run, _rewrite_checkpoint(run, "init.pt", lambda s: s.update(optimizer={"state": 1}))),
        sweep_args(run)),
    "measure: NaN weights": lambda run, tmp: [
        "measure", str(_rewrite_checkpoint(run, "final.pt", _nan_weights)), "--device", "cpu"],
    "measure: step 2**70": lambda run, tmp: [
        "measure", str(_rewrite_checkpoint(run, "final.pt", lambda s: s.update(step=2**70))), "--device", "cpu"],
    "measure: checksum file not UTF-8": lambda run, tmp: [
        "measure", _then(_write(next(run.rglob("final.pt.sha256")), b"\xff\xfe" * 40), str(next(run.rglob("final.pt")))),
        "--device", "cpu"],
    "measure: checksum file is a folder": lambda run, tmp: [
        "measure", _checksum_folder(next(run.rglob("final.pt"))), "--device", "cpu"],
    "resume: NaN weights": lambda run, tmp: _then(
        _pending(run, _rewrite_checkpoint(run, "init.pt", _nan_weights)), sweep_args(run)),
    "resume: step 2**70": lambda run, tmp: _then(
        _pending(run, _rewrite_checkpoint(run, "init.pt", lambda s: s.update(step=2**70))), sweep_args(run)),
    "resume: records garbage": lambda run, tmp: _then(
        _pending(run, _rewrite_checkpoint(run, "init.pt", lambda s: s.update(records=[(0, "m", "x")]))),
        sweep_args(run)),
}


def one_error_line(err: str) -> bool:
    """The error is one ``ddscope: error:`` line; before it at most the sweep's header (printed
    once a sweep has started, wrapped by the terminal width)."""
    head, sep, line = err.strip().rpartition("ddscope: error: ")
    return bool(sep) and "\n" not in line.strip() and (not head or head.startswith("ddscope sweep"))


def _write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def _then(_, args):
    return args


def _pending(run: Path, ckpt: Path) -> None:
    """Make the trial of ``ckpt`` pending again, with only that checkpoint left to resume from."""
    for p in ckpt.parent.glob("*.pt*"):
        if p.name not in (ckpt.name, ckpt.name + ".sha256"):
            p.unlink()
    _sql(run, f"UPDATE trials SET status='pending' WHERE trial_id='{ckpt.parent.name}'")


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_exit_2_and_nothing_changes(case, finished, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    work = tmp_path / "work"
    work.mkdir()
    args = CASES[case](run, work)
    before = snapshot(run)
    code, out, err = cli_inline(capsys, *args)
    assert code == 2, (case, code, out, err)
    assert one_error_line(err), (case, err)
    assert "Traceback" not in out + err
    assert snapshot(run) == before, case
    assert not (work / "new").exists(), "a refused sweep created its run directory"
    assert not (work / "nowhere").exists(), "a refused report or export created a folder"


@pytest.mark.parametrize("content", [b"", b"SQLite format 3\x00" + b"\x00" * 84], ids=["empty", "truncated header"])
def test_a_foreign_file_is_never_touched(tmp_path, capsys, content):
    run = tmp_path / "run"
    run.mkdir()
    (run / "store.sqlite").write_bytes(content)
    foreign = tmp_path / "other"
    foreign.mkdir()
    conn = sqlite3.connect(foreign / "store.sqlite")  # a real SQLite file of someone else's, rollback journal
    conn.execute("CREATE TABLE x(a)")
    conn.commit()
    conn.close()
    for folder in (run, foreign):
        data = (folder / "store.sqlite").read_bytes()
        for args in (["status", str(folder)], ["report", str(folder)], ["export", str(folder)], sweep_args(folder)):
            code, _, err = cli_inline(capsys, *args)
            assert code == 2 and one_error_line(err), (args, err)
        assert (folder / "store.sqlite").read_bytes() == data
        assert sorted(p.name for p in folder.iterdir()) == ["store.sqlite"]  # no -wal, -shm, report, config


def test_a_zero_trial_store_reports(tmp_path, capsys):
    """Regression: a store left with no trial (a SIGKILL right after creation) made ``report``
    raise ``KeyError: ['error', 'wall_s']``."""
    from ddscope.runs.store import Store

    Store.create(tmp_path / "store.sqlite", {}).close()
    code, out, err = cli_inline(capsys, "report", str(tmp_path))
    assert code == 0 and "Traceback" not in err
    assert "The store has no trials." in (tmp_path / "report" / "index.html").read_text()
    code, out, err = cli_inline(capsys, "status", str(tmp_path))
    assert code == 0 and "0 trials" in out


@pytest.fixture
def small_mount(tmp_path):
    """A 1 MiB tmpfs (root on Linux only): a full disk and, remounted, a read-only one."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_a_read_only_out_is_one_line_before_anything(small_mount, finished, capsys):
    subprocess.run(["mount", "-o", "remount,ro", str(small_mount)], check=True)
    for args in (sweep_args(small_mount / "run"), ["report", str(small_mount / "run")],
                 ["report", str(finished), "--out", str(small_mount / "rep")],
                 ["export", str(finished), "--out", str(small_mount / "t.csv")]):
        code, _, err = cli_inline(capsys, *args)
        assert code == 2 and one_error_line(err) and "Traceback" not in err, err


def test_a_full_disk_is_one_line_and_the_sweep_resumes(small_mount, tmp_path, finished, capsys):
    """The sweep's checkpoints fill a 1 MiB disk: one line, exit 2, no trial marked failed and
    none left running by a live holder; on a disk with room the same command finishes."""
    run = small_mount / "run"
    args = sweep_args(run, "model.width=[256,320]", "optim.epochs=1")
    code, _, err = cli_inline(capsys, *args)
    assert code == 2 and "No space left on device" in err and one_error_line(err), err
    assert "cannot write /" in err  # names the file it could not write
    conn = sqlite3.connect(run / "store.sqlite")
    states = [s for (s,) in conn.execute("SELECT status FROM trials")]
    conn.close()
    assert "failed" not in states and "running" not in states and "pending" in states
    code, _, err = cli_inline(capsys, "report", str(finished), "--out", str(small_mount / "rep"))  # disk still full
    assert code == 2 and "No space left on device" in err and one_error_line(err), err
    assert not list(small_mount.glob(".rep.*")) and not (small_mount / "rep").exists()  # nothing half-written
    shutil.copytree(run, tmp_path / "moved", ignore=shutil.ignore_patterns("trials"))
    code, _, err = cli_inline(capsys, *sweep_args(tmp_path / "moved", "model.width=[256,320]", "optim.epochs=1"))
    assert code == 0, err
