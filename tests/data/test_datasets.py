"""Datasets and loaders on a real ingested export: caching, batches, seeding, sampling."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch
from tests.conftest import Ingested
from torch.utils.data import WeightedRandomSampler

from usdcm.config import AugmentConfig
from usdcm.data.datasets import (
    EvalFramesDataset,
    Item,
    TrainFramesDataset,
    build_cached_dataset,
    cache_nbytes,
    class_weights,
    collate_frames,
    dataset_items,
    make_loader,
    mean_per_clip,
    seed_epoch,
    weighted_sampler,
)
from usdcm.data.normalization import IntensityStats
from usdcm.data.splits import assign_splits, label_map
from usdcm.data.transforms import preprocess_fingerprint, preprocess_transforms, train_transforms
from usdcm.errors import ManifestError

IMAGE_SIZE = [24, 32]  # [H, W]: tensors are (C, 32, 24, F)
STATS = IntensityStats("percentile", lower=0.0, upper=200.0, mean=70.0, std=40.0)
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def all_items(ingested_export: Ingested) -> list[Item]:
    """Every labelled image of the export, as one list of items (manifest order)."""
    rows = ingested_export.rows
    splits = dict.fromkeys((row["image_id"] for row in rows if row["label"]), "train")
    items = dataset_items(rows, splits, root=ingested_export.root, labels=label_map(rows))
    return items["train"]


@pytest.fixture(scope="module")
def cached(all_items: list[Item]) -> Any:
    """All items cached in memory."""
    return build_cached_dataset(
        all_items,
        preprocess_transforms(IMAGE_SIZE, STATS),
        cache_rate=1.0,
        persistent_cache_dir=None,
        num_workers=2,
    )


def test_items_follow_the_splits_with_absolute_paths_and_class_indices(
    ingested_export: Ingested,
) -> None:
    rows = ingested_export.rows
    splits = assign_splits(rows, val_fraction=0.2, test_fraction=0.2, seed=0)
    labels = label_map(rows)
    items = dataset_items(rows, splits, root=ingested_export.root, labels=labels)
    assert sorted(items) == ["test", "train", "val"]
    assert sum(len(split_items) for split_items in items.values()) == len(splits)
    for split, split_items in items.items():
        for item in split_items:
            assert Path(item["image"]).is_absolute() and Path(item["image"]).is_file()
            assert splits[item["image_id"]] == split
            assert item["label"] in labels.values()


def test_missing_images_are_refused(ingested_export: Ingested, tmp_path: Path) -> None:
    rows = ingested_export.rows
    splits = dict.fromkeys((row["image_id"] for row in rows), "train")
    with pytest.raises(ManifestError, match=rf"{len(rows)} images of the manifest are missing"):
        dataset_items(rows, splits, root=tmp_path, labels=label_map(rows))


def test_cache_holds_every_frame_of_every_image(ingested_export: Ingested, cached: Any) -> None:
    frames = {row["image_id"]: int(row["frames"]) for row in ingested_export.rows}
    expected_bytes = 0
    for index in range(len(cached)):
        item = cached[index]
        n_frames = frames[item["image_id"]]
        assert item["image"].shape == (1, 32, 24, n_frames)
        assert item["image"].dtype == torch.float32
        expected_bytes += 4 * 32 * 24 * n_frames
    assert len(cached._cache) == len(cached)
    assert cache_nbytes(cached) == expected_bytes > 0
    train = TrainFramesDataset(cached, train_transforms(AugmentConfig(), 1))
    assert cache_nbytes(train) == expected_bytes


def test_partial_cache_holds_about_half(all_items: list[Item], cached: Any) -> None:
    half = build_cached_dataset(
        all_items,
        preprocess_transforms(IMAGE_SIZE, STATS),
        cache_rate=0.5,
        persistent_cache_dir=None,
        num_workers=1,
    )
    n_cached = len(all_items) // 2
    assert len(half._cache) == n_cached
    assert cache_nbytes(half) == sum(cached[i]["image"].nbytes for i in range(n_cached))
    last = len(all_items) - 1  # not cached: computed on access, same result
    assert torch.equal(half[last]["image"], cached[last]["image"])


def test_persistent_cache_writes_files_and_reads_them_back(
    all_items: list[Item], cached: Any, tmp_path: Path
) -> None:
    key = preprocess_fingerprint(IMAGE_SIZE, STATS, 1)
    items = all_items[:3]

    def build() -> Any:
        return build_cached_dataset(
            items,
            preprocess_transforms(IMAGE_SIZE, STATS),
            cache_rate=1.0,
            persistent_cache_dir=str(tmp_path / "cache"),
            num_workers=1,
            cache_key=key,
        )

    first = build()
    assert [first[i]["image_id"] for i in range(3)] == [item["image_id"] for item in items]
    files = sorted((tmp_path / "cache" / key).glob("*.pt"))
    assert len(files) == 3
    assert cache_nbytes(first) == 0
    mtimes = [file.stat().st_mtime_ns for file in files]
    second = build()
    for i in range(3):
        assert torch.equal(second[i]["image"], cached[i]["image"])
    assert [file.stat().st_mtime_ns for file in files] == mtimes


def test_persistent_cache_needs_a_key(all_items: list[Item], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cache_key=preprocess_fingerprint"):
        build_cached_dataset(
            all_items,
            preprocess_transforms(IMAGE_SIZE, STATS),
            cache_rate=1.0,
            persistent_cache_dir=str(tmp_path),
            num_workers=1,
        )


def train_loader(cached: Any, *, seed: int, loader: str = "thread", **kwargs: Any) -> Any:
    dataset = TrainFramesDataset(cached, train_transforms(AugmentConfig(prob=0.8), clip_frames=2))
    options: dict[str, Any] = {"batch_size": 4, "shuffle": True, "num_workers": 0}
    options.update(kwargs)
    return make_loader(dataset, seed=seed, loader=loader, device=CPU, **options)  # type: ignore[arg-type]


def epoch(loader: Any) -> tuple[list[str], list[torch.Tensor]]:
    ids: list[str] = []
    images: list[torch.Tensor] = []
    for batch in loader:
        ids.extend(batch["image_id"])
        images.append(batch["image"])
    return ids, images


def same(a: tuple[list[str], list[torch.Tensor]], b: tuple[list[str], list[torch.Tensor]]) -> bool:
    return a[0] == b[0] and all(torch.equal(x, y) for x, y in zip(a[1], b[1], strict=True))


def test_training_batches_have_the_documented_shapes(cached: Any) -> None:
    loader = train_loader(cached, seed=0)
    assert loader.pin_memory is False
    batch = next(iter(loader))
    assert type(batch["image"]) is torch.Tensor
    assert batch["image"].shape == (4, 2, 32, 24)  # (B, C * clip_frames, W, H)
    assert batch["label"].dtype == torch.int64 and batch["label"].shape == (4,)
    assert len(batch["image_id"]) == 4


@pytest.mark.parametrize(("loader", "num_workers"), [("thread", 0), ("torch", 2)])
def test_an_epoch_is_reproducible_and_a_resumed_run_draws_the_same(
    cached: Any, loader: str, num_workers: int
) -> None:
    straight = train_loader(cached, seed=11, loader=loader, num_workers=num_workers)
    seed_epoch(straight, seed=11, epoch=0)
    epoch0 = epoch(straight)
    seed_epoch(straight, seed=11, epoch=1)
    epoch1 = epoch(straight)
    assert not same(epoch0, epoch1)
    resumed = train_loader(cached, seed=11, loader=loader, num_workers=num_workers)
    seed_epoch(resumed, seed=11, epoch=1)
    assert same(epoch(resumed), epoch1)
    other = train_loader(cached, seed=12, loader=loader, num_workers=num_workers)
    seed_epoch(other, seed=12, epoch=1)
    assert not same(epoch(other), epoch1)


def test_distributed_ranks_get_disjoint_shares(cached: Any) -> None:
    n = len(cached)
    shares = []
    for rank in (0, 1):
        loader = train_loader(cached, seed=3, distributed=(rank, 2), shuffle=False)
        seed_epoch(loader, seed=3, epoch=0)
        shares.append(epoch(loader)[0])
    assert not set(shares[0]) & set(shares[1])
    assert sorted(shares[0] + shares[1]) == sorted(cached[i]["image_id"] for i in range(n))
    padded = train_loader(cached, seed=3, distributed=(0, 2), shuffle=True)
    assert len(padded.sampler) == (n + 1) // 2


def test_evaluation_batches_concatenate_evenly_spaced_frames(
    ingested_export: Ingested, cached: Any
) -> None:
    dataset = EvalFramesDataset(cached, n_frames=4, clip_frames=1)
    loader = make_loader(
        dataset, batch_size=3, shuffle=False, seed=0, num_workers=0, loader="torch", device=CPU
    )
    batch = next(iter(loader))
    frames = {row["image_id"]: int(row["frames"]) for row in ingested_export.rows}
    per_clip = [min(4, frames[image_id]) for image_id in batch["image_id"]]
    assert batch["image"].shape == (sum(per_clip), 1, 32, 24)
    assert batch["clip_index"].tolist() == [i for i, n in enumerate(per_clip) for _ in range(n)]
    assert batch["label"].shape == (3,)
    first = cached[0]["image"]
    assert torch.equal(batch["image"][0, 0], first[0, :, :, 0])
    assert batch["frame_start"][: per_clip[0]].tolist()[0] == 0


def test_collate_and_mean_per_clip_average_each_cine() -> None:
    batch = collate_frames(
        [
            {
                "image": torch.zeros(2, 1, 4, 4),
                "label": 1,
                "image_id": "a",
                "frame_start": torch.tensor([0, 5]),
            },
            {
                "image": torch.ones(1, 1, 4, 4),
                "label": 0,
                "image_id": "b",
                "frame_start": torch.tensor([0]),
            },
        ]
    )
    assert batch["clip_index"].tolist() == [0, 0, 1]
    probabilities = torch.tensor([[0.2, 0.8], [0.4, 0.6], [0.9, 0.1]])
    means = mean_per_clip(probabilities, batch["clip_index"], 2)
    assert torch.allclose(means, torch.tensor([[0.3, 0.7], [0.9, 0.1]]))


def test_class_weights_are_inverse_frequencies_with_mean_one() -> None:
    weights = class_weights([0, 0, 0, 1, 1, 2], 3)
    assert weights.dtype == torch.float32
    assert weights.mean().item() == pytest.approx(1.0)
    inverse = torch.tensor([1 / 3, 1 / 2, 1.0])
    assert torch.allclose(weights, inverse / inverse.mean())
    with pytest.raises(ValueError, match=r"Class indices \[1\] have no training examples"):
        class_weights([0, 0, 2], 3)


def test_weighted_sampler_balances_classes_and_is_seeded() -> None:
    labels = [0] * 90 + [1] * 10
    sampler = weighted_sampler(labels, seed=0)
    assert isinstance(sampler, WeightedRandomSampler)
    draws = [index for _ in range(20) for index in sampler]
    share = Counter(labels[i] for i in draws)[1] / len(draws)
    assert share == pytest.approx(0.5, abs=0.05)
    assert list(weighted_sampler(labels, seed=0)) == list(weighted_sampler(labels, seed=0))
    assert list(weighted_sampler(labels, seed=0)) != list(weighted_sampler(labels, seed=1))


def test_weighted_sampler_in_a_loader_is_reseeded_every_epoch(cached: Any) -> None:
    labels = TrainFramesDataset(cached, train_transforms(AugmentConfig(), 1)).labels
    runs = []
    for _ in range(2):
        loader = train_loader(cached, seed=5, sampler=weighted_sampler(labels, seed=5))
        seed_epoch(loader, seed=5, epoch=2)
        runs.append(epoch(loader)[0])
    assert runs[0] == runs[1]
    distributed = weighted_sampler(labels, seed=5, distributed=(1, 2))
    assert len(distributed) == (len(labels) + 1) // 2
    with pytest.raises(ValueError, match="cannot be used with distributed"):
        train_loader(cached, seed=5, sampler=weighted_sampler(labels, seed=5), distributed=(0, 2))
