"""The Sequence of Ultrasound Regions (0018,6011): where the tissue image is, and its scale.

Owns choosing the crop box and the pixel spacing, and the notes that say which vendor habit
was tolerated on the way (the manifest's ``region_note``). Never decodes pixels.

Strict writing, tolerant reading: two habits of real scanners are accepted, and recorded.

- A region that ends one pixel past the image (``RegionLocationMaxX1`` equal to ``Columns``,
  an off-by-one) is clipped by that pixel and keeps its spacing: ``clipped_1px``.
- A negative ``PhysicalDeltaX`` or ``PhysicalDeltaY`` (the axis runs the other way) gives
  its magnitude as the spacing: ``negative_delta_x``, ``negative_delta_y``. The voxels stay
  in stored order; the note is where the direction is recorded.

A region that overruns the image by more than one pixel was written for another image (the
file was resized after export): it is still clipped and used as the crop, but its spacing
is dropped, as the note ``overrun_no_spacing`` says.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any


class RegionSpatialFormat(IntEnum):
    """Region Spatial Format (0018,6012), PS3.3 C.8.5.5.1.1."""

    NONE = 0
    TWO_D = 1
    M_MODE = 2
    SPECTRAL = 3
    WAVEFORM = 4
    GRAPHICS = 5


class PhysicalUnits(IntEnum):
    """Physical Units X/Y Direction (0018,6024/6026), PS3.3 C.8.5.5.1.15 (subset)."""

    NONE = 0
    PERCENT = 1
    DB = 2
    CM = 3
    SECONDS = 4
    HERTZ = 5
    DB_PER_SECOND = 6
    CM_PER_SECOND = 7


NOTE_CLIPPED_1PX = "clipped_1px"
"""The region overran the image by one pixel (an off-by-one); clipped, spacing kept."""
NOTE_OVERRUN_NO_SPACING = "overrun_no_spacing"
"""The region overran the image by more than one pixel; clipped, spacing dropped."""
NOTE_NEGATIVE_DELTA_X = "negative_delta_x"
"""PhysicalDeltaX was negative: the spacing is its magnitude, the x axis runs the other way."""
NOTE_NEGATIVE_DELTA_Y = "negative_delta_y"
"""PhysicalDeltaY was negative: the spacing is its magnitude, the y axis runs the other way."""
REGION_NOTES: tuple[str, ...] = (
    NOTE_CLIPPED_1PX,
    NOTE_OVERRUN_NO_SPACING,
    NOTE_NEGATIVE_DELTA_X,
    NOTE_NEGATIVE_DELTA_Y,
)
"""Every note, in the order they are joined with ``;`` in ``region_note``."""
MAX_TOLERATED_OVERRUN = 1
"""Pixels a region may reach past the image and keep its spacing."""


@dataclass(frozen=True)
class UltrasoundRegion:
    """One item of the Sequence of Ultrasound Regions.

    The box uses DICOM's inclusive pixel coordinates: columns ``x0..x1`` and rows ``y0..y1``.

    Examples
    --------
    >>> region = UltrasoundRegion(x0=10, y0=20, x1=109, y1=69, spatial_format=1,
    ...                           units_x=3, units_y=3, delta_x=0.02, delta_y=0.025)
    >>> (region.width, region.height, region.area)
    (100, 50, 5000)
    >>> region.spacing_mm
    (0.2, 0.25)
    """

    x0: int
    y0: int
    x1: int
    y1: int
    spatial_format: int
    units_x: int = 0
    units_y: int = 0
    delta_x: float = 0.0
    delta_y: float = 0.0
    data_type: int = 0
    notes: tuple[str, ...] = ()
    """What was tolerated when this region was chosen (see :data:`REGION_NOTES`); empty for
    a region as read."""

    @classmethod
    def from_item(cls, item: Any) -> UltrasoundRegion:
        """Build a region from a pydicom ``Dataset`` item of the sequence.

        Tolerant when reading: missing physical units or deltas read as unknown; a missing
        location raises ``ValueError`` naming the attribute.
        """
        values: dict[str, int] = {}
        for keyword in (
            "RegionLocationMinX0",
            "RegionLocationMinY0",
            "RegionLocationMaxX1",
            "RegionLocationMaxY1",
        ):
            value = item.get(keyword)
            if value is None:
                message = f"ultrasound region has no {keyword}"
                raise ValueError(message)
            values[keyword] = int(value)
        return cls(
            x0=values["RegionLocationMinX0"],
            y0=values["RegionLocationMinY0"],
            x1=values["RegionLocationMaxX1"],
            y1=values["RegionLocationMaxY1"],
            spatial_format=int(item.get("RegionSpatialFormat", 0) or 0),
            units_x=int(item.get("PhysicalUnitsXDirection", 0) or 0),
            units_y=int(item.get("PhysicalUnitsYDirection", 0) or 0),
            delta_x=float(item.get("PhysicalDeltaX", 0.0) or 0.0),
            delta_y=float(item.get("PhysicalDeltaY", 0.0) or 0.0),
            data_type=int(item.get("RegionDataType", 0) or 0),
        )

    @property
    def width(self) -> int:
        return self.x1 - self.x0 + 1

    @property
    def height(self) -> int:
        return self.y1 - self.y0 + 1

    @property
    def area(self) -> int:
        return max(self.width, 0) * max(self.height, 0)

    @property
    def is_tissue_2d(self) -> bool:
        return self.spatial_format == RegionSpatialFormat.TWO_D

    @property
    def spacing_mm(self) -> tuple[float, float] | None:
        """Pixel spacing (x, y) in mm when both directions are in cm with non-zero finite
        deltas; a negative delta (the axis runs the other way) gives its magnitude.

        >>> UltrasoundRegion(x0=0, y0=0, x1=9, y1=9, spatial_format=1, units_x=3, units_y=3,
        ...                  delta_x=-0.02, delta_y=0.025).spacing_mm
        (0.2, 0.25)
        """
        if self.units_x != PhysicalUnits.CM or self.units_y != PhysicalUnits.CM:
            return None
        deltas = (self.delta_x, self.delta_y)
        if not all(math.isfinite(delta) and delta != 0 for delta in deltas):
            return None
        return (abs(self.delta_x) * 10.0, abs(self.delta_y) * 10.0)

    @property
    def region_note(self) -> str:
        """The notes as the manifest's ``region_note`` cell: ``;``-joined, or empty."""
        return ";".join(self.notes)

    def overrun(self, rows: int, columns: int) -> int:
        """How many pixels the box reaches past the ``rows`` x ``columns`` image, at most.

        >>> UltrasoundRegion(x0=120, y0=60, x1=800, y1=300, spatial_format=1).overrun(350, 800)
        1
        """
        return max(
            -self.x0,
            -self.y0,
            self.x1 - (columns - 1),
            self.y1 - (rows - 1),
            0,
        )

    def clipped(self, rows: int, columns: int) -> UltrasoundRegion | None:
        """Return the region clipped to an image of ``rows`` x ``columns``, or ``None`` if
        nothing of it lies inside (scanners and down-sampling tools leave boxes that overrun).

        >>> UltrasoundRegion(x0=84, y0=31, x1=595, y1=414, spatial_format=1).clipped(240, 320)
        UltrasoundRegion(x0=84, y0=31, x1=319, y1=239, spatial_format=1, units_x=0, units_y=0, delta_x=0.0, delta_y=0.0, data_type=0, notes=())
        """  # noqa: E501
        x0, y0 = max(self.x0, 0), max(self.y0, 0)
        x1, y1 = min(self.x1, columns - 1), min(self.y1, rows - 1)
        if x1 < x0 or y1 < y0:
            return None
        return dataclasses.replace(self, x0=x0, y0=y0, x1=x1, y1=y1)

    def as_crop(self) -> str:
        """The crop as recorded in the manifest: ``x0,y0,x1,y1`` (inclusive, DICOM style)."""
        return f"{self.x0},{self.y0},{self.x1},{self.y1}"


