"""Batched prediction: a model over evaluation batches, one mean probability per cine.

Owns the prediction pass that training (validation), evaluation and inference share: frames
in, softmax per frame (averaged with the left-right flip's when asked), mean per clip,
:class:`ClipPredictions` out, in batch order. Never
reads files, configs or checkpoints, never picks a device or AMP policy (the caller passes
them, see :mod:`usdcm.runtime.device`) and never computes metrics.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["ClipPredictions", "ProgressHook", "predict_clips"]

ProgressHook = Callable[[int], None]
"""Called after each batch with the number of items (cines, or samples) it held."""


@dataclass(frozen=True)
class ClipPredictions:
    """Per-clip outputs of an evaluation pass, in the order of ``image_ids``."""

    image_ids: list[str]
    labels: np.ndarray[Any, Any]
    probabilities: np.ndarray[Any, Any]  # (n_clips, n_classes)

    def merged(self, others: Sequence[ClipPredictions]) -> ClipPredictions:
        """Merge predictions gathered from several ranks, dropping padded duplicates."""
        seen: dict[str, tuple[int, np.ndarray[Any, Any]]] = {}
        for part in (self, *others):
            for image_id, label, probs in zip(
                part.image_ids, part.labels, part.probabilities, strict=True
            ):
                seen.setdefault(image_id, (int(label), probs))
        ids = sorted(seen)
        return ClipPredictions(
            image_ids=ids,
            labels=np.array([seen[i][0] for i in ids], dtype=np.int64),
            probabilities=np.stack([seen[i][1] for i in ids])
            if ids
            else np.zeros((0, self.probabilities.shape[1])),
        )


@torch.no_grad()
def predict_clips(
    model: nn.Module,
    batches: Iterable[Mapping[str, Any]],
    *,
    device: torch.device,
    autocast: Callable[[], contextlib.AbstractContextManager[Any]],
    channels_last: bool = False,
    on_batch: ProgressHook | None = None,
    tta_flip: bool = False,
) -> ClipPredictions:
    """Mean softmax probability over each cine's evenly spaced frames (or clips).

    Each batch is what :func:`usdcm.data.datasets.collate_frames` makes: ``image``
    ``(N, C, W, H)`` holding the frames of ``B`` cines, ``clip_index`` ``(N,)`` naming each
    frame's cine, ``label`` ``(B,)`` and ``image_id`` (``B`` str).

    ``tta_flip`` (``data.tta_flip``) makes each frame's probability the mean of the
    probabilities of the frame and of its left-right flip: the flip training augments with,
    along the column axis (axis 2 of ``(N, C, W, H)``). Both go through the model in one
    forward pass of twice the batch.
    """
    from usdcm.data.datasets import mean_per_clip

    model.eval()
    ids: list[str] = []
    labels: list[int] = []
    probs: list[np.ndarray[Any, Any]] = []
    non_blocking = device.type == "cuda"
    for batch in batches:
        frames = batch["image"].to(device, non_blocking=non_blocking)
        if channels_last:
            frames = frames.contiguous(memory_format=torch.channels_last)
        if tta_flip:
            flipped = frames.flip(2)
            if channels_last:
                flipped = flipped.contiguous(memory_format=torch.channels_last)
            with autocast():
                logits = model(torch.cat([frames, flipped]))
            both = torch.softmax(logits.float(), dim=1)
            per_frame = (both[: len(frames)] + both[len(frames) :]) / 2
        else:
            with autocast():
                logits = model(frames)
            per_frame = torch.softmax(logits.float(), dim=1)
        n_clips = len(batch["image_id"])
        per_clip = mean_per_clip(per_frame, batch["clip_index"], n_clips)
        ids.extend(str(i) for i in batch["image_id"])
        labels.extend(int(label) for label in batch["label"])
        probs.extend(per_clip.cpu().numpy().astype(np.float64))
        if on_batch is not None:
            on_batch(n_clips)
    n_classes = probs[0].shape[0] if probs else 0
    return ClipPredictions(
        image_ids=ids,
        labels=np.array(labels, dtype=np.int64),
        probabilities=np.stack(probs) if probs else np.zeros((0, n_classes)),
    )
