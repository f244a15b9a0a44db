"""A training run: manifest in, run folder out, reproducible and resumable.

Owns the run folder::

    RUN/config.yaml     the resolved config
    RUN/splits.csv      image -> train/val/test (the test split is never used here)
    RUN/metrics.jsonl   one line per epoch: train loss, validation loss, AUC, balanced accuracy
    RUN/best.pt         the checkpoint with the best validation AUC
    RUN/last.pt         the checkpoint after the last finished epoch (for --resume)

With ``optim.ema_decay`` the network validated, and saved as ``model_state`` in both
checkpoints, is the exponential moving average of the weights; ``last.pt`` adds the trained
weights (``train_model_state``) for resuming.
    RUN/train.log       what happened, without patient identifiers

Only rank 0 writes. Every epoch re-seeds every random stream from (seed, epoch), so a run
resumed from ``last.pt`` ends exactly where an uninterrupted run ends.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from usdcm.artifacts.manifest import read_manifest
from usdcm.atomic import atomic_write_text
from usdcm.config import TrainConfig, dump_config
from usdcm.data.datasets import class_weights, seed_epoch
from usdcm.data.splits import label_map, labelled_rows
from usdcm.data.transforms import spatial_size
from usdcm.errors import TrainingError
from usdcm.models.factory import build_model
from usdcm.models.weights import apply_weights
from usdcm.runtime.checkpoint import (
    load_checkpoint,
    package_versions,
    save_checkpoint,
    sha256_file,
    unwrap_model,
)
from usdcm.runtime.device import (
    amp_policy,
    autocast,
    configure_backends,
    describe_device,
    make_grad_scaler,
    maybe_compile,
    select_device,
    to_channels_last,
)
from usdcm.runtime.predict import predict_clips
from usdcm.training.data import RunData, prepare_data
from usdcm.training.distributed import (
    DistContext,
    all_gather_objects,
    all_reduce_mean,
    barrier,
    cleanup,
    context_from_env,
    init_distributed,
)
from usdcm.training.engine import BatchMixer, classification_metrics, make_ema, train_one_epoch
from usdcm.training.progress import NoProgress, TrainingProgress

__all__ = ["EpochRecord", "TrainResult", "TrainingError", "train"]

LOGGER_NAME = "usdcm.train"


@dataclass
class EpochRecord:
    """One line of ``metrics.jsonl``."""

    epoch: int
    train_loss: float
    val_loss: float
    val_auc: float
    val_balanced_accuracy: float
    lr: float
    seconds: float
    best: bool = False

    def to_json(self) -> str:
        values = {
            key: (None if isinstance(value, float) and math.isnan(value) else value)
            for key, value in self.__dict__.items()
        }
        return json.dumps(values, sort_keys=False)


@dataclass
class TrainResult:
    """What a run produced."""

    run_dir: Path
    epochs: list[EpochRecord] = field(default_factory=list)
    best_epoch: int = -1
    best_auc: float = float("nan")
    stopped_early: bool = False
    stopped_at_time_limit: bool = False
    """Stopped because the next epoch would have ended past ``optim.time_limit_s``."""
    n_images: dict[str, int] = field(default_factory=dict)
    cache_bytes: int = 0
    device: str = ""
    seconds: float = 0.0
    is_main: bool = True


def _open_log(run_dir: Path, is_main: bool) -> logging.Logger:
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    if is_main:
        handler = logging.FileHandler(run_dir / "train.log", encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
    else:
        logger.addHandler(logging.NullHandler())
    return logger


def _read_metrics(path: Path, before_epoch: int) -> list[EpochRecord]:
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        values = json.loads(line)
        values = {k: (float("nan") if v is None else v) for k, v in values.items()}
        record = EpochRecord(**values)
        if record.epoch < before_epoch:
            records.append(record)
    return records


def _warmup_factor(step: int, *, warmup_steps: int, total_steps: int, cosine: bool) -> float:
    """Learning-rate factor of optimizer step ``step`` (0-based) under a linear warmup.

    Rises linearly over ``warmup_steps`` (``(step + 1) / warmup_steps``, so the first step
    already learns and the last warmup step runs at the full rate), then stays at 1, or
    with ``cosine`` decays as a half cosine to 0 at ``total_steps``.

    >>> [round(_warmup_factor(s, warmup_steps=2, total_steps=6, cosine=True), 3)
    ...  for s in range(6)]
    [0.5, 1.0, 1.0, 0.854, 0.5, 0.146]
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if not cosine:
        return 1.0
    done = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
    return 0.5 * (1.0 + math.cos(math.pi * min(done, 1.0)))


