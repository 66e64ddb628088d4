"""The catalogue (ddscope.catalogue) is the one place of every fact it holds: the registries,
validation, the suite, the schedule, the report and the defaults of the metric functions all read
it, and a new config key or metric group without its entry fails here."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from ddscope import catalogue
from ddscope.catalogue import OPTIONS, Group, Measure
from ddscope.config import MetricsConfig, TrialConfig, all_keys, set_key, varying_keys
from ddscope.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- defaults


def test_the_metrics_section_is_the_catalogues_options_and_schedule_keys():
    """Every [metrics] key is an option of measure() (with the catalogue's default) or one of its
    schedule keys: a key added to MetricsConfig without its catalogue entry fails here."""
    fields = {f.name: f for f in dataclasses.fields(MetricsConfig)}
    declared = (set(OPTIONS) & set(fields)) | set(catalogue.SCHEDULE_KEYS)
    assert set(fields) == declared, f"undeclared [metrics] keys: {sorted(set(fields) - declared)}"
    m = MetricsConfig()
    for name in set(OPTIONS) & set(fields):
        value = getattr(m, name)
        want = OPTIONS[name]
        if name in ("jac_samples", "hess_samples"):  # the config's 0 is measure()'s None: all
            value = value or None
        if name == "lip_constants":
            value = dict(value) or None
        assert value == want, f"metrics.{name} defaults to {value!r}, the catalogue to {want!r}"
    assert m.groups == catalogue.scheduled("every") and m.sparse_groups == catalogue.scheduled("sparse")


def test_a_config_passes_the_catalogues_defaults_to_measure():
    from ddscope.metrics.suite import options_from_config

    for key, value in options_from_config(MetricsConfig()).items():
        assert OPTIONS[key] == value, key


# Options whose metric functions call the parameter by another name.
RENAMED = {
    "jac_iters": [("jacobian", "jacobian_norms", "num_iters")],
    "jac_method": [("jacobian", "jacobian_norms", "method")],
    "path_pairs": [("jacobian", "path_jacobian_norms", "n_pairs")],
    "path_k": [("jacobian", "path_jacobian_norms", "k")],
    "lip_iters": [("lipschitz", "lipschitz_upper", "num_iters")],
    "lip_lower_steps": [("ascent", "lipschitz_lower", "steps")],
    "hess_matvecs": [("hessian", "hess_trace_detail", "num_matvecs"), ("theorem", "theorem2", "hutch_matvecs")],
    "hess_method": [("hessian", "hess_trace_detail", "method")],
    "lanczos_iters": [("hessian", "hess_top", "num_iters")],
    "spec_top_k": [("spectrum", "hess_spectrum", "top_k")],
    "spec_probes": [("spectrum", "hess_spectrum", "probes")],
    "spec_steps": [("spectrum", "hess_spectrum", "steps")],
    "hess_vmap": [("hessian", "hess_trace_detail", "vmap_chunk"), ("hessian", "loss_hvp", "vmap_chunk"),
                  ("spectrum", "hess_spectrum", "vmap_chunk")],
    "grad_chunk": [("hessian", "hess_trace_detail", "grad_chunk"), ("theorem", "theorem2", "chunk_size"),
                   ("theorem", "theorem2_per_sample", "chunk_size"), ("persample", "per_sample_grad_sq", "chunk_size")],
    "sharp_draws": [("sharpness", "sharpness_measures", "draws")],
    "sharp_depth": [("sharpness", "sharpness_measures", "depth")],
    "output": [("jacobian", "jacobian_norms", "output")],
    "vol_output": [("volume", "volume_measures", "output")],
    "vol_k": [("volume", "volume_measures", "k")],
    "loss": [("hessian", "hess_trace_detail", "loss"), ("hessian", "hess_top", "loss"), ("theorem", "theorem2", "loss")],
}


@pytest.mark.parametrize("option", sorted(RENAMED))
def test_a_metric_function_called_bare_uses_the_catalogues_default(option):
    """What ``hess_trace_detail(model, batches)`` uses without arguments is what a sweep uses
    (the drift this guards against: 100 Hessian-vector products bare, 60 in a sweep)."""
    for module, function, param in RENAMED[option]:
        f = getattr(importlib.import_module(f"ddscope.metrics.{module}"), function)
        default = inspect.signature(f).parameters[param].default
        assert default == OPTIONS[option], f"{module}.{function}({param}={default!r}) but OPTIONS[{option!r}] = {OPTIONS[option]!r}"


def test_no_public_metric_function_has_its_own_default_for_an_option_of_the_same_name():
    import pkgutil

    import ddscope.metrics

    # (chunk_size is a memory knob whose unit differs from function to function, and output is the
    # jacobian group's map or the volume group's vol_output: both compared by RENAMED instead)
    for info in pkgutil.iter_modules(ddscope.metrics.__path__):
        mod = importlib.import_module(f"ddscope.metrics.{info.name}")
        for name, f in vars(mod).items():
            if not inspect.isfunction(f) or f.__module__ != mod.__name__ or name.startswith("_"):
                continue
            for p in inspect.signature(f).parameters.values():
                if p.name in OPTIONS and p.name not in ("chunk_size", "output") and p.default is not inspect.Parameter.empty and p.default is not None:
                    assert p.default == OPTIONS[p.name], f"{mod.__name__}.{name}({p.name}={p.default!r})"


def test_the_store_uses_one_stale_after():
    from ddscope.runs.store import STALE_AFTER_S, Store

    assert inspect.signature(Store.claim).parameters["stale_after"].default == STALE_AFTER_S


# ----------------------------------------------------------------------------- registries


def test_the_registries_are_the_catalogues():
    from ddscope.data import SOURCES
    from ddscope.models import MODELS
    from ddscope.train.plan import PACKED_FAMILIES, STACKED_FAMILIES

    assert list(MODELS) == list(catalogue.FAMILIES) and list(SOURCES) == list(catalogue.SOURCES)
    assert all(callable(f) for f in (*MODELS.values(), *SOURCES.values()))
    assert set(STACKED_FAMILIES) == {n for n, f in catalogue.FAMILIES.items() if f.stacks}
    assert PACKED_FAMILIES == ("mlp",)


def test_every_group_row_resolves_and_its_measures_are_measures():
    for name, g in catalogue.GROUPS.items():
        assert callable(catalogue.resolve(g.compute)), name
        assert g.schedule in ("every", "sparse", "off") and set(g.needs) <= {"train", "init_state"}, name
        assert g.probe.split("/")[0] in g.keys, name
    keys = catalogue.measures()
    assert len(keys) == len(set(keys)) and "jac_spec_rms/path_same" in keys and "hess_trace_exact" not in keys


def test_every_key_a_group_writes_is_named_in_its_row(tiny_model_and_splits):
    """The catalogue's ``keys`` of a group name every key it stores (by the part before '/')."""
    from ddscope.metrics import measure

    model, splits, init = tiny_model_and_splits
    opts = {"hess_samples": 16, "hess_matvecs": 4, "path_pairs": 3, "lip_lower_steps": 2, "sharp_draws": 2,
            "sharp_depth": 2, "spec_steps": 4, "spec_probes": 1, "lanczos_iters": 4}
    for name, g in catalogue.GROUPS.items():
        out = measure(model, splits, metrics=[name], input_shape=(5,), init_state=init, options=opts,
                      subsets={"train_clean": ("train", torch.arange(24) % 4 != 0),
                               "train_noisy": ("train", torch.arange(24) % 4 == 0)})
        assert not out.skipped, (name, out.skipped)
        assert any(k == g.probe or k.startswith(g.probe + "/") for k in out), name
        unnamed = sorted({k.split("/")[0] for k in out} - set(re.findall(r"[a-z0-9_]+", g.keys)))
        assert not unnamed, f"group {name!r} writes {unnamed}, which its catalogue row does not name"


@pytest.fixture
def tiny_model_and_splits():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3))
    init = {k: v.detach().clone() for k, v in model.named_parameters()}
    x, y = torch.randn(24, 5), torch.arange(24) % 3
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model, {"train": (x, y), "test": (torch.randn(9, 5), torch.arange(9) % 3)}, init


