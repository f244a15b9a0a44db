"""Tests for usdcm.dicom.regions on the bundled ultrasound files and small built sequences."""

from __future__ import annotations

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from usdcm.dicom.regions import (
    REGION_NOTES,
    PhysicalUnits,
    RegionSpatialFormat,
    UltrasoundRegion,
    read_regions,
    select_tissue_region,
    tolerate,
)


def bundled(name: str) -> Dataset:
    path = get_testdata_file(name)  # bundled with pydicom: never downloads
    assert isinstance(path, str)
    return pydicom.dcmread(path, stop_before_pixels=True)


def region_item(
    x0: int,
    y0: int,
    x1: int,
    y1: int,
    spatial_format: int = 1,
    units: int = 3,
    delta: tuple[float, float] = (0.01, 0.02),
) -> Dataset:
    item = Dataset()
    item.RegionSpatialFormat = spatial_format
    item.RegionDataType = 1
    item.RegionLocationMinX0 = x0
    item.RegionLocationMinY0 = y0
    item.RegionLocationMaxX1 = x1
    item.RegionLocationMaxY1 = y1
    item.PhysicalUnitsXDirection = units
    item.PhysicalUnitsYDirection = units
    item.PhysicalDeltaX, item.PhysicalDeltaY = delta
    return item


def with_regions(*items: Dataset) -> Dataset:
    dataset = Dataset()
    dataset.SequenceOfUltrasoundRegions = Sequence(list(items))
    return dataset


def test_palette_file_has_a_2d_and_a_waveform_region() -> None:
    tissue, waveform = read_regions(bundled("examples_palette.dcm"))
    assert (tissue.x0, tissue.y0, tissue.x1, tissue.y1) == (120, 60, 800, 518)
    assert tissue.spatial_format == RegionSpatialFormat.TWO_D
    assert tissue.is_tissue_2d
    assert (tissue.units_x, tissue.units_y) == (PhysicalUnits.CM, PhysicalUnits.CM)
    assert tissue.spacing_mm == pytest.approx((0.2622878766196998, 0.2622878766196998))
    assert waveform.spatial_format == RegionSpatialFormat.WAVEFORM
    assert not waveform.is_tissue_2d
    assert (waveform.x0, waveform.y0, waveform.x1, waveform.y1) == (176, 522, 743, 576)
    assert waveform.units_x == PhysicalUnits.SECONDS
    assert waveform.spacing_mm is None  # not cm


def test_palette_tissue_region_is_clipped_to_the_image() -> None:
    regions = read_regions(bundled("examples_palette.dcm"))
    chosen = select_tissue_region(regions, rows=350, columns=800)
    assert chosen is not None
    assert (chosen.x0, chosen.y0, chosen.x1, chosen.y1) == (120, 60, 799, 349)
    # a box that overruns the image was written for a larger original: no spacing trusted
    assert regions[0].spacing_mm is not None
    assert chosen.spacing_mm is None
    assert chosen.as_crop() == "120,60,799,349"
    # Its columns show the off-by-one (RegionLocationMaxX1 == Columns), but its rows overrun
    # the 350 rows by 169: far outside, so the spacing is dropped and the note says why.
    assert regions[0].x1 == 800 and regions[0].overrun(rows=350, columns=800) == 169
    assert chosen.region_note == "overrun_no_spacing"
    # The waveform strip lies wholly below the 350 rows of the image.
    assert regions[1].clipped(rows=350, columns=800) is None


def test_ybr_file_region_overruns_and_is_clipped() -> None:
    dataset = bundled("examples_ybr_color.dcm")
    (region,) = read_regions(dataset)
    assert (region.x0, region.y0, region.x1, region.y1) == (84, 31, 595, 414)
    assert region.spacing_mm == pytest.approx((0.5104970559477806, 0.5104970559477806))
    chosen = select_tissue_region([region], rows=dataset.Rows, columns=dataset.Columns)
    assert chosen is not None
    assert (chosen.x0, chosen.y0, chosen.x1, chosen.y1) == (84, 31, 319, 239)
    assert (chosen.width, chosen.height) == (236, 209)
    assert chosen.spacing_mm is None
    assert chosen.region_note == "overrun_no_spacing"


