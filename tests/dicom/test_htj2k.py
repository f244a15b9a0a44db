"""HTJ2K (1.2.840.10008.1.2.4.201-.203) decodes through pydicom 3.0.2 + pylibjpeg-openjpeg.

pydicom 3.0 has no HTJ2K encoder, so the frames are encoded with imagecodecs' HTJ2K encoder
(OpenJPH), a different implementation from the decoder under test (OpenJPEG): the test does
not check a codec against itself. OpenJPH writes RPCL progression, which .202 requires.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import imagecodecs
import nibabel as nib
import numpy as np
import pydicom
import pytest
from numpy.typing import NDArray
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels.decoders.base import get_decoder
from pydicom.uid import (
    HTJ2K,
    UID,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    generate_uid,
)

from usdcm.artifacts.manifest import read_manifest
from usdcm.dicom.pixels import decode_frames
from usdcm.dicom.sop import US_MULTIFRAME_IMAGE_STORAGE
from usdcm.ingest import IngestOptions, ingest
from usdcm.ingest.convert import convert_file

ROWS, COLUMNS, FRAMES = 96, 128, 3
LOSSY_MAX_ERROR = 3
"""Measured: OpenJPH's irreversible 9/7 default is off by at most 1 grey level on these
frames (mean 0.07); the bound leaves room for decoder rounding."""

# RPCL = 2 in the COD marker's progression order byte (ITU T.800 table A.16)
RPCL = 2


def cine(*, rgb: bool = False) -> NDArray[np.uint8]:
    """Smooth, distinct frames (plus a sharp square) as an ultrasound cine might look."""
    y, x = np.mgrid[0:ROWS, 0:COLUMNS].astype(np.float64)
    frames = []
    for k in range(FRAMES):
        frame = 128 + 100 * np.sin((x + 7 * k) / 9.0) * np.cos(y / 13.0)
        frame[20 + k : 30 + k, 40:60] = 250
        frames.append(frame)
    gray = np.clip(np.stack(frames), 0, 255).astype(np.uint8)
    if not rgb:
        return gray
    return np.stack([gray, 255 - gray, gray // 2], axis=-1)


def htj2k_dataset(
    frames: NDArray[np.uint8], syntax: UID, *, reversible: bool, photometric: str
) -> Dataset:
    """A multi-frame US data set whose frames are HTJ2K codestreams from imagecodecs."""
    codestreams = [imagecodecs.htj2k_encode(frame, reversible=reversible) for frame in frames]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = US_MULTIFRAME_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=["htj2k", syntax, photometric])
    meta.TransferSyntaxUID = syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "US"
    ds.Rows, ds.Columns = ROWS, COLUMNS
    ds.NumberOfFrames = FRAMES
    ds.SamplesPerPixel = 3 if frames.ndim == 4 else 1
    if ds.SamplesPerPixel == 3:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.LossyImageCompression = "00" if reversible else "01"
    ds.PixelData = encapsulate(codestreams)
    ds["PixelData"].VR = "OB"
    return ds


def progression_order(codestream: bytes) -> int:
    cod = codestream.index(b"\xff\x52")  # COD marker: Lcod(2) Scod(1) then SGcod
    return codestream[cod + 5]


def write(tmp_path: Path, ds: Dataset, name: str) -> Path:
    path = tmp_path / name
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.parametrize("syntax", [HTJ2KLossless, HTJ2KLosslessRPCL])
def test_lossless_htj2k_cine_decodes_exactly(tmp_path: Path, syntax: UID) -> None:
    source = cine()
    ds = htj2k_dataset(source, syntax, reversible=True, photometric="MONOCHROME2")
    assert progression_order(imagecodecs.htj2k_encode(source[0], reversible=True)) == RPCL
    read = pydicom.dcmread(write(tmp_path, ds, "lossless"))
    np.testing.assert_array_equal(read.pixel_array, source)  # pydicom's own path
    np.testing.assert_array_equal(decode_frames(read), source)  # usdcm's decode path


def test_lossless_htj2k_colour_with_rct_decodes_to_rgb(tmp_path: Path) -> None:
    source = cine(rgb=True)
    codestream = imagecodecs.htj2k_encode(source[0], reversible=True)
    cod = codestream.index(b"\xff\x52")
    assert codestream[cod + 8] == 1  # the multiple component transform (RCT) is on
    ds = htj2k_dataset(source, HTJ2KLossless, reversible=True, photometric="YBR_RCT")
    read = pydicom.dcmread(write(tmp_path, ds, "rgb"))
    frames: NDArray[Any] = decode_frames(read, keep_color=True)
    np.testing.assert_array_equal(frames, source)


def test_lossy_htj2k_decodes_within_the_measured_loss(tmp_path: Path) -> None:
    source = cine()
    ds = htj2k_dataset(source, HTJ2K, reversible=False, photometric="MONOCHROME2")
    read = pydicom.dcmread(write(tmp_path, ds, "lossy"))
    decoded = decode_frames(read).astype(np.int64)
    error = np.abs(decoded - source.astype(np.int64))
    assert decoded.shape == source.shape
    assert error.max() <= LOSSY_MAX_ERROR and error.mean() < 0.5
    assert error.max() > 0  # it is lossy: the irreversible path was taken


def test_an_htj2k_file_is_ingested_like_any_other(tmp_path: Path) -> None:
    source = cine()
    ds = htj2k_dataset(source, HTJ2KLosslessRPCL, reversible=True, photometric="MONOCHROME2")
    path = write(tmp_path, ds, "instance")
    record = convert_file(path, tmp_path / "out.nii.gz", keep_color=False, frame_time_ms=None)
    assert record["status"] == "converted"
    assert (record["frames"], record["height"], record["width"]) == (FRAMES, ROWS, COLUMNS)
    volume = np.asarray(nib.load(tmp_path / "out.nii.gz").dataobj)
    np.testing.assert_array_equal(volume, source.transpose(2, 1, 0))


@pytest.mark.parametrize("syntax", [HTJ2KLossless, HTJ2KLosslessRPCL, HTJ2K])
def test_pydicom_decodes_htj2k_with_pylibjpeg_openjpeg(syntax: UID) -> None:
    decoder = get_decoder(syntax)
    assert decoder.is_available
    assert "pylibjpeg" in decoder.available_plugins  # pylibjpeg-openjpeg's plugin


def test_usdcm_ingest_accepts_each_htj2k_syntax(tmp_path: Path) -> None:
    source = tmp_path / "export"
    source.mkdir()
    for index, (syntax, reversible) in enumerate(
        [(HTJ2KLossless, True), (HTJ2KLosslessRPCL, True), (HTJ2K, False)]
    ):
        ds = htj2k_dataset(cine(), syntax, reversible=reversible, photometric="MONOCHROME2")
        ds.StudyInstanceUID = generate_uid(entropy_srcs=["htj2k-study"])
        ds.SeriesInstanceUID = generate_uid(entropy_srcs=["htj2k-series"])
        ds.PatientID = "HTJ2K-TEST"
        write(source, ds, f"IM{index}")
    result = ingest(source, tmp_path / "out", IngestOptions(workers=1))
    assert result.n_images == 3 and result.n_excluded == 0
    rows = read_manifest(tmp_path / "out" / "manifest.csv")
    assert {row["transfer_syntax"] for row in rows} == {HTJ2KLossless, HTJ2KLosslessRPCL, HTJ2K}
    assert all(row["frames"] == str(FRAMES) for row in rows)
