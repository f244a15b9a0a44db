"""One epoch of training, and the validation metrics of a pass of clip-level predictions.

Owns the training inner loop (forward, loss, backward, AMP and gradient scaling, gradient
clipping, the EMA update) with its batch-level augmentation (mixup and cutmix,
:class:`BatchMixer`) and the validation metrics. The prediction pass itself (mean
probability over a clip's frames) is :func:`usdcm.runtime.predict.predict_clips`, shared
with inference and evaluation. Knows nothing of files, configs or run folders.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from usdcm.runtime.checkpoint import unwrap_model
from usdcm.runtime.predict import ClipPredictions, ProgressHook

__all__ = [
    "BatchMixer",
    "Mix",
    "classification_metrics",
    "make_ema",
    "mixed_loss",
    "train_one_epoch",
]


@dataclass(frozen=True)
class Mix:
    """How one batch was mixed: sample ``i`` is ``lam`` of itself and ``1 - lam`` of
    sample ``partner[i]`` (by pixel blend for mixup, by area for cutmix)."""

    partner: torch.Tensor
    lam: float
    kind: str  # "mixup" or "cutmix"
    box: tuple[int, int, int, int] | None = None  # cutmix: (w0, w1, h0, h1), end exclusive


class BatchMixer:
    """Mixup and cutmix of whole batches, drawn from a seeded NumPy generator.

    Per batch: the kind (mixup or cutmix with probability 0.5 each when both alphas are
    above 0), then ``lam ~ Beta(alpha, alpha)``, then a permutation of the batch (each
    sample's partner), then, for cutmix, the box, whose area fraction replaces ``lam``
    (Yun et al. 2019). Everything comes from ``rng``, in that order, so a batch is mixed
    the same way whenever the same generator state meets it; torch's global generator
    (dropout) is never touched.

    Parameters
    ----------
    mixup_alpha, cutmix_alpha
        ``augment.mixup_alpha`` and ``augment.cutmix_alpha``; 0 turns a kind off.
    rng
        The run's generator for this epoch (and rank).

    Examples
    --------
    >>> import numpy as np
    >>> mixer = BatchMixer(0.4, 0.0, np.random.default_rng(0))
    >>> images, mix = mixer(torch.ones(4, 1, 8, 8), torch.tensor([0, 1, 0, 1]))
    >>> mix.kind, sorted(mix.partner.tolist()), 0.0 <= mix.lam <= 1.0
    ('mixup', [0, 1, 2, 3], True)
    """

    def __init__(self, mixup_alpha: float, cutmix_alpha: float, rng: np.random.Generator) -> None:
        if mixup_alpha < 0 or cutmix_alpha < 0 or mixup_alpha == cutmix_alpha == 0:
            message = (
                f"BatchMixer needs mixup_alpha or cutmix_alpha above 0 (and none below), "
                f"found {mixup_alpha} and {cutmix_alpha}; build none to turn mixing off."
            )
            raise ValueError(message)
        self.mixup_alpha = mixup_alpha
        self.cutmix_alpha = cutmix_alpha
        self.rng = rng

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, Mix]:
        """Mix ``images`` ``(N, C, W, H)``; ``labels`` only give the batch size.

        Returns the mixed images (a new tensor; ``images`` is left as it was) and the
        :class:`Mix` that :func:`mixed_loss` needs.
        """
        rng = self.rng
        use_cutmix = self.mixup_alpha == 0 or (self.cutmix_alpha > 0 and rng.random() < 0.5)
        alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
        lam = float(rng.beta(alpha, alpha))
        order = rng.permutation(len(labels))
        partner = torch.as_tensor(order, dtype=torch.int64, device=images.device)
        if not use_cutmix:
            return images * lam + images[partner] * (1.0 - lam), Mix(partner, lam, "mixup")
        width, height = int(images.shape[2]), int(images.shape[3])
        ratio = math.sqrt(1.0 - lam)
        cut_w, cut_h = int(width * ratio), int(height * ratio)
        centre_w, centre_h = int(rng.integers(width)), int(rng.integers(height))
        w0, w1 = max(centre_w - cut_w // 2, 0), min(centre_w + cut_w // 2, width)
        h0, h1 = max(centre_h - cut_h // 2, 0), min(centre_h + cut_h // 2, height)
        mixed = images.clone()
        mixed[:, :, w0:w1, h0:h1] = images[partner, :, w0:w1, h0:h1]
        lam = 1.0 - (w1 - w0) * (h1 - h0) / float(width * height)
        return mixed, Mix(partner, lam, "cutmix", (w0, w1, h0, h1))


def mixed_loss(
    loss_fn: nn.Module, logits: torch.Tensor, labels: torch.Tensor, mix: Mix | None
) -> torch.Tensor:
    """``loss_fn`` of a batch whose targets are ``lam`` of ``labels`` and ``1 - lam`` of the
    partners' labels.

    For a cross-entropy with class weights ``w`` and label smoothing, ``lam * CE(y) +
    (1 - lam) * CE(y[partner])`` equals the soft-target cross-entropy
    ``sum_i sum_c w_c t_ic (-log p_ic) / sum_i w_{y_i}`` with ``t_i`` the ``lam``-mix of the
    two smoothed one-hot targets: the partners are a permutation of the batch, so both
    terms share the denominator ``sum_i w_{y_i}`` (the total weight of the mixed targets).
    Without a mix it is ``loss_fn(logits, labels)``, exactly.
    """
    if mix is None:
        return loss_fn(logits, labels)  # type: ignore[no-any-return]
    own = loss_fn(logits, labels)
    other = loss_fn(logits, labels[mix.partner])
    return own * mix.lam + other * (1.0 - mix.lam)  # type: ignore[no-any-return]


def make_ema(model: nn.Module, decay: float) -> AveragedModel:
    """An exponential moving average of ``model``'s weights and buffers (``optim.ema_decay``).

    ``torch.optim.swa_utils.AveragedModel`` with ``get_ema_multi_avg_fn``: a deep copy of
    the bare model (pass it unwrapped: no DDP or compile wrapper), updated in place by one
    fused ``lerp`` per device and dtype, whose first update copies the weights. Buffers
    (batch-norm statistics) are averaged too (``use_buffers=True``), so the average needs
    no extra pass over the data. ``ema.module`` is the averaged network: validate it, save
    its ``state_dict()``.

    Examples
    --------
    >>> ema = make_ema(nn.Linear(2, 1), decay=0.9)
    >>> int(ema.n_averaged)
    0
    """
    average = get_ema_multi_avg_fn(decay)  # type: ignore[no-untyped-call]
    return AveragedModel(model, multi_avg_fn=average, use_buffers=True)


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
    grad_clip: float = 0.0,
    ema: AveragedModel | None = None,
    mixer: BatchMixer | None = None,
) -> float:
    """Train for one pass over ``batches``; return the mean loss per sample.

    Each batch is a mapping with ``image`` (N, C, W, H) and ``label`` (N,). ``step_scheduler``
    runs after every optimizer step (one-cycle, warmup); per-epoch schedules are stepped by
    the caller. ``grad_clip`` above 0 clips the gradients' global norm to it before the step
    (after unscaling them when ``scaler`` is enabled). ``ema`` (from :func:`make_ema`) is
    updated from the bare model after every optimizer step. ``mixer`` mixes each batch on
    the device (see :class:`BatchMixer` and :func:`mixed_loss`). With all three left off the
    loop runs exactly the operations it always ran.
    """
    model.train()
    total, count = 0.0, 0
    non_blocking = device.type == "cuda"
    for batch in batches:
        images = batch["image"].to(device, non_blocking=non_blocking)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        labels = torch.as_tensor(batch["label"]).to(device, non_blocking=non_blocking)
        mix: Mix | None = None
        if mixer is not None:
            images, mix = mixer(images, labels)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            logits = model(images)
            loss = mixed_loss(loss_fn, logits.float(), labels, mix)
        if scaler is not None and scaler.is_enabled():
            scaler.scale(loss).backward()  # type: ignore[no-untyped-call]
            if grad_clip > 0:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()  # type: ignore[no-untyped-call]
            if grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
        if ema is not None:
            ema.update_parameters(unwrap_model(model))
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
