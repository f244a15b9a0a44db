"""Tests for usdcm.dicom.demographics, and for the demographics read_header gives on real
bytes: pydicom's bundled ultrasound files, as they are and with ages written into them."""

from __future__ import annotations

import datetime as dt
import warnings
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from usdcm.dicom.demographics import (
    age_band,
    age_from_patient_age,
    parse_date,
    patient_age_band,
    patient_sex,
    study_year,
)
from usdcm.dicom.header import read_header


def bundled(name: str) -> Path:
    path = get_testdata_file(name)  # bundled with pydicom: never downloads
    assert isinstance(path, str)
    return Path(path)


@pytest.mark.parametrize(
    ("years", "band"),
    [
        (0.0, "0-9"),
        (9.99, "0-9"),
        (10, "10-19"),
        (45, "40-49"),
        (89, "80-89"),
        (89.9, "80-89"),
        (90, "90+"),
        (104, "90+"),
        (131, ""),
        (-1, ""),
        (None, ""),
    ],
)
def test_ten_year_bands_with_ninety_and_over_grouped(years: float | None, band: str) -> None:
    assert age_band(years) == band


@pytest.mark.parametrize(
    ("value", "band"),
    [
        ("045Y", "40-49"),
        ("45Y", "40-49"),
        (" 090Y ", "90+"),
        ("089Y", "80-89"),
        ("006M", "0-9"),
        ("130M", "10-19"),  # 10.8 years
        ("010D", "0-9"),
        ("002W", "0-9"),
        ("045y", "40-49"),
        ("045", ""),  # no unit: ambiguous, unknown
        ("", ""),
        ("45 years", ""),
        ("999Y", ""),
    ],
)
def test_patient_age_in_every_unit(value: str, band: str) -> None:
    assert patient_age_band(value, "", ()) == band


def test_patient_age_wins_over_the_birth_date() -> None:
    assert patient_age_band("045Y", "19000101", ("20240108",)) == "40-49"


@pytest.mark.parametrize(
    ("birth", "dates", "band"),
    [
        ("19840109", ("20240108",), "30-39"),  # 39 the day before the 40th birthday
        ("19840108", ("20240108",), "40-49"),  # 40 on it
        ("19340108", ("20240108",), "90+"),
        ("20231201", ("", "20240108"), "0-9"),  # the SeriesDate when StudyDate is empty
        ("20250101", ("20240108",), ""),  # born after the study: damaged, unknown
        ("19840108", (), ""),  # no study date: no age
        ("1984", ("20240108",), ""),
        ("19841301", ("20240108",), ""),
    ],
)
def test_age_from_the_birth_date_at_the_study_date(
    birth: str, dates: tuple[str, ...], band: str
) -> None:
    assert patient_age_band("", birth, dates) == band


def test_sex_codes() -> None:
    assert [patient_sex(v) for v in ("F", "M", "O", " f", "MALE", "U", "", "X")] == [
        "F",
        "M",
        "O",
        "F",
        "M",
        "",
        "",
        "",
    ]


def test_study_year_falls_back_through_the_dates_and_keeps_only_the_year() -> None:
    assert study_year(("20190304", "20200101")) == "2019"
    assert study_year(("", "", "20180101")) == "2018"
    assert study_year(("1997.04.24",)) == "1997"  # ACR-NEMA style
    assert study_year(("2019-03-04",)) == "2019"
    assert study_year(("2019",)) == study_year(()) == ""
    assert parse_date("20190230") is None
    assert parse_date("20190304") == dt.date(2019, 3, 4)
    assert age_from_patient_age("006M") == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("name", "sex", "year"),
    [
        ("examples_jpeg2k.dcm", "M", "2004"),
        ("examples_rgb_color.dcm", "M", "2004"),
        ("examples_palette.dcm", "", "2011"),
        ("examples_ybr_color.dcm", "", "2016"),
    ],
)
def test_bundled_ultrasound_files(name: str, sex: str, year: str) -> None:
    instance = read_header(bundled(name)).instance
    assert (instance.sex, instance.age_band, instance.study_year) == (sex, "", year)


def test_a_bundled_file_with_an_age_and_a_birth_date_written_into_it(tmp_path: Path) -> None:
    dataset = pydicom.dcmread(bundled("examples_palette.dcm"))
    dataset.PatientSex = "F"
    dataset.PatientBirthDate = "19300526"  # 81 on the StudyDate 20110525
    path = tmp_path / "birth.dcm"
    dataset.save_as(path)
    instance = read_header(path).instance
    assert (instance.sex, instance.age_band, instance.study_year) == ("F", "80-89", "2011")
    assert "1930" not in repr(instance) and "0526" not in repr(instance)

    dataset.PatientAge = "092Y"
    dataset.save_as(path)
    assert read_header(path).instance.age_band == "90+"

    del dataset.StudyDate
    del dataset.PatientAge
    dataset.ContentDate = "20120101"  # the last fallback
    dataset.SeriesDate = dataset.AcquisitionDate = ""
    dataset.save_as(path)
    instance = read_header(path).instance
    assert (instance.age_band, instance.study_year) == ("80-89", "2012")


def test_damaged_demographics_are_unknown_and_never_exclude_the_file(tmp_path: Path) -> None:
    dataset = pydicom.dcmread(bundled("examples_palette.dcm"))
    path = tmp_path / "damaged.dcm"
    with warnings.catch_warnings():  # pydicom warns about the values it is asked to write
        warnings.simplefilter("ignore")
        dataset.PatientSex = "Doe^Jane"
        dataset.add_new(0x00101010, "LO", "Doe^Jane 45Y")  # PatientAge with the wrong VR
        dataset.PatientBirthDate = "Doe^Jane"
        dataset.StudyDate = "1.2.3.4"
        dataset.SeriesDate = dataset.AcquisitionDate = dataset.ContentDate = ""
        dataset.save_as(path)
    instance = read_header(path).instance
    assert (instance.sex, instance.age_band, instance.study_year) == ("", "", "")
    assert "Doe" not in repr(instance)
