"""B-mode tissue pixels inside the probe's field of view: speckle, echogenicity, lesion, motion.

Owns what lies inside the ultrasound region (its geometry is ``sector``). Parameters are
drawn once (``draw_phantom``) and recorded in a frozen :class:`Phantom`; :func:`render`
turns them into frames with no other randomness. Never draws text or writes DICOM.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from usdcm.synth.sector import FloatArray, ProbeKind, Sector, draw_sector

ByteArray = NDArray[np.uint8]

DYNAMIC_RANGE_DB = 50.0
"""Log compression: this many dB of echo amplitude span the 0..255 display range."""
DISPLAY_GAIN_DB = 24.0
"""Echo amplitude 1 (mean tissue, no attenuation) is shown this many dB below white."""


@dataclass(frozen=True)
class Lesion:
    """An elliptic focal lesion in tissue coordinates (the position at frame 0).

    ``contrast`` multiplies the echogenicity inside by ``1 + contrast``: negative values are
    hypo-echoic, positive hyper-echoic. ``rim`` is the echogenicity added (hypo) or removed
    (hyper) along the edge, a halo as seen around many real lesions.
    """

    center_x: float
    center_y: float
    radius_x: float
    radius_y: float
    angle: float
    contrast: float
    rim: float

    def shape(self, x: FloatArray, y: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Return (inside, rim) weights in [0, 1] at image points ``x``, ``y``."""
        cos, sin = math.cos(self.angle), math.sin(self.angle)
        u = ((x - self.center_x) * cos + (y - self.center_y) * sin) / self.radius_x
        v = (-(x - self.center_x) * sin + (y - self.center_y) * cos) / self.radius_y
        distance = np.sqrt(u * u + v * v)
        inside = 1.0 / (1.0 + np.exp(-(1.0 - distance) / 0.06))
        rim = np.exp(-(((distance - 1.0) / 0.12) ** 2))
        return inside, rim


LESION_CONTRAST_DB = (1.0, 13.0)
"""Lesion echo change in dB at difficulty 1 (faint) and 0 (obvious)."""


def lesion_contrast(difficulty: float, *, hyperechoic: bool) -> float:
    """The lesion's relative echogenicity change for a difficulty in [0, 1].

    The change is symmetric on the (log-compressed) screen: 13 dB at difficulty 0 down to
    1 dB at difficulty 1, darker for hypo-echoic and brighter for hyper-echoic lesions.

    Examples
    --------
    >>> round(lesion_contrast(0.0, hyperechoic=False), 3), round(lesion_contrast(1.0, hyperechoic=False), 3)
    (-0.776, -0.109)
    >>> round(lesion_contrast(0.3, hyperechoic=True), 3)
    1.951
    """  # noqa: E501
    faint, obvious = LESION_CONTRAST_DB
    decibels = faint + (obvious - faint) * (1.0 - difficulty)
    sign = 1.0 if hyperechoic else -1.0
    return float(10.0 ** (sign * decibels / 20.0) - 1.0)


@dataclass(frozen=True)
class Tissue:
    """Smooth echogenicity: layers with wavy specular interfaces over a slow texture."""

    boundaries: tuple[float, ...]
    """Depth (0..1) of each interface between layers, increasing."""
    waviness: tuple[tuple[float, float, float], ...]
    """Per interface: amplitude (depth units), lateral frequency (cycles), phase (radians)."""
    levels: tuple[float, ...]
    """Echogenicity of each layer, one more than ``boundaries``."""
    interface_strength: float
    texture: tuple[tuple[float, float, float, float], ...]
    """Slow modulation terms: amplitude, depth frequency, lateral frequency, phase."""
    attenuation: float
    """Uncompensated attenuation along the beam, nepers over the whole depth."""

    def echogenicity(self, depth: FloatArray, lateral: FloatArray, depth_px: float) -> FloatArray:
        """Return the mean echo amplitude at beam coordinates (before speckle)."""
        layer = np.zeros(depth.shape, dtype=np.int64)
        interfaces = np.zeros(depth.shape)
        line_width = 1.6 / max(depth_px, 1.0)
        for boundary, (amplitude, frequency, phase) in zip(
            self.boundaries, self.waviness, strict=True
        ):
            edge = boundary + amplitude * np.sin(2 * np.pi * frequency * lateral + phase)
            layer += depth > edge
            interfaces += np.exp(-(((depth - edge) / line_width) ** 2))
        value = np.asarray(self.levels)[layer] + self.interface_strength * interfaces
        for amplitude, f_depth, f_lateral, phase in self.texture:
            value = value * (
                1.0
                + amplitude * np.sin(2 * np.pi * (f_depth * depth + f_lateral * lateral) + phase)
            )
        attenuation: FloatArray = np.exp(-self.attenuation * np.clip(depth, 0.0, 1.0))
        return value * attenuation


