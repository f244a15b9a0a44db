"""splits.csv: round trip, keys only, and a file of another schema version is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from usdcm.artifacts.splits import (
    SCHEMA_VERSION,
    SPLIT_COLUMNS,
    SplitRow,
    SplitsFileError,
    read_splits_file,
    write_splits_file,
)
from usdcm.errors import SchemaVersionError

ROWS = [
    SplitRow("img1", "pk1", "sk1", "abnormal", "train"),
    SplitRow("img2", "pk2", "", "normal", "test"),
]


def test_round_trip_with_the_version_on_every_row(tmp_path: Path) -> None:
    path = tmp_path / "splits.csv"
    assert write_splits_file(path, ROWS) == 2
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == ",".join(SPLIT_COLUMNS)
    assert all(line.endswith(f",{SCHEMA_VERSION}") for line in lines[1:])
    assert read_splits_file(path) == ROWS


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("image_id,patient_key,study_key,label,split,schema_version\ni,p,s,a,train,1\n", "1"),
        ("image_id,patient_key,study_key,label,split,fold,schema_version\ni,p,s,a,train,,4\n", "4"),
    ],
)
def test_another_version_is_refused_naming_file_versions_and_fix(
    tmp_path: Path, text: str, found: str
) -> None:
    path = tmp_path / "splits.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SchemaVersionError) as caught:
        read_splits_file(path)
    message = str(caught.value)
    assert str(path) in message
    assert f"schema version {found}" in message and f"reads version {SCHEMA_VERSION}" in message
    assert "retrain" in message


def test_a_version_2_file_without_folds_is_still_read(tmp_path: Path) -> None:
    path = tmp_path / "splits.csv"
    path.write_text("image_id,patient_key,study_key,label,split,schema_version\ni,p,s,a,val,2\n")
    assert read_splits_file(path) == [SplitRow("i", "p", "s", "a", "val")]


def test_folds_round_trip_and_name_their_leakage_group(tmp_path: Path) -> None:
    rows = [SplitRow("a", "p1", "", "x", "train", fold=2), SplitRow("b", "p2", "", "y", "test")]
    path = tmp_path / "splits.csv"
    write_splits_file(path, rows)
    assert read_splits_file(path) == rows
    assert [row.group for row in rows] == ["fold-2", "test"]
    with pytest.raises(SplitsFileError, match="fold 1 in split 'test'"):
        SplitRow("c", "p3", "", "x", "test", fold=1)


def test_an_unversioned_file_of_an_older_usdcm_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "splits.csv"
    path.write_text("image_id,patient_key,study_uid,label,split\ni,p,1.2.3,a,train\n")
    with pytest.raises(SchemaVersionError, match="without a schema_version"):
        read_splits_file(path)


def test_a_bad_split_or_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SplitsFileError, match="split 'holdout'"):
        SplitRow("i", "p", "s", "a", "holdout")
    with pytest.raises(SplitsFileError, match="missing; retrain"):
        read_splits_file(tmp_path / "nope.csv")
