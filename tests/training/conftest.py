"""Fixtures for the training tests: a tiny manifest of single-frame images with a known signal."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from usdcm.config import TrainConfig, config_from_dict

TinyManifest = Callable[..., Path]


def write_tiny_manifest(
    root: Path, *, counts: dict[str, int] | None = None, side: int = 24, seed: int = 0
) -> Path:
    """Write ``root/manifest.csv`` and one ``(side, side, 1)`` NIfTI per image.

    Every image is speckle; "abnormal" images (every other one) carry a bright square at a
    random place, "normal" ones do not. The ``split`` column is filled from ``counts``
    (default: 16 train, 8 val, 4 test), one patient and study per image.
    """
    counts = counts or {"train": 16, "val": 8, "test": 4}
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    index = 0
    for split, count in counts.items():
        for _ in range(count):
            label = "abnormal" if index % 2 else "normal"
            volume = rng.gamma(2.0, 30.0, size=(side, side, 1)).astype(np.float32)
            if label == "abnormal":
                x, y = rng.integers(2, side - 10, size=2)
                volume[x : x + 8, y : y + 8, 0] += 150.0
            image_id = f"img{index:03d}"
            nib.save(nib.Nifti1Image(volume, np.eye(4)), root / "images" / f"{image_id}.nii.gz")
            rows.append(
                {
                    "image_id": image_id,
                    "image_path": f"images/{image_id}.nii.gz",
                    "patient_key": f"pat{index:03d}",
                    "study_uid": f"1.2.3.{index}",
                    "series_uid": f"1.2.3.{index}.1",
                    "label": label,
                    "frames": "1",
                    "channels": "1",
                    "manufacturer": "VendorA" if index % 3 else "VendorB",
                    "model": "M1",
                    "split": split,
                }
            )
            index += 1
    path = root / "manifest.csv"
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture
def tiny_manifest(tmp_path: Path) -> TinyManifest:
    """Write a tiny manifest under ``tmp_path/data`` (see :func:`write_tiny_manifest`)."""

    def make(**kwargs: object) -> Path:
        return write_tiny_manifest(tmp_path / "data", **kwargs)  # type: ignore[arg-type]

    return make


def tiny_config(**sections: dict[str, object]) -> TrainConfig:
    """A config small enough to train in a second: 24 px, 3 epochs, CPU, no augmentation."""
    values: dict[str, dict[str, object]] = {
        "data": {"image_size": [24, 24], "eval_frames": 2},
        "augment": {"prob": 0.0, "flip_lr_prob": 0.0},
        "optim": {"epochs": 3, "batch_size": 8, "lr": 0.003, "patience": 10},
        "runtime": {"device": "cpu"},
    }
    for name, update in sections.items():
        values.setdefault(name, {}).update(update)
    return config_from_dict(values)


def train_with_torchrun(manifest: Path, config_path: Path, out: Path) -> None:
    """``usdcm train`` under torchrun with two gloo processes, as ``--nproc 2`` launches it.

    The command is :func:`usdcm.training.distributed.torchrun_command`'s, so the tests run
    exactly what the CLI runs; one thread per process keeps two processes on two cores.
    """
    import os
    import subprocess

    from usdcm.training.distributed import torchrun_command

    argv = ["train", str(manifest), "--config", str(config_path), "--out", str(out), "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(
        torchrun_command(2, argv), env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
