"""One epoch of training and one pass of clip-level evaluation.

Owns the inner loops: forward, loss, backward, AMP and gradient scaling, and the mean
probability over a clip's frames. Knows nothing of files, configs or run folders.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

ProgressHook = Callable[[int], None]


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


def train_one_epoch(
    model: nn.Module,
    batches: Iterable[Mapping[str, Any]],
    *,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    autocast: Callable[[], contextlib.AbstractContextManager[Any]],
    scaler: torch.amp.GradScaler | None = None,
    step_scheduler: Callable[[], None] | None = None,
    channels_last: bool = False,
    on_batch: ProgressHook | None = None,
) -> float:
    """Train for one pass over ``batches``; return the mean loss per sample.

    Each batch is a mapping with ``image`` (N, C, W, H) and ``label`` (N,). ``step_scheduler``
    runs after every optimizer step (one-cycle); per-epoch schedules are stepped by the caller.
    """
    model.train()
    total, count = 0.0, 0
    non_blocking = device.type == "cuda"
    for batch in batches:
        images = batch["image"].to(device, non_blocking=non_blocking)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        labels = torch.as_tensor(batch["label"]).to(device, non_blocking=non_blocking)
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            logits = model(images)
            loss = loss_fn(logits.float(), labels)
        if scaler is not None and scaler.is_enabled():
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        if step_scheduler is not None:
            step_scheduler()
        value = float(loss.detach())
        if not math.isfinite(value):
            message = "the training loss is not finite; lower optim.lr or disable runtime.amp"
            raise FloatingPointError(message)
        total += value * len(labels)
        count += len(labels)
        if on_batch is not None:
            on_batch(len(labels))
    return total / max(count, 1)


@torch.no_grad()
def predict_clips(
    model: nn.Module,
    batches: Iterable[Mapping[str, Any]],
    *,
    device: torch.device,
    autocast: Callable[[], contextlib.AbstractContextManager[Any]],
    channels_last: bool = False,
    on_batch: ProgressHook | None = None,
) -> ClipPredictions:
    """Mean softmax probability over each cine's evenly spaced frames (or clips).

    Each batch is what :func:`usdcm.data.datasets.collate_frames` makes: ``image``
    ``(N, C, W, H)`` holding the frames of ``B`` cines, ``clip_index`` ``(N,)`` naming each
    frame's cine, ``label`` ``(B,)`` and ``image_id`` (``B`` str).
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


def classification_metrics(predictions: ClipPredictions, n_classes: int) -> dict[str, float]:
    """Validation AUC (one-vs-rest macro for several classes), balanced accuracy, log loss.

    AUC is ``nan`` when the split holds a single class: it cannot be judged.
    """
    from sklearn.metrics import balanced_accuracy_score, log_loss, roc_auc_score

    y = predictions.labels
    p = predictions.probabilities
    if len(y) == 0:
        return {"auc": float("nan"), "balanced_accuracy": float("nan"), "loss": float("nan")}
    present = np.unique(y)
    auc = float("nan")
    if len(present) > 1:
        if n_classes == 2:
            auc = float(roc_auc_score(y, p[:, 1]))
        else:
            auc = float(
                roc_auc_score(y, p, multi_class="ovr", average="macro", labels=range(n_classes))
            )
    predicted = p.argmax(axis=1)
    clipped = np.clip(p, 1e-7, 1.0)
    return {
        "auc": auc,
        "balanced_accuracy": float(balanced_accuracy_score(y, predicted)),
        "loss": float(
            log_loss(y, clipped / clipped.sum(axis=1, keepdims=True), labels=range(n_classes))
        ),
    }