# ----------------------------------------------------------------------------- trial ids


def test_keys_outside_the_trial_id_are_never_a_condition_or_a_status_label():
    """A logging-only or checkpoint-only difference is not a new condition in tables or status."""
    from ddscope.config import flatten
    from ddscope.report.conditions import condition_keys, x_axis
    from ddscope.runs.status import _labels

    a = set_key(TrialConfig(), {"model.width": 4})
    b = set_key(TrialConfig(), {"model.width": 8, "log.tensorboard": "tb", "checkpoint.every_epochs": 3,
                                "device": "auto", "log.mlflow_experiment": "x"})
    flats = [flatten(c.to_dict()) for c in (a, b)]
    varying = varying_keys(flats)
    assert varying == ["model.width"]
    assert condition_keys(flats, varying, x_axis(varying)) == ["data.noise"]
    labels = _labels([{"trial_id": c.trial_id, "config": c.to_dict()} for c in (a, b)])
    assert set(labels.values()) == {"width=4", "width=8"}
    assert all(catalogue.is_id_free(k) for k in all_keys() if k.startswith(("log.", "checkpoint.")) or k == "device")
    assert a.trial_id == set_key(a, {"log.mlflow": "somewhere", "device": "auto"}).trial_id


# ----------------------------------------------------------------------------- a new group


