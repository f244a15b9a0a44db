from __future__ import annotations

from pathlib import Path

import pytest

from usdcm.errors import ManifestError
from usdcm.manifest import MANIFEST_COLUMNS, read_manifest, write_manifest


def test_round_trip_keeps_columns_and_utf8(tmp_path: Path) -> None:
    path = tmp_path / "manifest.csv"
    row = dict.fromkeys(MANIFEST_COLUMNS, "")
    row.update(image_id="a", image_path="images/a.nii.gz", patient_key="k", label="Ödem, schwer")
    write_manifest(path, [row])
    assert path.read_text(encoding="utf-8").splitlines()[0] == ",".join(MANIFEST_COLUMNS)
    assert read_manifest(path) == [row]
    assert not list(tmp_path.glob(".*.tmp"))  # the temp file was renamed


def test_missing_columns_are_named(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("image_id,label\na,b\n", encoding="utf-8")
    with pytest.raises(ManifestError, match="image_path, patient_key"):
        read_manifest(path)


def test_missing_manifest_says_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="usdcm ingest"):
        read_manifest(tmp_path / "none.csv")
