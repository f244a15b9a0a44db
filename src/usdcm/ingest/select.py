"""Step 2 of ingest: decide which scanned SOP instances become images, and why not.

Pure logic on scan records, run in the main process in sorted path order, so duplicates
resolve the same way every time. Never reads files.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from usdcm.dicom.sop import ULTRASOUND_IMAGE_SOP_CLASSES, non_image_kind, sop_class_name

DEFAULT_MAX_PIXEL_BYTES = 2 * 1024**3


def selection_reason(
    record: dict[str, Any], *, modalities: Collection[str], max_pixel_bytes: int
) -> tuple[str, str] | None:
    """Return ``(code, reason)`` if a DICOM scan record is left out, else ``None``.

    >>> record = {"sop_class": "1.2.840.10008.5.1.4.1.1.88.11", "modality": "SR", "rows": 0,
    ...           "columns": 0, "pixel_bytes": 0, "sop_uid": "1.2"}
    >>> selection_reason(record, modalities={"US"}, max_pixel_bytes=10)
    ('non_image', 'not an image: structured report (SR)')
    """
    sop_class = str(record["sop_class"])
    kind = non_image_kind(sop_class)
    if kind is not None:
        code = "dicomdir" if kind.startswith("DICOMDIR") else "non_image"
        return code, f"not an image: {kind}"
    if not record["sop_uid"]:
        return "unreadable", "no SOPInstanceUID in the header"
    modality = str(record["modality"]) or "(none)"
    if modality not in modalities:
        allowed = ", ".join(sorted(modalities))
        return (
            "modality",
            f"modality {modality} is not selected ({allowed}); add --modality {modality}",
        )
    if modality == "US" and sop_class not in ULTRASOUND_IMAGE_SOP_CLASSES:
        return (
            "sop_class",
            f"{sop_class_name(sop_class)} is not an ultrasound image SOP class "
            "(screen captures and reports are left out)",
        )
    if int(record["rows"]) <= 0 or int(record["columns"]) <= 0:
        return "non_image", "no Rows/Columns: the object holds no image"
    if int(record["pixel_bytes"]) > max_pixel_bytes:
        return (
            "too_large",
            f"declared pixel data of {int(record['pixel_bytes']):,} bytes exceeds the limit "
            f"of {max_pixel_bytes:,}; raise --max-pixel-bytes to include it",
        )
    return None
