"""The training configuration: typed sections, loaded from YAML and validated at load time.

Sits below ``usdcm.data`` and ``usdcm.training`` (which read it) and above ``usdcm.models``
(whose registry it checks ``model.name`` against); it never imports data, training or the CLI.

Owns every key ``usdcm train`` understands, its type and its default; ``configs/default.yaml``
documents them. Every value is checked here, when the config is loaded, and nowhere else: an
unknown key, a wrong type or a value out of range is a ``ConfigError`` naming the dotted key,
the value and what is allowed, before any data is read.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml

from usdcm.errors import ConfigError
from usdcm.models.registry import IMAGENET_MODELS, MIN_SIDE, MODEL_NAMES

__all__ = [
    "AugmentConfig",
    "ConfigError",
    "DataConfig",
    "ModelConfig",
    "NormalizationConfig",
    "OptimConfig",
    "RuntimeConfig",
    "SplitConfig",
    "TrainConfig",
    "config_from_dict",
    "dump_config",
    "load_config",
]


def _check(key: str, value: object, ok: bool, expected: str) -> None:
    """Raise a :class:`ConfigError` naming ``key``, its ``value`` and the ``expected`` range."""
    if not ok:
        message = f"Config key {key} is {value!r}; expected {expected}."
        raise ConfigError(message)


def _check_finite(section: Any, prefix: str) -> None:
    """Refuse NaN and infinity in every float field of ``section`` (YAML's .nan and .inf)."""
    for item in dataclasses.fields(section):
        value = getattr(section, item.name)
        if isinstance(value, float) and not math.isfinite(value):
            _check(prefix + item.name, value, False, "a finite number")


@dataclass
class SplitConfig:
    """How the manifest is split when it has no ``split`` column."""

    val_fraction: float = 0.2
    test_fraction: float = 0.2
    seed: int = 0
    folds: int = 1
    """Cross-validation folds over the non-test data (1: one train/val split, no folds)."""

    def __post_init__(self) -> None:
        _check_finite(self, "split.")
        val, test = self.val_fraction, self.test_fraction
        _check("split.val_fraction", val, 0 <= val < 1, "in [0, 1)")
        _check("split.test_fraction", test, 0 <= test < 1, "in [0, 1)")
        _check("split.test_fraction", test, val + test < 1, "val_fraction + test_fraction < 1")
        _check("split.folds", self.folds, 1 <= self.folds <= 20, "in [1, 20]")


@dataclass
class NormalizationConfig:
    """Intensity normalization; its statistics come from the training split and are stored."""

    mode: Literal["percentile", "zscore"] = "percentile"
    lower_percentile: float = 0.5
    upper_percentile: float = 99.5
    sample_images: int = 64

    def __post_init__(self) -> None:
        _check_finite(self, "data.normalization.")
        lower, upper = self.lower_percentile, self.upper_percentile
        if not 0 <= lower < upper <= 100:
            message = (
                "Config keys data.normalization.lower_percentile/upper_percentile are "
                f"{lower}/{upper}; expected 0 <= lower < upper <= 100."
            )
            raise ConfigError(message)
        _check(
            "data.normalization.sample_images", self.sample_images, self.sample_images >= 1, ">= 1"
        )


@dataclass
class DataConfig:
    """Deterministic preprocessing, caching and loading."""

    image_size: list[int] = field(default_factory=lambda: [128, 128])
    clip_frames: int = 1
    eval_frames: int = 8
    cache_rate: float = 1.0
    persistent_cache_dir: str = ""
    num_workers: int = 0
    loader: Literal["thread", "torch"] = "thread"
    cache_on_device: bool = False
    tta_flip: bool = False
    """Test-time augmentation: average each prediction with that of the left-right flip."""
    normalization: NormalizationConfig = field(default_factory=NormalizationConfig)

    def __post_init__(self) -> None:
        _check_finite(self, "data.")
        size = self.image_size
        _check("data.image_size", size, len(size) == 2, "[H, W]")
        _check("data.image_size", size, all(s >= 16 for s in size), "sides of at least 16")
        _check("data.clip_frames", self.clip_frames, self.clip_frames >= 1, ">= 1")
        _check("data.eval_frames", self.eval_frames, self.eval_frames >= 1, ">= 1")
        _check("data.cache_rate", self.cache_rate, 0 < self.cache_rate <= 1, "in (0, 1]")
        _check("data.num_workers", self.num_workers, self.num_workers >= 0, ">= 0")


@dataclass
class AugmentConfig:
    """Random transforms, applied per access with seeded parameters."""

    rotate_degrees: float = 10.0
    scale: float = 0.1
    flip_lr_prob: float = 0.5
    contrast: float = 0.2
    gamma: float = 0.2
    speckle_std: float = 0.1
    prob: float = 0.5
    mixup_alpha: float = 0.0
    """Beta(alpha, alpha) mixup of batch pairs; 0 turns it off."""
    cutmix_alpha: float = 0.0
    """Beta(alpha, alpha) cutmix of batch pairs; 0 turns it off."""

    def __post_init__(self) -> None:
        _check_finite(self, "augment.")
        checks: list[tuple[str, float, bool, str]] = [
            ("rotate_degrees", self.rotate_degrees, self.rotate_degrees >= 0, ">= 0"),
            ("scale", self.scale, 0 <= self.scale < 1, "in [0, 1)"),
            ("flip_lr_prob", self.flip_lr_prob, 0 <= self.flip_lr_prob <= 1, "in [0, 1]"),
            ("contrast", self.contrast, 0 <= self.contrast < 1, "in [0, 1)"),
            ("gamma", self.gamma, 0 <= self.gamma < 1, "in [0, 1)"),
            ("speckle_std", self.speckle_std, self.speckle_std >= 0, ">= 0"),
            ("prob", self.prob, 0 <= self.prob <= 1, "in [0, 1]"),
            ("mixup_alpha", self.mixup_alpha, self.mixup_alpha >= 0, ">= 0"),
            ("cutmix_alpha", self.cutmix_alpha, self.cutmix_alpha >= 0, ">= 0"),
        ]
        for key, value, ok, expected in checks:
            _check(f"augment.{key}", value, ok, expected)


@dataclass
class ModelConfig:
    """Which network, and its size."""

    name: str = "seed_cnn"
    """A name of :data:`usdcm.models.registry.MODEL_NAMES`."""
    dropout: float = 0.0
    weights: str = "none"
    """``imagenet`` (weights shipped in a registry package), ``none`` (random) or a path."""

    def __post_init__(self) -> None:
        _check_finite(self, "model.")
        names = ", ".join(repr(name) for name in MODEL_NAMES)
        _check("model.name", self.name, self.name in MODEL_NAMES, f"one of {names}")
        _check("model.dropout", self.dropout, 0 <= self.dropout < 1, "in [0, 1)")
        _check(
            "model.weights", self.weights, bool(self.weights.strip()), "imagenet, none or a path"
        )
        has = self.weights != "imagenet" or self.name in IMAGENET_MODELS
        why = f"model.name {self.name!r} has no ImageNet weights; {', '.join(IMAGENET_MODELS)} has"
        _check("model.weights", self.weights, has, f"none or a path ({why})")


@dataclass
class OptimConfig:
    """AdamW, the schedule and the stopping rule."""

    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    schedule: Literal["cosine", "onecycle", "none"] = "cosine"
    patience: int = 5
    class_weighting: Literal["loss", "sampler", "none"] = "loss"
    warmup_epochs: int = 0
    """Epochs of linear learning-rate warmup before the schedule (cosine: warmup then cosine)."""
    label_smoothing: float = 0.0
    ema_decay: float = 0.0
    """Decay of an exponential moving average of the weights, validated and saved; 0: off."""
    grad_clip: float = 0.0
    """Clip the gradient norm to this value; 0: off."""
    time_limit_s: float = 0.0
    """Stop before an epoch that would end more than this many seconds after training
    began (the best checkpoint is kept); 0: no limit. The plan sets it to the time budget."""

    def __post_init__(self) -> None:
        _check_finite(self, "optim.")
        _check("optim.epochs", self.epochs, self.epochs >= 1, ">= 1")
        _check("optim.batch_size", self.batch_size, self.batch_size >= 1, ">= 1")
        _check("optim.lr", self.lr, self.lr > 0, "> 0")
        _check("optim.weight_decay", self.weight_decay, self.weight_decay >= 0, ">= 0")
        _check("optim.patience", self.patience, self.patience >= 1, ">= 1")
        warmup = self.warmup_epochs
        _check("optim.warmup_epochs", warmup, 0 <= warmup < self.epochs, "in [0, epochs)")
        smoothing = self.label_smoothing
        _check("optim.label_smoothing", smoothing, 0 <= smoothing < 1, "in [0, 1)")
        _check("optim.ema_decay", self.ema_decay, 0 <= self.ema_decay < 1, "in [0, 1)")
        _check("optim.grad_clip", self.grad_clip, self.grad_clip >= 0, ">= 0")
        _check("optim.time_limit_s", self.time_limit_s, self.time_limit_s >= 0, ">= 0")


@dataclass
class RuntimeConfig:
    """Where and how it runs: device, precision, reproducibility."""

    device: Literal["auto", "cuda", "mps", "cpu"] = "auto"
    amp: bool = True
    channels_last: bool = True
    compile: bool = False
    seed: int = 0
    deterministic: bool = True


@dataclass
class TrainConfig:
    """Everything ``usdcm train`` needs besides the manifest.

    Every section checks its values' ranges when it is built (``__post_init__``), and
    :func:`config_from_dict` checks their types first, so a config that exists is valid:
    nothing later in a run (splits, statistics, transforms, the model) finds a bad value.
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    intended_use: str = ""
    reference_standard: str = ""
    """How the labels were established and by whom (the report's reference standard);
    ``usdcm evaluate --reference-standard`` overrides it."""

    def __post_init__(self) -> None:
        name, sides = self.model.name, self.data.image_size
        least = MIN_SIDE[name]
        expected = f"sides of at least {least} for model.name {name!r}"
        _check("data.image_size", sides, min(sides) >= least, expected)

    def validate(self) -> TrainConfig:
        """Check every value again (e.g. after a section was changed in place); return ``self``.

        Raises
        ------
        ConfigError
            The first value out of its range, naming its dotted key.
        """
        sections = (self.model, self.data, self.data.normalization, self.augment)
        for section in (*sections, self.optim, self.split, self.runtime):
            post_init = getattr(section, "__post_init__", None)
            if post_init is not None:
                post_init()
        self.__post_init__()
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict, as written to ``RUN/config.yaml`` and the checkpoint."""
        return dataclasses.asdict(self)


def _type_name(annotation: Any) -> str:
    if get_origin(annotation) is Literal:
        return " | ".join(repr(a) for a in get_args(annotation))
    return getattr(annotation, "__name__", str(annotation))


def _coerce(key: str, annotation: Any, value: Any) -> Any:
    """Check ``value`` against ``annotation``; ints are accepted where floats are expected."""
    origin = get_origin(annotation)
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            message = f"Config key {key} must be a mapping of keys, found {value!r}."
            raise ConfigError(message)
        return _build(annotation, value, prefix=f"{key}.")
    if origin is Literal:
        if value not in get_args(annotation):
            message = f"Config key {key} is {value!r}; expected one of {_type_name(annotation)}."
            raise ConfigError(message)
        return value
    if origin is list:
        (item_type,) = get_args(annotation)
        if not isinstance(value, list):
            message = f"Config key {key} must be a list, found {value!r}."
            raise ConfigError(message)
        return [_coerce(f"{key}[{i}]", item_type, item) for i, item in enumerate(value)]
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation in (int, float, str, bool):
        if type(value) is not annotation:
            message = (
                f"Config key {key} must be {annotation.__name__}, "
                f"found {value!r} ({type(value).__name__})."
            )
            raise ConfigError(message)
        return value
    if origin in (types.UnionType, typing.Union):  # not used today; refuse loudly
        message = f"Config key {key} has an unsupported union type."
        raise ConfigError(message)
    return value


def _build(cls: Any, values: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        message = (
            f"Unknown config key {prefix}{unknown[0]}; known keys here: "
            f"{', '.join(prefix + k for k in sorted(known))}."
        )
        raise ConfigError(message)
    kwargs = {name: _coerce(prefix + name, hints[name], value) for name, value in values.items()}
    return cls(**kwargs)


def config_from_dict(values: dict[str, Any]) -> TrainConfig:
    """Build and validate a config from a nested dict (defaults fill what is missing).

    >>> config_from_dict({"optim": {"epochs": 3}}).optim.epochs
    3
    >>> config_from_dict({"optim": {"epoch": 3}})
    Traceback (most recent call last):
    usdcm.errors.ConfigError: Unknown config key optim.epoch; ...
    """
    config: TrainConfig = _build(TrainConfig, values)
    return config


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_config(path: Path | None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Load a YAML config (a file may ``extends: other.yaml``), apply dotted ``overrides``.

    ``overrides`` maps dotted keys to values, e.g. ``{"optim.epochs": 3}``; they win over
    the file, as the CLI options do.
    """
    values: dict[str, Any] = {}
    if path is not None:
        values = _read_yaml(path)
    for dotted, value in (overrides or {}).items():
        node = values
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                message = f"Config key {dotted} cannot be set: {part} is not a section."
                raise ConfigError(message)
        node[leaf] = value
    return config_from_dict(values)


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    if path.resolve() in seen:
        message = f"Config {path} extends itself in a loop."
        raise ConfigError(message)
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError as err:
        message = f"No config file at {path}; see configs/ for the shipped ones."
        raise ConfigError(message) from err
    except (OSError, yaml.YAMLError) as err:
        message = f"The config {path} is not valid YAML ({type(err).__name__})."
        raise ConfigError(message) from err
    if not isinstance(loaded, dict):
        message = f"The config {path} must be a mapping of keys, found {type(loaded).__name__}."
        raise ConfigError(message)
    parent = loaded.pop("extends", None)
    if parent is None:
        return loaded
    base = _read_yaml(path.parent / str(parent), (*seen, path.resolve()))
    return _merge(base, loaded)


def dump_config(config: TrainConfig) -> str:
    """The resolved config as YAML, for ``RUN/config.yaml``."""
    return str(yaml.safe_dump(config.to_dict(), sort_keys=False))
