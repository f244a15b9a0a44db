"""Tests for usdcm.models.efficientnet_lite: TF "same" padding, key layout, input scaling."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from usdcm.models.efficientnet_lite import (
    INPUT_MEAN,
    INPUT_STD,
    STAGES,
    EfficientNetLite0,
    SameConv2d,
)
from usdcm.models.registry import model_spec
from usdcm.models.weights import imagenet_file, load_state_dict


@pytest.mark.parametrize(("side", "kernel"), [(8, 3), (7, 3), (9, 5), (10, 5), (1, 3)], ids=str)
def test_stride_2_pads_like_tensorflow_with_the_extra_pixel_bottom_right(
    side: int, kernel: int
) -> None:
    torch.manual_seed(0)
    conv = SameConv2d(2, 3, kernel, stride=2)
    x = torch.rand(1, 2, side, side + 1)
    pads = []
    for size in (side + 1, side):  # F.pad order: last dimension first
        total = max((-(-size // 2) - 1) * 2 + kernel - size, 0)
        pads += [total // 2, total - total // 2]
    expected = F.conv2d(F.pad(x, pads), conv.weight, stride=2)
    got = conv(x)
    assert got.shape[-2:] == (-(-side // 2), -(-(side + 1) // 2))  # ceil(side / 2)
    torch.testing.assert_close(got, expected)


def test_stride_1_keeps_the_size_with_symmetric_padding() -> None:
    conv = SameConv2d(1, 1, 5, stride=1)
    x = torch.rand(1, 1, 7, 6)
    torch.testing.assert_close(conv(x), F.conv2d(x, conv.weight, padding=2))


def test_the_architecture_is_lite0_relu6_without_squeeze_excitation() -> None:
    model = EfficientNetLite0(in_channels=3, num_classes=1000)
    assert len(model._blocks) == sum(stage[0] for stage in STAGES) == 16
    assert not any(isinstance(m, (nn.SiLU, nn.Sigmoid, nn.ReLU)) for m in model.modules())
    assert any(isinstance(m, nn.ReLU6) for m in model.modules())
    assert not any("_se_" in key for key in model.state_dict())
    assert all(m.eps == 1e-3 for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert 4.6e6 < sum(p.numel() for p in model.parameters()) < 4.7e6


def test_the_state_dict_layout_is_the_packaged_checkpoints_key_for_key() -> None:
    spec = model_spec("efficientnet_lite0")
    assert spec.imagenet is not None
    path = imagenet_file(spec.imagenet)
    assert path is not None, f"{spec.imagenet.distribution} is a dependency of usdcm"
    packaged = load_state_dict(path)
    model = EfficientNetLite0(in_channels=3, num_classes=1000).state_dict()
    assert list(model) == list(packaged)
    assert {k: v.shape for k, v in model.items()} == {k: v.shape for k, v in packaged.items()}


def test_the_input_is_scaled_to_minus_one_one_as_in_tensorflow() -> None:
    model = EfficientNetLite0(in_channels=1, num_classes=2).eval()
    seen: list[torch.Tensor] = []
    model._conv_stem.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    pixels = torch.tensor([0.0, 127.0, 255.0]).view(1, 1, 1, 3).expand(1, 1, 32, 3)
    with torch.no_grad():
        model(pixels / 255.0)
    torch.testing.assert_close(seen[0][0, 0, 0], torch.tensor([-127 / 128, 0.0, 1.0]))
    assert INPUT_MEAN * 255 == 127 and INPUT_STD * 255 == 128


def test_dropout_zero_uses_the_recipes_point_two() -> None:
    assert EfficientNetLite0(in_channels=1, num_classes=2)._dropout.p == 0.2
    assert EfficientNetLite0(in_channels=1, num_classes=2, dropout=0.4)._dropout.p == 0.4


def test_stochastic_depth_drops_whole_residual_branches_in_training_only() -> None:
    model = EfficientNetLite0(in_channels=1, num_classes=2)
    rates = [float(block.drop_path) for block in model._blocks]  # type: ignore[union-attr]
    assert rates[0] == 0 and rates == sorted(rates) and 0 < rates[-1] < 0.2
    block: nn.Module = model._blocks[2]  # 24 -> 24 channels, stride 1: residual
    block.drop_path = 0.5  # type: ignore[assignment]
    torch.manual_seed(0)
    x = torch.rand(64, 24, 8, 8)
    with torch.no_grad():
        dropped_in_training = (block.train()(x) == x).flatten(1).all(1)
        dropped_in_eval = (block.eval()(x) == x).flatten(1).all(1)
    assert 10 < int(dropped_in_training.sum()) < 54  # about half the samples keep only x
    assert not dropped_in_eval.any()
