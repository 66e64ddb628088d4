"""Frozen configs for one trial and for a sweep; TOML in, strict validation, stable hash.

A sweep file is a TOML document with the sections of a trial (``[data]``, ``[model]``,
``[optim]``, ``[metrics]``, ``[checkpoint]``) plus top-level ``seed``/``device`` and an optional
``[sweep]`` table (``name``, ``description``). Any *scalar* field given a list of values becomes a grid axis, e.g.
``model.width = [2, 4, 8]`` × ``seed = [0, 1]`` expands to six trials. Tuple-valued fields
(``metrics.groups``, ...) take lists as their value. Unknown keys, wrong types and out-of-range
values raise :class:`~ddscope.errors.UserError` with one line naming the key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import difflib
import hashlib
import itertools
import json
import math
import typing
from dataclasses import dataclass, field, fields, replace
from typing import Any

from .catalogue import (  # the names, re-exported (ddscope.config.METRIC_GROUPS, ...)
    BASE_AXES,
    DATA_NAMES,
    JAC_OUTPUTS,
    METRIC_GROUPS,
    MODEL_NAMES,
    OPTIONS,
    SPLITS,
    is_id_free,
    scheduled,
)
from .errors import UserError
from .paths import is_component
from .tomlio import PRESET_DIR, dumps_toml, list_presets, read_toml, tomllib
from .validate import DEVICES, MNIST1D_MIN_SAMPLES, NOISE_KINDS, OPTIMIZERS, SUBSETS
from .validate import check_ranges as _check_ranges


class Options(dict):
    """A free table of settings (``[model.options]``, ``[data.options]``) handed to a user's
    factory: a read-only dict, hashable so configs holding it stay hashable."""

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(json.dumps(self, sort_keys=True, default=str))

    def _read_only(self, *args, **kwargs):
        raise TypeError("config options are read-only; use set_key to change them")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _read_only  # type: ignore[assignment]


@dataclass(frozen=True)
class DataConfig:
    name: str = "mnist1d"  # data source: see ddscope.data.SOURCES, "npz", or "package.module:function"
    root: str = "data"  # folder with real data sets in their published formats (not mnist1d)
    num_samples: int = 16000  # MNIST-1D only: samples generated before the train/test split
    train_split: float = 0.25  # MNIST-1D only: fraction used for training
    n_train: int = 0  # train on a subset of this many samples (0 = all); sample-wise double descent
    subset: str = "random"  # "random" or "balanced" (class-balanced) subset of n_train
    val_size: int = 0  # held out from the training data as a validation split
    noise: float = 0.15  # label-noise rate p in [0, 1)
    noise_kind: str = "uniform"  # "uniform" (may keep its label) or "flip" (always wrong)
    augment: bool = False  # random crop (padding 4) + horizontal flip, batched on device (images)
    seed: int = 0  # seed of the data generation, the subset and the label-noise draw
    path: str = ""  # data.name = "npz": the .npz file (x_train, y_train, x_test, y_test[, x_val, y_val])
    options: Options = field(default_factory=Options)  # passed to a "package.module:function" data source


@dataclass(frozen=True)
class ModelConfig:
    name: str = "mlp"  # family: see ddscope.models.MODELS, or "package.module:function" (your factory)
    width: int = 64  # the width parameter k (hidden units, base channels, embedding dim)
    depth: int = 2  # hidden layers (MLP) / transformer blocks (ViT)
    batchnorm: bool = False  # BatchNorm in conv families that take it
    options: Options = field(default_factory=Options)  # [model.options]: free settings for your factory


@dataclass(frozen=True)
class OptimConfig:
    name: str = "sgd"  # "sgd" or "adam"
    lr: float = 0.01
    momentum: float = 0.9  # SGD only
    weight_decay: float = 0.0
    batch_size: int = 100
    epochs: int = 500
    warmup_epochs: int = 0  # linear learning-rate warm-up over this many epochs
    amp: bool = False  # mixed precision for training on CUDA (metrics stay float32)
    # The training loss, and the loss of every metric that takes one: "cross_entropy" or "mse"
    # (squared error to one-hot targets); label_smoothing ε in [0, 1) smooths the cross-entropy.
    loss: str = "cross_entropy"
    label_smoothing: float = 0.0


@dataclass(frozen=True)
class MetricsConfig:
    """The ``[metrics]`` section. The groups' default schedules and the defaults of the options
    it shares with :func:`ddscope.metrics.measure` are the catalogue's (``ddscope.catalogue``)."""

    groups: tuple[str, ...] = scheduled("every")  # at every scheduled epoch
    sparse_groups: tuple[str, ...] = scheduled("sparse")  # costly: sparse schedule
    splits: tuple[str, ...] = ("train", "train_clean", "train_noisy", "test")
    epochs: tuple[int, ...] = ()  # explicit metric epochs; empty = log-spaced schedule
    num_log_epochs: int = 12  # points of the default log-spaced schedule (plus 0 and the last)
    num_sparse_epochs: int = 4  # log-spaced points of the sparse schedule (plus 0 and the last)
    # Losses/errors on every split at 0, this many log-spaced epochs, the last and every metric
    # epoch; 0 = after every epoch. The training error is still checked after every epoch until
    # the trial interpolates, so interp_epoch stays exact.
    num_eval_epochs: int = 0
    output: str = OPTIONS["output"]  # Jacobian of "logits", "softmax", "log_softmax" or "loss"
    jac_samples: int = OPTIONS["jac_samples"] or 0  # points per split for Jacobian norms (0 = all)
    path_pairs: int = OPTIONS["path_pairs"]
    path_k: int = OPTIONS["path_k"]
    hess_samples: int = OPTIONS["hess_samples"] or 0  # training points of the Hessian groups (0 = all)
    hess_matvecs: int = OPTIONS["hess_matvecs"]
    lanczos_iters: int = OPTIONS["lanczos_iters"]
    # tr(H): "auto" = exact tr(GGN) on networks piecewise linear in each parameter, Hutch++ else;
    # "hutchpp" forces the estimator (e.g. to compare), "ggn" refuses other networks.
    hess_method: str = OPTIONS["hess_method"]
    # group "volume" (docs/design.md §6): neighbourhood samplers, balls/paths per point, training
    # points per split (0 = all), the output map whose input Jacobian is taken
    vol_samplers: tuple[str, ...] = OPTIONS["vol_samplers"]
    vol_k: int = OPTIONS["vol_k"]
    vol_samples: int = OPTIONS["vol_samples"] or 0
    vol_output: str = OPTIONS["vol_output"]
    # [metrics.lip_constants]: declared Lipschitz constants for operations AutoLip has none for,
    # keyed by graph node, module path, module type name ("Hardswish") or function name ("cumsum")
    lip_constants: Options = field(default_factory=Options)