def _scheduler(
    optimizer: Any, config: TrainConfig, steps_per_epoch: int
) -> tuple[Any | None, bool]:
    """The learning-rate schedule and whether it steps per batch (True) or per epoch.

    ``optim.warmup_epochs`` above 0 makes every schedule step per batch: a linear warmup
    over those epochs, then the cosine's decay to 0 over the remaining ones (cosine), the
    full rate (none), or, for one-cycle, its own ramp lasting the warmup (``pct_start``).
    Without warmup the schedules are those of earlier versions, step for step.
    """
    schedule = config.optim.schedule
    warmup = config.optim.warmup_epochs
    if warmup > 0:
        steps = max(steps_per_epoch, 1)
        if schedule == "onecycle":
            return torch.optim.lr_scheduler.OneCycleLR(
                optimizer,
                max_lr=config.optim.lr,
                epochs=config.optim.epochs,
                steps_per_epoch=steps,
                pct_start=warmup / config.optim.epochs,
            ), True
        factor = functools.partial(
            _warmup_factor,
            warmup_steps=warmup * steps,
            total_steps=config.optim.epochs * steps,
            cosine=schedule == "cosine",
        )
        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor), True
    if schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=config.optim.epochs
        ), False
    if schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=config.optim.lr,
            epochs=config.optim.epochs,
            steps_per_epoch=max(steps_per_epoch, 1),
        ), True
    return None, False


def _loss_function(
    config: TrainConfig, train_labels: list[int], n_classes: int, device: torch.device
) -> nn.Module:
    """Cross-entropy, weighted by inverse class frequency (``optim.class_weighting: loss``)
    and with ``optim.label_smoothing``."""
    weight = None
    if config.optim.class_weighting == "loss":
        weight = class_weights(train_labels, n_classes).to(device)
    return nn.CrossEntropyLoss(weight=weight, label_smoothing=config.optim.label_smoothing)


def _batch_mixer(config: TrainConfig, seed: int, epoch: int, rank: int) -> BatchMixer | None:
    """The epoch's mixup/cutmix, from its own generator seeded by (seed, epoch, rank).

    None when both alphas are 0. Its own stream, re-seeded every epoch, so a resumed run
    mixes as an uninterrupted one did, and dropout's global stream is untouched.
    """
    augment = config.augment
    if augment.mixup_alpha == 0 and augment.cutmix_alpha == 0:
        return None
    import numpy as np

    rng = np.random.default_rng(np.random.SeedSequence([seed % 2**63, epoch, rank, 11]))
    return BatchMixer(augment.mixup_alpha, augment.cutmix_alpha, rng)


def _ema_resume_state(network: nn.Module, ema: AveragedModel | None) -> dict[str, Any]:
    """What ``last.pt`` needs besides ``model_state`` (the EMA's) to resume with an EMA."""
    if ema is None:
        return {}
    return {
        "train_model_state": unwrap_model(network).state_dict(),
        "ema_updates": int(ema.n_averaged),
    }


def _epoch_seed(seed: int, epoch: int) -> int:
    """Seed of torch's global generator (dropout) for one epoch."""
    import numpy as np

    sequence = np.random.SeedSequence([seed % 2**63, epoch, 7])
    return int(sequence.generate_state(1, dtype=np.uint32)[0])


