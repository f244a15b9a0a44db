"""One epoch of training, and the validation metrics of a pass of clip-level predictions.

Owns the training inner loop (forward, loss, backward, AMP and gradient scaling) and the
validation metrics. The prediction pass itself (mean probability over a clip's frames) is
:func:`usdcm.runtime.predict.predict_clips`, shared with inference and evaluation. Knows
nothing of files, configs or run folders.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from usdcm.runtime.predict import ClipPredictions, ProgressHook


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
