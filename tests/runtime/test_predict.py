"""Tests for usdcm.runtime.predict: per-cine mean probabilities and the merge across ranks."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
from torch import nn

from usdcm.data.datasets import EvalFramesDataset, collate_frames
from usdcm.runtime.predict import ClipPredictions, predict_clips


class _MeanLogits(nn.Module):
    """Logits ``[0, 2 * mean]`` of each frame: a known probability per frame."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(1, 2, 3))
        return torch.stack([torch.zeros_like(mean), 2 * mean], dim=1)


def _cine(image_id: str, label: int, values: list[float]) -> dict[str, object]:
    """A cached ``(1, 4, 3, F)`` volume whose frame ``k`` is the constant ``values[k]``."""
    volume = torch.tensor(values, dtype=torch.float32).reshape(1, 1, 1, -1).expand(1, 4, 3, -1)
    return {"image": volume.contiguous(), "label": label, "image_id": image_id}


def test_each_cine_gets_the_mean_probability_of_its_frames() -> None:
    cines = [_cine("a", 0, [0.0, 1.0, 2.0]), _cine("b", 1, [0.5]), _cine("c", 1, [3.0, -1.0])]
    dataset = EvalFramesDataset(cines, n_frames=8, clip_frames=1)  # type: ignore[arg-type]
    batches = [collate_frames([dataset[0], dataset[1]]), collate_frames([dataset[2]])]
    seen: list[int] = []
    result = predict_clips(
        _MeanLogits(),
        batches,
        device=torch.device("cpu"),
        autocast=contextlib.nullcontext,
        on_batch=seen.append,
    )

    def p1(values: list[float]) -> float:  # softmax([0, 2v])[1], averaged over frames
        return float(np.mean([1 / (1 + np.exp(-2 * v)) for v in values]))

    assert result.image_ids == ["a", "b", "c"]
    assert result.labels.tolist() == [0, 1, 1]
    assert result.probabilities.dtype == np.float64
    expected = [p1([0.0, 1.0, 2.0]), p1([0.5]), p1([3.0, -1.0])]
    np.testing.assert_allclose(result.probabilities[:, 1], expected, rtol=1e-6)
    np.testing.assert_allclose(result.probabilities.sum(axis=1), 1.0, rtol=1e-6)
    assert seen == [2, 1]


def test_no_batches_give_empty_predictions() -> None:
    result = predict_clips(
        _MeanLogits(), [], device=torch.device("cpu"), autocast=contextlib.nullcontext
    )
    assert result.image_ids == [] and result.probabilities.shape == (0, 0)


def test_merged_sorts_by_id_and_drops_the_padded_duplicates_of_other_ranks() -> None:
    rank0 = ClipPredictions(["b", "a"], np.array([1, 0]), np.array([[0.2, 0.8], [0.9, 0.1]]))
    rank1 = ClipPredictions(["c", "b"], np.array([1, 1]), np.array([[0.3, 0.7], [0.5, 0.5]]))
    merged = rank0.merged([rank1])
    assert merged.image_ids == ["a", "b", "c"]
    assert merged.labels.tolist() == [0, 1, 1]
    assert merged.probabilities.tolist() == [[0.9, 0.1], [0.2, 0.8], [0.3, 0.7]]
    with pytest.raises(ValueError):
        ClipPredictions(["a"], np.array([0, 1]), np.array([[1.0, 0.0]])).merged([])


class _LeftHeavy(nn.Module):
    """Logits ``[0, 4 * (mean of the first half of the columns - mean of the rest)]``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = x.shape[2] // 2
        score = 4 * (x[:, :, :half].mean(dim=(1, 2, 3)) - x[:, :, half:].mean(dim=(1, 2, 3)))
        return torch.stack([torch.zeros_like(score), score], dim=1)


@pytest.mark.parametrize("channels_last", [False, True])
def test_tta_flip_averages_the_image_and_its_left_right_flip(channels_last: bool) -> None:
    from usdcm.data.transforms import affine_resample

    generator = torch.Generator().manual_seed(0)
    volumes = [torch.rand(1, 6, 4, 3, generator=generator) for _ in range(3)]
    cines = [{"image": v, "label": i % 2, "image_id": f"c{i}"} for i, v in enumerate(volumes)]
    dataset = EvalFramesDataset(cines, n_frames=3, clip_frames=1)  # type: ignore[arg-type]
    batches = [collate_frames([dataset[0], dataset[1]]), collate_frames([dataset[2]])]
    model = _LeftHeavy()

    def run(tta_flip: bool) -> np.ndarray:
        return predict_clips(
            model,
            batches,
            device=torch.device("cpu"),
            autocast=contextlib.nullcontext,
            channels_last=channels_last,
            tta_flip=tta_flip,
        ).probabilities

    def expected(frames: torch.Tensor) -> np.ndarray:
        # the flip of training's augmentation, frame by frame: left-right, the column axis
        flipped = torch.stack([affine_resample(frame, flip_lr=True) for frame in frames])
        plain = torch.softmax(model(frames), dim=1)
        mirrored = torch.softmax(model(flipped), dim=1)
        return ((plain + mirrored) / 2).mean(dim=0).numpy()

    with_flip, without = run(True), run(False)
    for index in range(3):
        frames = dataset[index]["image"]  # (frames, C, W, H)
        np.testing.assert_allclose(with_flip[index], expected(frames), rtol=1e-5)
    assert not np.allclose(with_flip, without)  # the model is not flip-symmetric
    np.testing.assert_allclose(with_flip.sum(axis=1), 1.0, rtol=1e-6)
