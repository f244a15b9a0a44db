"""Which scanned files become images, and why the others do not: the one selection path.

:func:`select_instances` is the only place that decides. ``usdcm ingest`` and
``usdcm predict`` call it on the header scan of a whole export; the PACS receiver calls it
(or :class:`InstanceSelector`, file by file) on what arrives. Pure logic on scan outcomes,
in the order the caller gives them (:func:`usdcm.ingest.scan.walk_files` order), so
duplicates resolve the same way every time. Never reads files.
"""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass
from typing import NamedTuple

from usdcm.artifacts.instance import InstanceHeader
from usdcm.dicom.sop import ULTRASOUND_IMAGE_SOP_CLASSES, non_image_kind, sop_class_name
from usdcm.errors import UsdcmError

DEFAULT_MAX_PIXEL_BYTES = 2 * 1024**3


class Exclusion(NamedTuple):
    """Why a file is left out: a reason code (see ``manifests/README.md``) and words."""

    code: str
    reason: str


ScanOutcome = InstanceHeader | tuple[str, str]
"""What the header scan gave for one file: its :class:`InstanceHeader`, or why it could
not be read as one (an :class:`Exclusion`, or any ``(code, reason)`` pair)."""


@dataclass(frozen=True)
class SelectionOptions:
    """What to select: the modalities kept and the largest declared pixel data.

    Modalities are compared in upper case, as DICOM code strings are written.

    >>> SelectionOptions(modalities=frozenset({"us", "ivus"})).modalities == {"US", "IVUS"}
    True
    """

    modalities: frozenset[str] = frozenset({"US"})
    max_pixel_bytes: int = DEFAULT_MAX_PIXEL_BYTES

    def __post_init__(self) -> None:
        modalities = frozenset(str(modality).upper() for modality in self.modalities)
        if self.max_pixel_bytes < 0:
            message = f"max_pixel_bytes must be 0 or more, not {self.max_pixel_bytes}"
            raise UsdcmError(message)
        object.__setattr__(self, "modalities", modalities)


def selection_reason(
    header: InstanceHeader, *, modalities: Iterable[str], max_pixel_bytes: int
) -> Exclusion | None:
    """Return ``(code, reason)`` if a SOP instance is left out by its own header
    (duplicates aside: see :class:`InstanceSelector`), else ``None``.

    >>> header = InstanceHeader(
    ...     sop_class_uid="1.2.840.10008.5.1.4.1.1.88.11", sop_instance_uid="1.2",
    ...     study_instance_uid="1", series_instance_uid="1.1", modality="SR",
    ...     manufacturer="", model="", transfer_syntax_uid="1.2.840.10008.1.2.1",
    ...     photometric="", rows=0, columns=0, frames=1, samples_per_pixel=1,
    ...     bits_allocated=8, frame_time_ms=None)
    >>> selection_reason(header, modalities={"US"}, max_pixel_bytes=10)
    Exclusion(code='non_image', reason='not an image: structured report (SR)')
    """
    sop_class = header.sop_class_uid
    kind = non_image_kind(sop_class)
    if kind is not None:
        code = "dicomdir" if kind.startswith("DICOMDIR") else "non_image"
        return Exclusion(code, f"not an image: {kind}")
    if not header.sop_instance_uid:
        return Exclusion("unreadable", "no SOPInstanceUID in the header")
    modality = header.modality or "(none)"
    allowed = set(modalities)
    if modality not in allowed:
        names = ", ".join(sorted(allowed))
        return Exclusion(
            "modality",
            f"modality {modality} is not selected ({names}); add --modality {modality}",
        )
    if modality == "US" and sop_class not in ULTRASOUND_IMAGE_SOP_CLASSES:
        return Exclusion(
            "sop_class",
            f"{sop_class_name(sop_class)} is not an ultrasound image SOP class "
            "(screen captures and reports are left out)",
        )
    if not header.is_image:
        return Exclusion("non_image", "no Rows/Columns: the object holds no image")
    pixel_bytes = header.declared_pixel_bytes
    if pixel_bytes > max_pixel_bytes:
        return Exclusion(
            "too_large",
            f"declared pixel data of {pixel_bytes:,} bytes exceeds the limit "
            f"of {max_pixel_bytes:,}; raise --max-pixel-bytes to include it",
        )
    return None


