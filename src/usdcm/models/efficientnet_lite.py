"""EfficientNet-Lite0, written against the state-dict layout of Google's ImageNet checkpoint.

Owns the architecture only: the layers, their names and the input normalisation the
ImageNet weights were trained with. Never loads or downloads weights (that is
:mod:`usdcm.models.weights`), never picks a device.

Why written here rather than imported: the 2020 ``efficientnet-lite-pytorch`` package that
matches the checkpoint is unmaintained, downloads from the internet when no path is given,
loads with ``torch.load`` without ``weights_only``, prints from ``forward``, fixes its
"same" padding to one image size and replaces the pretrained stem with a random one when
the input is not RGB. The network is small enough (about 150 lines) to own, typed and tested.

What the checkpoint dictates (TensorFlow's EfficientNet-Lite, ``efficientnet_lite_builder``):

- TensorFlow "same" padding: a stride-2 convolution pads more on the bottom/right than on the
  top/left when the padding is odd (:class:`SameConv2d`);
- ReLU6 activations and no squeeze-and-excitation (both removed from EfficientNet for
  integer-quantised mobile inference); stem (32) and head (1280) widths are not scaled;
- batch normalisation with ``eps=1e-3`` (TensorFlow's). The momentum is PyTorch's default
  0.1 rather than TensorFlow's 0.01, so the running statistics follow the new domain within
  a few dozen fine-tuning steps instead of hundreds;
- inputs scaled as ``(pixel - 127) / 128`` on 0-255 pixels (``MEAN_RGB = 127``,
  ``STDDEV_RGB = 128`` in the TensorFlow builder). usdcm feeds images scaled to [0, 1], so
  :meth:`EfficientNetLite0.forward` computes ``(x * 255 - 127) / 128`` first.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

BN_EPS = 1e-3
"""TensorFlow's batch-normalisation epsilon, which the checkpoint's statistics assume."""
INPUT_MEAN = 127.0 / 255.0
"""Input mean on usdcm's [0, 1] scale: TensorFlow's ``MEAN_RGB = 127`` over 255."""
INPUT_STD = 128.0 / 255.0
"""Input standard deviation on usdcm's [0, 1] scale: TensorFlow's ``STDDEV_RGB = 128``."""
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
DEFAULT_DROPOUT = 0.2
"""Classifier dropout of EfficientNet-Lite0's own recipe, used when ``dropout`` is 0."""
DROP_PATH_RATE = 0.2
"""Stochastic depth of the recipe, scaled linearly from 0 (first block) to this (last)."""

STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    # (repeats, kernel, stride, expand ratio, output channels); Lite0: width and depth 1.0
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)
"""The seven MBConv stages of EfficientNet-Lite0 (16 blocks in all)."""


class SameConv2d(nn.Conv2d):
    """A convolution with TensorFlow's "same" padding, computed from each input's size.

    The output side is ``ceil(side / stride)``; the total padding is split with the extra
    pixel, if any, on the bottom and right, as TensorFlow does. With stride 1 and an odd
    kernel this is the symmetric ``kernel // 2`` padding, done by :class:`torch.nn.Conv2d`.

    Examples
    --------
    >>> conv = SameConv2d(1, 1, 3, stride=2, bias=False)
    >>> conv(torch.zeros(1, 1, 7, 8)).shape
    torch.Size([1, 1, 4, 4])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        stride: int = 1,
        groups: int = 1,
        bias: bool = False,
    ) -> None:
        padding = kernel_size // 2 if stride == 1 else 0
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            groups=groups,
            bias=bias,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pad as TensorFlow's "same" would, then convolve."""
        if self.stride[0] == 1:
            return super().forward(x)
        pads: list[int] = []
        for side, kernel, stride in zip(
            reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride), strict=True
        ):
            total = max((math.ceil(side / stride) - 1) * stride + kernel - side, 0)
            pads += [total // 2, total - total // 2]
        out: torch.Tensor = self._conv_forward(F.pad(x, pads), self.weight, self.bias)
        return out


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS)


