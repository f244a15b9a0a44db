"""SOP classes and transfer syntaxes usdcm cares about, named as in DICOM PS3.4 / PS3.6."""

from __future__ import annotations

from pydicom.uid import UID

US_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.6.1")
US_MULTIFRAME_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.3.1")
US_IMAGE_STORAGE_RETIRED = UID("1.2.840.10008.5.1.4.1.1.6")
US_MULTIFRAME_IMAGE_STORAGE_RETIRED = UID("1.2.840.10008.5.1.4.1.1.3")
ENHANCED_US_VOLUME_STORAGE = UID("1.2.840.10008.5.1.4.1.1.6.2")
SECONDARY_CAPTURE_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.7")
MEDIA_STORAGE_DIRECTORY_STORAGE = UID("1.2.840.10008.1.3.10")

ULTRASOUND_IMAGE_SOP_CLASSES = frozenset(
    {
        US_IMAGE_STORAGE,
        US_MULTIFRAME_IMAGE_STORAGE,
        US_IMAGE_STORAGE_RETIRED,
        US_MULTIFRAME_IMAGE_STORAGE_RETIRED,
    }
)

# Prefixes of SOP classes that never hold an image: structured reports, encapsulated
# documents, presentation states, key objects, waveforms, raw data and spectroscopy.
_NON_IMAGE_PREFIXES: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.88.": "structured report (SR)",
    "1.2.840.10008.5.1.4.1.1.104.": "encapsulated document (PDF/CDA/STL)",
    "1.2.840.10008.5.1.4.1.1.11.": "presentation state",
    "1.2.840.10008.5.1.4.1.1.9.": "waveform",
    "1.2.840.10008.5.1.4.1.1.66": "raw data / registration / segmentation",
    "1.2.840.10008.5.1.4.1.1.481.": "radiotherapy object",
}


def non_image_kind(sop_class_uid: str) -> str | None:
    """Say what non-image object a SOP class is, or ``None`` if it may hold an image.

    Examples
    --------
    >>> non_image_kind("1.2.840.10008.5.1.4.1.1.88.33")
    'structured report (SR)'
    >>> non_image_kind(US_IMAGE_STORAGE) is None
    True
    """
    if sop_class_uid == MEDIA_STORAGE_DIRECTORY_STORAGE:
        return "DICOMDIR (media storage directory)"
    for prefix, kind in _NON_IMAGE_PREFIXES.items():
        if sop_class_uid.startswith(prefix):
            return kind
    return None


def sop_class_name(sop_class_uid: str) -> str:
    """Return the registered name of a SOP class, or the UID itself if unknown."""
    name = UID(sop_class_uid).name
    return str(name) if name else sop_class_uid