@dataclass(frozen=True)
class CheckpointConfig:
    """When a trial writes checkpoints (``<run_dir>/trials/<trial_id>/``). Not part of the trial
    id: checkpoints never change the numbers, so changing them keeps a sweep resumable."""

    epochs: tuple[int, ...] = ()  # epochs whose full state is kept as epoch_NNNNN.pt (init/final always)
    every_epochs: int = 0  # a rolling resume point every this many epochs (0 = off)
    every_minutes: float = 10.0  # ... and at least this often in wall time (0 = off)


@dataclass(frozen=True)
class LogConfig:
    """Where a sweep streams its trials besides the store (``[log]``), each as it finishes; not
    part of the trial id. Optional extras: ``ddscope[tensorboard]``, ``ddscope[mlflow]``."""

    tensorboard: str = ""  # a folder: one TensorBoard run per trial
    mlflow: str = ""  # an MLflow tracking URI or a local folder (file store): one MLflow run per trial
    mlflow_experiment: str = ""  # the MLflow experiment (default: the sweep's name)


# Defaults of the sweep driver, for run_sweep and the CLI (here: the CLI starts without torch).
MAX_GROUP = 16  # trials per vectorised group (memory grows with it)
PROGRESS_INTERVAL_S = 30.0  # a plain progress line this often when stderr is not a terminal

# Keys added after trial ids were first published -> their default (see TrialConfig.trial_id).
ADDED_KEYS = {("metrics", "num_eval_epochs"): 0, ("data", "path"): "", ("data", "options"): {},
              ("model", "options"): {}, ("metrics", "hess_method"): "auto", ("metrics", "lip_constants"): {},
              ("metrics", "vol_samplers"): list(OPTIONS["vol_samplers"]), ("metrics", "vol_k"): OPTIONS["vol_k"],
              ("metrics", "vol_samples"): OPTIONS["vol_samples"], ("metrics", "vol_output"): OPTIONS["vol_output"],
              ("optim", "loss"): "cross_entropy", ("optim", "label_smoothing"): 0.0}