def test_files_without_sequence_have_no_regions() -> None:
    assert read_regions(bundled("examples_rgb_color.dcm")) == ()
    assert select_tissue_region((), rows=10, columns=10) is None


def test_largest_2d_region_wins_over_larger_doppler() -> None:
    regions = read_regions(
        with_regions(
            region_item(0, 0, 9, 9),
            region_item(0, 0, 99, 99, spatial_format=RegionSpatialFormat.SPECTRAL),
            region_item(10, 10, 39, 29),
        )
    )
    chosen = select_tissue_region(regions, rows=100, columns=100)
    assert chosen == regions[2]


def test_largest_is_judged_after_clipping() -> None:
    overrunning = region_item(90, 90, 200, 200)  # 111 x 111 declared, 10 x 10 inside
    inside = region_item(0, 0, 19, 19)  # 20 x 20
    regions = read_regions(with_regions(overrunning, inside))
    assert select_tissue_region(regions, rows=100, columns=100) == regions[1]


def test_ties_pick_the_first() -> None:
    regions = read_regions(with_regions(region_item(0, 0, 9, 19), region_item(50, 50, 69, 59)))
    assert regions[0].area == regions[1].area == 200
    assert select_tissue_region(regions, rows=100, columns=100) == regions[0]


def test_spacing_needs_cm_in_both_directions() -> None:
    (cm,) = read_regions(with_regions(region_item(0, 0, 9, 9)))
    assert cm.spacing_mm == pytest.approx((0.1, 0.2))
    (percent,) = read_regions(with_regions(region_item(0, 0, 9, 9, units=PhysicalUnits.PERCENT)))
    assert percent.spacing_mm is None
    mixed = UltrasoundRegion(
        x0=0, y0=0, x1=9, y1=9, spatial_format=1, units_x=3, units_y=4, delta_x=0.1, delta_y=0.1
    )
    assert mixed.spacing_mm is None
    zero = UltrasoundRegion(
        x0=0, y0=0, x1=9, y1=9, spatial_format=1, units_x=3, units_y=3, delta_x=0.1
    )
    assert zero.spacing_mm is None


def test_items_without_location_are_skipped() -> None:
    broken = region_item(0, 0, 9, 9)
    del broken.RegionLocationMaxX1
    regions = read_regions(with_regions(broken, region_item(1, 1, 5, 5)))
    assert len(regions) == 1
    assert regions[0].x0 == 1
    with pytest.raises(ValueError, match="RegionLocationMaxX1"):
        UltrasoundRegion.from_item(broken)


def test_region_wholly_outside_is_never_chosen() -> None:
    regions = read_regions(with_regions(region_item(200, 200, 300, 300)))
    assert select_tissue_region(regions, rows=100, columns=100) is None


def test_palette_columns_off_by_one_alone_keeps_the_spacing() -> None:
    # The bundled palette file's tissue box on an image as tall as the box: only the
    # off-by-one in x is left, which is tolerated.
    regions = read_regions(bundled("examples_palette.dcm"))
    chosen = select_tissue_region(regions, rows=519, columns=800)
    assert chosen is not None
    assert chosen.as_crop() == "120,60,799,518"
    assert chosen.spacing_mm == pytest.approx((0.2622878766196998, 0.2622878766196998))
    assert chosen.region_note == "clipped_1px"


@pytest.mark.parametrize(
    ("box", "crop"),
    [
        ((4, 2, 100, 49), "4,2,99,49"),  # RegionLocationMaxX1 == Columns
        ((4, 2, 99, 50), "4,2,99,49"),  # RegionLocationMaxY1 == Rows
        ((4, 2, 100, 50), "4,2,99,49"),  # both, still by one pixel
    ],
)
def test_a_region_one_pixel_past_the_image_is_clipped_and_keeps_its_spacing(
    box: tuple[int, int, int, int], crop: str
) -> None:
    (region,) = read_regions(with_regions(region_item(*box)))
    chosen = select_tissue_region([region], rows=50, columns=100)
    assert chosen is not None
    assert chosen.as_crop() == crop
    assert chosen.spacing_mm == pytest.approx((0.1, 0.2))
    assert chosen.region_note == "clipped_1px"


