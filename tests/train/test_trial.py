import math


from ddscope.train import metric_epochs, run_trial

from ..tiny import tiny


def _tiny(**kw):
    return tiny(**{"optim.epochs": 4, "model.width": 16, **kw})


def test_metric_schedule():
    assert metric_epochs(500, 12)[0] == 0 and metric_epochs(500, 12)[-1] == 500
    assert len(metric_epochs(500, 12)) >= 10
    assert metric_epochs(10, 3, (2, 5, 50)) == [2, 5, 10]


def test_same_config_same_numbers():
    a, b = run_trial(_tiny()), run_trial(_tiny())
    assert a.status == b.status == "done"
    assert a.records == b.records and a.noisy_mask == b.noisy_mask
    c = run_trial(_tiny(seed=1))
    assert c.records != a.records


def test_records_cover_splits_and_schedule():
    r = run_trial(_tiny())
    names = {m for _, m, _ in r.records}
    for split in ("train", "train_clean", "train_noisy", "test"):
        assert f"err/{split}" in names and f"loss/{split}" in names
        assert f"jac_spec_rms/{split}" in names
    epochs = {e for e, m, _ in r.records if m == "jac_spec_rms/train"}
    assert epochs == set(metric_epochs(4, 2))
    assert r.summary["params"] == 40 * 16 + 16 + 16 * 16 + 16 + 16 * 10 + 10


def test_interpolation_epoch_recorded():
    # No noise, tiny train set, wide net, Adam: it fits the 250 labels in about 20 epochs.
    kw = {"data.noise": 0.0, "model.width": 128, "optim.epochs": 40, "metrics.groups": [],
          "optim.name": "adam", "optim.lr": 0.003}
    r = run_trial(_tiny(**kw))
    errs = {e: v for e, m, v in r.records if m == "err/train"}
    ie = r.summary["interp_epoch"]
    assert ie is not None and errs[ie] == 0.0 and all(errs[e] > 0 for e in errs if e < ie)


def test_divergence_marks_failed():
    r = run_trial(_tiny(**{"optim.lr": 1e8}))
    assert r.status == "failed" and r.error.startswith("diverged")


def test_warmup_is_linear_over_its_steps_then_constant():
    """The learning rate itself, step by step (the old test only ran a warm-up trial)."""
    import torch

    from ddscope.train import make_optimizer

    for name in ("sgd", "adam"):
        cfg = _tiny(**{"optim.name": name, "optim.lr": 0.3, "optim.warmup_epochs": 2})
        model = torch.nn.Linear(3, 2)
        opt, sched = make_optimizer(cfg, model, steps_per_epoch=3)  # 6 warm-up steps
        lrs = []
        for _ in range(9):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        assert lrs == [0.3 * k / 6 for k in range(1, 7)] + [0.3] * 3, (name, lrs)
    opt, sched = make_optimizer(_tiny(**{"optim.lr": 0.3}), torch.nn.Linear(3, 2), steps_per_epoch=3)
    assert opt.param_groups[0]["lr"] == 0.3  # no warm-up: the full rate from the first step


def test_training_reduces_loss_and_adam_warmup_runs():
    r = run_trial(_tiny(**{"optim.name": "adam", "optim.lr": 1e-3, "optim.warmup_epochs": 1, "optim.epochs": 6}))
    loss = {e: v for e, m, v in r.records if m == "loss/train"}
    assert r.status == "done" and loss[6] < loss[0] and math.isfinite(loss[6])


def test_errors_reach_the_display_on_metric_epochs_with_many_metric_rows():
    """Regression: the running errors were read from the last 64 records only; a metric epoch of a
    deep net writes far more rows after them (dist_* per layer), and its errors were never shown."""
    from ddscope.train import run_group

    seen = []
    cfg = _tiny(**{"model.depth": 40, "model.width": 4, "metrics.groups": ["distance"], "optim.epochs": 2})
    (result,) = run_group([cfg], errors=lambda tid, e, tr, te: seen.append((e, tr, te)))
    assert len([r for r in result.records if r[0] == 2]) > 64
    stored = {m: v for e, m, v in result.records if e == 2}
    assert [(e, tr, te) for e, tr, te in seen if e == 2] == [(2, stored["err/train"], stored["err/test"])]