def _restore(
    last_path: Path,
    manifest_sha: str,
    parts: dict[str, Any],
    device: torch.device,
) -> tuple[int, float, int, int]:
    """Load ``last.pt`` into the model, EMA, optimizer, scheduler and scaler of ``parts``.

    With an EMA, ``last.pt``'s ``model_state`` is the EMA's (what was validated) and the
    trained weights are ``train_model_state``; ``ema_updates`` restores its count.

    Returns the epoch to start at, the best AUC and epoch so far, and the stale epochs.
    """
    state = load_checkpoint(last_path, map_location=device)
    if state.get("manifest_sha256") != manifest_sha:
        message = (
            f"{last_path} was trained on another manifest (sha256 differs); resume with the "
            "same manifest, or start a new run folder."
        )
        raise TrainingError(message)
    parts["model"].load_state_dict(state.get("train_model_state", state["model_state"]))
    ema = parts.get("ema")
    if ema is not None and "ema_updates" in state:
        ema.module.load_state_dict(state["model_state"])
        ema.n_averaged.fill_(int(state["ema_updates"]))
    parts["optimizer"].load_state_dict(state["optimizer_state"])
    if parts["scheduler"] is not None and state.get("scheduler_state"):
        parts["scheduler"].load_state_dict(state["scheduler_state"])
    if state.get("scaler_state"):
        parts["scaler"].load_state_dict(state["scaler_state"])
    return (
        int(state["epoch"]) + 1,
        float(state["best_auc"]),
        int(state["best_epoch"]),
        int(state["stale_epochs"]),
    )


def _checkpoint_base(
    config: TrainConfig,
    labels: dict[str, int],
    data: RunData,
    manifest_path: Path,
    manifest_sha: str,
    command: str | None,
) -> dict[str, Any]:
    """What every checkpoint of the run holds besides its weights and epoch.

    ``command`` is the command line that started the run, as the caller passed it; None
    means it was not recorded (the library never reads ``sys.argv``).
    """
    return {
        "config": config.to_dict(),
        "label_map": dict(labels),
        "normalization": data.stats.to_dict(),
        "input_size": list(config.data.image_size),
        "in_channels": data.channels,
        "manifest_sha256": manifest_sha,
        "manifest_path": str(manifest_path),
        "command": command,
        "versions": package_versions(),
    }


def _labelled_classes(manifest_path: Path) -> tuple[list[Mapping[str, str]], dict[str, int]]:
    rows = labelled_rows(read_manifest(manifest_path))
    labels = label_map(rows)
    if len(labels) < 2:
        message = (
            f"The manifest {manifest_path} has {len(rows)} labelled images in "
            f"{len(labels)} class(es); training needs at least two classes. "
            "Pass --labels to `usdcm ingest`, or fill the label column."
        )
        raise TrainingError(message)
    return rows, labels


