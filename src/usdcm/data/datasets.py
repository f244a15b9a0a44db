"""Datasets and loaders: cached preprocessed volumes, per-access augmentation, seeded loading.

Owns the items a split becomes, the cache (in memory with :class:`monai.data.CacheDataset`,
or on disk with :class:`monai.data.PersistentDataset`), the training and evaluation views of
it, class weighting, the data loaders and their per-epoch seeding. Tensors reaching the
network are ``(B, C * clip_frames, W, H)``: spatial axes in NIfTI order, column first, with
``(W, H)`` the reverse of the config's ``image_size`` ``[H, W]``. Never computes intensity
statistics and never decides splits.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from monai.data import (
    CacheDataset,
    DistributedSampler,
    DistributedWeightedRandomSampler,
    PersistentDataset,
    ThreadDataLoader,
    list_data_collate,
)
from monai.data import DataLoader as MonaiDataLoader
from torch.utils.data import DataLoader, Dataset, Sampler, WeightedRandomSampler

from usdcm.data.splits import Row, row_label
from usdcm.data.transforms import IMAGE_KEY, evaluation_frames, evaluation_starts
from usdcm.errors import ManifestError

Item = dict[str, Any]
"""One data item: ``{"image": str path or tensor, "label": int, "image_id": str}``."""

LoaderKind = Literal["thread", "torch"]

_SHOWN = 5


def dataset_items(
    rows: Sequence[Row],
    splits: Mapping[str, str],
    *,
    root: Path,
    labels: Mapping[str, int],
) -> dict[str, list[Item]]:
    """Turn manifest rows into data items, one list per split, in manifest order.

    Parameters
    ----------
    rows : sequence of mapping
        Manifest rows.
    splits : mapping of str to str
        ``{image_id: split}`` from :func:`usdcm.data.splits.assign_splits`; rows not in it
        (the unlabelled ones) are skipped.
    root : Path
        The manifest's folder: ``image_path`` is relative to it.
    labels : mapping of str to int
        From :func:`usdcm.data.splits.label_map`.

    Returns
    -------
    dict of str to list of dict
        ``{split: [{"image": absolute path str, "label": int, "image_id": str}, ...]}``
        with every split of ``splits`` present.

    Raises
    ------
    ManifestError
        If images are missing on disk or a label is not in ``labels``.
    """
    items: dict[str, list[Item]] = {split: [] for split in sorted(set(splits.values()))}
    missing: list[str] = []
    for row in rows:
        image_id = (row.get("image_id") or "").strip()
        split = splits.get(image_id)
        if split is None:
            continue
        label = row_label(row)
        if label not in labels:
            message = (
                f"Image {image_id} has label {label!r}, which is not among the classes "
                f"{sorted(labels)}; build the label map from the same manifest."
            )
            raise ManifestError(message)
        path = (root / row.get("image_path", "")).resolve()
        if not path.is_file():
            missing.append(str(path))
        items[split].append({IMAGE_KEY: str(path), "label": labels[label], "image_id": image_id})
    if missing:
        shown = ", ".join(missing[:_SHOWN])
        more = f" and {len(missing) - _SHOWN} more" if len(missing) > _SHOWN else ""
        message = (
            f"{len(missing)} images of the manifest are missing: {shown}{more}; "
            "re-run `usdcm ingest` into the manifest's folder."
        )
        raise ManifestError(message)
    return items


def _item_file_hash(item: Mapping[str, Any]) -> bytes:
    """Cache file name of an item: its content, plus the image file's size and mtime."""
    path = str(item[IMAGE_KEY])
    stat = os.stat(path)
    spec = {key: str(value) for key, value in sorted(item.items()) if isinstance(value, (str, int))}
    spec["_file"] = f"{stat.st_size}:{stat.st_mtime_ns}"
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode("utf-8")).hexdigest()
    return digest.encode("utf-8")


