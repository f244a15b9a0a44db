"""The instance header: what one SOP instance's header says, from scan to manifest row.

Owns :class:`InstanceHeader`, the one in-memory shape of a scanned DICOM file's header
facts: :func:`usdcm.dicom.header.read_header` builds it, the header scan adds the patient
pseudonym, selection decides on it, and ingest's manifest rows and predict's rows are made
from it. It holds no patient identifier, only the keyed ``patient_key``; UIDs stay in it
because the manifest, which lives beside the secret, keeps them.

Its JSON form (:meth:`InstanceHeader.to_record`) is what the ingest journal stores for a
DICOM file, with the keys the journal has always used, so journals written before this
module are read unchanged. A record that does not fit is not misread: ``from_record``
raises, and ingest scans that file again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

RECORD_VERSION = 2
"""The version of :meth:`InstanceHeader.to_record`'s keys (its ``record_version`` key; a
record without one is version 1); bump it when they change, and the journal's records of
another version are scanned again instead of read. Version 2 adds ``sex``, ``age_band``
and ``study_year``."""


def _same(value: T) -> T:
    return value


@dataclass(frozen=True, slots=True)
class InstanceHeader:
    """The header facts of one SOP instance that selection and the manifest use.

    Named in DICOM's terms. ``patient_key`` is the keyed pseudonym of the PatientID (or of
    the StudyInstanceUID when there is none); it is empty only between
    :func:`~usdcm.dicom.header.read_header`, which has no secret, and the header scan.
    ``sex``, ``age_band`` and ``study_year`` are the only demographics kept: bands and
    years, never a date.

    Examples
    --------
    >>> header = InstanceHeader(
    ...     sop_class_uid="1.2.840.10008.5.1.4.1.1.3.1", sop_instance_uid="1.2.3",
    ...     study_instance_uid="1.2", series_instance_uid="1.2.1", modality="US",
    ...     manufacturer="Acme", model="X1", transfer_syntax_uid="1.2.840.10008.1.2.1",
    ...     photometric="MONOCHROME2", rows=480, columns=640, frames=30,
    ...     samples_per_pixel=1, bits_allocated=8, frame_time_ms=33.3)
    >>> header.declared_pixel_bytes
    9216000
    >>> InstanceHeader.from_record(header.to_record()) == header
    True
    """

    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    modality: str
    manufacturer: str
    model: str
    transfer_syntax_uid: str
    photometric: str
    rows: int
    columns: int
    frames: int
    samples_per_pixel: int
    bits_allocated: int
    frame_time_ms: float | None
    patient_key: str = ""
    sex: str = ""
    """PatientSex as ``F``, ``M``, ``O``, or ``""`` when unknown."""
    age_band: str = ""
    """The age at the study in 10-year bands (``"40-49"``, ``"90+"``), or ``""``."""
    study_year: str = ""
    """The study's year (``"2024"``), or ``""``: years only, never a date."""

    def __post_init__(self) -> None:
        counts = (self.rows, self.columns, self.frames, self.samples_per_pixel, self.bits_allocated)
        if any(type(n) is not int for n in counts):
            message = (
                "Rows, Columns, NumberOfFrames, SamplesPerPixel and BitsAllocated must be "
                f"integers, found {tuple(type(n).__name__ for n in counts)}"
            )
            raise TypeError(message)
        if self.frame_time_ms is not None and type(self.frame_time_ms) not in (float, int):
            name = type(self.frame_time_ms).__name__
            message = f"frame_time_ms must be a number or None, not {name}"
            raise TypeError(message)

    @property
    def declared_pixel_bytes(self) -> int:
        """Rows x Columns x Frames x Samples x BitsAllocated / 8, as the header declares it."""
        bits = self.rows * self.columns * self.frames * self.samples_per_pixel
        return bits * self.bits_allocated // 8

    @property
    def is_image(self) -> bool:
        """Whether the header declares an image at all (Rows and Columns above 0)."""
        return self.rows > 0 and self.columns > 0

    def to_record(self) -> dict[str, Any]:
        """The JSON-ready form the ingest journal stores (its keys, not the field names)."""
        return {
            "sop_class": self.sop_class_uid,
            "sop_uid": self.sop_instance_uid,
            "study_uid": self.study_instance_uid,
            "series_uid": self.series_instance_uid,
            "modality": self.modality,
            "manufacturer": self.manufacturer,
            "model": self.model,
            "transfer_syntax": self.transfer_syntax_uid,
            "photometric": self.photometric,
            "rows": self.rows,
            "columns": self.columns,
            "frames": self.frames,
            "samples": self.samples_per_pixel,
            "bits": self.bits_allocated,
            "pixel_bytes": self.declared_pixel_bytes,
            "frame_time_ms": self.frame_time_ms,
            "patient_key": self.patient_key,
            "sex": self.sex,
            "age_band": self.age_band,
            "study_year": self.study_year,
            "record_version": RECORD_VERSION,
        }

    @classmethod
    def from_record(
        cls, record: Mapping[str, Any], share: Callable[[Any], Any] = _same
    ) -> InstanceHeader:
        """The header of a :meth:`to_record` record.

        ``share`` maps each string repeated across a series (classes, study and series
        UIDs, scanner, patient key) to one shared copy, so that a run holding a header per
        file keeps each such string once. Raises ``KeyError``, ``TypeError`` or
        ``ValueError`` for a record that does not fit, or one of another
        :data:`RECORD_VERSION` (then the file is scanned again).
        """
        version = record.get("record_version", 1)
        if version != RECORD_VERSION:
            message = f"record version {version!r}, not {RECORD_VERSION}"
            raise ValueError(message)
        strings = (
            "sop_class",
            "sop_uid",
            "study_uid",
            "series_uid",
            "modality",
            "manufacturer",
            "model",
            "transfer_syntax",
            "photometric",
            "patient_key",
            "sex",
            "age_band",
            "study_year",
        )
        for key in strings:
            if not isinstance(record[key], str):
                message = f"{key} must be a string, not {type(record[key]).__name__}"
                raise TypeError(message)
        return cls(
            sop_class_uid=share(record["sop_class"]),
            sop_instance_uid=record["sop_uid"],
            study_instance_uid=share(record["study_uid"]),
            series_instance_uid=share(record["series_uid"]),
            modality=share(record["modality"]),
            manufacturer=share(record["manufacturer"]),
            model=share(record["model"]),
            transfer_syntax_uid=share(record["transfer_syntax"]),
            photometric=share(record["photometric"]),
            rows=record["rows"],
            columns=record["columns"],
            frames=record["frames"],
            samples_per_pixel=record["samples"],
            bits_allocated=record["bits"],
            frame_time_ms=record["frame_time_ms"],
            patient_key=share(record["patient_key"]),
            sex=share(record["sex"]),
            age_band=share(record["age_band"]),
            study_year=share(record["study_year"]),
        )
