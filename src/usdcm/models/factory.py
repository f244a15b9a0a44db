"""Builds a classifier by name, from the registry, after checking its arguments.

Owns :func:`build_model`: the checks every caller gets (a known name, two integer sides of
at least the network's minimum, channels, classes, dropout) and the call of the registry's
builder. The names, minimum sides and builders live in :mod:`usdcm.models.registry`. Never
reads the config (callers pass plain values), never downloads or loads weights (that is
:mod:`usdcm.models.weights`, so a checkpoint rebuilds without the weights package), never moves
a model to a device and never wraps it (channels-last, compile and DDP belong to training).
"""

from __future__ import annotations

import operator
from collections.abc import Sequence

from torch import nn

from usdcm.errors import ModelError
from usdcm.models.registry import model_spec

__all__ = ["ModelError", "build_model"]


def _check_arguments(
    name: str, in_channels: int, num_classes: int, image_size: Sequence[int], dropout: float
) -> tuple[int, int]:
    spec = model_spec(name)
    try:
        sides = [operator.index(side) for side in image_size]
    except TypeError as err:
        message = f"Model image_size is {image_size!r}; expected two integers, e.g. [128, 128]."
        raise ModelError(message) from err
    least = spec.min_side
    if len(sides) != 2 or min(sides) < least:
        message = (
            f"Model image_size is {sides!r}; {name} needs two sides of at least {least}, "
            "set data.image_size accordingly (e.g. [128, 128])."
        )
        raise ModelError(message)
    if in_channels < 1:
        message = f"Model in_channels is {in_channels}; expected 1 (B-mode) or 3 (RGB)."
        raise ModelError(message)
    if num_classes < 2:
        message = (
            f"Model num_classes is {num_classes}; a classifier needs at least 2 classes, so "
            "the manifest's label column must hold at least two distinct labels."
        )
        raise ModelError(message)
    if not 0 <= dropout < 1:
        message = f"Model dropout is {dropout!r}; set model.dropout to a value in [0, 1)."
        raise ModelError(message)
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
    and the EfficientNets keep their own built-in classifier dropout of 0.2. The network
    starts from random weights; :func:`usdcm.models.weights.apply_weights` loads others.

    Parameters
    ----------
    name
        One of :data:`usdcm.models.registry.MODEL_NAMES`.
    in_channels
        1 for B-mode images, 3 for images kept in colour.
    num_classes
        Number of classes (at least 2); the output has this many logits.
    image_size
        ``data.image_size``: the two spatial sides, each at least the network's
        :attr:`~usdcm.models.registry.ModelSpec.min_side`.
    dropout
        Dropout probability in ``[0, 1)`` before the output layer.

    Returns
    -------
    torch.nn.Module
        A new float32 model on the CPU, in training mode.

    Raises
    ------
    ModelError
        ``name`` is not a known model, or an argument is out of range.

    Examples
    --------
    >>> import torch
    >>> model = build_model("seed_cnn", in_channels=1, num_classes=2, image_size=[64, 64])
    >>> model(torch.rand(4, 1, 64, 64)).shape
    torch.Size([4, 2])
    >>> build_model("vgg16", in_channels=1, num_classes=2, image_size=[64, 64])
    Traceback (most recent call last):
    usdcm.errors.ModelError: Unknown model 'vgg16'; choose one of: seed_cnn, ...
    """
    sides = _check_arguments(name, in_channels, num_classes, image_size, dropout)
    return model_spec(name).build(in_channels, num_classes, sides, float(dropout))