def compute_tiny(ctx) -> dict[str, float]:
    """A group for the test below: the ℓ1 norm of the parameters."""
    return {"tiny_l1": float(sum(p.detach().abs().sum() for p in ctx.model.parameters()))}


TINY = Group("tiny", "tests.test_catalogue:compute_tiny", "tiny_l1", "tiny_l1", "ℓ1 norm of the parameters",
             schedule="sparse", measures=(Measure("tiny_l1", "Σ |θ|, the parameters' ℓ1 norm"),))


def test_a_new_metric_group_is_one_catalogue_row(monkeypatch, tmp_path):
    """Adding a group touches the catalogue, the group's function and its test: validation, the
    suite, the schedule, the report's evidence table, ranking and coverage pick it up."""
    import ddscope

    with pytest.raises(UserError, match="unknown group 'tiny'"):
        set_key(TrialConfig(), {"metrics.sparse_groups": ["tiny"]})
    monkeypatch.setitem(catalogue.GROUPS, "tiny", TINY)
    assert "tiny" in catalogue.scheduled("sparse")
    set_key(TrialConfig(), {"metrics.sparse_groups": ["tiny"]})  # validation reads the catalogue
    run = ddscope.sweep("mnist1d-mlp", {"model.width": [3, 6, 12], "optim.epochs": 8, "data.num_samples": 300,
                                        "optim.batch_size": 50, "metrics.groups": ["jacobian"],
                                        "metrics.sparse_groups": ["tiny"], "metrics.num_log_epochs": 4,
                                        "metrics.num_sparse_epochs": 1},
                        out=tmp_path / "run", executor="inprocess", report=False)
    from ddscope.report import build_report

    build_report(run, criterion=1.0)  # every net ranked: three short-trained ones fit nothing
    tidy = ddscope.load(run)
    tiny, jac = (set(tidy[tidy["metric"] == m]["epoch"]) for m in ("tiny_l1", "jac_spec_rms/train"))
    assert {0, 8} <= tiny < jac  # on the sparse schedule, a subset of the dense one
    evidence = (run / "report" / "evidence.csv").read_text(encoding="utf-8")
    ranking = (run / "report" / "ranking.csv").read_text(encoding="utf-8")
    assert "tiny_l1" in evidence and "tiny_l1" in ranking
    page = (run / "report" / "index.html").read_text(encoding="utf-8")
    assert "Σ |θ|, the parameters" in page  # its words in the evidence legend
    missing = json.loads((run / "report" / "summary.json").read_text(encoding="utf-8"))["missing"]
    assert not any("'tiny'" in line for line in missing)


def test_a_group_the_store_lacks_is_named_by_its_catalogue_row(monkeypatch):
    import pandas as pd

    from ddscope.report.coverage import missing_items

    monkeypatch.setitem(catalogue.GROUPS, "tiny", TINY)
    final = pd.DataFrame({"status": ["done"], "model.width": [4], "data.noise": [0.1], "seed": [0]})
    lines = missing_items(final, {"done": 1}, {"err/test"}, {"metrics": {"groups": [], "sparse_groups": ["tiny"]}})
    assert "Metric group 'tiny' (ℓ1 norm of the parameters: tiny_l1): no trial recorded it." in lines


# ----------------------------------------------------------------------------- citations


def test_every_file_the_code_cites_exists():
    """Docstrings and comments cite tests and docs by path; each must be in the repository."""
    cited = set()
    for path in [*(ROOT / "src").rglob("*.py"), *(ROOT / "src").rglob("*.toml"), *(ROOT / "docs").rglob("*.md"),
                 ROOT / "README.md"]:
        text = path.read_text(encoding="utf-8")
        cited |= {m for m in re.findall(r"\b((?:tests|docs|bench|examples)/[\w/.-]+\.(?:py|md|toml))", text)}
        assert "DESIGN.md" not in text, f"{path} cites DESIGN.md, which is not in the repository"
    missing = sorted(c for c in cited if not (ROOT / c).exists())
    assert not missing, f"cited but not in the repository: {missing}"


