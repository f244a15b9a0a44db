"""Intensity statistics of training images, and the transform that applies them."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.transforms import MapTransform, Randomizable
from tests.data.conftest import NiftiWriter

from usdcm.data.normalization import (
    MAX_VOXELS_PER_IMAGE,
    IntensityStats,
    NormalizationError,
    NormalizeIntensityStatsd,
    compute_stats,
)


def small_images(tmp_path: Path, write_nifti: NiftiWriter) -> tuple[list[Path], np.ndarray]:
    rng = np.random.default_rng(0)
    volumes = [rng.integers(0, 256, size=(7, 5, 3), dtype=np.uint8) for _ in range(3)]
    paths = [write_nifti(tmp_path / f"img{i}.nii.gz", v) for i, v in enumerate(volumes)]
    return paths, np.concatenate([v.ravel() for v in volumes]).astype(np.float64)


def test_stats_are_exact_on_small_images(tmp_path: Path, write_nifti: NiftiWriter) -> None:
    paths, voxels = small_images(tmp_path, write_nifti)
    stats = compute_stats(
        paths,
        mode="percentile",
        lower_percentile=2.0,
        upper_percentile=98.0,
        sample_images=10,
        seed=0,
    )
    assert stats.lower == pytest.approx(np.percentile(voxels, 2.0))
    assert stats.upper == pytest.approx(np.percentile(voxels, 98.0))
    assert stats.mean == pytest.approx(voxels.mean())
    assert stats.std == pytest.approx(voxels.std())
    assert (stats.n_images, stats.n_voxels) == (3, voxels.size)


def test_stats_sample_images_and_voxels_with_the_seed(
    tmp_path: Path, write_nifti: NiftiWriter
) -> None:
    paths, _ = small_images(tmp_path, write_nifti)
    big = np.random.default_rng(1).integers(0, 256, size=(100, 100, 25), dtype=np.uint8)
    paths.append(write_nifti(tmp_path / "big.nii.gz", big))

    def stats(seed: int, sample_images: int) -> IntensityStats:
        return compute_stats(
            paths,
            mode="zscore",
            lower_percentile=0.5,
            upper_percentile=99.5,
            sample_images=sample_images,
            seed=seed,
        )

    every = stats(0, 10)
    assert every.n_voxels == 3 * 105 + MAX_VOXELS_PER_IMAGE
    assert every.mean == pytest.approx(big.mean(), abs=1.0)
    assert stats(0, 2).n_images == 2
    assert stats(0, 2) == stats(0, 2)
    assert stats(0, 10) != stats(1, 10)
    assert stats(0, 10) == compute_stats(
        paths[::-1],
        mode="zscore",
        lower_percentile=0.5,
        upper_percentile=99.5,
        sample_images=10,
        seed=0,
    )


def test_blank_training_images_cannot_be_normalized(
    tmp_path: Path, write_nifti: NiftiWriter
) -> None:
    path = write_nifti(tmp_path / "blank.nii.gz", np.zeros((4, 4, 2), dtype=np.uint8))
    with pytest.raises(NormalizationError, match="cannot be normalized"):
        compute_stats(
            [path],
            mode="percentile",
            lower_percentile=0.5,
            upper_percentile=99.5,
            sample_images=4,
            seed=0,
        )


def test_unreadable_image_is_named(tmp_path: Path) -> None:
    path = tmp_path / "broken.nii.gz"
    path.write_bytes(b"not a nifti")
    with pytest.raises(NormalizationError, match="broken.nii.gz"):
        compute_stats(
            [path],
            mode="percentile",
            lower_percentile=0.5,
            upper_percentile=99.5,
            sample_images=4,
            seed=0,
        )


def test_percentile_mode_clips_and_scales_to_unit_range() -> None:
    stats = IntensityStats("percentile", lower=20.0, upper=220.0, mean=0.0, std=1.0)
    image = torch.arange(0, 256, dtype=torch.float32).reshape(1, 16, 16)
    out = NormalizeIntensityStatsd("image", stats)({"image": image, "label": 3})
    assert out["label"] == 3
    assert out["image"].min().item() == 0.0
    assert out["image"].max().item() == 1.0
    assert out["image"][0, 7, 8].item() == pytest.approx((120 - 20) / 200)


def test_zscore_mode_standardizes_the_training_data(
    tmp_path: Path, write_nifti: NiftiWriter
) -> None:
    paths, voxels = small_images(tmp_path, write_nifti)
    stats = compute_stats(
        paths,
        mode="zscore",
        lower_percentile=0.5,
        upper_percentile=99.5,
        sample_images=10,
        seed=0,
    )
    out = NormalizeIntensityStatsd("image", stats)({"image": torch.as_tensor(voxels)})["image"]
    assert out.mean().item() == pytest.approx(0.0, abs=1e-9)
    assert out.std(unbiased=False).item() == pytest.approx(1.0)


def test_normalization_is_deterministic_so_it_is_cached() -> None:
    stats = IntensityStats("zscore", lower=0.0, upper=1.0, mean=0.0, std=1.0)
    transform = NormalizeIntensityStatsd("image", stats)
    assert isinstance(transform, MapTransform)
    assert not isinstance(transform, Randomizable)


def test_stats_round_trip_through_a_weights_only_checkpoint() -> None:
    stats = IntensityStats("zscore", lower=1.5, upper=250.0, mean=70.25, std=40.5, n_images=3)
    assert IntensityStats.from_dict(stats.to_dict()) == stats
    buffer = io.BytesIO()
    torch.save({"intensity": stats.to_dict(), "weights": torch.zeros(2)}, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    assert IntensityStats.from_dict(loaded["intensity"]) == stats


def test_from_dict_names_a_missing_key() -> None:
    values = IntensityStats("zscore", lower=0.0, upper=1.0, mean=0.0, std=1.0).to_dict()
    del values["std"]
    with pytest.raises(ValueError, match="lack the key 'std'"):
        IntensityStats.from_dict(values)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mode": "minmax"}, "mode is 'minmax'"),
        ({"lower": 5.0, "upper": 5.0}, "is empty"),
        ({"std": 0.0}, "std is 0.0"),
    ],
)
def test_invalid_stats_are_refused(kwargs: dict[str, object], match: str) -> None:
    values: dict[str, object] = {
        "mode": "percentile",
        "lower": 0.0,
        "upper": 1.0,
        "mean": 0.0,
        "std": 1.0,
    }
    values.update(kwargs)
    with pytest.raises(ValueError, match=match):
        IntensityStats(**values)  # type: ignore[arg-type]
