from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from usdcm.config import (
    ConfigError,
    TrainConfig,
    dump_config,
    load_config,
)
from usdcm.models.registry import MODEL_NAMES

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_default_yaml_documents_exactly_the_defaults() -> None:
    documented = yaml.safe_load((CONFIGS / "default.yaml").read_text())
    assert documented == TrainConfig().to_dict()


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path: Path) -> None:
    config = load_config(path)
    assert config.model.name in MODEL_NAMES


def test_one_file_per_model() -> None:
    for name in MODEL_NAMES:
        assert load_config(CONFIGS / f"{name}.yaml").model.name == name


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("optim:\n  epoch: 3\n", "Unknown config key optim.epoch"),
        ("optimizer: {}\n", "Unknown config key optimizer"),
        ("optim:\n  epochs: three\n", "optim.epochs must be int, found 'three'"),
        ("optim:\n  epochs: 2.5\n", "optim.epochs must be int"),
        ("runtime:\n  amp: 1\n", "runtime.amp must be bool"),
        ("model:\n  name: vgg16\n", "model.name is 'vgg16'; expected one of"),
        ("data:\n  image_size: [64]\n", "data.image_size"),
        ("data:\n  normalization: 3\n", "data.normalization must be a mapping"),
        ("split:\n  val_fraction: 0.6\n  test_fraction: 0.5\n", "val_fraction + test_fraction"),
        ("- a\n- b\n", "must be a mapping"),
        ("optim: [\n", "not valid YAML"),
    ],
)
def test_bad_configs_name_the_key(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert fragment in str(info.value)


def test_overrides_win_and_floats_accept_ints(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    base = tmp_path / "base.yaml"
    base.write_text("data:\n  image_size: [64, 64]\noptim:\n  lr: 0.5\n  epochs: 7\n")
    path.write_text(f"extends: {base}\noptim:\n  lr: 1\n")
    config = load_config(path, {"optim.epochs": 2, "runtime.seed": 5})
    assert (config.optim.epochs, config.runtime.seed, config.optim.lr) == (2, 5, 1.0)
    assert config.data.image_size == [64, 64]  # from the extended file
    assert load_config(None, {"optim.epochs": 2}).optim.epochs == 2
    again = tmp_path / "again.yaml"
    again.write_text(dump_config(config))
    assert load_config(again) == config


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="No config file"):
        load_config(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("augment:\n  rotate_degrees: -5\n", "augment.rotate_degrees is -5.0; expected >= 0."),
        ("augment:\n  scale: 1.0\n", "augment.scale is 1.0; expected in [0, 1)."),
        ("augment:\n  flip_lr_prob: 1.5\n", "augment.flip_lr_prob is 1.5; expected in [0, 1]."),
        ("augment:\n  contrast: -0.1\n", "augment.contrast is -0.1; expected in [0, 1)."),
        ("augment:\n  gamma: 1.5\n", "augment.gamma is 1.5; expected in [0, 1)."),
        ("augment:\n  speckle_std: -1\n", "augment.speckle_std is -1.0; expected >= 0."),
        ("augment:\n  rotate_degrees: .inf\n", "augment.rotate_degrees is inf; expected a finite"),
        (
            "data:\n  normalization:\n    sample_images: 0\n",
            "data.normalization.sample_images is 0; expected >= 1.",
        ),
        ("optim:\n  weight_decay: -0.1\n", "optim.weight_decay is -0.1; expected >= 0."),
        ("optim:\n  lr: .nan\n", "optim.lr is nan; expected a finite number."),
    ],
)
def test_every_value_is_checked_when_the_config_is_loaded(
    tmp_path: Path, text: str, message: str
) -> None:
    """Values that used to pass loading and fail only after splits and statistics."""
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"Config key {message}")
    assert "\n" not in str(info.value)


def test_a_section_out_of_range_cannot_be_built() -> None:
    from usdcm.config import AugmentConfig

    with pytest.raises(ConfigError, match=r"augment\.rotate_degrees is -5; expected >= 0"):
        AugmentConfig(rotate_degrees=-5)
    config = TrainConfig()
    config.optim.epochs = 0  # changed in place: validate() checks again
    with pytest.raises(ConfigError, match="optim.epochs is 0"):
        config.validate()


def test_the_config_and_the_layers_below_it_never_import_training_or_the_cli() -> None:
    import subprocess
    import sys

    code = (
        "import sys, usdcm.config, usdcm.data.transforms, usdcm.data.datasets, "
        "usdcm.data.normalization, usdcm.models.factory\n"
        "print(sorted(m for m in sys.modules if m.startswith(('usdcm.training', 'usdcm.cli'))))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "model:\n  name: densenet121\ndata:\n  image_size: [16, 64]\n",
            "data.image_size is [16, 64]; expected sides of at least 32 for model.name "
            "'densenet121'.",
        ),
        ("model:\n  name: vgg16\n", "model.name is 'vgg16'; expected one of 'seed_cnn', "),
    ],
)
def test_the_model_is_checked_against_the_registry_at_load(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"Config key {message}")
    load_config(
        path, {"data.image_size": [32, 64]} if "densenet" in text else {"model.name": "resnet18"}
    )


def test_the_reference_standard_is_a_top_level_key(tmp_path: Path) -> None:
    assert TrainConfig().reference_standard == ""
    path = tmp_path / "c.yaml"
    path.write_text('reference_standard: "biopsy histopathology, one pathologist"\n')
    assert load_config(path).reference_standard == "biopsy histopathology, one pathologist"
    path.write_text("reference_standard: 3\n")
    with pytest.raises(ConfigError, match="reference_standard must be str"):
        load_config(path)