@dataclass(frozen=True)
class TrialConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    log: LogConfig = field(default_factory=LogConfig)
    seed: int = 0  # seed of the initialisation and the batch order
    device: str = "cpu"  # "cpu", "cuda" or "auto"

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(dataclasses.asdict(self))

    @property
    def trial_id(self) -> str:
        """Stable id: the first 12 hex digits of the SHA-1 of the canonical JSON of the config.

        The catalogue's ``ID_FREE`` sections (``device``, ``checkpoint``, ``log``) are excluded:
        they change where and how often a trial is saved, never its numbers, so the same trial on
        another device is the same trial. Keys added after a release (``ADDED_KEYS``) are left out
        while they hold their default, so the ids of existing stores stay valid and their sweeps
        stay resumable.
        """
        d = {k: v for k, v in self.to_dict().items() if not is_id_free(k)}
        for (section, key), default in ADDED_KEYS.items():
            if d[section][key] == default:
                del d[section][key]
        blob = json.dumps(d, sort_keys=True, separators=(",", ":"))
        return hashlib.sha1(blob.encode()).hexdigest()[:12]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrialConfig":
        return _build(cls, d, "")


@dataclass(frozen=True)
class SweepConfig:
    name: str
    base: TrialConfig
    grid: dict[str, tuple]  # dotted key -> values, in the order given
    description: str = ""

    def trials(self) -> list[TrialConfig]:
        """Cartesian product of the grid axes, first axis slowest."""
        keys = list(self.grid)
        out = []
        for combo in itertools.product(*(self.grid[k] for k in keys)):
            out.append(set_key(self.base, dict(zip(keys, combo))))
        return out

    def to_dict(self) -> dict[str, Any]:
        d = self.base.to_dict()
        for key, values in self.grid.items():
            _put(d, key, list(values))
        d["sweep"] = {"name": self.name, "description": self.description}
        return d


# ----------------------------------------------------------------------------- validation


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp, key: str):
    """Check ``value`` against the annotated type ``tp``; ints are accepted for floats."""
    origin = typing.get_origin(tp)
    if origin is tuple:
        (inner, _) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            value = [value]
        return tuple(_coerce(v, inner, key) for v in value)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):  # TOML has nan and inf; no key of ours takes them
                raise UserError(f"config key '{key}': expected a finite number, got {value!r}")
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is Options:
        if isinstance(value, dict):
            check_plain(value, key)
            return Options(json.loads(json.dumps(value)))  # plain TOML values, copied
    hint = ""
    if isinstance(value, str) and "," in value and tp in (int, float, bool):
        hint = f" (a grid of values is a TOML list: {key}=[{value}])"
    raise UserError(f"config key '{key}': expected {_type_name(tp)}, got {value!r}{hint}")


