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
