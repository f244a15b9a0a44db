"""Preprocessing keeps every frame in order and in (C, W, H, F); augmentation is seeded and
flips only left-right; evaluation clips are evenly spaced."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from monai.transforms import AdjustContrast, Flip, Rotate, ToDeviced, Zoom
from tests.data.conftest import NiftiWriter

from usdcm.config import AugmentConfig
from usdcm.data.normalization import IntensityStats
from usdcm.data.transforms import (
    AugmentDraw,
    LoadVolumed,
    PreprocessError,
    adjust_gamma,
    affine_resample,
    augment_clip,
    evaluation_frames,
    evaluation_starts,
    preprocess_fingerprint,
    preprocess_transforms,
    speckle_noise,
    take_clip,
    train_transforms,
    usdcm_cause,
)
from usdcm.errors import ConfigError

STATS = IntensityStats("percentile", lower=0.0, upper=100.0, mean=50.0, std=20.0)
NO_AUGMENT = AugmentConfig(
    rotate_degrees=0.0, scale=0.0, flip_lr_prob=0.0, contrast=0.0, gamma=0.0, speckle_std=0.0
)


def frame_volume(width: int, height: int, frames: int) -> np.ndarray:
    """A ``(W, H, F)`` uint8 volume whose frame ``k`` is the constant ``10 * k``."""
    volume = np.empty((width, height, frames), dtype=np.uint8)
    for k in range(frames):
        volume[..., k] = 10 * k
    return volume


def cached_volume(channels: int, width: int, height: int, frames: int) -> torch.Tensor:
    """A ``(C, W, H, F)`` tensor whose value is ``frame + 100 * channel``."""
    frame = torch.arange(frames, dtype=torch.float32)
    channel = 100 * torch.arange(channels, dtype=torch.float32)
    return (channel[:, None, None, None] + frame).expand(channels, width, height, frames).clone()


def test_preprocess_resizes_every_frame_and_keeps_their_order(
    tmp_path: Path, write_nifti: NiftiWriter
) -> None:
    path = write_nifti(tmp_path / "cine.nii.gz", frame_volume(width=40, height=24, frames=6))
    out = preprocess_transforms([12, 20], STATS)({"image": str(path), "image_id": "x"})
    image = out["image"]
    assert type(image) is torch.Tensor
    assert image.dtype == torch.float32
    assert image.shape == (1, 20, 12, 6)  # (C, W, H, F) from image_size [H, W]
    for k in range(6):
        assert torch.allclose(image[..., k], torch.full((1, 20, 12), 10 * k / 100))
    assert out["image_id"] == "x"


def test_preprocess_keeps_columns_and_rows_in_place(
    tmp_path: Path, write_nifti: NiftiWriter
) -> None:
    volume = np.zeros((16, 10, 2), dtype=np.uint8)
    volume[13, 2, 1] = 100  # column 13, row 2, frame 1
    path = write_nifti(tmp_path / "mark.nii.gz", volume)
    image = preprocess_transforms([10, 16], STATS)({"image": str(path)})["image"]
    assert image.shape == (1, 16, 10, 2)
    assert torch.nonzero(image).tolist() == [[0, 13, 2, 1]]


def test_preprocess_puts_colour_channels_first(tmp_path: Path, write_nifti: NiftiWriter) -> None:
    volume = np.zeros((8, 6, 3, 3), dtype=np.uint8)
    volume[..., 0], volume[..., 1], volume[..., 2] = 10, 20, 30
    path = write_nifti(tmp_path / "rgb.nii.gz", volume)
    image = preprocess_transforms([6, 8], STATS, channels=3)({"image": str(path)})["image"]
    assert image.shape == (3, 8, 6, 3)
    assert image[:, 0, 0, 0].tolist() == pytest.approx([0.1, 0.2, 0.3])


def test_preprocess_refuses_an_image_with_other_channels(
    tmp_path: Path, write_nifti: NiftiWriter
) -> None:
    path = write_nifti(tmp_path / "gray.nii.gz", frame_volume(8, 6, 2))
    with pytest.raises(RuntimeError) as caught:  # MONAI's Compose wraps every error
        preprocess_transforms([6, 8], STATS, channels=3)({"image": str(path)})
    cause = usdcm_cause(caught.value)
    assert isinstance(cause, PreprocessError)
    assert "gray.nii.gz has shape (8, 6, 2); with channels=3" in str(cause)


def test_unreadable_image_is_named_with_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "broken.nii.gz"
    path.write_bytes(b"\x1f\x8b truncated")
    with pytest.raises(PreprocessError, match=r"broken\.nii\.gz .*re-run `usdcm ingest`"):
        LoadVolumed("image", channels=1)({"image": str(path)})


def test_no_device_transform_on_cpu() -> None:
    transforms = preprocess_transforms([16, 16], STATS, cache_device=torch.device("cpu"))
    assert not any(isinstance(t, ToDeviced) for t in transforms.transforms)


def test_fingerprint_changes_with_what_the_cache_depends_on() -> None:
    base = preprocess_fingerprint([64, 64], STATS, 1)
    assert base == preprocess_fingerprint([64, 64], STATS, 1)
    other_stats = IntensityStats("percentile", lower=0.0, upper=99.0, mean=50.0, std=20.0)
    assert len({base, preprocess_fingerprint([64, 32], STATS, 1)}) == 2
    assert len({base, preprocess_fingerprint([64, 64], other_stats, 1)}) == 2
    assert len({base, preprocess_fingerprint([64, 64], STATS, 3)}) == 2


def test_training_picks_one_whole_frame() -> None:
    volume = cached_volume(1, 5, 4, 7)
    transform = train_transforms(NO_AUGMENT, clip_frames=1)
    transform.set_random_state(0)
    seen = set()
    for _ in range(60):
        out = transform({"image": volume})["image"]
        assert out.shape == (1, 5, 4)
        assert torch.all(out == transform.draw.start)
        seen.add(transform.draw.start)
    assert seen == set(range(7))


def test_training_stacks_consecutive_frames_frame_major() -> None:
    volume = cached_volume(3, 5, 4, 6)
    transform = train_transforms(NO_AUGMENT, clip_frames=2)
    transform.set_random_state(1)
    starts = set()
    for _ in range(40):
        out = transform({"image": volume})["image"]
        start = transform.draw.start
        starts.add(start)
        expected = [start, start + 100, start + 200, start + 1, start + 101, start + 201]
        assert out[:, 0, 0].tolist() == expected
    assert starts == set(range(5))


def test_training_repeats_the_last_frame_of_a_short_cine() -> None:
    transform = train_transforms(NO_AUGMENT, clip_frames=4)
    out = transform({"image": cached_volume(1, 3, 3, 2)})["image"]
    assert out[:, 0, 0].tolist() == [0, 1, 1, 1]


@pytest.mark.parametrize(("frames", "clip_frames"), [(4, 1), (1, 1), (4, 2), (2, 3)])
def test_take_clip_never_returns_a_view_of_the_cache(frames: int, clip_frames: int) -> None:
    volume = cached_volume(1, 3, 3, frames)
    clip = take_clip(volume, 0, clip_frames)
    assert clip.is_contiguous()
    clip += 1000
    assert volume.max().item() == frames - 1


def test_flip_moves_columns_and_never_rows() -> None:
    width, height = 9, 6
    volume = torch.zeros(1, width, height, 1)
    volume[0, 2, 1, 0] = 1.0  # column 2, row 1
    augment = AugmentConfig(**{**NO_AUGMENT.__dict__, "flip_lr_prob": 1.0})
    out = train_transforms(augment, clip_frames=1)({"image": volume})["image"]
    assert torch.nonzero(out).tolist() == [[0, width - 1 - 2, 1]]


def test_without_augmentation_the_frame_passes_unchanged() -> None:
    volume = torch.rand(2, 6, 5, 3, generator=torch.Generator().manual_seed(0))
    transform = train_transforms(NO_AUGMENT, clip_frames=3)
    out = transform({"image": volume})["image"]
    assert type(out) is torch.Tensor
    assert transform.draw == AugmentDraw(start=0)
    assert torch.equal(out, take_clip(volume, 0, 3))


def test_augmentation_returns_plain_float32_and_leaves_the_cache_alone() -> None:
    volume = torch.rand(1, 24, 20, 5, generator=torch.Generator().manual_seed(0))
    before = volume.clone()
    transform = train_transforms(AugmentConfig(prob=1.0, flip_lr_prob=1.0), clip_frames=1)
    transform.set_random_state(0)
    out = transform({"image": volume, "label": 1})
    assert type(out["image"]) is torch.Tensor
    assert out["image"].dtype == torch.float32
    assert out["image"].shape == (1, 24, 20)
    assert out["label"] == 1
    assert torch.equal(volume, before)


def test_draws_stay_in_the_configured_ranges_and_fire_with_prob() -> None:
    augment = AugmentConfig(rotate_degrees=10.0, scale=0.1, contrast=0.2, gamma=0.2, prob=0.5)
    transform = train_transforms(augment, clip_frames=2)
    transform.set_random_state(0)
    draws = []
    for _ in range(2000):
        transform.randomize(6)
        draws.append(transform.draw)
    assert {draw.start for draw in draws} == set(range(5))
    angles = [d.angle for d in draws if d.angle is not None]
    zooms = [d.zoom for d in draws if d.zoom is not None]
    factors = [d.contrast for d in draws if d.contrast is not None]
    gammas = [d.gamma for d in draws if d.gamma is not None]
    seeds = [d.noise_seed for d in draws if d.noise_seed is not None]
    radians = np.radians(10.0)
    assert -radians <= min(angles) < -0.9 * radians and 0.9 * radians < max(angles) <= radians
    assert 0.9 <= min(zooms) < 0.91 and 1.09 < max(zooms) <= 1.1
    assert -0.2 <= min(factors) < -0.19 and 0.19 < max(factors) <= 0.2
    assert 0.8 <= min(gammas) < 0.81 and 1.19 < max(gammas) <= 1.2
    for fired in (angles, zooms, factors, gammas, seeds):
        assert 900 < len(fired) < 1100  # prob 0.5 each, independently
    assert 900 < sum(d.flip_lr for d in draws) < 1100  # flip_lr_prob 0.5


def test_zero_strength_never_fires() -> None:
    transform = train_transforms(AugmentConfig(**{**NO_AUGMENT.__dict__, "prob": 1.0}), 1)
    for _ in range(50):
        transform.randomize(4)
        assert transform.draw.angle is None and transform.draw.zoom is None
        assert transform.draw.contrast is None and transform.draw.gamma is None
        assert transform.draw.noise_seed is None and not transform.draw.flip_lr


def test_augmentation_applies_the_recorded_draw() -> None:
    volume = torch.rand(1, 24, 20, 5, generator=torch.Generator().manual_seed(0))
    transform = train_transforms(AugmentConfig(prob=1.0), clip_frames=2)
    transform.set_random_state(3)
    out = transform({"image": volume})["image"]
    draw = transform.draw
    assert None not in (draw.angle, draw.zoom, draw.contrast, draw.gamma, draw.noise_seed)
    expected = augment_clip(take_clip(volume, draw.start, 2), draw, 0.1)
    assert torch.allclose(out, expected)


def smooth_image(width: int, height: int) -> torch.Tensor:
    """A smooth, asymmetric ``(1, W, H)`` test image."""
    i = torch.arange(width, dtype=torch.float32)[:, None]
    j = torch.arange(height, dtype=torch.float32)[None]
    return (torch.sin(i / 5.0) + 0.5 * torch.cos(j / 3.0) + i / width)[None]


def plain(image: object) -> torch.Tensor:
    return torch.as_tensor(image).as_subclass(torch.Tensor)


@pytest.mark.parametrize("angle", [0.17, -0.05])
def test_one_resample_rotates_like_monai(angle: float) -> None:
    image = smooth_image(40, 28)
    expected = Rotate(angle, keep_size=True, mode="bilinear", padding_mode="zeros")(image)
    assert torch.allclose(affine_resample(image, angle=angle), plain(expected), atol=1e-5)


@pytest.mark.parametrize("zoom", [0.9, 1.1])
def test_one_resample_zooms_like_monai(zoom: float) -> None:
    image = smooth_image(40, 40)  # 40 * zoom is whole: MONAI rounds no size
    expected = Zoom(zoom, mode="bilinear", padding_mode="constant", keep_size=True)(image)
    assert torch.allclose(affine_resample(image, zoom=zoom), plain(expected), atol=1e-5)


def test_one_resample_matches_monai_rotate_zoom_flip_up_to_interpolation() -> None:
    image = smooth_image(40, 40)
    steps = Rotate(0.12, keep_size=True, mode="bilinear", padding_mode="zeros")(image)
    steps = Zoom(1.1, mode="bilinear", padding_mode="constant", keep_size=True)(steps)
    steps = plain(Flip(spatial_axis=0)(steps))
    once = affine_resample(image, angle=0.12, zoom=1.1, flip_lr=True)
    inner = (slice(None), slice(8, 32), slice(8, 32))
    assert (once - steps)[inner].abs().mean().item() < 0.05 * image.abs().mean().item()
    mirrored = affine_resample(image, angle=0.12, zoom=1.1, flip_lr=False)
    assert (mirrored - steps)[inner].abs().mean().item() > 0.5


def test_flip_inside_the_resample_moves_columns_and_never_rows() -> None:
    image = torch.zeros(1, 9, 6)
    image[0, 2, 1] = 1.0  # column 2, row 1
    out = augment_clip(image, AugmentDraw(start=0, zoom=1.0, flip_lr=True), 0.0)
    assert torch.allclose(out, image.flip(1), atol=1e-6)
    assert torch.equal(augment_clip(image, AugmentDraw(start=0, flip_lr=True), 0.0), image.flip(1))


def test_gamma_matches_monai() -> None:
    image = torch.rand(2, 16, 12, generator=torch.Generator().manual_seed(0)) * 3 - 1
    expected = plain(AdjustContrast(1.15)(image))
    assert torch.allclose(adjust_gamma(image, 1.15), expected, atol=1e-6)


def augmented(seed: int, n: int = 4) -> list[torch.Tensor]:
    volume = torch.rand(1, 24, 20, 5, generator=torch.Generator().manual_seed(0))
    transform = train_transforms(AugmentConfig(prob=1.0), clip_frames=2)
    transform.set_random_state(seed)
    return [transform({"image": volume})["image"] for _ in range(n)]


def test_same_seed_same_augmentations_other_seed_others() -> None:
    first, again, other = augmented(7), augmented(7), augmented(8)
    assert all(a.shape == (2, 24, 20) for a in first)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not any(torch.equal(a, b) for a, b in zip(first, other, strict=True))
    assert not torch.equal(first[0], first[1])


def test_speckle_noise_is_multiplicative_and_seeded() -> None:
    image = torch.full((1, 64, 64), 2.0)
    noisy = speckle_noise(image, 0.1, seed=3)
    assert torch.equal(noisy, speckle_noise(image, 0.1, seed=3))
    assert (noisy / image - 1).std().item() == pytest.approx(0.1, rel=0.05)
    assert torch.equal(speckle_noise(torch.zeros(1, 4, 4), 0.5, seed=3), torch.zeros(1, 4, 4))
    only_speckle = AugmentConfig(**{**NO_AUGMENT.__dict__, "speckle_std": 0.1, "prob": 1.0})
    transform = train_transforms(only_speckle, clip_frames=1)
    transform.set_random_state(0)
    out = transform({"image": image[..., None]})["image"]
    assert transform.draw.noise_seed is not None
    assert torch.equal(out, speckle_noise(image, 0.1, transform.draw.noise_seed))
    reused = torch.Generator().manual_seed(99)
    assert torch.equal(speckle_noise(image, 0.1, 3, reused), noisy)


def test_bad_augmentation_strength_names_the_config_key() -> None:
    with pytest.raises(ConfigError, match="augment.gamma is 1.5"):
        train_transforms(AugmentConfig(gamma=1.5), clip_frames=1)


def test_evaluation_frames_are_evenly_spaced() -> None:
    volume = cached_volume(1, 4, 3, 10)
    frames = evaluation_frames(volume, n=4, clip_frames=1)
    assert frames.shape == (4, 1, 4, 3)
    assert frames[:, 0, 0, 0].tolist() == [0, 3, 6, 9]
    assert evaluation_starts(10, 5, 1) == [0, 2, 4, 7, 9]  # 2.25 -> 2, 6.75 -> 7


def test_evaluation_frames_of_a_short_cine_take_every_frame() -> None:
    frames = evaluation_frames(cached_volume(1, 4, 3, 3), n=8, clip_frames=1)
    assert frames[:, 0, 0, 0].tolist() == [0, 1, 2]
    single = evaluation_frames(cached_volume(1, 4, 3, 1), n=8, clip_frames=2)
    assert single.shape == (1, 2, 4, 3)


def test_evaluation_clips_fit_inside_the_cine() -> None:
    frames = evaluation_frames(cached_volume(2, 4, 3, 10), n=3, clip_frames=4)
    assert frames.shape == (3, 8, 4, 3)
    assert frames[:, :, 0, 0].tolist() == [
        [0, 100, 1, 101, 2, 102, 3, 103],
        [3, 103, 4, 104, 5, 105, 6, 106],
        [6, 106, 7, 107, 8, 108, 9, 109],
    ]


@pytest.mark.parametrize("n_frames", [1, 3, 10, 17])
def test_selecting_evaluation_frames_first_classifies_the_same_frames(
    tmp_path: Path, write_nifti: NiftiWriter, n_frames: int
) -> None:
    from monai.data import Dataset

    from usdcm.data.datasets import EvalFramesDataset

    rng = np.random.default_rng(n_frames)
    volume = rng.integers(0, 255, size=(37, 29, n_frames)).astype(np.uint8)
    path = write_nifti(tmp_path / "cine.nii.gz", volume)
    stats = IntensityStats("percentile", lower=5.0, upper=240.0, mean=120.0, std=60.0)
    outputs = []
    for selected in (None, 4):
        preprocess = preprocess_transforms([24, 20], stats, only_evaluation_frames=selected)
        frames = EvalFramesDataset(
            Dataset([{"image": str(path), "label": 0, "image_id": "a"}], preprocess),
            n_frames=4,
            clip_frames=1,
        )
        outputs.append(frames[0]["image"])
    assert outputs[0].shape == outputs[1].shape == (min(4, n_frames), 1, 20, 24)
    torch.testing.assert_close(outputs[1], outputs[0], rtol=0, atol=1e-6)
