"""The data side of a training run: splits, intensity statistics, caches and loaders.

Owns turning labelled manifest rows into this process's training and validation loaders
(its share of each under DDP). Writes ``splits.csv`` (rank 0) and nothing else; never
builds a model and never reads the test split's images.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from usdcm.config import TrainConfig
from usdcm.data.datasets import (
    EvalFramesDataset,
    TrainFramesDataset,
    build_cached_dataset,
    cache_nbytes,
    dataset_items,
    make_loader,
    weighted_sampler,
)
from usdcm.data.normalization import IntensityStats, compute_stats
from usdcm.data.splits import assign_splits, check_leakage, write_splits
from usdcm.data.transforms import preprocess_fingerprint, preprocess_transforms, train_transforms
from usdcm.errors import TrainingError
from usdcm.training.distributed import DistContext


@dataclass
class RunData:
    """What the training loop needs from the data, for this process."""

    n_images: dict[str, int]
    channels: int
    stats: IntensityStats
    train_labels: list[int]
    train_loader: DataLoader[Any]
    val_loader: DataLoader[Any]
    cache_bytes: int


def prepare_data(
    rows: Sequence[Mapping[str, str]],
    labels: dict[str, int],
    *,
    root: Path,
    config: TrainConfig,
    context: DistContext,
    device: torch.device,
    run_dir: Path,
    logger: logging.Logger,
    splits: Mapping[str, str] | None = None,
) -> RunData:
    """Split ``rows``, measure the training statistics, cache, and build the loaders.

    Every process computes the same split and statistics (both are deterministic), caches
    the whole train and validation splits, and iterates its own share through a
    ``DistributedSampler``; a single process is rank 0 of 1, so it sees the same global
    batches as N processes do together. ``splits`` fixes the split (one fold of a
    cross-validated run); it is leak-checked like a computed one.
    """
    seed = config.runtime.seed
    if splits is None:
        splits = assign_splits(
            rows,
            val_fraction=config.split.val_fraction,
            test_fraction=config.split.test_fraction,
            seed=config.split.seed,
        )
    else:
        check_leakage(rows, splits)
    items = dataset_items(rows, splits, root=root, labels=labels)
    train_items, val_items = items.get("train", []), items.get("val", [])
    if not train_items or not val_items:
        message = (
            f"The split has {len(train_items)} training and {len(val_items)} validation "
            "images; both need at least one. Add data or change split.val_fraction."
        )
        raise TrainingError(message)
    if context.is_main:
        write_splits(run_dir / "splits.csv", rows, splits)
    n_images = {name: len(values) for name, values in sorted(items.items())}
    logger.info("classes %s", labels)
    logger.info("images per split %s (the test split is never read here)", n_images)

    channels = int(rows[0].get("channels") or 1)
    norm = config.data.normalization
    stats = compute_stats(
        [item["image"] for item in train_items],
        mode=norm.mode,
        lower_percentile=norm.lower_percentile,
        upper_percentile=norm.upper_percentile,
        sample_images=norm.sample_images,
        seed=seed,
    )
    logger.info("intensity normalization %s (from the training split)", stats.to_dict())
    on_gpu_cache = config.data.cache_on_device and device.type == "cuda"
    preprocess = preprocess_transforms(
        config.data.image_size,
        stats,
        channels,
        cache_device=device if on_gpu_cache else None,
    )
    cache_options: dict[str, Any] = {
        "cache_rate": config.data.cache_rate,
        "persistent_cache_dir": config.data.persistent_cache_dir or None,
        "num_workers": config.data.num_workers,
        "cache_key": preprocess_fingerprint(config.data.image_size, stats, channels),
    }
    train_cache = build_cached_dataset(train_items, preprocess, **cache_options)
    val_cache = build_cached_dataset(val_items, preprocess, **cache_options)
    cache_bytes = cache_nbytes(train_cache) + cache_nbytes(val_cache)
    logger.info(
        "cache holds %.1f MB (%s, cache_rate %.2f)",
        cache_bytes / 1e6,
        "GPU" if on_gpu_cache else "RAM",
        config.data.cache_rate,
    )

    clip_frames = config.data.clip_frames
    train_set = TrainFramesDataset(train_cache, train_transforms(config.augment, clip_frames))
    val_set = EvalFramesDataset(
        val_cache, n_frames=config.data.eval_frames, clip_frames=clip_frames
    )
    shard = (context.rank, context.world_size)
    per_rank_batch = max(config.optim.batch_size // context.world_size, 1)
    train_labels = train_set.labels
    loader_options: dict[str, Any] = {
        "seed": seed,
        "num_workers": 0 if on_gpu_cache else config.data.num_workers,
        "loader": config.data.loader,
        "device": device,
        "distributed": shard,
        "pin_memory": False if on_gpu_cache else None,
    }
    sampler = None
    if config.optim.class_weighting == "sampler":
        sampler = weighted_sampler(train_labels, seed, n_classes=len(labels), distributed=shard)
    train_loader = make_loader(
        train_set, batch_size=per_rank_batch, shuffle=True, sampler=sampler, **loader_options
    )
    val_loader = make_loader(
        val_set, batch_size=max(per_rank_batch // 4, 1), shuffle=False, **loader_options
    )
    return RunData(
        n_images=n_images,
        channels=channels,
        stats=stats,
        train_labels=train_labels,
        train_loader=train_loader,
        val_loader=val_loader,
        cache_bytes=cache_bytes,
    )