def test_a_region_two_pixels_past_the_image_loses_its_spacing() -> None:
    (region,) = read_regions(with_regions(region_item(4, 2, 101, 49)))
    chosen = select_tissue_region([region], rows=50, columns=100)
    assert chosen is not None
    assert chosen.as_crop() == "4,2,99,49"
    assert chosen.spacing_mm is None
    assert chosen.notes == ("overrun_no_spacing",)


@pytest.mark.parametrize(
    ("delta", "note"),
    [
        ((-0.01, 0.02), "negative_delta_x"),
        ((0.01, -0.02), "negative_delta_y"),
        ((-0.01, -0.02), "negative_delta_x;negative_delta_y"),
    ],
)
def test_a_negative_delta_gives_its_magnitude_and_the_direction_is_noted(
    delta: tuple[float, float], note: str
) -> None:
    (region,) = read_regions(with_regions(region_item(0, 0, 9, 9, delta=delta)))
    assert (region.delta_x, region.delta_y) == delta  # read as written
    chosen = select_tissue_region([region], rows=10, columns=10)
    assert chosen is not None
    assert chosen.spacing_mm == pytest.approx((0.1, 0.2))
    assert (chosen.delta_x, chosen.delta_y) == delta  # the sign is kept: the direction
    assert chosen.region_note == note


def test_both_habits_in_one_region_are_both_noted_in_order() -> None:
    (region,) = read_regions(with_regions(region_item(0, 0, 10, 9, delta=(-0.01, -0.02))))
    chosen = select_tissue_region([region], rows=10, columns=10)
    assert chosen is not None
    assert chosen.spacing_mm == pytest.approx((0.1, 0.2))
    assert chosen.region_note == "clipped_1px;negative_delta_x;negative_delta_y"
    assert [REGION_NOTES.index(note) for note in chosen.notes] == sorted(
        REGION_NOTES.index(note) for note in chosen.notes
    )


def test_a_region_inside_the_image_with_positive_deltas_has_no_note() -> None:
    (region,) = read_regions(with_regions(region_item(4, 2, 13, 10)))
    chosen = select_tissue_region([region], rows=50, columns=100)
    assert chosen == region and chosen.region_note == ""


def test_notes_explain_a_spacing_only() -> None:
    # no cm units: nothing to keep or drop, so no note even when clipped or negative
    (percent,) = read_regions(
        with_regions(region_item(0, 0, 20, 9, units=PhysicalUnits.PERCENT, delta=(-1.0, 1.0)))
    )
    chosen = tolerate(percent, rows=10, columns=10)
    assert chosen is not None and chosen.notes == () and chosen.spacing_mm is None


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf"), 0.0])
def test_a_delta_that_is_not_a_finite_non_zero_number_gives_no_spacing(bad: float) -> None:
    region = UltrasoundRegion(
        x0=0, y0=0, x1=9, y1=9, spatial_format=1, units_x=3, units_y=3, delta_x=bad, delta_y=0.1
    )
    assert region.spacing_mm is None
    chosen = select_tissue_region([region], rows=10, columns=10)
    assert chosen is not None and chosen.notes == ()


def test_the_largest_region_is_judged_after_tolerating() -> None:
    # a region 1 px over keeps its spacing and wins on area; the note follows it
    off_by_one = region_item(0, 0, 100, 49, delta=(-0.01, 0.02))
    smaller = region_item(0, 0, 49, 49)
    chosen = select_tissue_region(read_regions(with_regions(smaller, off_by_one)), 50, 100)
    assert chosen is not None and chosen.as_crop() == "0,0,99,49"
    assert chosen.region_note == "clipped_1px;negative_delta_x"
