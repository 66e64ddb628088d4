"""Checkpoints: atomic writes with a sha256 sidecar, corruption detected and never loaded,
weights_only loading, the schedule, and a trial interrupted mid-training that resumes from its
last checkpoint and ends bit-identical to an uninterrupted run."""

import hashlib

import pytest
import torch

from ddscope.checkpoint import Checkpointer, latest_checkpoint, load_checkpoint, save_checkpoint
from ddscope.config import load_sweep, set_key
from ddscope.errors import UserError
from ddscope.train import run_trial

from .tiny import Killed, tiny
from .tiny import stop_at as _stop_at


def _cfg(**kw):
    # Adam with warm-up: optimiser moments and the scheduler's step both have to be restored.
    return tiny(**{"optim.epochs": 8, "model.width": 16, "metrics.num_log_epochs": 3, "optim.name": "adam",
                   "optim.lr": 0.003, "optim.warmup_epochs": 2, **kw})


def _files(folder):
    return sorted(p.name for p in folder.iterdir())


def _state(**model) -> dict:
    """The smallest checkpoint load_checkpoint accepts (every entry present and well typed)."""
    return {"format": 1, "trial_id": "t", "config": {}, "epoch": 3, "step": 0, "model": model,
            "records": [(0, "m", 1.5)], "interp_epoch": None, "elapsed_s": 0.0}


def test_save_writes_a_plain_torch_file_and_a_sha256sum_sidecar(tmp_path):
    state = _state(w=torch.arange(6.0).reshape(2, 3))
    path = save_checkpoint(tmp_path / "a.pt", state)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert (tmp_path / "a.pt.sha256").read_text() == f"{digest}  a.pt\n"  # `sha256sum -c` format
    assert _files(tmp_path) == ["a.pt", "a.pt.sha256"]  # no temporary file left behind
    back = load_checkpoint(path)
    assert torch.equal(back["model"]["w"], state["model"]["w"]) and back["records"] == [(0, "m", 1.5)]
    assert torch.load(path, weights_only=True)["epoch"] == 3  # readable without ddscope


