"""Shim: the training config moved to :mod:`usdcm.config` (below data and models)."""

# shim: removed at integration
from usdcm.config import (  # noqa: F401
    AugmentConfig,
    ConfigError,
    DataConfig,
    ModelConfig,
    NormalizationConfig,
    OptimConfig,
    RuntimeConfig,
    SplitConfig,
    TrainConfig,
    config_from_dict,
    dump_config,
    load_config,
)
from usdcm.models.registry import MODEL_NAMES  # noqa: F401

__all__ = [
    "AugmentConfig",
    "ConfigError",
    "DataConfig",
    "MODEL_NAMES",
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
