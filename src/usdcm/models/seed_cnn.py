"""The seed CNN: the two-convolution tutorial network usdcm grew from, sized from the config.

Owns that one architecture and the arithmetic of its flattened size; never loads weights,
never picks a device and never knows about MONAI.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

CONV_CHANNELS = (16, 32)
"""Output channels of the two 3x3 convolutions, as in the tutorial."""
HIDDEN_FEATURES = 128
"""Width of the hidden fully connected layer, as in the tutorial."""


def flattened_features(image_size: Sequence[int]) -> int:
    """Length of the feature vector the convolutions hand to the first linear layer.

    Each block keeps the spatial size (3x3 convolution, padding 1) and halves it with a
    2x2 max pool that floors odd sides, so each side ends as ``side // 2 // 2``.

    Parameters
    ----------
    image_size
        The two spatial sides of the input, in the order the tensor holds them.

    Returns
    -------
    int
        ``CONV_CHANNELS[-1] * (side0 // 4) * (side1 // 4)``.

    Examples
    --------
    >>> flattened_features([128, 128])
    32768
    >>> flattened_features([64, 48])
    6144
    """
    side0, side1 = (int(side) // 2 // 2 for side in image_size)
    return CONV_CHANNELS[-1] * side0 * side1


class SeedCNN(nn.Module):
    """Two conv blocks (3x3 conv, ReLU, 2x2 max pool), flatten, hidden linear, ReLU, output.

    It is the tutorial network (``Resize(128, 128) -> ToTensor -> CNN -> Adam(1e-3)``)
    generalised to any input size and channel count: the first linear layer is sized from
    ``image_size`` instead of a hard-coded 128x128. There is no normalization layer, so the
    network stays the recognisable baseline that larger models are compared against.

    Parameters
    ----------
    in_channels
        Channels of the input (1 for B-mode, 3 for colour Doppler kept as RGB).
    num_classes
        Number of output logits.
    image_size
        The two spatial sides the forward pass accepts; both at least 4.
    dropout
        Dropout probability after the hidden layer (0 turns it into the identity).

    Examples
    --------
    >>> model = SeedCNN(in_channels=1, num_classes=3, image_size=[64, 48])
    >>> model(torch.zeros(2, 1, 64, 48)).shape
    torch.Size([2, 3])
    """

    def __init__(
        self,
        *,
        in_channels: int,
        num_classes: int,
        image_size: Sequence[int],
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        first, second = CONV_CHANNELS
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, first, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(first, second, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(flattened_features(self.image_size), HIDDEN_FEATURES),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(HIDDEN_FEATURES, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, num_classes)`` for a float batch ``(N, in_channels, *image_size)``.

        Works in either memory format: flattening a ``channels_last`` feature map copies it
        into the ``(C, side0, side1)`` order the linear layer was built for.
        """
        if tuple(x.shape[-2:]) != self.image_size:
            message = (
                f"SeedCNN was built for inputs of spatial size {list(self.image_size)} and got "
                f"{list(x.shape[-2:])}; resize the images to data.image_size or rebuild the "
                "model with the size the data has."
            )
            raise ValueError(message)
        out: torch.Tensor = self.classifier(self.features(x))
        return out
