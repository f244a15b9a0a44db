"""The catalogue of variants a synthetic export draws from: storage recipes, the codecs some
instances are re-encoded in, fake scanner vendors, and the fake identities (all prefixed
``ZZ``, ``SYN`` or ``ACC`` so tests can grep).

Owns constants only; ``plan`` draws from them. Never holds a real name or a real product.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    RLELossless,
)

from usdcm.dicom.sop import US_IMAGE_STORAGE, US_MULTIFRAME_IMAGE_STORAGE
from usdcm.synth.codecs import (
    H264_HIGH_41,
    H264_HIGH_41_BD,
    H264_HIGH_42_2D,
    HEVC_MAIN,
    JPEG_XL,
    JPEG_XL_JPEG_RECOMPRESSION,
    JPEG_XL_LOSSLESS,
    MPEG2_HIGH_LEVEL,
    MPEG2_MAIN_LEVEL,
)
from usdcm.synth.screen import RGB, ScreenExtra


class Photometric(StrEnum):
    """Photometric Interpretation (0028,0004) values the export uses."""

    MONOCHROME2 = "MONOCHROME2"
    RGB = "RGB"
    YBR_FULL_422 = "YBR_FULL_422"
    PALETTE_COLOR = "PALETTE COLOR"


@dataclass(frozen=True)
class Recipe:
    """How one image instance is stored: SOP class, transfer syntax, colour, file format."""

    name: str
    cine: bool
    transfer_syntax: UID
    photometric: Photometric
    fragments_per_frame: int = 1
    part10: bool = True
    extra: ScreenExtra = ScreenExtra.NONE

    @property
    def sop_class_uid(self) -> UID:
        return US_MULTIFRAME_IMAGE_STORAGE if self.cine else US_IMAGE_STORAGE


RECIPES: tuple[Recipe, ...] = (
    Recipe("mono-explicit", False, ExplicitVRLittleEndian, Photometric.MONOCHROME2),
    Recipe(
        "rgb-explicit-cine",
        True,
        ExplicitVRLittleEndian,
        Photometric.RGB,
        extra=ScreenExtra.WAVEFORM,
    ),
    Recipe("palette-explicit", False, ExplicitVRLittleEndian, Photometric.PALETTE_COLOR),
    Recipe("jpeg-cine", True, JPEGBaseline8Bit, Photometric.YBR_FULL_422),
    Recipe(
        "jpeg-fragmented",
        False,
        JPEGBaseline8Bit,
        Photometric.YBR_FULL_422,
        fragments_per_frame=3,
        extra=ScreenExtra.THUMBNAIL,
    ),
    Recipe(
        "jpeg-fragmented-cine",
        True,
        JPEGBaseline8Bit,
        Photometric.YBR_FULL_422,
        fragments_per_frame=2,
    ),
    Recipe("rle-palette-cine", True, RLELossless, Photometric.PALETTE_COLOR),
    Recipe("rle-rgb", False, RLELossless, Photometric.RGB, extra=ScreenExtra.WAVEFORM),
    Recipe("rle-mono-cine", True, RLELossless, Photometric.MONOCHROME2),
    Recipe(
        "j2k-mono", False, JPEG2000Lossless, Photometric.MONOCHROME2, extra=ScreenExtra.THUMBNAIL
    ),
    Recipe("j2k-mono-cine", True, JPEG2000Lossless, Photometric.MONOCHROME2),
    Recipe("raw-mono", False, ImplicitVRLittleEndian, Photometric.MONOCHROME2, part10=False),
    Recipe("raw-rgb-cine", True, ImplicitVRLittleEndian, Photometric.RGB, part10=False),
)
"""Every storage variant; instances cycle through them, so each appears once an export has
at least ``len(RECIPES)`` image instances."""

CODEC_SLOTS_PER_ROUND = 4
"""How many instances of each round of :data:`RECIPES` after the first are re-encoded in one
of the codecs below (the first Part 10 instances of the round): about 30% of a large export.
The first round is stored as its recipes say, so every recipe appears as such first."""
CINE_CODECS: tuple[UID, ...] = (
    H264_HIGH_41,
    JPEG_XL_LOSSLESS,
    HEVC_MAIN,
    MPEG2_MAIN_LEVEL,
    JPEG_XL_JPEG_RECOMPRESSION,
    H264_HIGH_41_BD,
    MPEG2_HIGH_LEVEL,
    JPEG_XL,
    H264_HIGH_42_2D,
)
"""The syntaxes a re-encoded cine takes, in turn: H.264, JPEG XL and HEVC come first, so
that a small export (two rounds) already holds each library's codec. HEVC Main 10 (.108) is
not drawn: ingest keeps 10-bit levels as they are (0-1023), which would put one image of an
8-bit export on another scale; :func:`usdcm.synth.codecs.transcode` writes it on request."""
IMAGE_CODECS: tuple[UID, ...] = (JPEG_XL_LOSSLESS, JPEG_XL, JPEG_XL_JPEG_RECOMPRESSION)
"""The syntaxes a re-encoded single-frame image takes, in turn (video is for cine only)."""


@dataclass(frozen=True)
class Vendor:
    """A fake scanner model: screen size, frame rate and how its banner shows the patient."""

    manufacturer: str
    model: str
    rows: int
    columns: int
    frame_time_ms: float
    date_format: str
    """``strftime`` format of the birth date shown on screen."""
    name_style: str
    """How the name is shown: ``dicom`` (FAMILY^GIVEN), ``comma`` or ``given-first``."""
    accent: RGB


VENDORS: tuple[Vendor, ...] = (
    Vendor("ZZSONIX Medical", "ZS-3000", 200, 280, 33.3, "%Y-%m-%d", "dicom", (255, 220, 0)),
    Vendor(
        "ACME Ultrasound Systems", "Vista 7", 176, 256, 40.0, "%d/%m/%Y", "comma", (0, 220, 255)
    ),
    Vendor("NIMBUS Imaging", "NX-20", 232, 320, 50.0, "%m/%d/%Y", "given-first", (80, 255, 80)),
)

WHITE: RGB = (255, 255, 255)
FAMILY_NAMES = ("ZZTEST", "ZZDEMO", "ZZFAKE", "ZZSYNTH", "ZZPHANTOM", "ZZMOCK")
GIVEN_NAMES = (
    "ALBINA",
    "BRUNELLO",
    "CELESTINA",
    "DORIANO",
    "EVANGELINA",
    "FILIBERTO",
    "GRISELDA",
    "HORATIO",
    "ISOLDE",
    "JOVANKA",
    "LEOCADIA",
    "MAXENTIUS",
    "NERISSA",
    "OTTAVIO",
    "PERPETUA",
    "QUIRINO",
)
REFERRING_NAMES = ("ZZDOCTOR^WALDEMAR", "ZZDOCTOR^XIMENA", "ZZDOCTOR^YOLANDA", "ZZDOCTOR^ZEBEDEE")
INSTITUTION = "ZZ SYNTHETIC GENERAL HOSPITAL"
STUDY_DESCRIPTIONS = ("US ABDOMEN", "US LIVER", "US KIDNEYS")