def test_the_docs_list_the_reports_figures():
    from ddscope.report.contents import FIGURES, figure_docs

    assert len({f.name for f in FIGURES}) == len(FIGURES)
    assert (ROOT / "docs" / "report.md").read_text(encoding="utf-8") == figure_docs(), (
        "docs/report.md is out of date: python -m ddscope.report.contents > docs/report.md")


def test_a_tracked_trials_data_cannot_be_loaded_again():
    """ddscope.Tracker's trials name the catalogue's TRACKED source: loading it is one clear line."""
    from ddscope.config import DataConfig
    from ddscope.data import load_source

    with pytest.raises(UserError, match="recorded by ddscope.Tracker"):
        load_source(DataConfig(name=catalogue.TRACKED))


def test_the_drivers_defaults_are_configs():
    """The sweep driver's defaults (group size, progress interval) are stated once, in config."""
    from ddscope.config import MAX_GROUP, PROGRESS_INTERVAL_S
    from ddscope.runs import progress, runner
    from ddscope.train import plan

    import ddscope.api as api

    assert inspect.signature(plan.group_trials).parameters["max_group"].default == MAX_GROUP
    assert inspect.signature(api.run).parameters["max_group"].default == MAX_GROUP
    assert inspect.signature(runner.run_sweep).parameters["max_group"].default == MAX_GROUP
    for f in (progress.make_progress, runner.run_sweep, api.run):
        name = "log_interval" if f is progress.make_progress else "progress_interval"
        assert inspect.signature(f).parameters[name].default == PROGRESS_INTERVAL_S, f


# ----------------------------------------------------------------------------- one driver, one read


def test_a_sweep_extends_its_run_directory_once_and_the_report_reads_the_store_once(tmp_path, monkeypatch):
    import ddscope
    import ddscope.extend
    from ddscope.report import build_report
    from ddscope.runs.store import Store
    from tests.tiny import TINY

    calls = {"extend": 0, "trials": 0, "records": 0}
    real_parse = ddscope.extend.sweep_from_dict

    def counting_parse(*a, **kw):  # every extend_sweep call reads the stored sweep, however it was imported
        calls["extend"] += 1
        return real_parse(*a, **kw)

    monkeypatch.setattr(ddscope.extend, "sweep_from_dict", counting_parse)
    run = ddscope.sweep("mnist1d-mlp", {**TINY, "model.width": [4, 6]}, out=tmp_path / "run", report=False)
    ddscope.sweep("mnist1d-mlp", {**TINY, "model.width": [4, 6, 8]}, out=run, report=False)  # extended in place
    assert calls["extend"] == 2  # once per sweep: the preflight no longer repeats it
    for name in ("trials", "records"):
        real = getattr(Store, name)

        def counting(self, *a, _real=real, _name=name, **kw):
            calls[_name] += 1
            return _real(self, *a, **kw)

        monkeypatch.setattr(Store, name, counting)
    build_report(run)
    assert (calls["trials"], calls["records"]) == (1, 1)


def test_the_tracker_and_the_training_loop_write_the_same_summary_keys(tmp_path):
    import ddscope
    from ddscope.runs.store import Store
    from tests.tiny import TINY

    run = ddscope.sweep("mnist1d-mlp", {**TINY, "model.width": 4}, out=tmp_path / "run", report=False)
    x, y = torch.randn(30, 5), torch.arange(30) % 3
    model = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3))
    with ddscope.Tracker(tmp_path / "mine", train=(x, y), test=(x[:9], y[:9]), groups=["distance"]) as tracker:
        tracker.start(model)
    summaries = []
    for folder in (run, tmp_path / "mine"):
        store = Store.open(folder, readonly=True)
        try:
            summaries.append(store.trials()[0]["summary"])
        finally:
            store.close()
    swept, tracked = summaries
    shared = {"params", "n_train", "n_test", "n_noisy", "interp_epoch", "resumed_from_epoch", "trainer", "wall_s",
              "skipped_groups", "metric_notes"}
    assert shared <= set(swept) and shared <= set(tracked)


def test_the_group_trainers_guard_fails_for_a_key_nobody_declared(monkeypatch):
    """plan's tables hold only named keys: a new config key is missing from them (so its trials
    train alone) until it is declared, which is what tests/train/test_group_plan.py checks."""
    from ddscope.train import plan

    table = plan._table(("model.width",), {})
    assert "optim.brand_new_key" not in table and set(table) == set(plan.SAME_KEYS)
    monkeypatch.setattr(plan, "all_keys", lambda: [*all_keys(), "optim.brand_new_key"])
    assert not plan.supports("stacked", [TrialConfig(), set_key(TrialConfig(), {"seed": 1})])
