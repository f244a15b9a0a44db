"""Tests for usdcm.synth.export: the written export, read back with pydicom as ingest will."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import math
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.encaps import generate_fragmented_frames, generate_frames
from pydicom.fileset import FileSet
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    RLELossless,
)
from tests.synth.reference import assert_within_loss, reencoded_twins

from usdcm.dicom.codecs import JPEG_XL_SYNTAXES, VIDEO_SYNTAXES, decode_jpegxl
from usdcm.dicom.pixels import decode_frames
from usdcm.dicom.regions import read_regions, select_tissue_region
from usdcm.dicom.sop import US_IMAGE_STORAGE, US_MULTIFRAME_IMAGE_STORAGE
from usdcm.errors import SynthOptionError
from usdcm.synth import JUNK_KINDS, ExportSummary, ImageRecord, write_export
from usdcm.synth import codecs as synth_codecs
from usdcm.synth.catalog import CINE_CODECS, CODEC_SLOTS_PER_ROUND, IMAGE_CODECS, RECIPES, VENDORS
from usdcm.synth.plan import ExportPlan, RegionHabit, draw_plan

H264 = "1.2.840.10008.1.2.4.102"
HEVC = "1.2.840.10008.1.2.4.107"
JPEG_XL_LOSSLESS = "1.2.840.10008.1.2.4.110"


def read(path: Path, *, pixels: bool = True) -> pydicom.Dataset:
    """Read a file as ingest must: Part 10 or a bare Implicit VR Little Endian data set."""
    ds = pydicom.dcmread(path, force=True, stop_before_pixels=not pixels)
    if "TransferSyntaxUID" not in ds.file_meta:
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    return ds


def stored_frames(path: Path) -> np.ndarray:
    """Decoded frames as stored: frames x rows x columns [x 3], palette indices as they are.
    pydicom decodes what it can; JPEG XL frames go through libjxl one by one, video through
    usdcm (as RGB)."""
    ds = read(path)
    syntax = ds.file_meta.TransferSyntaxUID
    count = int(ds.get("NumberOfFrames", 1))
    if syntax in JPEG_XL_SYNTAXES:
        frames = generate_frames(ds.PixelData, number_of_frames=count)
        return np.stack([decode_jpegxl(frame) for frame in frames])
    if syntax in VIDEO_SYNTAXES:
        return decode_frames(ds, keep_color=True)
    array = ds.pixel_array
    return array[np.newaxis] if count == 1 else array


def gray_frames(path: Path) -> np.ndarray:
    """Decoded frames as float grey levels: frames x rows x columns (palette indices as is)."""
    array = stored_frames(path).astype(np.float64)
    if array.ndim == 4:
        array = array.mean(axis=-1)
    return array


def digests(root: Path) -> dict[str, str]:
    return {
        path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def test_every_recipe_and_junk_kind_is_present(synth_mix: ExportSummary) -> None:
    assert {record.recipe for record in synth_mix.images} == {r.name for r in RECIPES}
    assert set(synth_mix.junk) == set(JUNK_KINDS)
    assert len(synth_mix.image_paths) == len(set(synth_mix.image_paths)) == len(synth_mix.images)


def test_n_files_counts_every_file_written(synth_mix: ExportSummary) -> None:
    files = [path for path in synth_mix.root.rglob("*") if path.is_file()]
    assert len(files) == synth_mix.n_files
    assert synth_mix.n_files == len(synth_mix.image_paths) + len(JUNK_KINDS) + 1  # + labels.csv
    assert not [path for path in files if path.name.startswith(".")]  # no temp files left


def test_image_files_are_nested_without_extensions(synth_mix: ExportSummary) -> None:
    for path in synth_mix.image_paths:
        parts = path.relative_to(synth_mix.root).parts
        assert len(parts) == 4 and path.suffix == ""
        assert [part[:2] for part in parts] == ["PT", "ST", "SE", "IM"]
        assert all(len(part) == 8 and part[2:].isdigit() for part in parts)


def test_same_seed_gives_identical_bytes_and_another_seed_does_not(tmp_path: Path) -> None:
    first = write_export(tmp_path / "a", patients=5, seed=11, frames=2)
    again = write_export(tmp_path / "b", patients=5, seed=11, frames=2)
    other = write_export(tmp_path / "c", patients=3, seed=12, frames=2)
    codecs = {record.transfer_syntax_uid for record in first.images} & set(CINE_CODECS)
    assert len(codecs) >= 2  # H.264 and JPEG XL encoders among them
    assert digests(first.root) == digests(again.root)
    assert first.phi == again.phi
    changed = digests(other.root)
    same = [name for name, digest in digests(first.root).items() if changed.get(name) == digest]
    assert same == ["README"]


def test_h264_after_hevc_in_one_process_gives_the_same_bytes_each_time(tmp_path: Path) -> None:
    # x264's assembly gave another H.264 stream for the same frames once an HEVC encode had
    # run in the process (in 6 of 6 runs, at least one of three differed)
    from usdcm.synth.codecs import H264_HIGH_41_BD, HEVC_MAIN, transcode

    export = write_export(tmp_path / "export", patients=2, seed=3, frames=8)
    rgb = next(record.path for record in export.images if record.photometric == "RGB")
    source = (export.root / rgb).read_bytes()
    streams = set()
    for _ in range(6):
        transcode(source, HEVC_MAIN)
        streams.add(transcode(source, H264_HIGH_41_BD))
    assert len(streams) == 1


def test_export_mixes_syntaxes_colours_and_sop_classes(synth_mix: ExportSummary) -> None:
    syntaxes, photometrics, classes = set(), set(), set()
    for record in synth_mix.images:
        ds = read(record.path, pixels=False)
        syntaxes.add(ds.file_meta.TransferSyntaxUID)
        photometrics.add(ds.PhotometricInterpretation)
        classes.add(ds.SOPClassUID)
        assert ds.file_meta.TransferSyntaxUID == record.transfer_syntax_uid
        assert ds.PhotometricInterpretation == record.photometric
        assert ds.Modality == "US"
    assert syntaxes == {
        ExplicitVRLittleEndian,
        ImplicitVRLittleEndian,
        JPEGBaseline8Bit,
        RLELossless,
        JPEG2000Lossless,
        H264,
        HEVC,
        JPEG_XL_LOSSLESS,
    }
    assert photometrics == {
        "MONOCHROME2",
        "RGB",
        "YBR_FULL_422",
        "PALETTE COLOR",
        "YBR_PARTIAL_420",
    }
    assert classes == {US_IMAGE_STORAGE, US_MULTIFRAME_IMAGE_STORAGE}


def test_jpeg_images_include_fragmented_frames(synth_mix: ExportSummary) -> None:
    fragments_per_frame: list[int] = []
    for record in synth_mix.images:
        if record.transfer_syntax_uid != JPEGBaseline8Bit:
            continue
        ds = read(record.path)
        frames = list(generate_fragmented_frames(ds.PixelData, number_of_frames=record.frames))
        assert len(frames) == record.frames
        fragments_per_frame.extend(len(frame) for frame in frames)
    assert 1 in fragments_per_frame and max(fragments_per_frame) >= 2


def test_part10_files_and_bare_data_sets_are_both_present(synth_mix: ExportSummary) -> None:
    kinds: Counter[bool] = Counter()
    for record in synth_mix.images:
        head = record.path.read_bytes()[:132]
        part10 = head[128:132] == b"DICM"
        assert part10 == record.part10
        if not part10:
            assert head[:2] == b"\x08\x00"  # the data set starts at group 0008, implicit VR
        kinds[part10] += 1
    assert kinds[True] > 0 and kinds[False] > 0


def test_every_image_decodes_to_its_declared_shape(synth_mix: ExportSummary) -> None:
    for record in synth_mix.images:
        ds = read(record.path)
        array = stored_frames(record.path)
        samples = 3 if record.photometric in ("RGB", "YBR_FULL_422", "YBR_PARTIAL_420") else 1
        shape = (record.frames, record.rows, record.columns) + ((3,) if samples == 3 else ())
        assert array.shape == shape, record.recipe
        assert array.dtype == np.uint8
        assert (int(ds.get("NumberOfFrames", 1)) > 1) == (record.sop_class_uid != US_IMAGE_STORAGE)


def test_cines_carry_frame_time_and_vendors_vary(synth_mix: ExportSummary) -> None:
    frame_times = {vendor.manufacturer: vendor.frame_time_ms for vendor in VENDORS}
    for record in synth_mix.images:
        ds = read(record.path, pixels=False)
        assert ds.Manufacturer == record.manufacturer
        if record.frames > 1:
            assert float(ds.FrameTime) == pytest.approx(frame_times[ds.Manufacturer])
            assert ds.FrameIncrementPointer == 0x00181063
    assert len({record.manufacturer for record in synth_mix.images}) >= 2


def test_tissue_region_is_the_sector_box_in_cm(synth_mix: ExportSummary) -> None:
    for record in synth_mix.images:
        ds = read(record.path, pixels=False)
        item = ds.SequenceOfUltrasoundRegions[0]
        assert item.RegionSpatialFormat == 1 and item.RegionDataType == 1
        assert item.PhysicalUnitsXDirection == item.PhysicalUnitsYDirection == 3
        assert 0.02 <= abs(item.PhysicalDeltaX) <= 0.05
        assert abs(item.PhysicalDeltaY) == abs(item.PhysicalDeltaX) and item.PhysicalDeltaY > 0
        negative = record.region_habit in (RegionHabit.NEGATIVE_DELTA_X, RegionHabit.BOTH)
        assert (item.PhysicalDeltaX < 0) == negative
        assert "RegionFlags" in item and "ReferencePixelX0" in item and "ReferencePixelY0" in item
        box = (
            item.RegionLocationMinX0,
            item.RegionLocationMinY0,
            item.RegionLocationMaxX1,
            item.RegionLocationMaxY1,
        )
        sector_box = record.sector.bounding_box(record.rows, record.columns)
        if record.region_habit in (RegionHabit.OFF_BY_ONE, RegionHabit.BOTH):
            # declared down to the bottom of the screen, with an exclusive end
            assert box == (*sector_box[:3], record.rows)
        else:
            assert box == sector_box
            assert 0 <= box[0] < box[2] < record.columns and 0 <= box[1] < box[3] < record.rows
        assert record.tissue_box[:3] == sector_box[:3]
        off_by_one = record.region_habit in (RegionHabit.OFF_BY_ONE, RegionHabit.BOTH)
        assert record.tissue_box[3] == (record.rows - 1 if off_by_one else sector_box[3])
        assert read_regions(ds) == record.regions


def test_some_images_carry_each_vendor_habit(synth_mix: ExportSummary) -> None:
    habits = Counter(record.region_habit for record in synth_mix.images)
    assert habits[RegionHabit.NONE] > 0
    assert habits[RegionHabit.OFF_BY_ONE] + habits[RegionHabit.BOTH] > 0
    assert habits[RegionHabit.NEGATIVE_DELTA_X] + habits[RegionHabit.BOTH] > 0
    for record in synth_mix.images:  # never over an ECG strip
        if record.region_habit in (RegionHabit.OFF_BY_ONE, RegionHabit.BOTH):
            assert all(region.spatial_format != 4 for region in record.regions)


def test_both_habits_together_are_written_by_some_seed(tmp_path: Path) -> None:
    summary = write_export(tmp_path / "e", patients=1, seed=3, frames=2)
    assert RegionHabit.BOTH in {record.region_habit for record in summary.images}


def test_the_reader_tolerates_each_habit_and_keeps_the_written_scale(
    synth_mix: ExportSummary,
) -> None:
    for record in synth_mix.images:
        ds = read(record.path, pixels=False)
        delta_cm = abs(float(ds.SequenceOfUltrasoundRegions[0].PhysicalDeltaX))
        chosen = select_tissue_region(read_regions(ds), record.rows, record.columns)
        assert chosen is not None
        assert (chosen.x0, chosen.y0, chosen.x1, chosen.y1) == record.tissue_box
        assert chosen.spacing_mm == pytest.approx((10 * delta_cm, 10 * delta_cm))
        assert chosen.region_note == record.region_note, record.region_habit


def test_rows_an_off_by_one_region_adds_below_the_sector_are_black(
    synth_mix: ExportSummary,
) -> None:
    seen = 0
    for record in synth_mix.images:
        if record.region_habit not in (RegionHabit.OFF_BY_ONE, RegionHabit.BOTH):
            continue
        frames = gray_frames(record.path)
        x0, _, x1, y1 = record.sector.bounding_box(record.rows, record.columns)
        below = frames[:, y1 + 1 :, x0 : x1 + 1]
        if record.lossy:
            assert below.mean() < 2.0, record.recipe
        else:
            assert not below.any(), record.recipe
        seen += 1
    assert seen


def test_second_regions_are_smaller_and_not_chosen(synth_mix: ExportSummary) -> None:
    formats: Counter[int] = Counter()
    for record in synth_mix.images:
        regions = read_regions(read(record.path, pixels=False))
        for extra in regions[1:]:
            formats[extra.spatial_format] += 1
            assert extra.area < regions[0].area
        chosen = select_tissue_region(regions, record.rows, record.columns)
        assert chosen is not None
        assert chosen.spatial_format == 1 and chosen.data_type == regions[0].data_type
        assert (chosen.x0, chosen.y0, chosen.x1, chosen.y1) == record.tissue_box
    assert formats[1] > 0 and formats[4] > 0  # a thumbnail 2D region and an ECG waveform strip


def test_black_outside_the_sector_and_around_the_region(synth_mix: ExportSummary) -> None:
    for record in synth_mix.images:
        frames = gray_frames(record.path)
        x0, y0, x1, y1 = record.sector.bounding_box(record.rows, record.columns)
        in_box = np.zeros((record.rows, record.columns), dtype=bool)
        in_box[y0 : y1 + 1, x0 : x1 + 1] = True
        ring = np.zeros_like(in_box)
        ring[max(y0 - 2, 0) : y1 + 3, max(x0 - 2, 0) : x1 + 3] = True
        ring &= ~in_box
        black = frames[:, (in_box & ~record.sector.mask(record.rows, record.columns)) | ring]
        if record.lossy:  # JPEG ringing near edges
            assert black.mean() < 2.0 and black.max() < 40, record.recipe
        else:
            assert not black.any(), record.recipe
        assert frames[:, y0 : y1 + 1, x0 : x1 + 1].mean() > 20  # and tissue inside


def test_banner_text_is_burned_in_above_the_region(synth_mix: ExportSummary) -> None:
    for record in synth_mix.images:
        frames = gray_frames(record.path)
        banner = frames[:, : record.regions[0].y0]
        assert (banner[0] > 200).sum() > 100, record.recipe
        assert np.array_equal(banner[0] > 128, banner[-1] > 128)  # the same text on every frame


def test_phi_is_in_headers_and_distinctive(synth_mix: ExportSummary) -> None:
    found: set[str] = set()
    for record in synth_mix.images:
        ds = read(record.path, pixels=False)
        values = [
            str(ds.PatientName),
            ds.PatientID,
            ds.PatientBirthDate,
            ds.AccessionNumber,
            ds.InstitutionName,
            str(ds.ReferringPhysicianName),
        ]
        assert set(values) <= synth_mix.phi
        assert str(ds.PatientName).startswith("ZZ") and ds.PatientID.startswith("SYN")
        assert ds.AccessionNumber.startswith("ACC")
        found.update(values)
    assert found < synth_mix.phi  # plus name components and displayed forms
    assert all(len(text) >= 6 for text in synth_mix.phi)


def test_dicomdir_references_exactly_the_image_instances(synth_mix: ExportSummary) -> None:
    dicomdir = synth_mix.junk["dicomdir"]
    assert dicomdir == synth_mix.root / "DICOMDIR"
    file_set = FileSet(dicomdir)
    # FileSet keeps a private staging folder until garbage collection; remove it here
    file_set._stage["t"].cleanup()
    referenced = {Path(instance.path): instance.SOPInstanceUID for instance in file_set}
    expected = {record.path: record.sop_instance_uid for record in synth_mix.images}
    assert referenced == expected
    for instance in file_set:
        assert (
            instance.ReferencedTransferSyntaxUIDInFile
            == read(Path(instance.path)).file_meta["TransferSyntaxUID"].value
        )


def test_labels_csv_has_one_row_per_study(synth_mix: ExportSummary) -> None:
    with synth_mix.labels_path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert synth_mix.labels_path == synth_mix.root / "labels.csv"
    assert list(rows[0]) == ["AccessionNumber", "label"]
    labels = {row["AccessionNumber"]: row["label"] for row in rows}
    assert len(labels) == len(rows) == synth_mix.n_studies
    assert set(labels.values()) == {"normal", "abnormal"}
    assert sum(label == "abnormal" for label in labels.values()) == synth_mix.n_abnormal_studies
    assert synth_mix.n_abnormal_studies == math.floor(0.5 * synth_mix.n_studies + 0.5)
    studies: dict[str, set[str]] = {}
    for record in synth_mix.images:
        ds = read(record.path, pixels=False)
        assert labels[ds.AccessionNumber] == record.label
        studies.setdefault(ds.AccessionNumber, set()).add(ds.StudyInstanceUID)
        assert (record.lesion is not None) == (record.label == "abnormal")
    assert set(studies) == set(labels) and all(len(uids) == 1 for uids in studies.values())


def lesion_ratio(record: ImageRecord) -> float:
    """Mean grey level inside the lesion over that of a ring around it (first frame)."""
    assert record.lesion is not None
    lesion = record.lesion
    frame = gray_frames(record.path)[0]
    y, x = np.mgrid[0 : record.rows, 0 : record.columns].astype(np.float64)
    cos, sin = math.cos(lesion.angle), math.sin(lesion.angle)
    u = ((x - lesion.center_x) * cos + (y - lesion.center_y) * sin) / lesion.radius_x
    v = (-(x - lesion.center_x) * sin + (y - lesion.center_y) * cos) / lesion.radius_y
    distance = np.hypot(u, v)
    inside = record.sector.mask(record.rows, record.columns)
    core = frame[(distance < 0.6) & inside].mean()
    ring = frame[(distance > 1.5) & (distance < 2.5) & inside].mean()
    return float(core / ring)


def test_abnormal_images_show_their_lesion(synth_mix: ExportSummary) -> None:
    abnormal = [record for record in synth_mix.images if record.lesion is not None]
    assert abnormal
    for record in abnormal:
        assert record.lesion is not None
        ratio = lesion_ratio(record)
        if record.lesion.contrast > 0:
            assert ratio > 1.15, record.recipe
        else:
            assert ratio < 0.87, record.recipe


# --- JPEG XL and video: some instances re-encoded ---------------------------------------------


def test_the_first_round_keeps_its_recipes_and_later_rounds_reencode_a_few() -> None:
    plan = draw_plan(patients=40, seed=0, abnormal_fraction=0.5, difficulty=0.3, frames=8)
    instances = [instance for _, _, instance in plan.instances]
    assert all(instance.codec is None for instance in instances[: len(RECIPES)])
    for start in range(len(RECIPES), len(instances), len(RECIPES)):
        round_ = instances[start : start + len(RECIPES)]
        part10 = [instance for instance in round_ if instance.recipe.part10]
        reencoded = [instance for instance in round_ if instance.codec is not None]
        assert reencoded == part10[: min(CODEC_SLOTS_PER_ROUND, len(part10))]
    cine = [i.codec for i in instances if i.codec is not None and i.recipe.cine]
    single = [i.codec for i in instances if i.codec is not None and not i.recipe.cine]
    assert cine == [CINE_CODECS[n % len(CINE_CODECS)] for n in range(len(cine))]
    assert single == [IMAGE_CODECS[n % len(IMAGE_CODECS)] for n in range(len(single))]
    assert set(cine) == set(CINE_CODECS) and set(single) == set(IMAGE_CODECS)
    assert not set(single) & VIDEO_SYNTAXES  # video is for cine only
    assert 0.2 < (len(cine) + len(single)) / len(instances) < 0.35


def test_the_codec_choice_draws_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    def plan() -> ExportPlan:
        return draw_plan(patients=12, seed=4, abnormal_fraction=0.5, difficulty=0.3, frames=6)

    mixed = plan()
    monkeypatch.setattr("usdcm.synth.plan.CODEC_SLOTS_PER_ROUND", 0)
    native = plan()
    pairs = list(zip(mixed.instances, native.instances, strict=True))
    assert any(item[2].codec for item, _ in pairs)
    for (_, _, instance), (_, _, plain) in pairs:
        assert plain.codec is None
        assert dataclasses.replace(instance, codec=None) == plain
    assert dataclasses.replace(mixed, patients=()) == dataclasses.replace(native, patients=())


def test_without_jpegxl_its_slots_go_to_video_or_stay_native(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("usdcm.synth.plan.jpegxl_available", lambda: False)
    plan = draw_plan(patients=20, seed=0, abnormal_fraction=0.5, difficulty=0.3, frames=4)
    codecs = [instance.codec for _, _, instance in plan.instances if instance.codec]
    assert codecs and not set(codecs) & JPEG_XL_SYNTAXES
    assert all(i.recipe.cine for _, _, i in plan.instances if i.codec)


def test_reencoded_images_decode_within_the_codec_loss(synth_mix: ExportSummary) -> None:
    """Compared with the pixels synth drew (its uncompressed twin), inside the tissue box."""
    twins = reencoded_twins(patients=5, seed=0)  # synth_mix's options
    records = [r for r in synth_mix.images if r.sop_instance_uid in twins]
    assert {record.transfer_syntax_uid for record in records} == {H264, HEVC, JPEG_XL_LOSSLESS}
    for record in records:
        ds = read(record.path)
        drawn = pydicom.dcmread(io.BytesIO(twins[record.sop_instance_uid]))
        assert ds.file_meta.TransferSyntaxUID == record.transfer_syntax_uid
        assert ds.LossyImageCompression == ("01" if record.lossy else "00")
        assert int(ds.get("NumberOfFrames", 1)) == record.frames
        assert read_regions(ds) == read_regions(drawn) == record.regions
        x0, y0, x1, y1 = record.tissue_box
        decoded = decode_frames(ds)[:, y0 : y1 + 1, x0 : x1 + 1]
        expected = decode_frames(drawn)[:, y0 : y1 + 1, x0 : x1 + 1]
        assert_within_loss(decoded, expected, record.transfer_syntax_uid, record.recipe)
        if record.transfer_syntax_uid == JPEG_XL_LOSSLESS:  # and the whole screen
            np.testing.assert_array_equal(stored_frames(record.path), drawn.pixel_array)


def _small_rgb_cine() -> bytes:
    ds = pydicom.Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = US_MULTIFRAME_IMAGE_STORAGE, "1.2.3.4"
    ds.NumberOfFrames, ds.Rows, ds.Columns = 4, 176, 256  # tall enough for two x264 threads
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = np.random.default_rng(0).integers(0, 256, (4, 176, 256, 3), np.uint8).tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, implicit_vr=False, little_endian=True)
    return buffer.getvalue()


@pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
    reason="needs Linux CPU affinity and two CPUs",
)
def test_codec_bytes_do_not_depend_on_the_number_of_cpus() -> None:
    """x264 and x265 pick their thread count from the CPUs they may use, and write it (and
    the CPU's features) into the stream: synth pins one thread and drops that SEI."""
    data = _small_rgb_cine()
    syntaxes = [
        synth_codecs.MPEG2_MAIN_LEVEL,
        synth_codecs.H264_HIGH_41,
        synth_codecs.HEVC_MAIN,
        synth_codecs.JPEG_XL,
        synth_codecs.JPEG_XL_LOSSLESS,
    ]
    every_cpu = [synth_codecs.transcode(data, syntax) for syntax in syntaxes]
    cpus = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(cpus)})
        one_cpu = [synth_codecs.transcode(data, syntax) for syntax in syntaxes]
    finally:
        os.sched_setaffinity(0, cpus)
    assert one_cpu == every_cpu
    assert b"cpuid=" not in every_cpu[2]  # x265's options SEI names the CPU's features


