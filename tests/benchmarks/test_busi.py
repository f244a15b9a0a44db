"""Tests for benchmarks/_busi.py: BUSI PNGs wrapped as a DICOM export that usdcm ingests.

Runs on 6 real BUSI images (2 per folder); skipped where the development data is absent.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from benchmarks._busi import (
    DEFAULT_BUSI,
    DROPPED,
    US_IMAGE_STORAGE,
    export_digest,
    list_images,
    load_grey,
    write_busi_export,
)

from usdcm.artifacts.manifest import read_manifest
from usdcm.ingest import IngestOptions, ingest

pytestmark = pytest.mark.skipif(
    not (DEFAULT_BUSI / "benign").is_dir(), reason=f"BUSI development data not at {DEFAULT_BUSI}"
)


def test_list_drops_the_identical_pair_and_maps_normal_to_benign() -> None:
    images = list_images(DEFAULT_BUSI)
    names = {image.relative for image in images}
    assert not names & DROPPED
    assert len(images) == 780 - 2
    counts = Counter((image.folder, image.label) for image in images)
    assert counts == {
        ("benign", "benign"): 436,
        ("normal", "benign"): 133,
        ("malignant", "malignant"): 209,
    }
    # numeric order inside a folder, and 1-based consecutive indices
    benign = [image.relative for image in images if image.folder == "benign"]
    assert benign[:3] == ["benign/benign (1).png", "benign/benign (2).png", "benign/benign (3).png"]
    assert [image.index for image in images] == list(range(1, len(images) + 1))


def test_export_is_deterministic_us_image_storage(tmp_path: Path) -> None:
    first = write_busi_export(DEFAULT_BUSI, tmp_path / "a", per_class=2)
    second = write_busi_export(DEFAULT_BUSI, tmp_path / "b", per_class=2)
    assert export_digest(first) == export_digest(second)
    other_seed = write_busi_export(DEFAULT_BUSI, tmp_path / "c", per_class=2, seed=1)
    assert export_digest(other_seed) != export_digest(first)

    files = sorted(first.dicom_dir.rglob("IM0001"))
    assert len(files) == 6
    patients = set()
    for path, image in zip(files, first.images, strict=True):
        ds = pydicom.dcmread(path)
        assert ds.SOPClassUID == US_IMAGE_STORAGE
        assert ds.Modality == "US"
        assert ds.PhotometricInterpretation == "MONOCHROME2"
        assert ds.BitsAllocated == 8
        assert ds.PatientID.startswith("BUSI-P")
        patients.add(ds.PatientID)
        np.testing.assert_array_equal(ds.pixel_array, load_grey(DEFAULT_BUSI / image.relative))
    assert len(patients) == 6  # one synthetic patient per image


def test_ingest_reads_every_image_with_its_label(tmp_path: Path) -> None:
    export = write_busi_export(DEFAULT_BUSI, tmp_path / "export", per_class=2)
    result = ingest(
        export.dicom_dir, tmp_path / "data", IngestOptions(labels=export.labels_csv, workers=1)
    )
    assert (result.n_images, result.n_excluded) == (6, 0)
    rows = read_manifest(result.manifest_path)
    assert Counter(row["label"] for row in rows) == {"benign": 4, "malignant": 2}
    assert len({row["patient_key"] for row in rows}) == 6
    # the pixels survive ingest: each NIfTI holds one of the source PNGs, unchanged
    sources = {image.relative: load_grey(DEFAULT_BUSI / image.relative) for image in export.images}
    for row in rows:
        volume = np.asarray(nib.load(result.out / row["image_path"]).dataobj)
        frame = np.squeeze(volume).T  # NIfTI is (W, H)
        assert any(np.array_equal(frame, png) for png in sources.values())
    assert all(row["spacing_x_mm"] == "" for row in rows)  # BUSI has no spacing: none invented
