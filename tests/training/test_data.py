from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from tests.training.conftest import TinyManifest, tiny_config

from usdcm.artifacts.manifest import read_manifest
from usdcm.data.splits import label_map, labelled_rows
from usdcm.errors import TrainingError
from usdcm.training.data import prepare_data
from usdcm.training.distributed import SINGLE_PROCESS

LOGGER = logging.getLogger("test")


def test_loaders_hold_train_and_val_only_with_training_statistics(
    tiny_manifest: TinyManifest, tmp_path: Path
) -> None:
    manifest = tiny_manifest()
    rows = labelled_rows(read_manifest(manifest))
    config = tiny_config(data={"image_size": [24, 32]})
    data = prepare_data(
        rows,
        label_map(rows),
        root=manifest.parent,
        config=config,
        context=SINGLE_PROCESS,
        device=torch.device("cpu"),
        run_dir=tmp_path,
        logger=LOGGER,
    )
    assert data.n_images == {"test": 4, "train": 16, "val": 8}
    assert len(data.train_labels) == 16 and sorted(set(data.train_labels)) == [0, 1]
    batch = next(iter(data.train_loader))
    assert tuple(batch["image"].shape) == (8, 1, 32, 24)  # (B, C, W, H)
    val_ids = [i for b in data.val_loader for i in b["image_id"]]
    assert len(val_ids) == 8
    assert data.stats.n_images == 16  # measured on the 16 training images only
    assert (tmp_path / "splits.csv").is_file()


def test_a_split_without_validation_images_is_refused(
    tiny_manifest: TinyManifest, tmp_path: Path
) -> None:
    manifest = tiny_manifest(counts={"train": 8, "test": 4})
    rows = labelled_rows(read_manifest(manifest))
    with pytest.raises(TrainingError, match="0 validation"):
        prepare_data(
            rows,
            label_map(rows),
            root=manifest.parent,
            config=tiny_config(),
            context=SINGLE_PROCESS,
            device=torch.device("cpu"),
            run_dir=tmp_path,
            logger=LOGGER,
        )
