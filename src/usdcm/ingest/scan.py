"""Step 1 of ingest: walk the export and read each file's header (never its pixels).

Runs in worker processes. Returns plain JSON-ready records: header facts, the patient
pseudonym, hashed join keys and hashed identifier words, and never an identifier.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from usdcm.dicom.header import read_header
from usdcm.errors import NotDicomError, UnsupportedDicomError
from usdcm.ingest.labels import JOIN_KEYWORDS, join_hash
from usdcm.privacy import PathRedactor, ProjectSecret, phi_tokens

_SECRET: ProjectSecret | None = None


def init_worker(key: bytes) -> None:
    """Process-pool initializer: receive the project secret once per worker."""
    global _SECRET
    _SECRET = ProjectSecret(key)


def walk_files(source: Path, skip: Path | None = None) -> Iterator[Path]:
    """Yield every file under ``source`` in sorted order, ignoring names and extensions.

    Directory symlinks are not followed (no loops); ``skip`` (the output folder when it lies
    inside ``source``) is left out.
    """
    for root, dirs, files in os.walk(source, followlinks=False):
        root_path = Path(root)
        dirs[:] = sorted(d for d in dirs if skip is None or root_path / d != skip)
        for name in sorted(files):
            yield root_path / name


def excluded(code: str, reason: str) -> dict[str, Any]:
    """An exclusion record: a reason code and a reason in words."""
    return {"status": "excluded", "code": code, "reason": reason}


def scan_file(path: Path) -> dict[str, Any]:
    """Read the header of one file and return its scan record (see module docstring)."""
    assert _SECRET is not None, "init_worker() must run first"
    secret = _SECRET
    try:
        instance = read_header(path)
    except NotDicomError as err:
        return excluded("not_dicom", str(err))
    except UnsupportedDicomError as err:
        return excluded("unreadable", str(err))
    except OSError as err:
        return excluded("unreadable", f"cannot read file ({type(err).__name__})")
    patient_key = (
        secret.pseudonym(instance.patient_id)
        if instance.patient_id
        else secret.pseudonym(instance.study_instance_uid, namespace="patient-from-study")
    )
    join_values = {
        "PatientID": instance.patient_id,
        "AccessionNumber": instance.accession_number,
        "StudyInstanceUID": instance.study_instance_uid,
        "SeriesInstanceUID": instance.series_instance_uid,
        "SOPInstanceUID": instance.sop_instance_uid,
    }
    tokens = phi_tokens(
        patient_id=instance.patient_id,
        accession_number=instance.accession_number,
        patient_name=instance.patient_name,
        birth_date=instance.birth_date,
    )
    return {
        "status": "dicom",
        "sop_class": instance.sop_class_uid,
        "sop_uid": instance.sop_instance_uid,
        "study_uid": instance.study_instance_uid,
        "series_uid": instance.series_instance_uid,
        "modality": instance.modality,
        "manufacturer": instance.manufacturer,
        "model": instance.model,
        "transfer_syntax": instance.transfer_syntax_uid,
        "photometric": instance.photometric,
        "rows": instance.rows,
        "columns": instance.columns,
        "frames": instance.frames,
        "samples": instance.samples_per_pixel,
        "bits": instance.bits_allocated,
        "pixel_bytes": instance.declared_pixel_bytes,
        "frame_time_ms": instance.frame_time_ms,
        "patient_key": patient_key,
        "join": {
            keyword: join_hash(secret, keyword, join_values[keyword])
            for keyword in JOIN_KEYWORDS
            if join_values[keyword]
        },
        "phi": PathRedactor(secret).hashes_of(tokens),
    }
