"""Tests for usdcm.models.factory: every network's output shape, formats, sizes and errors."""

from __future__ import annotations

import socket
import urllib.request
from typing import Any

import pytest
import torch
from torch import nn

from usdcm.errors import ModelError
from usdcm.models.factory import build_model
from usdcm.models.registry import MIN_SIDE, MODEL_NAMES
from usdcm.models.seed_cnn import SeedCNN, flattened_features


def _refuse_network(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("building a model tried to open a network connection")


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any attempt to reach the network fail the test."""
    monkeypatch.setattr(socket.socket, "connect", _refuse_network)
    monkeypatch.setattr(socket, "create_connection", _refuse_network)
    monkeypatch.setattr(socket, "getaddrinfo", _refuse_network)
    monkeypatch.setattr(urllib.request, "urlopen", _refuse_network)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", _refuse_network)
    monkeypatch.setattr(torch.hub, "download_url_to_file", _refuse_network)


def _n_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize(
    ("channels", "size"), [(1, [64, 64]), (3, [64, 64]), (1, [128, 128])], ids=str
)
def test_forward_gives_finite_logits_of_the_right_shape(
    name: str, channels: int, size: list[int], no_network: None
) -> None:
    torch.manual_seed(0)
    model = build_model(name, in_channels=channels, num_classes=3, image_size=size).eval()
    with torch.no_grad():
        logits = model(torch.rand(2, channels, *size))
    assert logits.shape == (2, 3)
    assert logits.dtype == torch.float32
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_channels_last_gives_the_same_logits(name: str, no_network: None) -> None:
    torch.manual_seed(0)
    model = build_model(name, in_channels=1, num_classes=2, image_size=[64, 64]).eval()
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        expected = model(x)
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        got = model(x.contiguous(memory_format=torch.channels_last))
    assert got.shape == (2, 2)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_training_mode_backward_reaches_every_parameter(name: str, no_network: None) -> None:
    torch.manual_seed(0)
    model = build_model(name, in_channels=1, num_classes=2, image_size=[64, 64], dropout=0.3)
    logits = model(torch.rand(2, 1, 64, 64))
    nn.functional.cross_entropy(logits, torch.tensor([0, 1])).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []


def test_seed_cnn_is_the_two_conv_tutorial_net_sized_from_the_input() -> None:
    model = build_model("seed_cnn", in_channels=3, num_classes=4, image_size=[128, 96])
    assert isinstance(model, SeedCNN)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [c.kernel_size for c in convs] == [(3, 3), (3, 3)]
    assert convs[0].in_channels == 3
    assert len(linears) == 2
    assert linears[0].in_features == 32 * (128 // 4) * (96 // 4)
    assert linears[1].out_features == 4


@pytest.mark.parametrize("size", [[64, 48], [48, 80], [37, 53]], ids=str)
def test_seed_cnn_takes_non_square_and_odd_sizes(size: list[int]) -> None:
    model: Any = build_model("seed_cnn", in_channels=1, num_classes=2, image_size=size).eval()
    with torch.no_grad():
        logits = model(torch.rand(2, 1, *size))
    assert logits.shape == (2, 2)
    assert model.classifier[1].in_features == flattened_features(size)


@pytest.mark.parametrize("name", ["densenet121", "resnet18", "efficientnet-b0"])
def test_monai_nets_take_a_non_square_size(name: str, no_network: None) -> None:
    model = build_model(name, in_channels=1, num_classes=2, image_size=[64, 96]).eval()
    with torch.no_grad():
        assert model(torch.rand(2, 1, 64, 96)).shape == (2, 2)


def test_seed_cnn_refuses_an_input_of_another_size() -> None:
    model = build_model("seed_cnn", in_channels=1, num_classes=2, image_size=[64, 64])
    with pytest.raises(ValueError, match=r"built for inputs of spatial size \[64, 64\]"):
        model(torch.rand(1, 1, 128, 128))


def test_parameter_counts_are_sane() -> None:
    counts = {
        name: _n_parameters(build_model(name, in_channels=1, num_classes=2, image_size=[128, 128]))
        for name in MODEL_NAMES
    }
    # The seed CNN's size is dominated by its first linear layer: 32 * 32 * 32 * 128 weights.
    assert counts["seed_cnn"] == (16 * 9 + 16) + (32 * 16 * 9 + 32) + (32768 * 128 + 128) + (
        128 * 2 + 2
    )
    assert counts["seed_cnn"] < counts["densenet121"] * 0.7
    small = build_model("seed_cnn", in_channels=1, num_classes=2, image_size=[64, 64])
    assert _n_parameters(small) * 5 < counts["densenet121"]
    assert 6e6 < counts["densenet121"] < 8e6
    assert 10e6 < counts["resnet18"] < counts["resnet34"] < 25e6
    assert 3e6 < counts["efficientnet-b0"] < 5e6


def test_resnet_has_the_standard_stride_2_stem() -> None:
    model: Any = build_model("resnet18", in_channels=1, num_classes=2, image_size=[64, 64])
    assert model.conv1.stride == (2, 2)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_dropout_sits_before_the_last_linear_layer(name: str) -> None:
    model = build_model(name, in_channels=1, num_classes=2, image_size=[64, 64], dropout=0.25)
    modules = list(model.modules())
    last_linear = max(i for i, m in enumerate(modules) if isinstance(m, nn.Linear))
    dropouts = [m for m in modules[:last_linear] if isinstance(m, nn.Dropout)]
    assert any(d.p == 0.25 for d in dropouts)


def test_zero_dropout_leaves_monai_state_dict_keys_as_monai_builds_them() -> None:
    from monai.networks.nets import resnet18

    model = build_model("resnet18", in_channels=1, num_classes=2, image_size=[64, 64])
    reference = resnet18(spatial_dims=2, n_input_channels=1, num_classes=2, conv1_t_stride=2)
    assert list(model.state_dict()) == list(reference.state_dict())


def test_unknown_name_names_the_value_and_the_choices() -> None:
    with pytest.raises(ModelError, match="'vgg16'") as info:
        build_model("vgg16", in_channels=1, num_classes=2, image_size=[64, 64])
    for name in MODEL_NAMES:
        assert name in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"image_size": [64]}, "image_size is \\[64\\]"),
        ({"image_size": [64, 64, 64]}, "two sides"),
        ({"image_size": [64.5, 64]}, "two integers"),
        ({"image_size": [8, 64]}, "at least 16"),
        ({"in_channels": 0}, "in_channels is 0"),
        ({"num_classes": 1}, "num_classes is 1"),
        ({"dropout": 1.0}, "dropout is 1.0"),
    ],
    ids=str,
)
def test_bad_arguments_are_model_errors(kwargs: dict[str, Any], pattern: str) -> None:
    arguments: dict[str, Any] = {"in_channels": 1, "num_classes": 2, "image_size": [64, 64]}
    arguments.update(kwargs)
    with pytest.raises(ModelError, match=pattern):
        build_model("seed_cnn", **arguments)


@pytest.mark.parametrize("name", ["densenet121", "efficientnet-b0"])
def test_nets_that_downsample_by_32_refuse_small_images(name: str) -> None:
    assert MIN_SIDE[name] == 32
    with pytest.raises(ModelError, match=f"{name} needs two sides of at least 32"):
        build_model(name, in_channels=1, num_classes=2, image_size=[16, 64])
    build_model(name, in_channels=1, num_classes=2, image_size=[32, 32])


def test_every_name_builds_a_distinct_architecture() -> None:
    kinds = {
        name: type(build_model(name, in_channels=1, num_classes=2, image_size=[64, 64])).__name__
        for name in MODEL_NAMES
    }
    assert kinds["seed_cnn"] == "SeedCNN"
    assert kinds["densenet121"] == "DenseNet121"
    assert kinds["resnet18"] == kinds["resnet34"] == "ResNet"
    assert kinds["efficientnet-b0"] == "EfficientNetBN"
