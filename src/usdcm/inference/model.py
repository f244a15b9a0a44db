"""A trained model as inference needs it: network, classes and the training preprocessing.

Owns reading a run's checkpoint (safely, through :func:`usdcm.runtime.checkpoint.load_checkpoint`)
and rebuilding exactly what training used: the network, the label order, the intensity
statistics, the input size and the frames per clip. A cross-validated run (one holding
``folds.json``) loads as an :class:`Ensemble` of its folds' best checkpoints, each with its
own preprocessing. Never reads a manifest or images.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

import torch
from torch import nn

from usdcm.artifacts.folds import FOLDS_JSON, FoldsFile, fold_dir
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


@dataclass(frozen=True)
class Ensemble:
    """The folds of a cross-validated run applied together: the mean of their probabilities.

    Each member is the best checkpoint of one fold with its own preprocessing (intensity
    statistics measured on that fold's training images), so each image is preprocessed
    once per member, exactly as that member was validated, and the members' class
    probabilities are averaged (:func:`usdcm.inference.predict.predict_items`). Offers
    what callers read of a :class:`TrainedModel` besides its network and statistics:
    ``classes``, ``channels``, ``config``, ``device``, ``payload``, ``manifest_path``,
    ``checkpoint_path`` (``RUN/folds.json``) and ``checkpoint_sha256`` (of the members'
    hashes, in fold order).
    """

    members: tuple[TrainedModel, ...]
    run_dir: Path
    folds: FoldsFile

    @property
    def first(self) -> TrainedModel:
        """Fold 1's model: classes, channels and frames are the same in every member."""
        return self.members[0]

    @property
    def classes(self) -> list[str]:
        """The class names, in the order of the probabilities."""
        return self.first.classes

    @property
    def channels(self) -> int:
        """Channels of one frame (1 or 3)."""
        return self.first.channels

    @property
    def config(self) -> TrainConfig:
        """Fold 1's config (the folds differ only in their split)."""
        return self.first.config

    @property
    def device(self) -> torch.device:
        """Where the members run."""
        return self.first.device

    @property
    def checkpoint_path(self) -> Path:
        """``RUN/folds.json``, which names the members."""
        return self.run_dir / FOLDS_JSON

    @property
    def checkpoint_sha256(self) -> str:
        """The sha256 of the members' checkpoint hashes, one a line in fold order."""
        joined = "\n".join(member.checkpoint_sha256 for member in self.members)
        return hashlib.sha256(joined.encode("ascii")).hexdigest()

    @property
    def manifest_path(self) -> Path | None:
        """The manifest every fold was trained on, as the runs recorded it."""
        return self.first.manifest_path

    @property
    def payload(self) -> dict[str, Any]:
        """Fold 1's checkpoint payload with the ensemble's own values: no single best epoch,
        the out-of-fold AUC as the validation AUC, and the folds."""
        return {
            **self.first.payload,
            "epoch": None,
            "val_auc": self.folds.oof_auc,
            "folds": self.folds.to_dict()["folds"],
        }


Classifier: TypeAlias = TrainedModel | Ensemble
"""What :func:`load_trained_model` returns: one network, or the ensemble of a run's folds."""


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


def load_trained_model(run: Path, device: str = "auto") -> Classifier:
    """Rebuild the network of ``run`` (a run folder or a ``.pt`` file) on ``device``.

    The checkpoint is read with ``weights_only=True``: a file carrying code is refused. A
    cross-validated run folder (holding ``folds.json``) gives the :class:`Ensemble` of its
    folds' ``best.pt``; one of its ``fold-<k>`` folders gives that fold alone.

    Raises
    ------
    RunError
        No checkpoint, a checkpoint that does not describe its model, or a cross-validated
        run with an unfinished fold or folds that do not match each other.
    """
    if run.is_dir() and (run / FOLDS_JSON).is_file():
        return load_ensemble(run, device)
    return _load_one(run, device)


def load_ensemble(run: Path, device: str = "auto") -> Ensemble:
    """The :class:`Ensemble` of the cross-validated run folder ``run``.

    Every fold must be done, its ``best.pt`` the one ``folds.json`` recorded, and all folds
    must share classes, channels, frames and the training manifest.
    """
    record = FoldsFile.read(run / FOLDS_JSON)
    pending = [entry.fold for entry in record.folds if not entry.done]
    if pending:
        message = (
            f"The cross-validated run {run} has unfinished folds {pending}; finish them with "
            f"`usdcm train MANIFEST --folds {record.k} --resume --out {run}`."
        )
        raise RunError(message)
    members = tuple(_load_one(fold_dir(run, entry.fold), device) for entry in record.folds)
    for entry, member in zip(record.folds, members, strict=True):
        if entry.checkpoint_sha256 and member.checkpoint_sha256 != entry.checkpoint_sha256:
            message = (
                f"{member.checkpoint_path} is not the checkpoint {run / FOLDS_JSON} recorded "
                "for its fold (sha256 differs); retrain the folds with `usdcm train --folds`."
            )
            raise RunError(message)
    first = members[0]
    for member in members[1:]:
        same = (
            member.classes == first.classes
            and member.channels == first.channels
            and member.config.data.clip_frames == first.config.data.clip_frames
            and member.payload.get("manifest_sha256") == first.payload.get("manifest_sha256")
        )
        if not same:
            message = (
                f"The folds of {run} differ in classes, channels, frames per clip or "
                f"training manifest ({member.checkpoint_path} against "
                f"{first.checkpoint_path}); retrain the folds with `usdcm train --folds`."
            )
            raise RunError(message)
    return Ensemble(members=members, run_dir=run, folds=record)


def _load_one(run: Path, device: str) -> TrainedModel:
    """One checkpoint (a plain run folder, a fold's folder or a ``.pt`` file)."""
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