def read_regions(dataset: Any) -> tuple[UltrasoundRegion, ...]:
    """Read every usable item of the Sequence of Ultrasound Regions of ``dataset``.

    Items without a location are skipped: a reader must tolerate what scanners write.
    """
    sequence = dataset.get("SequenceOfUltrasoundRegions")
    if not sequence:
        return ()
    regions: list[UltrasoundRegion] = []
    for item in sequence:
        try:
            regions.append(UltrasoundRegion.from_item(item))
        except (ValueError, TypeError):
            continue
    return tuple(regions)


def select_tissue_region(
    regions: Sequence[UltrasoundRegion], rows: int, columns: int
) -> UltrasoundRegion | None:
    """Choose the crop: the largest 2D tissue region inside the image, first on ties.

    The chosen region is clipped to the image and carries its :attr:`~UltrasoundRegion.notes`
    (see :func:`tolerate`): an overrun of one pixel keeps the spacing, a larger one drops it
    (the box was usually written for a larger original, so its deltas no longer describe
    these pixels), and a negative delta is read as its magnitude.

    Examples
    --------
    >>> small = UltrasoundRegion(x0=0, y0=0, x1=9, y1=9, spatial_format=1)
    >>> big = UltrasoundRegion(x0=0, y0=0, x1=19, y1=19, spatial_format=1)
    >>> doppler = UltrasoundRegion(x0=0, y0=0, x1=99, y1=99, spatial_format=3)
    >>> select_tissue_region([small, doppler, big], rows=100, columns=100) == big
    True
    >>> select_tissue_region([doppler], rows=100, columns=100) is None
    True
    >>> acuson = UltrasoundRegion(x0=0, y0=0, x1=100, y1=49, spatial_format=1, units_x=3,
    ...                           units_y=3, delta_x=-0.02, delta_y=0.02)
    >>> chosen = select_tissue_region([acuson], rows=50, columns=100)
    >>> chosen.as_crop(), chosen.spacing_mm, chosen.region_note
    ('0,0,99,49', (0.2, 0.2), 'clipped_1px;negative_delta_x')
    """
    best: UltrasoundRegion | None = None
    for region in regions:
        if not region.is_tissue_2d:
            continue
        inside = tolerate(region, rows=rows, columns=columns)
        if inside is None:
            continue
        if best is None or inside.area > best.area:
            best = inside
    return best