@dataclass(frozen=True)
class Motion:
    """Periodic in-plane tissue motion (breathing, pulsation) in pixels per frame."""

    amplitude_x: float = 0.0
    amplitude_y: float = 0.0
    period_frames: float = 8.0
    phase_y: float = 0.0
    decorrelation: float = 0.0
    """Speckle decorrelation between consecutive frames (radians of mixing per frame)."""

    def displacement(self, frame: int) -> tuple[float, float]:
        """Return the tissue shift (dx, dy) of ``frame``; frame 0 is never shifted."""
        turn = 2.0 * math.pi * frame / self.period_frames
        dx = self.amplitude_x * math.sin(turn)
        dy = self.amplitude_y * (math.sin(turn + self.phase_y) - math.sin(self.phase_y))
        return dx, dy


@dataclass(frozen=True)
class Phantom:
    """Everything :func:`render` needs; drawn by :func:`draw_phantom` or built by hand."""

    rows: int
    columns: int
    sector: Sector
    tissue: Tissue
    motion: Motion
    speckle_seed: int
    lesion: Lesion | None = None


MOTION_MARGIN = 6
"""Speckle samples kept beyond each edge of the sector, so moving tissue stays textured."""


def _smooth(field: NDArray[np.complex128], sigma: float, axis: int) -> NDArray[np.complex128]:
    """Gaussian smoothing along one axis with edge padding (a tiny separable convolution)."""
    radius = max(1, int(math.ceil(3 * sigma)))
    offsets = np.arange(-radius, radius + 1)
    weights = np.exp(-0.5 * (offsets / sigma) ** 2)
    weights /= weights.sum()
    pad = [(0, 0), (0, 0)]
    pad[axis] = (radius, radius)
    padded = np.pad(field, pad, mode="edge")
    length = field.shape[axis]
    out = np.zeros_like(field)
    for index, weight in enumerate(weights):
        out += weight * np.take(padded, np.arange(index, index + length), axis=axis)
    return out


def _speckle_fields(
    phantom: Phantom, samples: tuple[int, int]
) -> tuple[NDArray[np.complex128], NDArray[np.complex128]]:
    """Two independent band-limited complex scatterer fields on the beam grid."""
    rng = np.random.default_rng(phantom.speckle_seed)
    shape = (samples[0] + 2 * MOTION_MARGIN, samples[1] + 2 * MOTION_MARGIN)
    fields = []
    for _ in range(2):
        raw = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
        smooth = _smooth(_smooth(raw, 1.1, axis=0), 0.8, axis=1)
        fields.append(smooth)
    return fields[0], fields[1]


def beam_samples(sector: Sector) -> tuple[int, int]:
    """The speckle grid size (depth samples, beams): about one sample per pixel in depth and
    one beam per two pixels across, so speckle widens with depth in a fan as it does on a
    real convex probe.
    """
    return (max(16, round(sector.depth_pixels)), max(16, round(sector.width_pixels / 2.0)))


def log_compress(amplitude: FloatArray) -> ByteArray:
    """Map echo amplitude to 8-bit display values (log compression, clipped)."""
    decibels = 20.0 * np.log10(np.maximum(amplitude, 1e-6))
    scaled = (decibels + DYNAMIC_RANGE_DB - DISPLAY_GAIN_DB) / DYNAMIC_RANGE_DB * 255.0
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def render(phantom: Phantom, frames: int = 1) -> ByteArray:
    """Render ``frames`` B-mode frames (``frames`` x rows x columns, uint8), black outside
    the sector. Deterministic: all randomness comes from the parameters in ``phantom``.

    Examples
    --------
    >>> phantom = draw_phantom(np.random.default_rng(0), rows=120, columns=160,
    ...                        box=(8, 20, 151, 111), kind=ProbeKind.LINEAR)
    >>> cine = render(phantom, frames=3)
    >>> cine.shape, cine.dtype.name
    ((3, 120, 160), 'uint8')
    >>> bool((render(phantom, frames=3) == cine).all())
    True
    """
    rows, columns, sector = phantom.rows, phantom.columns, phantom.sector
    inside = sector.mask(rows, columns)
    samples = beam_samples(sector)
    field_a, field_b = _speckle_fields(phantom, samples)
    y, x = np.mgrid[0:rows, 0:columns].astype(np.float64)
    out = np.zeros((frames, rows, columns), dtype=np.uint8)
    for frame in range(frames):
        dx, dy = phantom.motion.displacement(frame)
        tissue_x, tissue_y = x[inside] - dx, y[inside] - dy
        depth, lateral = sector.beam_coordinates(tissue_x, tissue_y)
        mean = phantom.tissue.echogenicity(depth, lateral, sector.depth_pixels)
        if phantom.lesion is not None:
            mean = _with_lesion(mean, phantom.lesion, tissue_x, tissue_y, phantom.tissue)
        depth_index = np.clip(
            np.rint(depth * (samples[0] - 1)) + MOTION_MARGIN, 0, samples[0] + 2 * MOTION_MARGIN - 1
        ).astype(np.int64)
        beam_index = np.clip(
            np.rint(lateral * (samples[1] - 1)) + MOTION_MARGIN,
            0,
            samples[1] + 2 * MOTION_MARGIN - 1,
        ).astype(np.int64)
        mix = phantom.motion.decorrelation * frame
        scatter = math.cos(mix) * field_a[depth_index, beam_index]
        scatter = scatter + math.sin(mix) * field_b[depth_index, beam_index]
        envelope = np.abs(scatter) / _rayleigh_mean(field_a)
        out[frame][inside] = log_compress(mean * envelope)
    return out


