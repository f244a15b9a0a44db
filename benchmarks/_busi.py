"""Wrap BUSI (PNG breast ultrasound, ``../shared/data/busi``) into a DICOM export for usdcm.

Shared by the benchmark scripts (its name starts with an underscore, so ``make bench``
skips it). Writes one US Image Storage file per image (MONOCHROME2, 8 bits, Explicit VR
Little Endian, a Sequence of Ultrasound Regions covering the whole image without physical
units, since BUSI's spacing is unknown), and ``labels.csv`` keyed by ``AccessionNumber``
with the label ``malignant`` or ``benign`` (BUSI's ``benign`` and ``normal`` folders: the
binary task of the published reference numbers, BreastMNIST).

- **One synthetic patient per image**: no image-to-patient map is published, so a split of
  this export is an image-level split, and images of one woman may fall on both sides of
  it. Say so next to every number measured on it.
- **The identical-pixel pair** ``benign (433).png`` / ``malignant (145).png`` is dropped.
- **Fake identifiers only** (``BUSI^P0001``...), no dates of real people; every UID is
  derived from the image's file name and a seed (``pydicom.uid.generate_uid`` with entropy
  sources), so the same seed gives byte-identical files.

Never trains and never imports usdcm: it only writes files that ``usdcm ingest`` reads.

Example::

    python benchmarks/_busi.py /tmp/busi-export --per-class 4   # --root ../shared/data/busi
    usdcm ingest /tmp/busi-export/dicom --out /tmp/busi-data --labels /tmp/busi-export/labels.csv
"""

from __future__ import annotations

import argparse
import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

FOLDERS: dict[str, str] = {"benign": "benign", "normal": "benign", "malignant": "malignant"}
"""BUSI folder -> binary label (benign+normal vs malignant, as BreastMNIST)."""

DROPPED: frozenset[str] = frozenset({"benign/benign (433).png", "malignant/malignant (145).png"})
"""Relative paths of the identical-pixel pair; both are left out."""

US_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.6.1")
DEFAULT_BUSI = Path(__file__).resolve().parents[2] / "shared" / "data" / "busi"
"""``/work/shared/data/busi`` when the repository is ``/work/main``."""


@dataclass(frozen=True)
class BusiImage:
    """One source PNG and what the export calls it."""

    relative: str
    """``folder/file.png`` under the BUSI root."""
    folder: str
    label: str
    index: int
    """1-based position in the export (sorted order), used for the fake identifiers."""


@dataclass(frozen=True)
class BusiExport:
    """What :func:`write_busi_export` wrote."""

    dicom_dir: Path
    labels_csv: Path
    images: tuple[BusiImage, ...]

    def counts(self) -> dict[str, int]:
        """Images per binary label."""
        out: dict[str, int] = {}
        for image in self.images:
            out[image.label] = out.get(image.label, 0) + 1
        return out


def _sort_key(path: Path) -> tuple[str, int, str]:
    """``benign (10).png`` after ``benign (9).png``: folder, then the number in the name."""
    digits = "".join(ch for ch in path.stem if ch.isdigit())
    return (path.parent.name, int(digits) if digits else -1, path.name)


def list_images(root: Path, *, per_class: int | None = None) -> list[BusiImage]:
    """The BUSI PNGs to export, in a fixed order, without the identical-pixel pair.

    ``per_class`` keeps the first N of each folder (benign, malignant, normal), for quick runs.
    """
    found: list[Path] = []
    for folder in sorted(FOLDERS):
        paths = sorted((root / folder).glob("*.png"), key=_sort_key)
        kept = [p for p in paths if f"{folder}/{p.name}" not in DROPPED]
        found.extend(kept[:per_class] if per_class is not None else kept)
    if not found:
        message = f"no BUSI PNGs under {root} (expected benign/, malignant/, normal/)"
        raise FileNotFoundError(message)
    return [
        BusiImage(
            relative=f"{p.parent.name}/{p.name}",
            folder=p.parent.name,
            label=FOLDERS[p.parent.name],
            index=i,
        )
        for i, p in enumerate(found, start=1)
    ]


