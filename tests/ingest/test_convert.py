"""Conversion of one SOP instance: crop, spacing, orientation and frame order on real bytes."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from tests.ingest.conftest import write_us
from usdcm.dicom.pixels import decode_frames
from usdcm.ingest.convert import convert_file
from usdcm.synth import ExportSummary
from usdcm.synth.plan import RegionHabit


def load(path: Path) -> tuple[np.ndarray, tuple[float, ...]]:
    image = nib.load(path)
    return np.asarray(image.dataobj), tuple(float(z) for z in image.header.get_zooms())


def test_marked_pixels_land_on_their_voxels_in_frame_order(
    tmp_path: Path, marked_cine: np.ndarray
) -> None:
    source = write_us(tmp_path / "in" / "cine", marked_cine)
    record = convert_file(source, tmp_path / "a.nii.gz", keep_color=False, frame_time_ms=40.0)
    assert record["status"] == "converted"
    assert (record["frames"], record["height"], record["width"]) == (3, 12, 16)
    assert record["crop"] == "" and record["spacing_x_mm"] is None
    volume, zooms = load(tmp_path / "a.nii.gz")
    assert volume.shape == (16, 12, 3)  # (width, height, frames)
    for k in range(3):
        assert volume[9, 5 + k, k] == 200 + k  # column 9, row 5+k, frame k
        assert volume[0, 0, k] == 10 * (k + 1)
    assert zooms == (1.0, 1.0, 1.0)  # no region: no spacing invented


def test_region_crops_and_calibrates(tmp_path: Path, marked_cine: np.ndarray) -> None:
    # region: columns 4..13, rows 2..10; 0.01 cm x 0.02 cm per pixel
    source = write_us(tmp_path / "cine", marked_cine, region=(4, 2, 13, 10), delta_cm=(0.01, 0.02))
    record = convert_file(source, tmp_path / "b.nii.gz", keep_color=False, frame_time_ms=None)
    assert record["crop"] == "4,2,13,10"
    assert (record["width"], record["height"]) == (10, 9)
    assert (record["spacing_x_mm"], record["spacing_y_mm"]) == (0.1, 0.2)
    assert record["region_note"] == ""
    volume, zooms = load(tmp_path / "b.nii.gz")
    assert volume.shape == (10, 9, 3)
    assert volume[9 - 4, 5 - 2, 0] == 200  # the marked pixel moved with the crop
    assert zooms == (np.float32(0.1), np.float32(0.2), 1.0)


def test_bundled_ybr_cine_is_cropped_to_its_clipped_region(tmp_path: Path) -> None:
    source = Path(get_testdata_file("examples_ybr_color.dcm"))
    record = convert_file(source, tmp_path / "y.nii.gz", keep_color=False, frame_time_ms=33.3)
    # the file's region 84,31..595,414 overruns the 320x240 image: clipped to 319,239
    assert record["crop"] == "84,31,319,239"
    assert (record["frames"], record["height"], record["width"]) == (30, 209, 236)
    assert record["spacing_x_mm"] is None  # the box was written for a larger original
    assert record["region_note"] == "overrun_no_spacing"
    volume, _ = load(tmp_path / "y.nii.gz")
    frames = decode_frames(pydicom.dcmread(source))
    expected = frames[:, 31:240, 84:320].transpose(2, 1, 0)
    np.testing.assert_array_equal(volume, expected)


def test_undecodable_pixels_are_an_exclusion_not_an_exception(tmp_path: Path) -> None:
    data = Path(get_testdata_file("examples_palette.dcm")).read_bytes()
    broken = tmp_path / "broken"
    broken.write_bytes(data[: len(data) // 2])
    record = convert_file(broken, tmp_path / "x.nii.gz", keep_color=False, frame_time_ms=None)
    assert record["status"] == "excluded"
    assert record["code"] == "decode_error"
    assert not (tmp_path / "x.nii.gz").exists()


def test_a_region_one_pixel_past_the_image_keeps_its_calibration(
    tmp_path: Path, marked_cine: np.ndarray
) -> None:
    # the 12x16 image's region ends at column 16 == Columns: the off-by-one habit
    source = write_us(tmp_path / "cine", marked_cine, region=(4, 2, 16, 10))
    record = convert_file(source, tmp_path / "c.nii.gz", keep_color=False, frame_time_ms=None)
    assert record["crop"] == "4,2,15,10"
    assert (record["width"], record["height"]) == (12, 9)
    assert (record["spacing_x_mm"], record["spacing_y_mm"]) == (0.1, 0.2)
    assert record["region_note"] == "clipped_1px"
    volume, zooms = load(tmp_path / "c.nii.gz")
    assert volume.shape == (12, 9, 3)
    assert volume[9 - 4, 5 - 2, 0] == 200
    assert zooms == (np.float32(0.1), np.float32(0.2), 1.0)


def test_a_negative_delta_gives_a_positive_spacing_and_keeps_the_voxel_order(
    tmp_path: Path, marked_cine: np.ndarray
) -> None:
    source = write_us(tmp_path / "cine", marked_cine, region=(4, 2, 16, 10), delta_cm=(-0.01, 0.02))
    record = convert_file(source, tmp_path / "d.nii.gz", keep_color=False, frame_time_ms=None)
    assert (record["spacing_x_mm"], record["spacing_y_mm"]) == (0.1, 0.2)
    assert record["region_note"] == "clipped_1px;negative_delta_x"
    volume, zooms = load(tmp_path / "d.nii.gz")
    assert volume[9 - 4, 5 - 2, 0] == 200  # stored order: nothing is flipped
    assert zooms == (np.float32(0.1), np.float32(0.2), 1.0)
    image = nib.load(tmp_path / "d.nii.gz")
    assert image.header.get_xyzt_units()[0] == "mm"
    assert np.all(np.diag(image.affine)[:2] > 0)


def test_synth_images_with_vendor_habits_keep_their_calibration(
    tmp_path: Path, synth_mix: ExportSummary
) -> None:
    records = [r for r in synth_mix.images if r.region_habit is not RegionHabit.NONE]
    assert {r.region_note for r in records} >= {"clipped_1px", "negative_delta_x"}
    for index, record in enumerate(records):
        ds = pydicom.dcmread(record.path, stop_before_pixels=True, force=True)
        delta_mm = round(abs(float(ds.SequenceOfUltrasoundRegions[0].PhysicalDeltaX)) * 10, 6)
        out = tmp_path / f"{index}.nii.gz"
        result = convert_file(record.path, out, keep_color=False, frame_time_ms=None)
        assert result["status"] == "converted", record.recipe
        assert result["crop"] == ",".join(str(v) for v in record.tissue_box)
        assert (result["spacing_x_mm"], result["spacing_y_mm"]) == (delta_mm, delta_mm)
        assert result["region_note"] == record.region_note
        _, zooms = load(out)
        assert zooms[:2] == pytest.approx((delta_mm, delta_mm), rel=1e-6)
