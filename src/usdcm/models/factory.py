"""Builds a classifier by name: the seed CNN or one of the MONAI 2D networks.

Owns the mapping from ``model.name`` to a freshly initialised ``torch.nn.Module`` with random
weights. Never downloads or loads weights (``pretrained=False`` everywhere), never moves a
model to a device and never wraps it (channels-last, compile and DDP belong to training).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from usdcm.config import MODEL_NAMES, ConfigError
from usdcm.models.seed_cnn import SeedCNN

_Builder = Callable[[int, int, tuple[int, int], float], nn.Module]

MIN_SIDE = {
    "seed_cnn": 16,
    "densenet121": 32,
    "resnet18": 16,
    "resnet34": 16,
    "efficientnet-b0": 32,
}
"""Smallest image side each network accepts (DenseNet and EfficientNet downsample by 32)."""


def _seed_cnn(
    in_channels: int, num_classes: int, image_size: tuple[int, int], dropout: float
) -> nn.Module:
    return SeedCNN(
        in_channels=in_channels, num_classes=num_classes, image_size=image_size, dropout=dropout
    )


def _densenet121(
    in_channels: int, num_classes: int, image_size: tuple[int, int], dropout: float
) -> nn.Module:
    from monai.networks.nets import DenseNet121

    net: Any = DenseNet121(
        spatial_dims=2, in_channels=in_channels, out_channels=num_classes, pretrained=False
    )
    if dropout > 0:
        net.class_layers.out = nn.Sequential(nn.Dropout(dropout), net.class_layers.out)
    model: nn.Module = net
    return model


def _resnet(depth: int) -> _Builder:
    def build(
        in_channels: int, num_classes: int, image_size: tuple[int, int], dropout: float
    ) -> nn.Module:
        from monai.networks.nets import resnet18, resnet34

        factory = {18: resnet18, 34: resnet34}[depth]
        # conv1_t_stride=2 gives the standard ResNet stem (7x7 conv with stride 2, then max
        # pool); MONAI's default of 1 suits small 3D volumes and costs 4x the compute in 2D.
        net: Any = factory(
            pretrained=False,
            spatial_dims=2,
            n_input_channels=in_channels,
            num_classes=num_classes,
            conv1_t_stride=2,
        )
        if dropout > 0:
            net.fc = nn.Sequential(nn.Dropout(dropout), net.fc)
        model: nn.Module = net
        return model

    return build


def _efficientnet_b0(
    in_channels: int, num_classes: int, image_size: tuple[int, int], dropout: float
) -> nn.Module:
    from monai.networks.nets import EfficientNetBN

    net: Any = EfficientNetBN(
        "efficientnet-b0",
        pretrained=False,
        spatial_dims=2,
        in_channels=in_channels,
        num_classes=num_classes,
    )
    if dropout > 0:
        net._dropout = nn.Dropout(dropout)
    model: nn.Module = net
    return model


_BUILDERS: dict[str, _Builder] = {
    "seed_cnn": _seed_cnn,
    "densenet121": _densenet121,
    "resnet18": _resnet(18),
    "resnet34": _resnet(34),
    "efficientnet-b0": _efficientnet_b0,
}


def _check_arguments(
    name: str, in_channels: int, num_classes: int, image_size: Sequence[int], dropout: float
) -> tuple[int, int]:
    if name not in _BUILDERS:
        message = f"Unknown model {name!r}; choose one of: {', '.join(MODEL_NAMES)}."
        raise ConfigError(message)
    try:
        sides = [operator.index(side) for side in image_size]
    except TypeError as err:
        message = f"Model image_size is {image_size!r}; expected two integers, e.g. [128, 128]."
        raise ConfigError(message) from err
    least = MIN_SIDE[name]
    if len(sides) != 2 or min(sides) < least:
        message = (
            f"Model image_size is {sides!r}; {name} needs two sides of at least {least}, "
            "set data.image_size accordingly (e.g. [128, 128])."
        )
        raise ConfigError(message)
    if in_channels < 1:
        message = f"Model in_channels is {in_channels}; expected 1 (B-mode) or 3 (RGB)."
        raise ConfigError(message)
    if num_classes < 2:
        message = (
            f"Model num_classes is {num_classes}; a classifier needs at least 2 classes, so "
            "the manifest's label column must hold at least two distinct labels."
        )
        raise ConfigError(message)
    if not 0 <= dropout < 1:
        message = f"Model dropout is {dropout!r}; set model.dropout to a value in [0, 1)."
        raise ConfigError(message)
    return sides[0], sides[1]


def build_model(
    name: str,
    *,
    in_channels: int,
    num_classes: int,
    image_size: Sequence[int],
    dropout: float = 0.0,
) -> nn.Module:
    """Build the network ``name`` with random weights, for 2D inputs of ``image_size``.

    The forward pass takes a float tensor ``(N, in_channels, side0, side1)`` with
    ``(side0, side1) == image_size``, in the order the data loader stacks them (the networks
    do not care which side is the width), and returns logits ``(N, num_classes)``. Every
    model accepts ``torch.channels_last`` inputs. The seed CNN accepts only ``image_size``;
    the MONAI networks end in global pooling and would run at other sizes, but are only
    tested, and only meant to be used, at the configured one.

    ``dropout`` acts on the features entering the last linear layer. When it is 0 the MONAI
    networks are left exactly as MONAI builds them, so their state-dict keys match MONAI's,
    and EfficientNet-B0 keeps its own built-in classifier dropout of 0.2.

    Parameters
    ----------
    name
        One of ``usdcm.config.MODEL_NAMES``: ``seed_cnn`` (the 2-conv tutorial
        net), ``densenet121``, ``resnet18``, ``resnet34`` or ``efficientnet-b0``.
    in_channels
        1 for B-mode images, 3 for images kept in colour.
    num_classes
        Number of classes (at least 2); the output has this many logits.
    image_size
        ``data.image_size``: the two spatial sides, each at least ``MIN_SIDE[name]``.
    dropout
        Dropout probability in ``[0, 1)`` before the output layer.

    Returns
    -------
    torch.nn.Module
        A new float32 model on the CPU, in training mode.

    Raises
    ------
    ConfigError
        ``name`` is not a known model, or an argument is out of range.

    Examples
    --------
    >>> import torch
    >>> model = build_model("seed_cnn", in_channels=1, num_classes=2, image_size=[64, 64])
    >>> model(torch.rand(4, 1, 64, 64)).shape
    torch.Size([4, 2])
    >>> build_model("vgg16", in_channels=1, num_classes=2, image_size=[64, 64])
    Traceback (most recent call last):
    usdcm.config.ConfigError: Unknown model 'vgg16'; choose one of: seed_cnn, ...
    """
    sides = _check_arguments(name, in_channels, num_classes, image_size, dropout)
    return _BUILDERS[name](in_channels, num_classes, sides, float(dropout))