def _uid(seed: int, image: BusiImage, what: str) -> UID:
    return generate_uid(entropy_srcs=["usdcm-busi", str(seed), image.relative, what])


def _regions(rows: int, columns: int) -> Sequence:
    """One tissue region covering the image; no physical units (BUSI gives no spacing)."""
    item = Dataset()
    item.RegionSpatialFormat = 1  # 2D
    item.RegionDataType = 1  # tissue
    item.RegionFlags = 0
    item.RegionLocationMinX0 = 0
    item.RegionLocationMinY0 = 0
    item.RegionLocationMaxX1 = columns - 1
    item.RegionLocationMaxY1 = rows - 1
    item.PhysicalUnitsXDirection = 0  # none
    item.PhysicalUnitsYDirection = 0
    item.PhysicalDeltaX = 0.0
    item.PhysicalDeltaY = 0.0
    return Sequence([item])


def image_dataset(pixels: np.ndarray, image: BusiImage, *, seed: int = 0) -> Dataset:
    """A Part 10 US Image Storage dataset for one 8-bit grey image (rows x columns)."""
    rows, columns = pixels.shape
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = US_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = _uid(seed, image, "sop")
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = US_IMAGE_STORAGE
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    number = f"{image.index:04d}"
    ds.PatientName = f"BUSI^P{number}"
    ds.PatientID = f"BUSI-P{number}"
    ds.PatientSex = "F"
    ds.StudyInstanceUID = _uid(seed, image, "study")
    ds.SeriesInstanceUID = _uid(seed, image, "series")
    ds.StudyID = "1"
    ds.AccessionNumber = f"BUSIA{number}"
    ds.StudyDescription = "Breast ultrasound (BUSI, wrapped)"
    ds.Modality = "US"
    ds.Manufacturer = "GE Healthcare (BUSI source)"
    ds.ManufacturerModelName = "LOGIQ E9"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.SequenceOfUltrasoundRegions = _regions(rows, columns)
    ds.PixelData = np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()
    return ds


def load_grey(path: Path) -> np.ndarray:
    """The PNG as one 8-bit grey channel (BUSI's RGB PNGs are grey in three channels)."""
    with Image.open(path) as im:
        return np.asarray(im.convert("L"), dtype=np.uint8)


def write_busi_export(
    root: Path, out: Path, *, per_class: int | None = None, seed: int = 0
) -> BusiExport:
    """Write ``out/dicom/PNNNN/IM0001`` per image and ``out/labels.csv``; return what was written.

    ``out`` must not hold an earlier export of other images: files are overwritten, not
    removed.
    """
    images = list_images(root, per_class=per_class)
    dicom_dir = out / "dicom"
    for image in images:
        ds = image_dataset(load_grey(root / image.relative), image, seed=seed)
        target = dicom_dir / f"P{image.index:04d}" / "IM0001"
        target.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(target, enforce_file_format=True)
    labels_csv = out / "labels.csv"
    with labels_csv.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["AccessionNumber", "label"])
        for image in images:
            writer.writerow([f"BUSIA{image.index:04d}", image.label])
    return BusiExport(dicom_dir=dicom_dir, labels_csv=labels_csv, images=tuple(images))


def export_digest(export: BusiExport) -> str:
    """sha256 over every written file, in order (for the determinism check)."""
    digest = hashlib.sha256()
    for path in sorted(export.dicom_dir.rglob("*")):
        if path.is_file():
            digest.update(path.relative_to(export.dicom_dir).as_posix().encode())
            digest.update(path.read_bytes())
    digest.update(export.labels_csv.read_bytes())
    return digest.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--root", type=Path, default=DEFAULT_BUSI, help="the BUSI folder")
    parser.add_argument("--per-class", type=int, default=None, help="first N of each folder")
    parser.add_argument("--seed", type=int, default=0, help="UID seed")
    args = parser.parse_args()
    export = write_busi_export(args.root, args.out, per_class=args.per_class, seed=args.seed)
    print(f"{len(export.images)} images {export.counts()} -> {export.dicom_dir}")
    print(f"labels: {export.labels_csv}")


if __name__ == "__main__":
    main()
