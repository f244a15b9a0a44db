"""``--compress none|fast|best``: the NIfTI bytes, the files ingest writes, and when an image
counts as on disk. On pydicom's bundled ultrasound files and random volumes."""

from __future__ import annotations

import errno
import gzip
import itertools
import json
import os
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

import usdcm.ingest.convert as convert_module
from usdcm.errors import OutputWriteError
from usdcm.ingest import IngestOptions, IngestResult, ingest
from usdcm.ingest.convert import Compression, decode_volume, nifti_bytes
from usdcm.ingest.journal import Journal

BUNDLED_US = (
    "examples_palette.dcm",  # its region ends one pixel past the image
    "examples_ybr_color.dcm",  # 30-frame JPEG cine
    "examples_rgb_color.dcm",
    "examples_jpeg2k.dcm",
    "ExplVR_BigEnd.dcm",
)


def bundled(name: str) -> Path:
    path = get_testdata_file(name)  # bundled with pydicom: never downloads
    assert isinstance(path, str)
    return Path(path)


def nibabel_reference(
    volume: np.ndarray, spacing_mm: tuple[float, float] | None, frame_time_ms: float | None
) -> bytes:
    """The uncompressed NIfTI as ingest wrote it through nibabel before the header was
    made once per kind of volume: nifti_bytes must give these bytes, uncompressed."""
    spacing_x, spacing_y = spacing_mm or (1.0, 1.0)
    affine = np.diag([spacing_x, spacing_y, 1.0, 1.0])
    image = nib.Nifti1Image(volume, affine)
    header = image.header
    header.set_zooms((spacing_x, spacing_y, 1.0, *([1.0] * (volume.ndim - 3))))
    header.set_xyzt_units(xyz="mm" if spacing_mm else "unknown", t="unknown")
    description = "usdcm"
    if frame_time_ms is not None:
        description += f" frame_time_ms={frame_time_ms:.3f}"
    header["descrip"] = description.encode("ascii")
    header.set_qform(affine, code=0 if spacing_mm is None else 2)
    header.set_sform(affine, code=0 if spacing_mm is None else 2)
    data: bytes = image.to_bytes()
    return data


def write_bundled_export(root: Path, copies: int) -> Path:
    """pydicom's ultrasound files, ``copies`` times, each copy a patient with new UIDs."""
    for copy in range(copies):
        for name in BUNDLED_US:
            dataset = pydicom.dcmread(bundled(name))
            for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
                uid = generate_uid(entropy_srcs=[name, keyword, str(copy)])
                setattr(dataset, keyword, uid)
            dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
            dataset.PatientID = f"COPY{copy}"
            folder = root / f"patient{copy}"
            folder.mkdir(parents=True, exist_ok=True)
            dataset.save_as(folder / name.removesuffix(".dcm"))
    return root


@pytest.fixture(scope="module")
def bundled_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_bundled_export(tmp_path_factory.mktemp("bundled") / "pacs", copies=2)


def outputs(out: Path) -> dict[str, bytes]:
    """Every output that must not depend on how the run was scheduled (not ingest.json,
    whose timings and worker count differ)."""
    found = {name: (out / name).read_bytes() for name in ("manifest.csv", "excluded.csv")}
    for path in sorted((out / "images").iterdir()):
        found[f"images/{path.name}"] = path.read_bytes()
    return found


@pytest.mark.parametrize("name", BUNDLED_US)
def test_every_compress_holds_the_bytes_nibabel_writes(name: str) -> None:
    decoded = decode_volume(bundled(name), keep_color=False)
    reference = nibabel_reference(decoded.volume, decoded.spacing_mm, 33.3)
    plain = nifti_bytes(decoded.volume, decoded.spacing_mm, 33.3, Compression.NONE)
    assert plain == reference
    for compress in (Compression.FAST, Compression.BEST):
        data = nifti_bytes(decoded.volume, decoded.spacing_mm, 33.3, compress)
        assert data[:2] == b"\x1f\x8b"  # a gzip member
        assert gzip.decompress(data) == reference
    assert nifti_bytes(decoded.volume, decoded.spacing_mm, 33.3) == nifti_bytes(
        decoded.volume, decoded.spacing_mm, 33.3, Compression.FAST
    )