def build_cached_dataset(
    items: list[Item],
    transform: Callable[[Any], Any],
    *,
    cache_rate: float,
    persistent_cache_dir: str | Path | None,
    num_workers: int,
    cache_key: str | None = None,
) -> Dataset[Item]:
    """Cache the deterministic preprocessing of ``items``.

    In memory, a :class:`monai.data.CacheDataset` preprocesses the first
    ``int(len(items) * cache_rate)`` items once, at construction, with ``num_workers``
    threads; the rest are preprocessed on every access. Cached items are returned without a
    copy, so whatever reads them must not modify them in place (the views below never do).
    With ``persistent_cache_dir``, a :class:`monai.data.PersistentDataset` writes each
    preprocessed item to ``persistent_cache_dir/cache_key/`` on first access and reads it
    from there afterwards (for data larger than memory; ``cache_rate`` is then ignored). A
    cache file's name covers the item and the image file's size and modification time.

    Parameters
    ----------
    items : list of dict
        From :func:`dataset_items`.
    transform : callable
        Deterministic transforms, e.g. :func:`usdcm.data.transforms.preprocess_transforms`.
    cache_rate : float
        Fraction in ``(0, 1]`` of the items cached in memory.
    persistent_cache_dir : str or Path or None
        Folder of the on-disk cache; ``None`` or ``""`` caches in memory.
    num_workers : int
        Threads that fill the in-memory cache (at least 1 is used).
    cache_key : str, optional
        Required with ``persistent_cache_dir``:
        :func:`usdcm.data.transforms.preprocess_fingerprint` of the transform's settings.

    Returns
    -------
    torch.utils.data.Dataset
        Items ``{"image": (C, W, H, F) float32 tensor, "label": int, "image_id": str}``.
    """
    if not 0 < cache_rate <= 1:
        message = f"cache_rate is {cache_rate!r}; expected a fraction in (0, 1]."
        raise ValueError(message)
    if persistent_cache_dir:
        if not cache_key:
            message = (
                "An on-disk cache needs cache_key=preprocess_fingerprint(...), so that it is "
                "never reused after the preprocessing changed."
            )
            raise ValueError(message)
        return PersistentDataset(  # type: ignore[no-any-return]
            data=items,
            transform=transform,
            cache_dir=Path(persistent_cache_dir) / cache_key,
            hash_func=_item_file_hash,
        )
    return CacheDataset(  # type: ignore[no-any-return]
        data=items,
        transform=transform,
        cache_rate=cache_rate,
        num_workers=max(num_workers, 1),
        progress=False,
        copy_cache=False,
    )


def _nbytes(value: Any) -> int:
    if isinstance(value, torch.Tensor):
        return int(value.nelement() * value.element_size())
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if isinstance(value, Mapping):
        return sum(_nbytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_nbytes(v) for v in value)
    return 0


def cache_nbytes(dataset: Dataset[Any]) -> int:
    """Bytes of tensors held in memory by the cache under ``dataset`` (CPU or GPU).

    Looks through :class:`TrainFramesDataset` and :class:`EvalFramesDataset` to their
    ``base``. A :class:`monai.data.PersistentDataset` holds nothing in memory: 0.
    """
    base = getattr(dataset, "base", dataset)
    if isinstance(base, CacheDataset):
        return sum(_nbytes(entry) for entry in base._cache if entry is not None)
    return 0


def _labels_of(base: Dataset[Any]) -> list[int]:
    data = getattr(base, "data", None)
    if data is None:
        message = f"{type(base).__name__} has no .data list of items to read labels from."
        raise TypeError(message)
    return [int(item["label"]) for item in data]


class TrainFramesDataset(Dataset[Item]):
    """Training view of a cached dataset: a random frame or clip, augmented, per access.

    Parameters
    ----------
    base : torch.utils.data.Dataset
        From :func:`build_cached_dataset`: items with a ``(C, W, H, F)`` volume.
    transform : callable
        From :func:`usdcm.data.transforms.train_transforms`: takes ``{"image": volume}`` and
        has ``set_random_state(seed=...)``.

    Notes
    -----
    ``dataset[i]`` is ``{"image": float32 (C * clip_frames, W, H), "label": int,
    "image_id": str}``, a new tensor (the cached volume is only read). ``set_random_state``
    seeds the transforms; MONAI's loader worker initialisation and :func:`seed_epoch` call it.
    The augmentation runs per sample, in the loader's thread or workers, never per batch.
    """

    def __init__(self, base: Dataset[Item], transform: Callable[[Any], Any]) -> None:
        self.base = base
        self.transform = transform

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Item:
        item = self.base[index]
        image = self.transform({IMAGE_KEY: item[IMAGE_KEY]})[IMAGE_KEY]
        return {
            IMAGE_KEY: torch.as_tensor(image, dtype=torch.float32),
            "label": int(item["label"]),
            "image_id": str(item["image_id"]),
        }

    @property
    def labels(self) -> list[int]:
        """Class index of every item, in order (for :func:`weighted_sampler`)."""
        return _labels_of(self.base)

    def set_random_state(self, seed: int) -> TrainFramesDataset:
        """Seed the random transforms (their ``set_random_state``)."""
        self.transform.set_random_state(seed=seed)  # type: ignore[attr-defined]
        return self


