"""Sex, age band and study year from header values: the only demographics usdcm keeps.

Owns turning PatientSex, PatientAge, PatientBirthDate and the study's dates into the coarse
values the manifest records: a sex code, a 10-year age band (90 and over grouped, as HIPAA
Safe Harbor groups them) and a year. A full date is never returned, so nothing built from
these functions can hold one. Tolerant when reading: a value that does not parse is
unknown (``""``), never an error. Never reads files.
"""

from __future__ import annotations

import datetime as dt
import re

SEXES = ("F", "M", "O")
"""PatientSex (0010,0040) values kept; anything else is unknown (``""``)."""

TOP_BAND_YEARS = 90
"""Ages from here up share one band, ``"90+"``."""

MAX_AGE_YEARS = 130
"""An age above this is a damaged value, not a patient: unknown."""

_AGE = re.compile(r"0*(\d{1,3})\s*([DWMY])")
_DAYS_PER = {"D": 1.0, "W": 7.0, "M": 365.25 / 12, "Y": 365.25}
_SEX_WORDS = {"FEMALE": "F", "MALE": "M", "OTHER": "O"}


def patient_sex(value: str) -> str:
    """The PatientSex code ``F``, ``M`` or ``O``, or ``""`` when absent or not one of them.

    >>> patient_sex("F"), patient_sex(" m "), patient_sex("female"), patient_sex("U")
    ('F', 'M', 'F', '')
    """
    code = value.strip().upper()
    code = _SEX_WORDS.get(code, code)
    return code if code in SEXES else ""


def age_band(years: float | None) -> str:
    """The 10-year band of an age in years: ``"0-9"`` .. ``"80-89"``, ``"90+"``, or ``""``.

    >>> age_band(0.5), age_band(45), age_band(89.99), age_band(90), age_band(None)
    ('0-9', '40-49', '80-89', '90+', '')
    """
    if years is None or years < 0 or years > MAX_AGE_YEARS:
        return ""
    if years >= TOP_BAND_YEARS:
        return f"{TOP_BAND_YEARS}+"
    low = int(years // 10) * 10
    return f"{low}-{low + 9}"


def age_from_patient_age(value: str) -> float | None:
    """The age in years of a PatientAge (AS) value such as ``045Y``, ``006M``, ``010D`` or
    ``002W``; ``None`` when it does not parse (a unit is required: ``045`` is ambiguous).

    >>> age_from_patient_age("045Y"), age_from_patient_age("006M")
    (45.0, 0.5)
    >>> age_from_patient_age("45"), age_from_patient_age("")
    (None, None)
    """
    match = _AGE.fullmatch(value.strip().upper())
    if match is None:
        return None
    number, unit = int(match.group(1)), match.group(2)
    return float(number) if unit == "Y" else number * _DAYS_PER[unit] / _DAYS_PER["Y"]


def parse_date(value: str) -> dt.date | None:
    """A DA value (``YYYYMMDD``; ``YYYY.MM.DD`` of old ACR-NEMA files and ``YYYY-MM-DD``
    too) as a date, or ``None``. Kept in memory only: callers return years or bands.

    >>> parse_date("20240108"), parse_date("2024-13-01"), parse_date("")
    (datetime.date(2024, 1, 8), None, None)
    """
    text = value.strip()
    if re.fullmatch(r"\d{4}([.-]?)\d{2}\1\d{2}", text) is None:
        return None
    digits = re.sub(r"\D", "", text)
    try:
        return dt.date(int(digits[:4]), int(digits[4:6]), int(digits[6:8]))
    except ValueError:
        return None


def age_at(birth: dt.date, on: dt.date) -> int | None:
    """Completed years from ``birth`` to ``on``; ``None`` when ``on`` is before ``birth``.

    >>> age_at(dt.date(1980, 6, 2), dt.date(2020, 6, 1)), age_at(dt.date(1980, 6, 2), dt.date(2020, 6, 2))
    (39, 40)
    """  # noqa: E501
    if on < birth:
        return None
    return on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))


def study_date(dates: tuple[str, ...]) -> dt.date | None:
    """The first of ``dates`` that parses (StudyDate, then SeriesDate, AcquisitionDate and
    ContentDate, in the order the caller gives); ``None`` if none does."""
    for value in dates:
        parsed = parse_date(value)
        if parsed is not None:
            return parsed
    return None


def study_year(dates: tuple[str, ...]) -> str:
    """The year of :func:`study_date`, as text (``"2024"``), or ``""``.

    >>> study_year(("", "20190304")), study_year(("garbage",))
    ('2019', '')
    """
    date = study_date(dates)
    return "" if date is None else f"{date.year:04d}"


def patient_age_band(patient_age: str, birth_date: str, dates: tuple[str, ...]) -> str:
    """The age band at the study: from PatientAge, else from PatientBirthDate at the study
    date (:func:`study_date` of ``dates``); ``""`` when neither gives an age.

    >>> patient_age_band("045Y", "", ())
    '40-49'
    >>> patient_age_band("", "19330101", ("20240108",))
    '90+'
    >>> patient_age_band("", "19330101", ())
    ''
    """
    years = age_from_patient_age(patient_age)
    if years is not None:
        return age_band(years)
    birth, on = parse_date(birth_date), study_date(dates)
    if birth is None or on is None:
        return ""
    age = age_at(birth, on)
    return "" if age is None else age_band(age)