class InstanceSelector:
    """Decide file by file, remembering the SOP instances selected so far.

    The first file of a SOP instance is selected; every later file with the same
    SOPInstanceUID is a ``duplicate`` that names the first by its display path. One
    selector per export (or per receiving session): decisions depend on what came before.
    ``seen`` is where it remembers them (SOPInstanceUID -> display path; a ``dict`` by
    default): ingest passes one kept on disk, so that an export of any size fits.

    >>> selector = InstanceSelector()
    >>> selector.decide("a/IM1", ("not_dicom", "not DICOM: no 'DICM' marker"))
    Exclusion(code='not_dicom', reason="not DICOM: no 'DICM' marker")
    """

    def __init__(
        self,
        options: SelectionOptions | None = None,
        *,
        seen: MutableMapping[str, str] | None = None,
    ) -> None:
        self.options = options or SelectionOptions()
        # SOPInstanceUID -> display path of its first file
        self._first: MutableMapping[str, str] = {} if seen is None else seen

    def decide(self, display: str, outcome: ScanOutcome) -> Exclusion | None:
        """``None`` when the file at ``display`` (its path as outputs show it) is selected,
        else why it is left out."""
        if not isinstance(outcome, InstanceHeader):
            return outcome if isinstance(outcome, Exclusion) else Exclusion(*outcome)
        why = selection_reason(
            outcome,
            modalities=self.options.modalities,
            max_pixel_bytes=self.options.max_pixel_bytes,
        )
        if why is not None:
            return why
        first = self._first.setdefault(outcome.sop_instance_uid, display)
        if first != display:
            reason = f"duplicate SOP instance: same SOPInstanceUID as {first}"
            return Exclusion("duplicate", reason)
        return None


def select_instances(
    outcomes: Iterable[tuple[str, ScanOutcome]],
    options: SelectionOptions | None = None,
    *,
    seen: MutableMapping[str, str] | None = None,
) -> list[Exclusion | None]:
    """Select the SOP instances of an export from the header scan of every file.

    Parameters
    ----------
    outcomes
        ``(display path, scan outcome)`` of every file, in walk order
        (:func:`usdcm.ingest.scan.walk_files`). The display path is the file's path as
        outputs show it (relative, redacted); a duplicate's reason names its first file by
        it. A scan outcome is an :class:`InstanceHeader` or an exclusion (see
        :data:`ScanOutcome`).
    options
        The modalities kept and the pixel-data limit (default: US, 2 GiB).
    seen
        The SOP instances selected before these outcomes, SOPInstanceUID -> display path
        of its first file, updated with those selected now (default: none, in memory).
        Calls on consecutive parts of an export that share one ``seen`` decide exactly as
        one call on the whole: that is how ingest selects an export a chunk at a time.

    Returns
    -------
    list
        One entry per file, in the order given: ``None`` for a selected file, else its
        :class:`Exclusion` ``(code, reason)``. Codes are those of ``excluded.csv``.

    Examples
    --------
    >>> us = InstanceHeader(
    ...     sop_class_uid="1.2.840.10008.5.1.4.1.1.6.1", sop_instance_uid="1.9",
    ...     study_instance_uid="1", series_instance_uid="1.1", modality="US",
    ...     manufacturer="", model="", transfer_syntax_uid="1.2.840.10008.1.2.1",
    ...     photometric="MONOCHROME2", rows=4, columns=4, frames=1, samples_per_pixel=1,
    ...     bits_allocated=8, frame_time_ms=None)
    >>> for why in select_instances([("a", us), ("b", us), ("c", ("not_dicom", "no DICM"))]):
    ...     print(why)
    None
    Exclusion(code='duplicate', reason='duplicate SOP instance: same SOPInstanceUID as a')
    Exclusion(code='not_dicom', reason='no DICM')
    """
    selector = InstanceSelector(options, seen=seen)
    return [selector.decide(display, outcome) for display, outcome in outcomes]