def train(
    manifest_path: Path,
    config: TrainConfig,
    run_dir: Path,
    *,
    resume: bool = False,
    on_epoch: Callable[[EpochRecord], None] | None = None,
    progress: TrainingProgress | None = None,
    command: str | None = None,
    splits: Mapping[str, str] | None = None,
) -> TrainResult:
    """Train on ``manifest_path`` with ``config`` into ``run_dir``; see the module docstring.

    Works the same in one process and under ``torchrun`` (DDP): the distributed context
    comes from the environment torchrun sets. A single process uses the same sampler as
    rank 0 of a one-process group, so that N processes see, step by step, the same global
    batches as one process does.

    ``progress`` gets one phase per epoch (``"epoch N"``, a step per training and validation
    batch) on rank 0; None shows nothing. ``command`` is the exact command line to record in
    the checkpoints (the CLI builds it with ``shlex.join(["usdcm", *args])``); None records
    that it is unknown. ``splits`` (``{image_id: "train" | "val" | "test"}``) fixes the
    split instead of computing it from ``config.split`` (one fold of a cross-validated
    run, :func:`usdcm.training.folds.train_folds`); it is leak-checked all the same.

    Raises
    ------
    TrainingError
        Too few classes or images, or ``resume`` without a usable ``last.pt``.
    """
    started = time.perf_counter()
    manifest_path = manifest_path.resolve()
    rows, labels = _labelled_classes(manifest_path)
    last_path = run_dir / "last.pt"
    if resume and not last_path.is_file():
        message = f"--resume needs {last_path}, which does not exist; drop --resume to start anew."
        raise TrainingError(message)

    device = select_device(config.runtime.device, local_rank=context_from_env().local_rank)
    context = init_distributed(device.type)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        logger = _open_log(run_dir, context.is_main)
        seed = config.runtime.seed
        configure_backends(device, deterministic=config.runtime.deterministic, seed=seed)
        policy = amp_policy(device, requested=config.runtime.amp)
        logger.info(
            "device %s, world size %d, amp %s", describe_device(device), context.world_size, policy
        )
        data = prepare_data(
            rows,
            labels,
            root=manifest_path.parent,
            config=config,
            context=context,
            device=device,
            run_dir=run_dir,
            logger=logger,
            splits=splits,
        )
        if context.is_main:
            atomic_write_text(run_dir / "config.yaml", dump_config(config))

        n_classes = len(labels)
        model: nn.Module = build_model(
            config.model.name,
            in_channels=data.channels * config.data.clip_frames,
            num_classes=n_classes,
            image_size=spatial_size(config.data.image_size),  # (W, H), as the loader stacks
            dropout=config.model.dropout,
        ).to(device)
        in_channels = data.channels * config.data.clip_frames
        weights = apply_weights(model, config.model.name, config.model.weights, in_channels)
        logger.info("starting weights: %s (%s)", weights.source, "; ".join(weights.notes))
        model = to_channels_last(model, config.runtime.channels_last)
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=config.optim.lr, weight_decay=config.optim.weight_decay
        )
        scheduler, per_step = _scheduler(optimizer, config, len(data.train_loader))
        scaler = make_grad_scaler(policy, device)
        loss_fn = _loss_function(config, data.train_labels, n_classes, device)
        ema = make_ema(model, config.optim.ema_decay) if config.optim.ema_decay > 0 else None

        manifest_sha = sha256_file(manifest_path)
        start_epoch, best_auc, best_epoch, stale = 0, float("nan"), -1, 0
        if resume:
            parts = {"model": model, "optimizer": optimizer, "scheduler": scheduler}
            parts["scaler"] = scaler
            parts["ema"] = ema
            start_epoch, best_auc, best_epoch, stale = _restore(
                last_path, manifest_sha, parts, device
            )
            logger.info("resumed from %s after epoch %d", last_path, start_epoch - 1)

        network = maybe_compile(model, config.runtime.compile)
        if context.is_distributed:
            from torch.nn.parallel import DistributedDataParallel

            device_ids = [device.index] if device.type == "cuda" else None
            network = DistributedDataParallel(network, device_ids=device_ids)

        def run_autocast() -> Any:
            return autocast(policy, device)

        payload_base = _checkpoint_base(config, labels, data, manifest_path, manifest_sha, command)
        payload_base["weights"] = weights.to_dict()  # source and SHA-256 of the start weights
        metrics_path = run_dir / "metrics.jsonl"
        result = TrainResult(
            run_dir=run_dir,
            n_images=data.n_images,
            cache_bytes=data.cache_bytes,
            device=describe_device(device),
            is_main=context.is_main,
        )
        result.epochs = _read_metrics(metrics_path, start_epoch) if resume else []
        result.best_epoch, result.best_auc = best_epoch, best_auc
        train_loader, val_loader = data.train_loader, data.val_loader
        bar: TrainingProgress = (
            progress if progress is not None and context.is_main else NoProgress()
        )
        last_epoch_s = 0.0
        for epoch in range(start_epoch, config.optim.epochs):
            if stale >= config.optim.patience:
                result.stopped_early = True
                break
            if _past_time_limit(context, config.optim.time_limit_s, started, last_epoch_s):
                result.stopped_at_time_limit = True
                logger.info(
                    "stopped before epoch %d: it would end past the time limit of %.0f s",
                    epoch,
                    config.optim.time_limit_s,
                )
                break
            epoch_started = time.perf_counter()
            torch.manual_seed(_epoch_seed(seed, epoch))
            seed_epoch(train_loader, seed=seed, epoch=epoch)
            bar.phase(f"epoch {epoch + 1}", len(train_loader) + len(val_loader))
            train_loss = train_one_epoch(
                network,
                train_loader,
                loss_fn=loss_fn,
                optimizer=optimizer,
                device=device,
                autocast=run_autocast,
                scaler=scaler,
                step_scheduler=scheduler.step if per_step and scheduler else None,
                channels_last=config.runtime.channels_last,
                on_batch=lambda _n: bar.advance(1),
                grad_clip=config.optim.grad_clip,
                ema=ema,
                mixer=_batch_mixer(config, seed, epoch, context.rank),
            )
            lr = float(optimizer.param_groups[0]["lr"])
            if scheduler is not None and not per_step:
                scheduler.step()
            train_loss = all_reduce_mean(context, train_loss)
            local = predict_clips(
                network if ema is None else ema.module,
                val_loader,
                device=device,
                autocast=run_autocast,
                channels_last=config.runtime.channels_last,
                on_batch=lambda _n: bar.advance(1),
                tta_flip=config.data.tta_flip,
            )
            gathered = all_gather_objects(context, local)
            predictions = gathered[0].merged(gathered[1:])
            metrics = classification_metrics(predictions, n_classes)
            auc = metrics["auc"]
            improved = best_epoch < 0 or (
                not math.isnan(auc) and (math.isnan(best_auc) or auc > best_auc)
            )
            if improved:
                best_auc, best_epoch, stale = auc, epoch, 0
            else:
                stale += 1
            record = EpochRecord(
                epoch=epoch,
                train_loss=train_loss,
                val_loss=metrics["loss"],
                val_auc=auc,
                val_balanced_accuracy=metrics["balanced_accuracy"],
                lr=lr,
                seconds=time.perf_counter() - epoch_started,
                best=improved,
            )
            last_epoch_s = record.seconds
            if context.is_main:
                # model_state is the network validated (the EMA's when there is one)
                validated = unwrap_model(network) if ema is None else ema.module
                payload = {
                    **payload_base,
                    "model_state": validated.state_dict(),
                    "epoch": epoch,
                    "val_auc": auc,
                    "val_balanced_accuracy": metrics["balanced_accuracy"],
                    # this epoch's validation probabilities: a fold's out-of-fold predictions
                    "val_predictions": {
                        "image_ids": list(predictions.image_ids),
                        "probabilities": predictions.probabilities.tolist(),
                    },
                }
                if improved:
                    save_checkpoint(run_dir / "best.pt", payload)
                save_checkpoint(
                    last_path,
                    {
                        **payload,
                        "optimizer_state": optimizer.state_dict(),
                        "scheduler_state": scheduler.state_dict() if scheduler else {},
                        "scaler_state": scaler.state_dict(),
                        "best_auc": best_auc,
                        "best_epoch": best_epoch,
                        "stale_epochs": stale,
                        **_ema_resume_state(network, ema),
                    },
                )
                _append_metrics(metrics_path, record, epoch)
            logger.info("epoch %s", record.to_json())
            barrier(context)
            result.epochs.append(record)
            if on_epoch is not None:
                on_epoch(record)
        result.best_epoch, result.best_auc = best_epoch, best_auc
        result.seconds = time.perf_counter() - started
        logger.info(
            "best epoch %d, validation AUC %.4f, %.1f s", best_epoch, best_auc, result.seconds
        )
        return result
    finally:
        cleanup()


def _past_time_limit(
    context: DistContext, limit_s: float, started: float, last_epoch_s: float
) -> bool:
    """Whether an epoch as long as the last one would end past ``limit_s`` seconds after
    ``started``; never before the first epoch of this process, and never with no limit.

    Every process decides on the mean of their clocks, so that all stop at the same epoch.
    """
    if limit_s <= 0 or last_epoch_s <= 0:
        return False
    elapsed = all_reduce_mean(context, time.perf_counter() - started)
    return elapsed + all_reduce_mean(context, last_epoch_s) > limit_s


def _append_metrics(path: Path, record: EpochRecord, epoch: int) -> None:
    """Rewrite ``metrics.jsonl`` atomically with the lines of earlier epochs plus ``record``.

    Lines of epoch ``>= epoch`` (left by a run killed after writing them but before its
    checkpoint) are dropped, so a resumed run never holds an epoch twice.
    """
    kept = [r.to_json() for r in _read_metrics(path, epoch)]
    atomic_write_text(path, "\n".join([*kept, record.to_json()]) + "\n")
