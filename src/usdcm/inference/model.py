"""A trained model as inference needs it: network, classes and the training preprocessing.

Owns reading a run's checkpoint (safely, through :func:`usdcm.runtime.checkpoint.load_checkpoint`)
and rebuilding exactly what training used: the network, the label order, the intensity
statistics, the input size and the frames per clip. Never reads a manifest or images.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from usdcm.config import TrainConfig, config_from_dict
from usdcm.data.normalization import IntensityStats
from usdcm.errors import RunError, UsdcmError

CHECKPOINT_NAME = "best.pt"


@dataclass(frozen=True)
class TrainedModel:
    """Everything needed to apply a trained classifier the way it was trained."""

    network: nn.Module
    classes: list[str]
    stats: IntensityStats
    config: TrainConfig
    channels: int
    device: torch.device
    checkpoint_path: Path
    checkpoint_sha256: str
    payload: dict[str, Any]

    @property
    def manifest_path(self) -> Path | None:
        """The manifest the model was trained on, as the run recorded it."""
        value = self.payload.get("manifest_path")
        return Path(value) if value else None


def checkpoint_in(run: Path) -> Path:
    """``RUN/best.pt`` for a run folder, or ``run`` itself when it is a checkpoint file."""
    path = run / CHECKPOINT_NAME if run.is_dir() else run
    if not path.is_file():
        message = (
            f"No checkpoint at {path}; pass a run folder written by `usdcm train` "
            "(holding best.pt) or a checkpoint file."
        )
        raise RunError(message)
    return path


def load_trained_model(run: Path, device: str = "auto") -> TrainedModel:
    """Rebuild the network of ``run`` (a run folder or a ``.pt`` file) on ``device``.

    The checkpoint is read with ``weights_only=True``: a file carrying code is refused.
    """
    from usdcm.data.transforms import spatial_size
    from usdcm.models.factory import build_model
    from usdcm.runtime.checkpoint import load_checkpoint, sha256_file
    from usdcm.runtime.device import select_device

    path = checkpoint_in(run)
    payload = load_checkpoint(path)
    try:
        config = config_from_dict(dict(payload["config"]))
        label_map = {str(k): int(v) for k, v in dict(payload["label_map"]).items()}
        stats = IntensityStats.from_dict(payload["normalization"])
        channels = int(payload.get("in_channels", 1))
    except (KeyError, TypeError, ValueError, UsdcmError) as err:
        message = f"The checkpoint {path} does not describe its model ({err}); retrain it."
        raise RunError(message) from err
    classes = sorted(label_map, key=label_map.__getitem__)
    target = select_device(device)
    network = build_model(
        config.model.name,
        in_channels=channels * config.data.clip_frames,
        num_classes=len(classes),
        image_size=spatial_size(config.data.image_size),  # (W, H), as the loader stacks
        dropout=config.model.dropout,
    )
    try:
        network.load_state_dict(payload["model_state"])
    except RuntimeError as err:
        message = f"The weights in {path} do not fit a {config.model.name}; retrain it."
        raise RunError(message) from err
    network.to(target).eval()
    return TrainedModel(
        network=network,
        classes=classes,
        stats=stats,
        config=config,
        channels=channels,
        device=target,
        checkpoint_path=path,
        checkpoint_sha256=sha256_file(path),
        payload=payload,
    )