def test_the_header_made_once_per_kind_matches_nibabel_for_any_volume() -> None:
    rng = np.random.default_rng(12)
    kinds = itertools.product(
        (np.uint8, np.uint16),
        (False, True),
        (None, (0.2, 0.25), (0.0371, 1.5)),
        (None, 33.333, 7.0),
    )
    for dtype, color, spacing, frame_time in kinds:
        for _ in range(3):
            shape = tuple(int(side) for side in rng.integers(1, 40, size=3))
            frames = rng.integers(0, 250, size=(*shape, 3) if color else shape).astype(dtype)
            cropped = frames[:, 1:, :-1] if min(shape[1:]) > 1 else frames  # a view, as cropped
            volume = cropped.transpose(2, 1, 0, 3) if color else cropped.transpose(2, 1, 0)
            plain = nifti_bytes(volume, spacing, frame_time, Compression.NONE)
            assert plain == nibabel_reference(volume, spacing, frame_time)


def test_each_compress_writes_files_that_nibabel_and_gzip_read_back_identical(
    bundled_export: Path, tmp_path: Path
) -> None:
    results: dict[Compression, IngestResult] = {}
    for compress in Compression:
        options = IngestOptions(workers=1, compress=compress, secret_path=tmp_path / "secret")
        results[compress] = ingest(bundled_export, tmp_path / compress.value, options)
    plain_dir = tmp_path / "none" / "images"
    plain = sorted(plain_dir.iterdir())
    assert plain and all(path.name.endswith(".nii") for path in plain)
    assert results[Compression.NONE].n_images == len(plain) == 10  # every copy converts
    for compress in (Compression.FAST, Compression.BEST):
        folder = tmp_path / compress.value / "images"
        for path in plain:
            gz = folder / f"{path.name}.gz"
            with gzip.open(gz) as handle:
                assert handle.read() == path.read_bytes()
            image, reference = nib.load(gz), nib.load(path)
            assert np.array_equal(np.asarray(image.dataobj), np.asarray(reference.dataobj))
            assert image.header.get_zooms() == reference.header.get_zooms()
        summary = json.loads((tmp_path / compress.value / "ingest.json").read_text())
        assert summary["options"]["compress"] == compress.value
    for compress in Compression:
        manifest = (tmp_path / compress.value / "manifest.csv").read_text(encoding="utf-8")
        rows = manifest.splitlines()[1:]
        assert all(f"{compress.suffix}," in row for row in rows)
    sizes = {
        c: sum(p.stat().st_size for p in (tmp_path / c.value).glob("images/*")) for c in results
    }
    assert sizes[Compression.BEST] < sizes[Compression.FAST] < sizes[Compression.NONE]


@pytest.mark.parametrize("compress", list(Compression))
def test_outputs_are_the_same_bytes_with_one_or_two_workers(
    bundled_export: Path, tmp_path: Path, compress: Compression
) -> None:
    # one worker converts in this process and writes in a thread; two, in worker processes
    secret = tmp_path / "secret"  # one key, so that both runs name the images alike
    for workers in (1, 2):
        options = IngestOptions(workers=workers, compress=compress, secret_path=secret)
        ingest(bundled_export, tmp_path / str(workers), options)
    assert outputs(tmp_path / "1") == outputs(tmp_path / "2")


