"""Tests for usdcm.inference.model: a run's checkpoint rebuilt as training left it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tests.training.conftest import tiny_config, write_tiny_manifest

from usdcm.errors import RunError
from usdcm.inference.model import load_trained_model
from usdcm.runtime.checkpoint import load_checkpoint, save_checkpoint
from usdcm.training.run import train


def test_the_rebuilt_network_holds_the_trained_weights(tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(write_tiny_manifest(tmp_path / "data"), tiny_config(optim={"epochs": 1}), run)
    trained = load_trained_model(run, "cpu")
    saved = load_checkpoint(run / "best.pt")["model_state"]
    for key, value in trained.network.state_dict().items():
        assert torch.equal(value, saved[key]), key
    assert trained.classes == ["abnormal", "normal"]
    assert trained.config.data.image_size == [24, 24]
    assert not trained.network.training


def test_a_checkpoint_whose_config_is_out_of_range_is_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(write_tiny_manifest(tmp_path / "data"), tiny_config(optim={"epochs": 1}), run)
    payload = load_checkpoint(run / "best.pt")
    payload["config"]["model"]["name"] = "vgg16"
    save_checkpoint(run / "best.pt", payload)
    with pytest.raises(RunError, match=r"model\.name is 'vgg16'"):
        load_trained_model(run, "cpu")