def test_junk_files_are_what_they_claim(synth_mix: ExportSummary) -> None:
    junk = synth_mix.junk
    assert junk["text"].read_bytes().isascii()
    assert b"DICM" not in junk["text"].read_bytes()
    sr = read(junk["sr"], pixels=False)
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.11" and "PixelData" not in read(junk["sr"])
    ct = read(junk["non_us"])
    assert ct.Modality == "CT" and ct.pixel_array.shape == (64, 64)
    sc = read(junk["secondary_capture"])
    assert sc.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7" and sc.Modality == "US"
    assert sc.pixel_array.shape[-1] == 3
    duplicate = junk["duplicate"].read_bytes()
    originals = [path for path in synth_mix.image_paths if path.read_bytes() == duplicate]
    assert len(originals) == 1 and originals[0] != junk["duplicate"]
    truncated = junk["truncated"]
    assert truncated.read_bytes()[128:132] == b"DICM"
    with pytest.raises(Exception):  # noqa: B017 - pydicom raises several types on a cut file
        read(truncated).pixel_array  # noqa: B018
    assert not set(junk.values()) & set(synth_mix.image_paths)


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"patients": 0}, "--patients must be between 1 and 100000, found 0"),
        ({"abnormal_fraction": 1.5}, "--abnormal-fraction must be between 0 and 1"),
        ({"abnormal_fraction": float("nan")}, "found nan"),
        ({"difficulty": -0.1}, "--difficulty must be between 0"),
        ({"frames": 1}, "--frames (cine length) must be between 2 and 64, found 1"),
        ({"seed": -3}, "--seed must be 0 or a positive integer, found -3"),
    ],
)
def test_bad_options_raise_before_writing(
    tmp_path: Path, options: dict[str, float], needle: str
) -> None:
    out = tmp_path / "out"
    with pytest.raises(SynthOptionError) as caught:
        write_export(out, **options)  # type: ignore[arg-type]
    assert needle in str(caught.value)
    assert not out.exists()


def test_refuses_a_non_empty_folder_or_a_file(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(SynthOptionError, match="not empty"):
        write_export(tmp_path, patients=1)
    assert [path.name for path in tmp_path.iterdir()] == ["keep.txt"]
    with pytest.raises(SynthOptionError, match="is a file"):
        write_export(tmp_path / "keep.txt", patients=1)


def test_a_single_patient_export_still_has_all_junk(tmp_path: Path) -> None:
    summary = write_export(tmp_path / "one", patients=1, seed=3, abnormal_fraction=1.0)
    assert summary.n_abnormal_studies == 1 and summary.n_studies == 1
    assert set(summary.junk) == set(JUNK_KINDS)
    assert all(path.exists() for path in summary.junk.values())