class EvalFramesDataset(Dataset[Item]):
    """Evaluation view of a cached dataset: evenly spaced clips of every cine.

    ``dataset[i]`` is ``{"image": float32 (n', C * clip_frames, W, H), "label": int,
    "image_id": str, "frame_start": int64 (n',)}`` from
    :func:`usdcm.data.transforms.evaluation_frames`; ``n'`` varies with the cine's length,
    so batch it with :func:`collate_frames` (which :func:`make_loader` picks by default).

    Parameters
    ----------
    base : torch.utils.data.Dataset
        From :func:`build_cached_dataset`.
    n_frames : int
        Clips per cine at most (``data.eval_frames``).
    clip_frames : int
        Frames per clip (``data.clip_frames``).
    """

    def __init__(self, base: Dataset[Item], *, n_frames: int, clip_frames: int) -> None:
        self.base = base
        self.n_frames = n_frames
        self.clip_frames = clip_frames

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Item:
        item = self.base[index]
        volume = torch.as_tensor(item[IMAGE_KEY])
        starts = evaluation_starts(int(volume.shape[-1]), self.n_frames, self.clip_frames)
        return {
            IMAGE_KEY: evaluation_frames(volume, self.n_frames, self.clip_frames),
            "label": int(item["label"]),
            "image_id": str(item["image_id"]),
            "frame_start": torch.tensor(starts, dtype=torch.int64),
        }

    @property
    def labels(self) -> list[int]:
        """Class index of every item, in order."""
        return _labels_of(self.base)