def did_you_mean(word: str, choices) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices``, or a short list of them."""
    close = difflib.get_close_matches(word, list(choices), n=3, cutoff=0.6)
    if close:
        return " (did you mean " + " or ".join(f"'{c}'" for c in close) + "?)"
    return ""


def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _build(cls, d: dict[str, Any], prefix: str):
    if not isinstance(d, dict):
        raise UserError(f"config key '{prefix.rstrip('.')}': expected a table, got {d!r}")
    hints = _hints(cls)
    names = [f.name for f in fields(cls)]
    unknown = [k for k in d if k not in names]
    if unknown:
        key = prefix + unknown[0]
        hint = did_you_mean(unknown[0], names)
        raise UserError(f"unknown config key '{key}'{hint}; allowed in this section: {', '.join(names)}")
    kwargs = {}
    for name in names:
        if name not in d:
            continue
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, d[name], f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(d[name], tp, prefix + name)
    return cls(**kwargs)


def _to_plain(x):
    if isinstance(x, dict):
        return {k: _to_plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_to_plain(v) for v in x]
    return x


def _put(d: dict, dotted: str, value) -> None:
    parts = dotted.split(".")
    for p in parts[:-1]:
        d = d.setdefault(p, {})
    d[parts[-1]] = value


def _field_type(dotted: str):
    """Annotated type of a dotted key of TrialConfig, or UserError naming the allowed keys."""
    cls = TrialConfig
    parts = dotted.split(".")
    for i, p in enumerate(parts):
        hints = _hints(cls)
        if p not in hints:
            sections = sorted({k.split(".")[0] for k in all_keys() if "." in k})
            raise UserError(f"unknown config key '{dotted}'{did_you_mean(dotted, all_keys())}; the sections are "
                            f"{', '.join(sections)} (`ddscope keys` lists every key)")
        tp = hints[p]
        if i < len(parts) - 1:
            if tp is Options:  # model.options.<name>: any TOML value, the factory's to read
                return object
            if not dataclasses.is_dataclass(tp):
                raise UserError(f"unknown config key '{dotted}'")
            cls = tp
    if dataclasses.is_dataclass(tp):
        raise UserError(f"config key '{dotted}' is a section; name one of its keys")
    return tp


def all_keys(cls=TrialConfig, prefix="") -> list[str]:
    """Every dotted key of a trial config, in declaration order (``data.name``, ...)."""
    out = []
    for name, tp in _hints(cls).items():
        if dataclasses.is_dataclass(tp):
            out += all_keys(tp, f"{prefix}{name}.")
        else:
            out.append(prefix + name)
    return out


def set_key(cfg: TrialConfig, updates: dict[str, Any]) -> TrialConfig:
    """Return ``cfg`` with dotted keys replaced (validated)."""
    d = cfg.to_dict()
    for key, value in updates.items():
        _field_type(key)
        _put(d, key, value)
    out = TrialConfig.from_dict(d)
    _check_ranges(out)
    return out


def _is_scalar_type(tp) -> bool:
    return typing.get_origin(tp) is not tuple and tp is not object


def sweep_from_dict(d: dict[str, Any], default_name: str = "sweep") -> SweepConfig:
    """Split a TOML document into the base trial and the grid (lists on scalar keys)."""
    check_plain(d, "")
    d = json.loads(json.dumps(d))  # deep copy of plain data
    meta = d.pop("sweep", {}) or {}
    if not isinstance(meta, dict):
        raise UserError("config key 'sweep': expected a table with name/description")
    unknown = [k for k in meta if k not in ("name", "description")]
    if unknown:
        raise UserError(f"unknown config key 'sweep.{unknown[0]}'; allowed: name, description")
    grid: dict[str, tuple] = {}

    def walk(node: dict, prefix: str):
        for key in list(node):
            dotted = prefix + key
            if isinstance(node[key], dict) and "." in dotted and _field_type(dotted) is Options:
                continue  # a free table for a factory: its lists are values, not grid axes
            tp = _field_type(dotted) if not isinstance(node[key], dict) else None
            if isinstance(node[key], dict):
                _field_type_section(dotted)
                walk(node[key], dotted + ".")
            elif isinstance(node[key], list) and _is_scalar_type(tp):
                values = node.pop(key)
                if not values:
                    raise UserError(f"config key '{dotted}': an empty list gives no trials")
                grid[dotted] = tuple(_coerce(v, tp, dotted) for v in values)

    walk(d, "")
    for key in grid:  # these keys are not part of the trial id: an axis would repeat one trial
        if is_id_free(key):
            raise UserError(f"config key '{key}' cannot be a grid axis: it does not change the trial; give one value")
    base = TrialConfig.from_dict(d)
    name = meta.get("name", default_name)
    if not is_component(name):
        raise UserError(f"config key 'sweep.name': {name!r} is not a plain name (letters, digits, '.', '_', '-'; "
                        "no '/', no '..'): it names the run folder runs/<name>; use --out for another place")
    sweep = SweepConfig(
        name=str(name),
        base=base,
        grid=grid,
        description=str(meta.get("description", "")),
    )
    for t in sweep.trials():  # validates every grid point's ranges
        _check_ranges(t)
    if not grid:
        _check_ranges(base)
    return sweep


def _field_type_section(dotted: str) -> None:
    hints = _hints(TrialConfig)
    if dotted not in hints or not dataclasses.is_dataclass(hints[dotted]):
        sections = [k for k, t in hints.items() if dataclasses.is_dataclass(t)]
        raise UserError(f"unknown config section '[{dotted}]'; allowed: {', '.join(sections)}, sweep")


def parse_override(text: str) -> tuple[str, Any]:
    """``key=value`` with a TOML value (``3``, ``0.1``, ``[2, 4]``, ``true``, ``"adam"``);
    a bare word that is not TOML is taken as a string."""
    if "=" not in text:
        raise UserError(f"override '{text}' must look like key=value, e.g. model.width=64")
    key, raw = text.split("=", 1)
    key, raw = key.strip(), raw.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key, value


def check_plain(value: Any, key: str) -> None:
    """Refuse, naming ``key``, a value no config key takes: a TOML date or time (TOML parses
    ``1979-05-27`` and ``07:32:00`` as such, not as strings), a non-finite number, or anything
    that is not a string, number, boolean, list or table of those."""
    if isinstance(value, dict):
        for k, v in value.items():
            check_plain(v, f"{key}.{k}" if key else str(k))
    elif isinstance(value, (list, tuple)):
        for v in value:
            check_plain(v, key)
    elif isinstance(value, (_dt.date, _dt.time)):  # datetime is a date
        raise UserError(f"config key '{key}': {value.isoformat()} is a TOML date/time, which no config key takes "
                        f"(quote it, \"{value.isoformat()}\", for a string)")
    elif isinstance(value, float) and not math.isfinite(value):
        raise UserError(f"config key '{key}': expected a finite number, got {value!r}")
    elif not isinstance(value, (str, int, float, bool)):
        raise UserError(f"config key '{key}': expected a string, number, boolean, list or table, got "
                        f"{type(value).__name__}")


def apply_overrides(d: dict[str, Any], overrides: list[str] | dict[str, Any]) -> dict[str, Any]:
    """``d`` (a sweep document) with ``key=value`` strings or a ``{dotted key: value}`` mapping
    applied (a list on a scalar key becomes a grid axis); keys are checked, values later."""
    check_plain(d, "")
    d = json.loads(json.dumps(d))
    items = overrides.items() if isinstance(overrides, dict) else (parse_override(t) for t in overrides)
    for key, value in items:
        check_plain(value, key)
        if key.startswith("sweep."):
            d.setdefault("sweep", {})[key.split(".", 1)[1]] = value
            continue
        _field_type(key)
        _put(d, key, value)
    return d


def get_key(cfg: TrialConfig, dotted: str):
    """The value of a dotted key, e.g. ``get_key(cfg, "model.width")``."""
    node: Any = cfg
    for p in dotted.split("."):
        node = getattr(node, p)
    return node


def flatten(d: dict, prefix: str = "") -> dict:
    """A config dict (``TrialConfig.to_dict()``) with dotted keys: ``{"model.width": 8, ...}``."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def varying_keys(flats: list[dict]) -> list[str]:
    """The flattened config keys whose values differ between trials, in config order; keys
    outside the trial id (the catalogue's ``ID_FREE``: device, checkpoint, log) never count."""
    return [k for k in (flats[0] if flats else {}) if not is_id_free(k) and len({repr(f.get(k)) for f in flats}) > 1]


