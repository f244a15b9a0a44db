from __future__ import annotations

from pathlib import Path

import pytest

from usdcm.errors import LabelsError
from usdcm.ingest.labels import join_hash, read_labels
from usdcm.privacy import ProjectSecret

SECRET = ProjectSecret(b"s" * 32)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("column", ["AccessionNumber", "accession_number", "ACCESSIONNUMBER"])
def test_key_column_variants_join_on_the_keyword(tmp_path: Path, column: str) -> None:
    path = write(tmp_path / "l.csv", f"{column},label\nACC1,abnormal\nACC2,normal\n")
    table = read_labels(path, SECRET)
    assert table.keyword == "AccessionNumber"
    hashed = {"AccessionNumber": join_hash(SECRET, "AccessionNumber", "ACC1")}
    assert table.lookup(hashed) == "abnormal"
    assert table.lookup({"AccessionNumber": join_hash(SECRET, "AccessionNumber", "ACC9")}) is None
    assert table.summary(unlabelled_images=3) == {
        "key": "AccessionNumber",
        "rows": 2,
        "distinct_keys": 2,
        "empty_labels": 0,
        "matched_keys": 1,
        "unmatched_keys": 1,
        "unlabelled_images": 3,
    }


def test_keys_are_held_only_as_hashes(tmp_path: Path) -> None:
    path = write(tmp_path / "l.csv", "PatientID,label\nSECRETID42,normal\n")
    table = read_labels(path, SECRET)
    assert "SECRETID42" not in repr(table.labels)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("AccessionNumber,diagnosis\nA,1\n", "no 'label' column"),
        ("AccessionNumber,PatientID,label\nA,P,1\n", "exactly one key column"),
        ("name,label\nA,1\n", "found none"),
        ("PatientID,label\nP1,normal\nP1,abnormal\n", "line 3"),
    ],
)
def test_bad_labels_files_name_the_problem(tmp_path: Path, text: str, fragment: str) -> None:
    path = write(tmp_path / "l.csv", text)
    with pytest.raises(LabelsError, match=fragment) as info:
        read_labels(path, SECRET)
    assert "P1" not in str(info.value)  # a key value is an identifier: never quoted


def test_missing_labels_file_is_a_labels_error(tmp_path: Path) -> None:
    with pytest.raises(LabelsError, match="does not exist"):
        read_labels(tmp_path / "nope.csv", SECRET)