def _with_lesion(
    mean: FloatArray, lesion: Lesion, x: FloatArray, y: FloatArray, tissue: Tissue
) -> FloatArray:
    """Apply a lesion's contrast inside it and its halo (opposite sign) along its edge."""
    inside, rim = lesion.shape(x, y)
    halo_sign = -1.0 if lesion.contrast > 0 else 1.0
    halo = halo_sign * lesion.rim * float(np.mean(tissue.levels)) * rim
    changed: FloatArray = np.maximum(mean * (1.0 + lesion.contrast * inside) + halo, 0.01)
    return changed


def _rayleigh_mean(field: NDArray[np.complex128]) -> float:
    """The mean envelope of a complex Gaussian field, used to normalise speckle to mean 1."""
    sigma = math.sqrt(float(np.mean(np.abs(field) ** 2)) / 2.0)
    return sigma * math.sqrt(math.pi / 2.0)


def _draw_tissue(rng: np.random.Generator) -> Tissue:
    layers = int(rng.integers(2, 5))
    boundaries = tuple(sorted(float(b) for b in rng.uniform(0.06, 0.85, size=layers)))
    waviness = tuple(
        (float(rng.uniform(0.005, 0.04)), float(rng.uniform(0.3, 2.0)), float(rng.uniform(0, 6.3)))
        for _ in range(layers)
    )
    levels = tuple(float(v) for v in rng.uniform(0.35, 1.0, size=layers + 1))
    texture = tuple(
        (
            float(rng.uniform(0.05, 0.2)),
            float(rng.uniform(0.3, 2.5)),
            float(rng.uniform(-2.0, 2.0)),
            float(rng.uniform(0, 6.3)),
        )
        for _ in range(2)
    )
    return Tissue(
        boundaries=boundaries,
        waviness=waviness,
        levels=levels,
        interface_strength=float(rng.uniform(0.4, 1.0)),
        texture=texture,
        attenuation=float(rng.uniform(0.5, 1.3)),
    )


def draw_lesion(rng: np.random.Generator, sector: Sector, difficulty: float) -> Lesion:
    """Draw a lesion well inside ``sector``; its contrast follows ``difficulty``."""
    depth = float(rng.uniform(0.3, 0.7))
    lateral = float(rng.uniform(0.3, 0.7))
    center_x, center_y = sector.image_point(depth, lateral)
    size = min(sector.depth_pixels, sector.width_pixels)
    radius_x = size * float(rng.uniform(0.07, 0.13))
    radius_y = radius_x * float(rng.uniform(0.6, 1.0))
    hyperechoic = bool(rng.random() < 0.35)
    contrast = lesion_contrast(difficulty, hyperechoic=hyperechoic)
    return Lesion(
        center_x=center_x,
        center_y=center_y,
        radius_x=radius_x,
        radius_y=radius_y,
        angle=float(rng.uniform(0.0, math.pi)),
        contrast=contrast,
        rim=0.5 * min(abs(contrast), 1.0),
    )


def draw_phantom(
    rng: np.random.Generator,
    *,
    rows: int,
    columns: int,
    box: tuple[int, int, int, int],
    kind: ProbeKind,
    lesion: bool = False,
    difficulty: float = 0.3,
    moving: bool = True,
) -> Phantom:
    """Draw every parameter of one B-mode view: sector in ``box``, tissue, motion, speckle
    seed, and a lesion when ``lesion`` is true. Pass the result to :func:`render`.
    """
    sector = draw_sector(rng, box, kind)
    tissue = _draw_tissue(rng)
    motion = Motion()
    if moving:
        motion = Motion(
            amplitude_x=float(rng.uniform(0.4, 1.8)),
            amplitude_y=float(rng.uniform(0.4, 2.4)),
            period_frames=float(rng.uniform(6.0, 14.0)),
            phase_y=float(rng.uniform(0.0, 6.3)),
            decorrelation=float(rng.uniform(0.03, 0.1)),
        )
    speckle_seed = int(rng.integers(0, 2**63 - 1))
    drawn_lesion = draw_lesion(rng, sector, difficulty) if lesion else None
    return Phantom(
        rows=rows,
        columns=columns,
        sector=sector,
        tissue=tissue,
        motion=motion,
        speckle_seed=speckle_seed,
        lesion=drawn_lesion,
    )
