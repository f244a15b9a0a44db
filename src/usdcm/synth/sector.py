"""The probe's field of view on the screen: a curvilinear fan or a linear rectangle.

Owns the geometry that links image pixels to beam coordinates (depth, lateral) and the
sector's bounding box, which becomes the ultrasound region. Never renders pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]


class ProbeKind(StrEnum):
    """The shape of the field of view: a fan from a convex probe, or a linear rectangle."""

    CURVILINEAR = "curvilinear"
    LINEAR = "linear"


@dataclass(frozen=True)
class Sector:
    """The probe's field of view in image pixel coordinates (x = column, y = row).

    A curvilinear sector is the ring segment between radii ``r_near`` and ``r_far`` around a
    virtual apex ``(apex_x, apex_y)``, within ``half_angle`` radians of straight down. A
    linear sector is the rectangle ``left..right`` x ``top..bottom``; its apex fields are
    unused. Beam coordinates map the field of view onto the unit square: depth (0 at the
    probe face, 1 at the deepest sample) and lateral position (0 left, 1 right).

    Examples
    --------
    >>> fan = Sector.curvilinear(apex_x=100.0, apex_y=-20.0, r_near=50.0, r_far=170.0,
    ...                          half_angle=0.6)
    >>> fan.bounding_box(rows=200, columns=220)
    (5, 22, 195, 150)
    >>> box = Sector.linear(left=20, top=30, right=119, bottom=99)
    >>> box.bounding_box(rows=120, columns=160)
    (20, 30, 119, 99)
    """

    kind: ProbeKind
    apex_x: float = 0.0
    apex_y: float = 0.0
    r_near: float = 0.0
    r_far: float = 0.0
    half_angle: float = 0.0
    left: float = 0.0
    top: float = 0.0
    right: float = 0.0
    bottom: float = 0.0

    @classmethod
    def curvilinear(
        cls, *, apex_x: float, apex_y: float, r_near: float, r_far: float, half_angle: float
    ) -> Sector:
        """A fan around a virtual apex (usually above the image)."""
        if not (0 <= r_near < r_far and 0 < half_angle < math.pi / 2):
            message = (
                f"a curvilinear sector needs 0 <= r_near < r_far and 0 < half_angle < pi/2, "
                f"found r_near={r_near}, r_far={r_far}, half_angle={half_angle}"
            )
            raise ValueError(message)
        return cls(
            kind=ProbeKind.CURVILINEAR,
            apex_x=apex_x,
            apex_y=apex_y,
            r_near=r_near,
            r_far=r_far,
            half_angle=half_angle,
        )

    @classmethod
    def linear(cls, *, left: float, top: float, right: float, bottom: float) -> Sector:
        """A rectangle; the bounds are inclusive pixel coordinates."""
        if not (left < right and top < bottom):
            message = f"a linear sector needs left < right and top < bottom, found {left, top}"
            raise ValueError(message)
        return cls(kind=ProbeKind.LINEAR, left=left, top=top, right=right, bottom=bottom)

    @property
    def depth_pixels(self) -> float:
        """Length of one beam in pixels."""
        if self.kind is ProbeKind.CURVILINEAR:
            return self.r_far - self.r_near
        return self.bottom - self.top

    @property
    def width_pixels(self) -> float:
        """Lateral extent in pixels at mid depth."""
        if self.kind is ProbeKind.CURVILINEAR:
            return 0.5 * (self.r_near + self.r_far) * 2.0 * self.half_angle
        return self.right - self.left

    @property
    def reference_pixel(self) -> tuple[float, float]:
        """The point physical coordinates are measured from: the apex, or the top centre."""
        if self.kind is ProbeKind.CURVILINEAR:
            return (self.apex_x, self.apex_y)
        return (0.5 * (self.left + self.right), self.top)

    def beam_coordinates(self, x: FloatArray, y: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Return (depth, lateral) of image points; both lie in [0, 1] inside the sector."""
        if self.kind is ProbeKind.CURVILINEAR:
            dx, dy = x - self.apex_x, y - self.apex_y
            radius = np.hypot(dx, dy)
            angle = np.arctan2(dx, dy)
            depth = (radius - self.r_near) / (self.r_far - self.r_near)
            lateral = (angle + self.half_angle) / (2.0 * self.half_angle)
            return depth, lateral
        depth = (y - self.top) / (self.bottom - self.top)
        lateral = (x - self.left) / (self.right - self.left)
        return depth, lateral

    def image_point(self, depth: float, lateral: float) -> tuple[float, float]:
        """Return the image point (x, y) at the given beam coordinates."""
        if self.kind is ProbeKind.CURVILINEAR:
            radius = self.r_near + depth * (self.r_far - self.r_near)
            angle = (2.0 * lateral - 1.0) * self.half_angle
            return (self.apex_x + radius * math.sin(angle), self.apex_y + radius * math.cos(angle))
        return (
            self.left + lateral * (self.right - self.left),
            self.top + depth * (self.bottom - self.top),
        )

    def mask(self, rows: int, columns: int) -> BoolArray:
        """Return the pixels of a ``rows`` x ``columns`` image that lie inside the sector."""
        y, x = np.mgrid[0:rows, 0:columns].astype(np.float64)
        depth, lateral = self.beam_coordinates(x, y)
        inside: BoolArray = (depth >= 0) & (depth <= 1) & (lateral >= 0) & (lateral <= 1)
        return inside

    def bounding_box(self, rows: int, columns: int) -> tuple[int, int, int, int]:
        """Return ``(x0, y0, x1, y1)``, the inclusive box around the sector's pixels."""
        inside = self.mask(rows, columns)
        if not inside.any():
            message = f"the sector lies outside a {rows} x {columns} image"
            raise ValueError(message)
        ys = np.flatnonzero(inside.any(axis=1))
        xs = np.flatnonzero(inside.any(axis=0))
        return (int(xs[0]), int(ys[0]), int(xs[-1]), int(ys[-1]))


def draw_sector(
    rng: np.random.Generator, box: tuple[int, int, int, int], kind: ProbeKind
) -> Sector:
    """Draw a field of view that fits inside ``box`` = (x0, y0, x1, y1), inclusive.

    The sector touches the top of the box and is centred horizontally; its depth (and, for
    a fan, its opening angle) varies as a scanner's depth setting would.
    """
    x0, y0, x1, y1 = box
    width, height = x1 - x0, y1 - y0
    center = 0.5 * (x0 + x1)
    if kind is ProbeKind.CURVILINEAR:
        half_angle = math.radians(float(rng.uniform(28.0, 38.0)))
        ratio = float(rng.uniform(0.2, 0.35))
        limit_height = height / (1.0 - ratio * math.cos(half_angle))
        limit_width = width / (2.0 * math.sin(half_angle))
        r_far = min(limit_height, limit_width) * float(rng.uniform(0.85, 0.98))
        r_near = ratio * r_far
        apex_y = y0 - r_near * math.cos(half_angle)
        return Sector.curvilinear(
            apex_x=center, apex_y=apex_y, r_near=r_near, r_far=r_far, half_angle=half_angle
        )
    half_width = 0.5 * width * float(rng.uniform(0.6, 0.9))
    bottom = y0 + height * float(rng.uniform(0.8, 1.0))
    return Sector.linear(
        left=round(center - half_width),
        top=y0,
        right=round(center + half_width),
        bottom=round(bottom),
    )