def collate_frames(batch: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Batch :class:`EvalFramesDataset` items by concatenating their clips.

    Returns
    -------
    dict
        ``image`` ``(N, C * clip_frames, W, H)`` with ``N`` the clips of all ``B`` cines;
        ``clip_index`` ``(N,)`` int64, the cine (``0 .. B - 1``) of each clip;
        ``frame_start`` ``(N,)`` int64; ``label`` ``(B,)`` int64; ``image_id`` list of ``B``
        str. Average per cine with :func:`mean_per_clip`.
    """
    images = [item[IMAGE_KEY] for item in batch]
    clip_index = torch.cat(
        [torch.full((len(image),), i, dtype=torch.int64) for i, image in enumerate(images)]
    )
    return {
        IMAGE_KEY: torch.cat(images),
        "clip_index": clip_index,
        "frame_start": torch.cat([item["frame_start"] for item in batch]),
        "label": torch.tensor([int(item["label"]) for item in batch], dtype=torch.int64),
        "image_id": [str(item["image_id"]) for item in batch],
    }


def mean_per_clip(values: torch.Tensor, clip_index: torch.Tensor, n_clips: int) -> torch.Tensor:
    """Average per-frame ``values`` ``(N, K)`` into per-cine means ``(n_clips, K)``.

    >>> values = torch.tensor([[1.0], [3.0], [5.0]])
    >>> mean_per_clip(values, torch.tensor([0, 0, 1]), 2).flatten().tolist()
    [2.0, 5.0]
    """
    index = clip_index.to(values.device)
    sums = torch.zeros((n_clips, *values.shape[1:]), dtype=values.dtype, device=values.device)
    sums.index_add_(0, index, values)
    counts = torch.bincount(index, minlength=n_clips).clamp(min=1).to(values.dtype)
    return sums / counts.reshape(-1, *([1] * (values.ndim - 1)))


def class_weights(labels: Sequence[int], n_classes: int) -> torch.Tensor:
    """Inverse class frequencies, normalised to mean 1: ``(n_classes,)`` float32.

    For a weighted loss (``optim.class_weighting: loss``) on the training labels.

    Raises
    ------
    ValueError
        If a class has no example, or a label is outside ``0 .. n_classes - 1``.

    Examples
    --------
    >>> class_weights([0, 0, 0, 1], 2).tolist()
    [0.5, 1.5]
    """
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_classes)
    if counts.size != n_classes or (len(labels) and min(labels) < 0):
        message = f"Labels must lie in 0 .. {n_classes - 1}; found {sorted(set(labels))}."
        raise ValueError(message)
    empty = [index for index, count in enumerate(counts) if count == 0]
    if empty:
        message = (
            f"Class indices {empty} have no training examples; every class needs some "
            "(check the labels and the split)."
        )
        raise ValueError(message)
    inverse = 1.0 / counts.astype(np.float64)
    return torch.as_tensor(inverse / inverse.mean(), dtype=torch.float32)


def weighted_sampler(
    labels: Sequence[int],
    seed: int,
    *,
    n_classes: int | None = None,
    distributed: tuple[int, int] | None = None,
) -> Sampler[int]:
    """Sample items with replacement, each class equally likely (``class_weighting: sampler``).

    Each item weighs :func:`class_weights` of its label; an epoch draws ``len(labels)`` items
    (per rank: ``ceil(len / world_size)``). The sampler has its own seeded generator, which
    :func:`seed_epoch` re-seeds every epoch.

    Parameters
    ----------
    labels : sequence of int
        Class index of every item of the dataset, in order.
    seed : int
        Seed of the generator.
    n_classes : int, optional
        Number of classes; defaults to ``max(labels) + 1``.
    distributed : tuple of int, optional
        ``(rank, world_size)``: each rank draws from its own share of the items
        (:class:`monai.data.DistributedWeightedRandomSampler`, a ``DistributedSampler``).

    Returns
    -------
    torch.utils.data.Sampler
    """
    n = n_classes if n_classes is not None else max(labels, default=-1) + 1
    weights = class_weights(labels, n)[torch.as_tensor(list(labels), dtype=torch.int64)]
    generator = torch.Generator()
    generator.manual_seed(_derive_seed(seed, 0, 0, 1))
    if distributed is None:
        return WeightedRandomSampler(
            weights.tolist(), num_samples=len(labels), replacement=True, generator=generator
        )
    rank, world_size = distributed
    return DistributedWeightedRandomSampler(  # type: ignore[no-any-return]
        dataset=list(labels),
        weights=weights.tolist(),
        generator=generator,
        num_replicas=world_size,
        rank=rank,
        shuffle=True,
        seed=seed,
    )


def make_loader(
    dataset: Dataset[Any],
    *,
    batch_size: int,
    shuffle: bool,
    seed: int,
    num_workers: int,
    loader: LoaderKind,
    device: torch.device,
    sampler: Sampler[int] | None = None,
    distributed: tuple[int, int] | None = None,
    drop_last: bool = False,
    collate_fn: Callable[[Any], Any] | None = None,
    pin_memory: bool | None = None,
) -> DataLoader[Any]:
    """Build a seeded data loader; call :func:`seed_epoch` at the start of every epoch.

    Parameters
    ----------
    dataset : torch.utils.data.Dataset
        Usually :class:`TrainFramesDataset` or :class:`EvalFramesDataset`.
    batch_size : int
        Items per batch (cines per batch for evaluation).
    shuffle : bool
        Shuffle the items every epoch (ignored when ``sampler`` is given).
    seed : int
        Seed of the loader's generator, of the distributed shuffle and of the transforms.
    num_workers : int
        Worker processes; 0 loads in the main process (``"torch"``) or in one background
        thread (``"thread"``), which suits an in-memory cache best.
    loader : {"thread", "torch"}
        ``"thread"``: :class:`monai.data.ThreadDataLoader`, which prepares the next batch in
        a thread while the model runs. ``"torch"``: :class:`monai.data.DataLoader`, a torch
        ``DataLoader`` whose workers re-seed the transforms from the generator.
    device : torch.device
        Where batches go; memory is pinned for CUDA.
    sampler : torch.utils.data.Sampler, optional
        E.g. :func:`weighted_sampler`; with ``distributed`` it must be a
        ``DistributedSampler`` built for the same rank (``weighted_sampler(distributed=...)``).
    distributed : tuple of int, optional
        ``(rank, world_size)``: each rank gets its share through a ``DistributedSampler``
        (``shuffle``, ``seed`` and ``drop_last`` passed on). When shuffling (training) the
        shares are padded to equal length; without (evaluation) every item is seen once and
        shares may differ by one item.
    drop_last : bool, optional
        Drop the last incomplete batch.
    collate_fn : callable, optional
        Defaults to :func:`collate_frames` for :class:`EvalFramesDataset` and to MONAI's
        ``list_data_collate`` otherwise.
    pin_memory : bool, optional
        Defaults to ``device.type == "cuda"``; pass ``False`` when the cache is on the GPU.

    Returns
    -------
    torch.utils.data.DataLoader
        Training batches: ``{"image": (B, C * clip_frames, W, H) float32, "label": (B,) int64,
        "image_id": list of str}``; evaluation batches: see :func:`collate_frames`.
    """
    if loader not in ("thread", "torch"):
        message = f"loader is {loader!r}; expected 'thread' or 'torch'."
        raise ValueError(message)
    if batch_size < 1 or num_workers < 0:
        message = f"batch_size {batch_size} must be >= 1 and num_workers {num_workers} >= 0."
        raise ValueError(message)
    if distributed is not None:
        rank, world_size = distributed
        if not 0 <= rank < world_size:
            message = f"distributed is {distributed!r}; expected (rank, world_size), rank < size."
            raise ValueError(message)
        if sampler is None:
            sampler = DistributedSampler(
                dataset,
                even_divisible=shuffle,
                num_replicas=world_size,
                rank=rank,
                shuffle=shuffle,
                seed=seed,
                drop_last=drop_last,
            )
        elif not isinstance(sampler, torch.utils.data.DistributedSampler):
            message = (
                f"A {type(sampler).__name__} cannot be used with distributed={distributed}; "
                "build it with weighted_sampler(..., distributed=(rank, world_size))."
            )
            raise ValueError(message)
    if collate_fn is None:
        collate_fn = collate_frames if isinstance(dataset, EvalFramesDataset) else list_data_collate
    generator = torch.Generator()
    generator.manual_seed(_derive_seed(seed, 0, 0, 0))
    kwargs: dict[str, Any] = {
        "batch_size": batch_size,
        "shuffle": shuffle if sampler is None else False,
        "sampler": sampler,
        "num_workers": num_workers,
        "collate_fn": collate_fn,
        "pin_memory": device.type == "cuda" if pin_memory is None else pin_memory,
        "drop_last": drop_last,
        "generator": generator,
    }
    if loader == "thread":
        result: DataLoader[Any] = ThreadDataLoader(dataset, buffer_size=1, **kwargs)
    else:
        result = MonaiDataLoader(dataset, **kwargs)
    seed_epoch(result, seed=seed, epoch=0)
    return result


def _derive_seed(seed: int, epoch: int, rank: int, stream: int) -> int:
    """An independent 32-bit seed for one (seed, epoch, rank, stream)."""
    sequence = np.random.SeedSequence([seed % 2**63, epoch, rank, stream])
    return int(sequence.generate_state(1, dtype=np.uint32)[0])


def seed_epoch(loader: DataLoader[Any], *, seed: int, epoch: int) -> int:
    """Re-seed everything random in ``loader`` for ``epoch``, from ``(seed, epoch)`` alone.

    Sets the loader's generator (shuffle order and worker seeds), the sampler (a
    ``DistributedSampler``'s epoch, a weighted sampler's generator) and the dataset's random
    transforms (``dataset.set_random_state``). Call it at the start of every epoch, before
    iterating: an epoch then draws the same items and the same augmentations whether the run
    went through the earlier epochs or resumed at this one. The draws do depend on the
    loader kind, ``num_workers`` and the rank, which a resumed run must keep.

    Returns
    -------
    int
        The epoch's seed of the transforms (for the log).
    """
    sampler = loader.sampler
    rank = int(getattr(sampler, "rank", 0))
    if loader.generator is not None:
        loader.generator.manual_seed(_derive_seed(seed, epoch, rank, 0))
    if isinstance(sampler, torch.utils.data.DistributedSampler):
        sampler.set_epoch(epoch)
    sampler_generator = getattr(sampler, "generator", None)
    if isinstance(sampler_generator, torch.Generator) and sampler_generator is not loader.generator:
        sampler_generator.manual_seed(_derive_seed(seed, epoch, rank, 1))
    transform_seed = _derive_seed(seed, epoch, rank, 2)
    set_random_state = getattr(loader.dataset, "set_random_state", None)
    if callable(set_random_state):
        set_random_state(transform_seed)
    return transform_seed
