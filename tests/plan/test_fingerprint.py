"""The fingerprint: what a manifest holds and what the machine offers, without identifiers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.training.conftest import write_tiny_manifest

from usdcm.errors import DeviceError, ManifestError, PlanError
from usdcm.plan.fingerprint import data_fingerprint, device_fingerprint, take_fingerprint


def test_the_tiny_manifest_is_summarised_from_its_columns(tmp_path: Path) -> None:
    manifest = write_tiny_manifest(tmp_path / "data")
    fp = take_fingerprint(manifest, device="cpu")
    data = fp.data
    assert (data.images, data.patients) == (28, 28)
    assert data.classes == ("abnormal", "normal")
    assert data.class_counts == (14, 14)
    assert data.minority_fraction == 0.5
    assert (data.frames_median, data.frames_max, data.is_cine) == (1.0, 1, False)
    assert data.short_side == 0  # the tiny manifest records no size
    assert dict(data.split_counts) == {"test": 4, "train": 16, "val": 8}
    assert fp.device.kind == "cpu" and fp.device.cores >= 1 and fp.device.memory_gib > 0


def test_sizes_frames_spacing_and_channels_are_medians_of_labelled_rows() -> None:
    rows = [
        {
            "label": "b",
            "patient_key": "p1",
            "frames": "1",
            "height": "100",
            "width": "200",
            "spacing_x_mm": "0.2",
            "spacing_y_mm": "0.2",
            "channels": "3",
        },
        {
            "label": "m",
            "patient_key": "p1",
            "frames": "30",
            "height": "300",
            "width": "400",
            "spacing_x_mm": "0.4",
            "spacing_y_mm": "0.4",
            "channels": "3",
        },
        {
            "label": "m",
            "patient_key": "p2",
            "frames": "11",
            "height": "200",
            "width": "300",
            "spacing_x_mm": "",
            "spacing_y_mm": "",
            "channels": "3",
        },
        {"label": "", "patient_key": "p9", "frames": "500", "height": "9000", "width": "9000"},
    ]
    fp = data_fingerprint(rows)
    assert fp.images == 3 and fp.patients == 2  # the unlabelled row takes no part
    assert (fp.frames_median, fp.frames_mean, fp.frames_max) == (11.0, 14.0, 30)
    assert (fp.median_height, fp.median_width, fp.short_side) == (200, 300, 200)
    assert fp.median_spacing_mm == pytest.approx(0.3)
    assert fp.channels == 3 and fp.is_cine
    assert fp.split_counts == ()  # usdcm draws the split itself


def test_no_patient_key_reaches_the_fingerprint(tmp_path: Path) -> None:
    manifest = write_tiny_manifest(tmp_path / "data")
    text = json.dumps(take_fingerprint(manifest, device="cpu").to_dict())
    assert "pat0" not in text and "img0" not in text and "1.2.3" not in text
    assert "images/" not in text  # no path of an image either


def test_a_manifest_without_labels_cannot_be_planned() -> None:
    with pytest.raises(PlanError, match="none has a label"):
        data_fingerprint([{"label": "", "patient_key": "p"}])


def test_a_missing_manifest_and_a_missing_gpu_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="No manifest"):
        take_fingerprint(tmp_path / "nope.csv")
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="no CUDA GPU"):
            device_fingerprint("cuda")


def test_the_cpu_is_described_with_its_threads_and_ram() -> None:
    import torch

    fp = device_fingerprint("cpu", processes=1)
    assert fp.name == f"cpu ({torch.get_num_threads()} threads)"
    assert fp.cores == torch.get_num_threads()
    assert fp.memory_gib == fp.ram_gib > 0
    assert not fp.is_gpu
