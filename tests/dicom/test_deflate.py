from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import DeflatedExplicitVRLittleEndian
from tests.ingest.conftest import make_us_dataset

from usdcm.artifacts.manifest import read_manifest
from usdcm.dicom import deflate
from usdcm.dicom.deflate import check_inflated_size
from usdcm.dicom.header import read_header
from usdcm.errors import UnsupportedDicomError
from usdcm.ingest import IngestOptions, ingest


def _bomb(path: Path, side: int = 2048) -> Path:
    """A deflated US image of ``side`` x ``side`` zeros: 4 MiB inflated, a few KiB on disk."""
    dataset = make_us_dataset(np.zeros((side, side), np.uint8), seed=7)
    dataset.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    dataset.save_as(path, enforce_file_format=True)
    return path


def test_pydicoms_deflated_example_passes_and_a_tight_limit_refuses_it() -> None:
    path = Path(str(get_testdata_file("image_dfl.dcm")))
    check_inflated_size(path)
    inflated = len(pydicom.dcmread(path).PixelData)
    with pytest.raises(UnsupportedDicomError, match="inflates to more than"):
        check_inflated_size(path, limit=inflated // 2)


def test_a_deflate_bomb_is_refused_before_pydicom_inflates_it(tmp_path: Path) -> None:
    bomb = _bomb(tmp_path / "bomb")
    assert bomb.stat().st_size < 64 * 1024
    check_inflated_size(bomb, limit=8 * 1024**2)  # 4 MiB fits under 8 MiB
    with pytest.raises(UnsupportedDicomError, match="deflate bomb"):
        check_inflated_size(bomb, limit=1024**2)


def test_other_transfer_syntaxes_are_not_touched(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    make_us_dataset(np.zeros((64, 64), np.uint8), seed=8).save_as(plain)
    check_inflated_size(plain, limit=1)  # never inflated, so never over any limit
    (tmp_path / "raw").write_bytes(b"\x08\x00\x16\x00UI\x04\x001.2\x00")
    check_inflated_size(tmp_path / "raw", limit=1)


def test_ingest_excludes_the_bomb_with_a_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(deflate, "MAX_INFLATED_BYTES", 1024**2)
    source = tmp_path / "export"
    source.mkdir()
    _bomb(source / "bomb")
    make_us_dataset(np.full((16, 16), 9, np.uint8), seed=9).save_as(source / "fine")
    with pytest.raises(UnsupportedDicomError):
        read_header(source / "bomb")
    out = tmp_path / "out"
    result = ingest(source, out, IngestOptions(workers=1))
    assert result.n_images == 1
    assert [row["source_path"] for row in read_manifest(out / "manifest.csv")] == ["fine"]
    excluded = (out / "excluded.csv").read_text()
    assert "bomb,unreadable," in excluded and "deflate bomb" in excluded
