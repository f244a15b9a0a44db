"""The scanner's screen around the tissue image: layout, burned-in text, ECG strip, thumbnail.

Owns where each ultrasound region sits on the screen and what is drawn outside the regions
(the patient banner with fake PHI, a grey bar, traces). Never encodes or writes DICOM.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from usdcm.dicom.regions import PhysicalUnits, RegionSpatialFormat, UltrasoundRegion
from usdcm.synth.phantom import ByteArray, Phantom, render
from usdcm.synth.sector import BoolArray

BANNER_ROWS = 26
"""Rows at the top that hold the patient banner (two lines of text)."""
SIDE_COLUMNS = 64
"""Columns at the right that hold the grey bar and, on some screens, a thumbnail."""
STRIP_ROWS = 26
"""Rows at the bottom that hold the ECG strip, when the screen has one."""
GAP = 6
"""Black pixels kept between a region and anything drawn next to it."""

REGION_DATA_TISSUE = 0x0001
REGION_DATA_ECG_TRACE = 0x000A
REGION_FLAG_SCALING_PROTECTED = 0x01
REGION_FLAG_SCROLLING = 0x08

RGB = tuple[int, int, int]
Box = tuple[int, int, int, int]
"""(x0, y0, x1, y1), inclusive pixel coordinates as in the Sequence of Ultrasound Regions."""


class ScreenExtra(StrEnum):
    """A second region drawn beside the tissue image, to exercise region selection."""

    NONE = "none"
    WAVEFORM = "waveform"
    """An ECG trace strip below the image: Region Spatial Format 4 (waveform)."""
    THUMBNAIL = "thumbnail"
    """A small 2D reference image in the side panel: a second, smaller tissue region."""


@dataclass(frozen=True)
class RegionItem:
    """One item of the Sequence of Ultrasound Regions, with every attribute we write."""

    box: Box
    spatial_format: int
    data_type: int
    flags: int
    units_x: int
    units_y: int
    delta_x: float
    delta_y: float
    reference_x: int
    reference_y: int

    def as_region(self) -> UltrasoundRegion:
        """The region as usdcm's reader summarises it."""
        x0, y0, x1, y1 = self.box
        return UltrasoundRegion(
            x0=x0,
            y0=y0,
            x1=x1,
            y1=y1,
            spatial_format=self.spatial_format,
            units_x=self.units_x,
            units_y=self.units_y,
            delta_x=self.delta_x,
            delta_y=self.delta_y,
            data_type=self.data_type,
        )


@dataclass(frozen=True)
class Layout:
    """Where things go on a ``rows`` x ``columns`` screen."""

    rows: int
    columns: int
    tissue_box: Box
    """The area the sector is drawn in (the region itself is the sector's bounding box)."""
    strip: Box | None
    thumbnail: Box | None
    gray_bar: Box


def plan_layout(rows: int, columns: int, extra: ScreenExtra) -> Layout:
    """Lay out a screen: banner on top, side panel on the right, strip at the bottom.

    Examples
    --------
    >>> layout = plan_layout(200, 280, ScreenExtra.WAVEFORM)
    >>> layout.tissue_box, layout.strip
    ((6, 32, 209, 161), (6, 174, 209, 193))
    """
    bottom = rows - 1 - GAP
    strip: Box | None = None
    if extra is ScreenExtra.WAVEFORM:
        strip = (GAP, rows - STRIP_ROWS, columns - SIDE_COLUMNS - 1 - GAP, rows - 1 - GAP)
        bottom = strip[1] - 2 * GAP - 1
    tissue_box = (GAP, BANNER_ROWS + GAP, columns - SIDE_COLUMNS - 1 - GAP, bottom)
    side_x0 = columns - SIDE_COLUMNS + GAP
    thumbnail: Box | None = None
    if extra is ScreenExtra.THUMBNAIL:
        thumb_w, thumb_h = SIDE_COLUMNS - 2 * GAP, (SIDE_COLUMNS - 2 * GAP) * 3 // 4
        thumbnail = (side_x0, rows - GAP - thumb_h, side_x0 + thumb_w - 1, rows - GAP - 1)
    gray_bar = (columns - GAP - 6, BANNER_ROWS + GAP, columns - GAP - 1, BANNER_ROWS + GAP + 63)
    return Layout(
        rows=rows,
        columns=columns,
        tissue_box=tissue_box,
        strip=strip,
        thumbnail=thumbnail,
        gray_bar=gray_bar,
    )