def tolerate(region: UltrasoundRegion, *, rows: int, columns: int) -> UltrasoundRegion | None:
    """``region`` clipped to a ``rows`` x ``columns`` image, with the notes of what was
    tolerated; ``None`` when nothing of it lies inside.

    Notes are only made for a region with a spacing, since they explain the spacing:

    - overrun by at most :data:`MAX_TOLERATED_OVERRUN` pixel: ``clipped_1px``, spacing kept;
    - overrun by more: ``overrun_no_spacing``, and the physical units are cleared;
    - a negative delta whose spacing is kept: ``negative_delta_x`` / ``negative_delta_y``
      (the signed delta stays in the region; :attr:`~UltrasoundRegion.spacing_mm` is its
      magnitude).

    >>> ybr = UltrasoundRegion(x0=84, y0=31, x1=595, y1=414, spatial_format=1, units_x=3,
    ...                        units_y=3, delta_x=0.051, delta_y=0.051)
    >>> chosen = tolerate(ybr, rows=240, columns=320)
    >>> chosen.as_crop(), chosen.spacing_mm, chosen.region_note
    ('84,31,319,239', None, 'overrun_no_spacing')
    """
    inside = region.clipped(rows, columns)
    if inside is None or region.spacing_mm is None:
        return inside
    overrun = region.overrun(rows, columns)
    if overrun > MAX_TOLERATED_OVERRUN:
        return dataclasses.replace(inside, units_x=0, units_y=0, notes=(NOTE_OVERRUN_NO_SPACING,))
    notes: list[str] = []
    if overrun:
        notes.append(NOTE_CLIPPED_1PX)
    if region.delta_x < 0:
        notes.append(NOTE_NEGATIVE_DELTA_X)
    if region.delta_y < 0:
        notes.append(NOTE_NEGATIVE_DELTA_Y)
    return dataclasses.replace(inside, notes=tuple(notes))