class MBConvBlock(nn.Module):
    """Inverted residual: 1x1 expansion, depthwise KxK, 1x1 projection, skip when shapes agree.

    Attribute names are the checkpoint's: ``_expand_conv``/``_bn0`` (absent when the
    expansion ratio is 1), ``_depthwise_conv``/``_bn1``, ``_project_conv``/``_bn2``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        kernel: int,
        stride: int,
        expand: int,
        drop_path: float,
    ) -> None:
        super().__init__()
        hidden = in_channels * expand
        self.expands = expand != 1
        if self.expands:
            self._expand_conv = SameConv2d(in_channels, hidden, 1)
            self._bn0 = _bn(hidden)
        self._depthwise_conv = SameConv2d(hidden, hidden, kernel, stride=stride, groups=hidden)
        self._bn1 = _bn(hidden)
        self._project_conv = SameConv2d(hidden, out_channels, 1)
        self._bn2 = _bn(out_channels)
        self.act = nn.ReLU6(inplace=True)
        self.residual = stride == 1 and in_channels == out_channels
        self.drop_path = drop_path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Output ``(N, out_channels, ceil(H / stride), ceil(W / stride))``."""
        out: torch.Tensor = x
        if self.expands:
            out = self.act(self._bn0(self._expand_conv(out)))
        out = self.act(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        if not self.residual:
            return out
        if self.training and self.drop_path > 0:
            keep = 1.0 - self.drop_path
            mask = torch.empty(out.shape[0], 1, 1, 1, device=out.device, dtype=out.dtype)
            out = out * mask.bernoulli_(keep) / keep
        return out + x


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 for ``in_channels`` inputs in [0, 1] and ``num_classes`` logits.

    The state-dict keys are those of Google's converted ImageNet checkpoint
    (``_conv_stem``, ``_bn0``, ``_blocks.0`` ... ``_blocks.15``, ``_conv_head``, ``_bn1``,
    ``_fc``), so its file loads as it is; only the stem (for other than 3 input channels)
    and the classifier ``_fc`` (for other than 1000 classes) differ in shape.

    Parameters
    ----------
    in_channels
        Input channels (1 for B-mode; frames of a clip are stacked as channels).
    num_classes
        Output logits.
    dropout
        Dropout before ``_fc``; 0 uses the recipe's :data:`DEFAULT_DROPOUT`.

    Examples
    --------
    >>> model = EfficientNetLite0(in_channels=1, num_classes=2).eval()
    >>> model(torch.rand(2, 1, 64, 48)).shape
    torch.Size([2, 2])
    >>> len(model._blocks)
    16
    """

    def __init__(self, *, in_channels: int, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(in_channels, STEM_CHANNELS, 3, stride=2)
        self._bn0 = _bn(STEM_CHANNELS)
        n_blocks = sum(stage[0] for stage in STAGES)
        blocks: list[nn.Module] = []
        channels = STEM_CHANNELS
        for repeats, kernel, stride, expand, out_channels in STAGES:
            for repeat in range(repeats):
                blocks.append(
                    MBConvBlock(
                        channels,
                        out_channels,
                        kernel=kernel,
                        stride=stride if repeat == 0 else 1,
                        expand=expand,
                        drop_path=DROP_PATH_RATE * len(blocks) / n_blocks,
                    )
                )
                channels = out_channels
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(channels, HEAD_CHANNELS, 1)
        self._bn1 = _bn(HEAD_CHANNELS)
        self.act = nn.ReLU6(inplace=True)
        self._dropout = nn.Dropout(dropout or DEFAULT_DROPOUT)
        self._fc = nn.Linear(HEAD_CHANNELS, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The head's feature map ``(N, 1280, H / 32, W / 32)`` for an input in [0, 1]."""
        x = (x - INPUT_MEAN) / INPUT_STD  # (pixel - 127) / 128, as the weights were trained
        x = self.act(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        out: torch.Tensor = self.act(self._bn1(self._conv_head(x)))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, num_classes)`` for a float batch ``(N, in_channels, H, W)`` in [0, 1]."""
        pooled = torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1)
        out: torch.Tensor = self._fc(self._dropout(pooled))
        return out