@dataclass(frozen=True)
class Screen:
    """The frames of one instance before encoding: tissue (grey) plus coloured annotations."""

    tissue: ByteArray
    """frames x rows x columns, grey; zero outside the regions."""
    overlay: ByteArray
    """rows x columns x 3 RGB annotation pixels, the same on every frame."""
    overlay_mask: BoolArray
    regions: tuple[RegionItem, ...]

    @property
    def frames(self) -> int:
        return int(self.tissue.shape[0])

    def gray(self) -> ByteArray:
        """Frames as grey levels; annotations become their luminance."""
        luma = np.rint(self.overlay.astype(np.float64) @ np.array([0.299, 0.587, 0.114]))
        out = self.tissue.copy()
        out[:, self.overlay_mask] = luma.astype(np.uint8)[self.overlay_mask]
        return out

    def rgb(self) -> ByteArray:
        """Frames as RGB: grey tissue, coloured annotations."""
        out = np.repeat(self.tissue[..., np.newaxis], 3, axis=-1)
        out[:, self.overlay_mask] = self.overlay[self.overlay_mask]
        return out


def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's built-in bitmap font: the same glyphs on every platform, no FreeType needed."""
    loader = getattr(ImageFont, "load_default_imagefont", None)
    if loader is not None:
        font: ImageFont.ImageFont = loader()
        return font
    return ImageFont.load_default()


def draw_text(
    lines: Sequence[tuple[str, RGB]], *, rows: int, columns: int, origin: tuple[int, int]
) -> ByteArray:
    """Draw text lines (each with its colour) on a black RGB image, 12 pixels apart."""
    image = Image.new("RGB", (columns, rows))
    draw = ImageDraw.Draw(image)
    font = _font()
    x, y = origin
    for index, (text, colour) in enumerate(lines):
        draw.text((x, y + 12 * index), text, fill=colour, font=font)
    return np.asarray(image, dtype=np.uint8).copy()


def _ecg_points(box: Box, phase: float) -> list[tuple[float, float]]:
    """A stylised ECG trace (P wave, QRS spike, T wave) across ``box``."""
    x0, y0, x1, y1 = box
    base = 0.5 * (y0 + y1) + 3
    height = 0.45 * (y1 - y0)
    points = []
    for x in range(x0, x1 + 1):
        t = ((x - x0) / 60.0 + phase) % 1.0
        value = 0.15 * np.exp(-(((t - 0.2) / 0.03) ** 2))
        value += np.exp(-(((t - 0.35) / 0.012) ** 2)) - 0.25 * np.exp(-(((t - 0.38) / 0.01) ** 2))
        value += 0.3 * np.exp(-(((t - 0.6) / 0.05) ** 2))
        points.append((float(x), float(base - height * value)))
    return points