def axes_of(flats: list[dict]) -> list[str]:
    """The axes of a table of trials: the catalogue's ``BASE_AXES`` and every varying key."""
    return list(BASE_AXES) + [k for k in varying_keys(flats) if k not in BASE_AXES]


def load_sweep(path_or_preset: str, overrides: list[str] | None = None) -> SweepConfig:
    doc, stem = read_toml(path_or_preset)
    doc = apply_overrides(doc, overrides or [])
    return sweep_from_dict(doc, default_name=stem)


__all__ = [
    "DATA_NAMES",
    "DEVICES",
    "JAC_OUTPUTS",
    "MAX_GROUP",
    "METRIC_GROUPS",
    "PROGRESS_INTERVAL_S",
    "MNIST1D_MIN_SAMPLES",
    "MODEL_NAMES",
    "NOISE_KINDS",
    "OPTIMIZERS",
    "SPLITS",
    "SUBSETS",
    "DataConfig",
    "ModelConfig",
    "OptimConfig",
    "MetricsConfig",
    "CheckpointConfig",
    "LogConfig",
    "TrialConfig",
    "SweepConfig",
    "load_sweep",
    "sweep_from_dict",
    "set_key",
    "get_key",
    "all_keys",
    "axes_of",
    "flatten",
    "varying_keys",
    "apply_overrides",
    "parse_override",
    "list_presets",
    "read_toml",
    "dumps_toml",
    "PRESET_DIR",
    "replace",
]