def test_a_rerun_keeps_images_of_the_same_compress_and_redoes_another(
    bundled_export: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    first = ingest(bundled_export, out, IngestOptions(workers=1))
    again = ingest(bundled_export, out, IngestOptions(workers=1))
    assert (again.n_converted, again.n_reused) == (0, first.n_images)
    plain = ingest(bundled_export, out, IngestOptions(workers=1, compress="none"))
    assert (plain.n_converted, plain.n_reused) == (first.n_images, 0)
    names = sorted(path.name for path in (out / "images").iterdir())
    assert len(names) == first.n_images and all(name.endswith(".nii") for name in names)
    plain_again = ingest(bundled_export, out, IngestOptions(workers=1, compress="none"))
    assert (plain_again.n_converted, plain_again.n_reused) == (0, first.n_images)


def test_an_unknown_compress_is_refused() -> None:
    with pytest.raises(ValueError, match="'zstd' is not a valid Compression"):
        IngestOptions(compress="zstd")  # type: ignore[arg-type]


@pytest.mark.parametrize("workers", [1, 2])
def test_nothing_is_journaled_before_its_image_is_synced(
    bundled_export: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    synced: list[str] = []
    journaled: list[dict[str, Any]] = []
    write, sync, append = (
        convert_module.atomic_write_bytes,
        convert_module.sync_file,
        Journal.append,
    )

    def write_then_note(path: Path, data: bytes, **kwargs: Any) -> None:
        write(path, data, **kwargs)
        if kwargs.get("fsync", True):  # one worker: the write thread of this process
            synced.append(str(path))

    def sync_then_note(path: Path) -> None:  # two workers: they write, this process syncs
        sync(path)
        synced.append(str(path))

    def checked_append(journal: Journal, entry: dict[str, Any]) -> None:
        if entry["t"] == "convert" and entry["v"].get("status") == "converted":
            journaled.append(entry)
            assert len(synced) >= len(journaled), "a conversion journaled before its sync"
        append(journal, entry)

    monkeypatch.setattr(convert_module, "atomic_write_bytes", write_then_note)
    monkeypatch.setattr(convert_module, "sync_file", sync_then_note)
    monkeypatch.setattr(Journal, "append", checked_append)
    result = ingest(bundled_export, tmp_path / "out", IngestOptions(workers=workers))
    assert result.n_converted == result.n_images == len(journaled) == 10
    images = sorted(str(path) for path in (tmp_path / "out" / "images").iterdir())
    assert sorted(synced) == images


@pytest.mark.parametrize("workers", [1, 2])
def test_a_failed_sync_stops_the_run_and_the_rerun_redoes_that_image(
    bundled_export: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    out = tmp_path / "out"
    write, sync = convert_module.atomic_write_bytes, convert_module.sync_file
    calls = {"count": 0}

    def full_disk_at_the_fourth(path: Path) -> None:
        calls["count"] += 1
        if calls["count"] == 4:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    def write_or_fail(path: Path, data: bytes, **kwargs: Any) -> None:
        if kwargs.get("fsync", True):  # one worker: the write thread of this process
            full_disk_at_the_fourth(path)
        write(path, data, **kwargs)

    def sync_or_fail(path: Path) -> None:
        full_disk_at_the_fourth(path)  # two workers: they write, this process syncs
        sync(path)

    monkeypatch.setattr(convert_module, "atomic_write_bytes", write_or_fail)
    monkeypatch.setattr(convert_module, "sync_file", sync_or_fail)
    with pytest.raises(OutputWriteError, match="The disk is full"):
        ingest(bundled_export, out, IngestOptions(workers=workers))
    journal = (out / ".usdcm" / "journal.jsonl").read_text(encoding="utf-8")
    converted = [line for line in journal.splitlines() if '"status":"converted"' in line]
    assert len(converted) < 10  # the image that failed is not among them
    assert not (out / "manifest.csv").exists()

    monkeypatch.setattr(convert_module, "atomic_write_bytes", write)
    monkeypatch.setattr(convert_module, "sync_file", sync)
    result = ingest(bundled_export, out, IngestOptions(workers=workers))
    assert result.n_images == 10
    assert result.n_reused == len(converted) and result.n_converted == 10 - len(converted)
