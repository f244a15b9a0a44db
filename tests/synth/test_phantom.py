"""Tests for usdcm.synth.phantom and its geometry (usdcm.synth.sector): field of view,
speckle, lesion and motion."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from usdcm.synth.phantom import (
    DYNAMIC_RANGE_DB,
    Lesion,
    Motion,
    Phantom,
    Tissue,
    draw_phantom,
    lesion_contrast,
    render,
)
from usdcm.synth.sector import ProbeKind, Sector

ROWS, COLUMNS = 200, 260
BOX = (6, 32, 195, 193)


def flat_tissue() -> Tissue:
    """One homogeneous layer, no interfaces, texture or attenuation."""
    return Tissue(
        boundaries=(),
        waviness=(),
        levels=(0.5,),
        interface_strength=0.0,
        texture=(),
        attenuation=0.0,
    )


def lesion_distance(lesion: Lesion, rows: int, columns: int) -> np.ndarray:
    """Normalised elliptic distance of every pixel to the lesion centre (1 on its edge)."""
    y, x = np.mgrid[0:rows, 0:columns].astype(np.float64)
    cos, sin = math.cos(lesion.angle), math.sin(lesion.angle)
    u = ((x - lesion.center_x) * cos + (y - lesion.center_y) * sin) / lesion.radius_x
    v = (-(x - lesion.center_x) * sin + (y - lesion.center_y) * cos) / lesion.radius_y
    distance: np.ndarray = np.hypot(u, v)
    return distance


def test_fan_bounding_box_is_the_inclusive_extent_of_its_pixels() -> None:
    fan = Sector.curvilinear(apex_x=130.0, apex_y=-10.0, r_near=45.0, r_far=190.0, half_angle=0.6)
    mask = fan.mask(ROWS, COLUMNS)
    x0, y0, x1, y1 = fan.bounding_box(ROWS, COLUMNS)
    assert mask[:, x0].any() and mask[:, x1].any() and mask[y0].any() and mask[y1].any()
    assert not mask[:, :x0].any() and not mask[:, x1 + 1 :].any()
    assert not mask[:y0].any() and not mask[y1 + 1 :].any()
    # a fan leaves the corners of its box black: bottom corners and the top centre
    assert not mask[y1, x0] and not mask[y1, x1] and not mask[y0, (x0 + x1) // 2]


def test_linear_sector_is_its_rectangle() -> None:
    box = Sector.linear(left=20, top=30, right=119, bottom=99)
    mask = box.mask(120, 160)
    assert box.bounding_box(120, 160) == (20, 30, 119, 99)
    assert mask.sum() == 100 * 70
    assert box.reference_pixel == (69.5, 30)


@pytest.mark.parametrize("kind", list(ProbeKind))
def test_image_point_inverts_beam_coordinates(kind: ProbeKind) -> None:
    sector = draw_phantom(
        np.random.default_rng(3), rows=ROWS, columns=COLUMNS, box=BOX, kind=kind
    ).sector
    for depth, lateral in [(0.0, 0.0), (0.5, 0.25), (1.0, 1.0), (0.3, 0.9)]:
        x, y = sector.image_point(depth, lateral)
        got = sector.beam_coordinates(np.array([x]), np.array([y]))
        assert got[0][0] == pytest.approx(depth) and got[1][0] == pytest.approx(lateral)


@pytest.mark.parametrize("kind", list(ProbeKind))
def test_sector_fits_the_box_it_was_drawn_in(kind: ProbeKind) -> None:
    for seed in range(10):
        phantom = draw_phantom(
            np.random.default_rng(seed), rows=ROWS, columns=COLUMNS, box=BOX, kind=kind
        )
        x0, y0, x1, y1 = phantom.sector.bounding_box(ROWS, COLUMNS)
        assert BOX[0] <= x0 < x1 <= BOX[2] and BOX[1] <= y0 < y1 <= BOX[3]


def test_draw_phantom_is_reproducible_and_seed_dependent() -> None:
    def draw(seed: int) -> Phantom:
        return draw_phantom(
            np.random.default_rng(seed),
            rows=ROWS,
            columns=COLUMNS,
            box=BOX,
            kind=ProbeKind.CURVILINEAR,
            lesion=True,
        )

    assert draw(5) == draw(5)
    assert draw(5) != draw(6)


def test_render_is_deterministic_and_black_outside_the_sector() -> None:
    phantom = draw_phantom(
        np.random.default_rng(1), rows=ROWS, columns=COLUMNS, box=BOX, kind=ProbeKind.CURVILINEAR
    )
    cine = render(phantom, frames=4)
    assert cine.shape == (4, ROWS, COLUMNS) and cine.dtype == np.uint8
    assert np.array_equal(cine, render(phantom, frames=4))
    inside = phantom.sector.mask(ROWS, COLUMNS)
    assert not cine[:, ~inside].any()
    assert 40 < cine[:, inside].mean() < 160


def test_speckle_in_flat_tissue_has_rayleigh_statistics() -> None:
    """Log-compressed fully developed speckle has a standard deviation of 5.57 dB."""
    sector = Sector.linear(left=10, top=10, right=249, bottom=189)
    phantom = Phantom(
        rows=ROWS,
        columns=COLUMNS,
        sector=sector,
        tissue=flat_tissue(),
        motion=Motion(),
        speckle_seed=42,
    )
    values = render(phantom)[0][sector.mask(ROWS, COLUMNS)].astype(np.float64)
    std_db = values.std() / 255.0 * DYNAMIC_RANGE_DB
    assert std_db == pytest.approx(5.57, rel=0.15)
    assert (values > 0).mean() > 0.99  # no holes in the tissue


@pytest.mark.parametrize("hyperechoic", [False, True])
def test_lesion_changes_only_its_own_area(hyperechoic: bool) -> None:
    def draw(lesion: bool) -> Phantom:
        return draw_phantom(
            np.random.default_rng(8),
            rows=ROWS,
            columns=COLUMNS,
            box=BOX,
            kind=ProbeKind.LINEAR,
            lesion=lesion,
            moving=False,
        )

    normal, sick = draw(False), draw(True)
    assert sick.lesion is not None
    assert dataclasses.replace(sick, lesion=None) == normal  # the lesion is the only change
    lesion = dataclasses.replace(
        sick.lesion, contrast=lesion_contrast(0.3, hyperechoic=hyperechoic)
    )
    sick = dataclasses.replace(sick, lesion=lesion)
    before, after = render(normal)[0].astype(float), render(sick)[0].astype(float)
    distance = lesion_distance(lesion, ROWS, COLUMNS)
    assert np.abs(after - before)[distance > 1.6].max() <= 1  # at most a rounding step
    core = distance < 0.6
    change = after[core].mean() - before[core].mean()
    assert (change > 20) if hyperechoic else (change < -20)


def test_fainter_lesions_at_higher_difficulty() -> None:
    phantom = draw_phantom(
        np.random.default_rng(4),
        rows=ROWS,
        columns=COLUMNS,
        box=BOX,
        kind=ProbeKind.CURVILINEAR,
        lesion=True,
        moving=False,
    )
    assert phantom.lesion is not None
    core = lesion_distance(phantom.lesion, ROWS, COLUMNS) < 0.6
    base = render(dataclasses.replace(phantom, lesion=None))[0][core].mean()
    changes = []
    for difficulty in (0.0, 0.5, 1.0):
        lesion = dataclasses.replace(
            phantom.lesion, contrast=lesion_contrast(difficulty, hyperechoic=False)
        )
        image = render(dataclasses.replace(phantom, lesion=lesion))[0]
        changes.append(base - image[core].mean())
    assert changes[0] > changes[1] > changes[2] > 0


def test_cine_frames_move_a_little() -> None:
    phantom = draw_phantom(
        np.random.default_rng(2),
        rows=ROWS,
        columns=COLUMNS,
        box=BOX,
        kind=ProbeKind.CURVILINEAR,
        moving=True,
    )
    cine = render(phantom, frames=6).astype(np.float64)
    inside = phantom.sector.mask(ROWS, COLUMNS)
    first, second = cine[0][inside], cine[1][inside]
    assert not np.array_equal(first, second)
    assert np.corrcoef(first, second)[0, 1] > 0.3  # the same tissue, moved slightly
    still = dataclasses.replace(phantom, motion=Motion())
    assert np.array_equal(render(still, frames=3)[0], render(still, frames=3)[2])


def test_invalid_sector_geometry_is_rejected() -> None:
    with pytest.raises(ValueError, match="r_near"):
        Sector.curvilinear(apex_x=0, apex_y=0, r_near=10, r_far=5, half_angle=0.5)
    with pytest.raises(ValueError, match="left < right"):
        Sector.linear(left=10, top=0, right=5, bottom=10)