@pytest.mark.parametrize("damage", ["truncate", "flip", "sidecar"])
def test_corrupted_checkpoint_is_detected_and_not_loaded(tmp_path, monkeypatch, damage):
    path = save_checkpoint(tmp_path / "c.pt", _state(w=torch.randn(100)))
    blob = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(blob[: len(blob) // 2])
    elif damage == "flip":
        path.write_bytes(blob[:200] + bytes([blob[200] ^ 1]) + blob[201:])
    else:
        (tmp_path / "c.pt.sha256").write_text("0" * 64 + "  c.pt\n")
    loads = []
    monkeypatch.setattr(torch, "load", lambda *a, **k: loads.append(a))
    with pytest.raises(UserError, match=r"c\.pt is corrupted: checksum mismatch"):
        load_checkpoint(path)
    assert loads == []  # never handed to torch.load


def test_missing_sidecar_and_foreign_pickles_are_refused(tmp_path):
    path = save_checkpoint(tmp_path / "d.pt", _state())
    (tmp_path / "d.pt.sha256").unlink()
    with pytest.raises(UserError, match="no checksum file"):
        load_checkpoint(path)
    # A pickle that would run code: weights_only refuses it even with a valid checksum.
    evil = tmp_path / "e.pt"
    torch.save({"format": 1, "obj": Killed()}, evil)
    (tmp_path / "e.pt.sha256").write_text(f"{hashlib.sha256(evil.read_bytes()).hexdigest()}  e.pt\n")
    with pytest.raises(UserError, match="weights_only=True"):
        load_checkpoint(evil)


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    import errno

    import ddscope.checkpoint as ckpt

    path = save_checkpoint(tmp_path / "f.pt", _state(v=torch.tensor(1.0)))

    def crash(name, mode="r", *a, **k):  # the disk fills up half-way through the payload
        f = open(name, mode, *a, **k)
        f.write(b"half a checkpoint")
        f.close()
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt, "open", crash, raising=False)
    with pytest.raises(OSError) as e:
        save_checkpoint(path, _state(v=torch.tensor(2.0)))
    monkeypatch.undo()
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(path)  # names the file
    assert _files(tmp_path) == ["f.pt", "f.pt.sha256"]
    assert load_checkpoint(path)["model"]["v"].item() == 1.0


@pytest.mark.parametrize("change, why", [
    (lambda s: s.pop("model"), "it has no 'model'"),
    (lambda s: s.update(epoch=-1), "'epoch' is not an epoch >= 0"),
    (lambda s: s.update(records=[(0, "m", "x")]), "'records' is not a list"),
    (lambda s: s.update(optimizer={}, scheduler={}), "it has no 'rng'"),
], ids=["no model", "negative epoch", "records garbage", "resume point without rng"])
def test_a_checksummed_but_inconsistent_checkpoint_is_one_line(tmp_path, change, why):
    state = _state(w=torch.zeros(2))
    change(state)
    path = save_checkpoint(tmp_path / "g.pt", state)
    with pytest.raises(UserError, match=f"g.pt is inconsistent: {why}"):
        load_checkpoint(path)


def test_schedule_keeps_configured_epochs_and_one_rolling_resume_point(tmp_path):
    cfg = _cfg(**{"optim.epochs": 10, "checkpoint.every_epochs": 3, "checkpoint.epochs": [5],
                  "checkpoint.every_minutes": 0})
    with pytest.raises(Killed):
        run_trial(cfg, _stop_at(7), ckpt_dir=str(tmp_path))
    pts = [n for n in _files(tmp_path) if n.endswith(".pt")]
    assert pts == ["epoch_00005.pt", "epoch_00006.pt", "init.pt"]  # epoch 3 was superseded by 5
    assert latest_checkpoint(tmp_path).name == "epoch_00006.pt"
    run_trial(cfg, ckpt_dir=str(tmp_path))
    pts = [n for n in _files(tmp_path) if n.endswith(".pt")]
    assert pts == ["epoch_00005.pt", "final.pt", "init.pt"]
    assert all((tmp_path / f"{n}.sha256").exists() for n in pts)
    final = load_checkpoint(tmp_path / "final.pt")
    assert final["epoch"] == 10 and "optimizer" not in final  # nothing left to train
    assert load_checkpoint(tmp_path / "init.pt")["epoch"] == 0


def test_interrupted_trial_resumes_from_its_checkpoint_bit_identical(tmp_path):
    cfg = _cfg(**{"checkpoint.every_epochs": 2})
    reference = run_trial(cfg, ckpt_dir=str(tmp_path / "ref"))
    assert reference.status == "done" and reference.summary["resumed_from_epoch"] is None

    folder = tmp_path / "trial"
    with pytest.raises(Killed):
        run_trial(cfg, _stop_at(5), ckpt_dir=str(folder))  # after epoch 5: checkpoint of epoch 4
    seen = []
    resumed = run_trial(cfg, lambda e, t: seen.append(e), ckpt_dir=str(folder))
    assert resumed.summary["resumed_from_epoch"] == 4
    assert seen == [5, 6, 7, 8]  # epochs 0..4 were not trained again
    assert resumed.status == "done"
    assert resumed.records == reference.records  # every loss, error and Jacobian norm, bit for bit
    a, b = load_checkpoint(folder / "final.pt")["model"], load_checkpoint(tmp_path / "ref" / "final.pt")["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_finished_but_unstored_trial_is_not_trained_again(tmp_path):
    cfg = _cfg(**{"optim.epochs": 3})
    first = run_trial(cfg, ckpt_dir=str(tmp_path))
    seen = []
    again = run_trial(cfg, lambda e, t: seen.append(e), ckpt_dir=str(tmp_path))
    assert seen == [] and again.summary["resumed_from_epoch"] == 3
    assert again.records == first.records and again.summary["interp_epoch"] == first.summary["interp_epoch"]


def test_payload_without_sidecar_is_an_interrupted_write_and_is_skipped(tmp_path):
    cfg = _cfg(**{"optim.epochs": 4, "checkpoint.every_epochs": 2})
    with pytest.raises(Killed):
        run_trial(cfg, _stop_at(3), ckpt_dir=str(tmp_path))
    (tmp_path / "epoch_00003.pt").write_bytes(b"killed between the two renames")
    assert latest_checkpoint(tmp_path).name == "epoch_00002.pt"
    resumed = run_trial(cfg, ckpt_dir=str(tmp_path))
    assert resumed.summary["resumed_from_epoch"] == 2 and resumed.status == "done"
    assert resumed.records == run_trial(cfg).records


def test_corrupted_checkpoint_stops_the_trial_with_a_user_error(tmp_path):
    cfg = _cfg(**{"optim.epochs": 4, "checkpoint.every_epochs": 2})
    with pytest.raises(Killed):
        run_trial(cfg, _stop_at(3), ckpt_dir=str(tmp_path))
    ckpt = tmp_path / "epoch_00002.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:-100])
    with pytest.raises(UserError, match="epoch_00002.pt is corrupted: checksum mismatch"):
        run_trial(cfg, ckpt_dir=str(tmp_path))
    # A checkpoint of another trial (a folder moved by hand) is refused too.
    run_trial(cfg, ckpt_dir=str(tmp_path / "done"))
    with pytest.raises(UserError, match="belongs to another trial"):
        Checkpointer(tmp_path / "done", _cfg(**{"optim.epochs": 4, "model.width": 8})).resume()


def test_checkpoint_settings_do_not_change_the_trial(tmp_path):
    a = _cfg()
    assert set_key(a, {"checkpoint.every_epochs": 5, "checkpoint.epochs": [1, 2]}).trial_id == a.trial_id
    with pytest.raises(UserError, match="checkpoint.every_epochs' cannot be a grid axis"):
        load_sweep("mnist1d-mlp", ["checkpoint.every_epochs=[1,2]"])
    with pytest.raises(UserError, match="checkpoint.every_minutes"):
        set_key(a, {"checkpoint.every_minutes": -1})