def region_items(phantom: Phantom, layout: Layout, *, delta_cm: float) -> tuple[RegionItem, ...]:
    """The Sequence of Ultrasound Regions of a screen: the tissue region (the sector's
    bounding box, square pixels of ``delta_cm``) first, then the strip or thumbnail if any.
    """
    x0, y0, x1, y1 = phantom.sector.bounding_box(layout.rows, layout.columns)
    ref_x, ref_y = phantom.sector.reference_pixel
    regions = [
        RegionItem(
            box=(x0, y0, x1, y1),
            spatial_format=RegionSpatialFormat.TWO_D,
            data_type=REGION_DATA_TISSUE,
            flags=REGION_FLAG_SCALING_PROTECTED,
            units_x=PhysicalUnits.CM,
            units_y=PhysicalUnits.CM,
            delta_x=delta_cm,
            delta_y=delta_cm,
            reference_x=round(ref_x) - x0,
            reference_y=round(ref_y) - y0,
        )
    ]
    if layout.strip is not None:
        sx0, sy0, sx1, sy1 = layout.strip
        regions.append(
            RegionItem(
                box=layout.strip,
                spatial_format=RegionSpatialFormat.WAVEFORM,
                data_type=REGION_DATA_ECG_TRACE,
                flags=REGION_FLAG_SCROLLING,
                units_x=PhysicalUnits.SECONDS,
                units_y=PhysicalUnits.NONE,
                delta_x=0.01,
                delta_y=0.0,
                reference_x=0,
                reference_y=(sy1 - sy0) // 2,
            )
        )
    if layout.thumbnail is not None:
        tx0, ty0, tx1, ty1 = layout.thumbnail
        regions.append(
            RegionItem(
                box=layout.thumbnail,
                spatial_format=RegionSpatialFormat.TWO_D,
                data_type=REGION_DATA_TISSUE,
                flags=0,
                units_x=PhysicalUnits.CM,
                units_y=PhysicalUnits.CM,
                delta_x=round(delta_cm * (x1 - x0 + 1) / (tx1 - tx0 + 1), 6),
                delta_y=round(delta_cm * (y1 - y0 + 1) / (ty1 - ty0 + 1), 6),
                reference_x=(tx1 - tx0) // 2,
                reference_y=0,
            )
        )
    return tuple(regions)


def compose(
    phantom: Phantom,
    layout: Layout,
    *,
    frames: int,
    banner: Sequence[tuple[str, RGB]],
    accent: RGB,
    delta_cm: float,
) -> Screen:
    """Render the tissue and draw the screen around it.

    ``banner`` lines are burned into the top rows, outside every region; ``accent`` colours
    the ECG trace. The first region is always the tissue image.
    """
    regions = region_items(phantom, layout, delta_cm=delta_cm)
    tissue = render(phantom, frames)
    overlay = draw_text(banner, rows=layout.rows, columns=layout.columns, origin=(GAP, 2))
    bar_x0, bar_y0, bar_x1, bar_y1 = layout.gray_bar
    ramp = np.linspace(255, 0, bar_y1 - bar_y0 + 1).round().astype(np.uint8)
    overlay[bar_y0 : bar_y1 + 1, bar_x0 : bar_x1 + 1] = ramp[:, np.newaxis, np.newaxis]
    if layout.strip is not None:
        image = Image.fromarray(overlay)
        ImageDraw.Draw(image).line(_ecg_points(layout.strip, phase=0.1), fill=accent, width=1)
        overlay = np.asarray(image, dtype=np.uint8).copy()
    if layout.thumbnail is not None:
        tissue = _add_thumbnail(tissue, regions[0].box, layout.thumbnail)
    mask: BoolArray = np.asarray(overlay.any(axis=-1))
    return Screen(tissue=tissue, overlay=overlay, overlay_mask=mask, regions=regions)


def _add_thumbnail(tissue: ByteArray, source: Box, target: Box) -> ByteArray:
    """Copy a nearest-neighbour shrunken view of ``source`` into ``target`` on every frame."""
    x0, y0, x1, y1 = source
    tx0, ty0, tx1, ty1 = target
    rows = np.linspace(y0, y1, ty1 - ty0 + 1).round().astype(np.int64)
    cols = np.linspace(x0, x1, tx1 - tx0 + 1).round().astype(np.int64)
    out = tissue.copy()
    out[:, ty0 : ty1 + 1, tx0 : tx1 + 1] = tissue[:, rows][:, :, cols]
    return out
