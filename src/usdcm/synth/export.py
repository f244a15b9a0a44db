"""Write a synthetic PACS export to disk: image files, junk, DICOMDIR and ``labels.csv``.

Owns the folder layout (``PTxxxxxx/STxxxxxx/SExxxxxx/IMxxxxxx``, no extensions), where the
junk goes, and the :class:`ExportSummary` that tests and demos rely on. All content comes
from the seeded plan, so one seed gives byte-identical files; about 30% of the images of a
large export are re-encoded in JPEG XL, H.264, HEVC or MPEG-2 (see
:func:`usdcm.synth.plan.draw_plan`). Never reads the wall clock and
never overwrites a non-empty folder.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.fileset import FileSet
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGBaseline8Bit

from usdcm.atomic import atomic_write_bytes
from usdcm.dicom.regions import UltrasoundRegion
from usdcm.errors import SynthOptionError
from usdcm.synth import junk
from usdcm.synth.codecs import CODEC_SYNTAXES, JPEG_XL_LOSSLESS
from usdcm.synth.encode import encode_image
from usdcm.synth.phantom import Lesion
from usdcm.synth.plan import (
    ExportPlan,
    InstancePlan,
    PatientPlan,
    RegionHabit,
    SeriesPlan,
    draw_plan,
)
from usdcm.synth.screen import RegionItem, Screen, compose
from usdcm.synth.sector import Sector

LABELS_FILE = "labels.csv"
DICOMDIR_FILE = "DICOMDIR"
README_FILE = "README"
FILE_SET_ID = "USDCM_SYNTH"
LOSSY_SYNTAXES = frozenset(
    str(uid) for uid in (JPEGBaseline8Bit, *CODEC_SYNTAXES) if uid != JPEG_XL_LOSSLESS
)
"""The transfer syntaxes the export writes whose pixels differ from the drawn ones."""
JUNK_KINDS = ("text", "truncated", "sr", "non_us", "secondary_capture", "duplicate", "dicomdir")


@dataclass(frozen=True)
class ImageRecord:
    """What was written for one valid ultrasound image: where, how, and what it shows."""

    path: Path
    sop_instance_uid: str
    accession_number: str
    label: str
    recipe: str
    sop_class_uid: str
    transfer_syntax_uid: str
    photometric: str
    part10: bool
    frames: int
    rows: int
    columns: int
    manufacturer: str
    regions: tuple[UltrasoundRegion, ...]
    """As written in the Sequence of Ultrasound Regions; the first is the tissue image."""
    sector: Sector
    lesion: Lesion | None
    region_habit: RegionHabit = RegionHabit.NONE
    """The vendor habit written into the tissue region, if any."""

    @property
    def tissue_box(self) -> tuple[int, int, int, int]:
        """The tissue region's box as ingest crops it: the written region clipped to the
        image. That is the sector's bounding box, except for an off-by-one region, declared
        down to one row past the image: its box runs to the image's last row (black below
        the sector)."""
        region = self.regions[0].clipped(self.rows, self.columns)
        assert region is not None  # the synth's tissue region always lies in the image
        return (region.x0, region.y0, region.x1, region.y1)

    @property
    def lossy(self) -> bool:
        """Whether the stored pixels differ from the drawn ones: JPEG Baseline, JPEG XL
        other than lossless, and video."""
        return self.transfer_syntax_uid in LOSSY_SYNTAXES

    @property
    def region_note(self) -> str:
        """The ``region_note`` ingest should record for this image."""
        return {
            RegionHabit.NONE: "",
            RegionHabit.OFF_BY_ONE: "clipped_1px",
            RegionHabit.NEGATIVE_DELTA_X: "negative_delta_x",
            RegionHabit.BOTH: "clipped_1px;negative_delta_x",
        }[self.region_habit]


@dataclass(frozen=True)
class ExportSummary:
    """What :func:`write_export` wrote."""

    root: Path
    n_files: int
    """Every file written: images, junk, DICOMDIR and labels.csv."""
    image_paths: tuple[Path, ...]
    """The valid US image instances that ingest should accept (not the duplicate copy)."""
    junk: dict[str, Path]
    """Files ingest should skip, by kind: see :data:`JUNK_KINDS`."""
    labels_path: Path
    phi: frozenset[str]
    """Every fake identifier used in headers or burned into pixels."""
    n_abnormal_studies: int
    n_patients: int
    images: tuple[ImageRecord, ...]

    @property
    def n_studies(self) -> int:
        return self.n_patients


def write_export(
    out: Path,
    *,
    patients: int = 20,
    seed: int = 0,
    abnormal_fraction: float = 0.5,
    difficulty: float = 0.3,
    frames: int = 8,
) -> ExportSummary:
    """Write a synthetic ultrasound PACS export into the empty (or new) folder ``out``.

    Parameters
    ----------
    out
        Folder to create or fill; it must not contain anything yet.
    patients
        Number of patients, each with one study of 1-2 series of 1-3 images.
    seed
        Every name, UID, pixel and byte follows from it: the same seed writes the same files.
    abnormal_fraction
        Fraction of studies (rounded to a whole number) whose images show a lesion.
    difficulty
        0 gives obvious lesions, 1 faint ones.
    frames
        Typical cine length; each cine varies by up to two frames either way.

    Returns
    -------
    ExportSummary
        The paths written, the fake PHI used and the truth behind the labels.

    Raises
    ------
    SynthOptionError
        An option is out of range, or ``out`` is a file or a non-empty folder.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     summary = write_export(Path(folder) / "export", patients=2, seed=1)
    ...     (summary.labels_path.read_text().splitlines()[0], sorted(summary.junk)[:2])
    ('AccessionNumber,label', ['dicomdir', 'duplicate'])
    """
    plan = draw_plan(
        patients=patients,
        seed=seed,
        abnormal_fraction=abnormal_fraction,
        difficulty=difficulty,
        frames=frames,
    )
    root = _prepare_root(out)
    writer = _Writer(root)
    images: list[ImageRecord] = []
    stubs: list[Dataset] = []
    for patient, series, instance in plan.instances:
        screen = instance_screen(patient, instance)
        data = encode_image(patient, series, instance, screen)
        path = writer.write(instance.path, data)
        stub = _directory_stub(data, part10=instance.recipe.part10)
        images.append(_record(path, patient, instance, screen.regions, stub))
        stubs.append(stub)
    junk_paths = _write_junk(writer, plan)
    junk_paths["dicomdir"] = writer.write(PurePosixPath(DICOMDIR_FILE), _dicomdir(plan, stubs))
    labels_path = writer.write(PurePosixPath(LABELS_FILE), labels_csv(plan).encode("utf-8"))
    phi: set[str] = set()
    for patient in plan.patients:
        phi |= patient.phi
    return ExportSummary(
        root=root,
        n_files=writer.count,
        image_paths=tuple(record.path for record in images),
        junk=junk_paths,
        labels_path=labels_path,
        phi=frozenset(phi),
        n_abnormal_studies=sum(patient.abnormal for patient in plan.patients),
        n_patients=len(plan.patients),
        images=tuple(images),
    )


class _Writer:
    """Writes files under the root atomically and counts them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.count = 0

    def write(self, relative: PurePosixPath, data: bytes) -> Path:
        path = self.root.joinpath(*relative.parts)
        if path.exists():
            message = f"internal error: {relative} would be written twice"
            raise RuntimeError(message)
        atomic_write_bytes(path, data)
        self.count += 1
        return path


def _prepare_root(out: Path) -> Path:
    if out.exists() and not out.is_dir():
        message = f"OUT {out} is a file; give a folder path that is new or empty."
        raise SynthOptionError(message)
    if out.is_dir() and any(out.iterdir()):
        message = (
            f"OUT {out} is not empty; give a new or empty folder (synth never overwrites "
            "or mixes with existing files)."
        )
        raise SynthOptionError(message)
    out.mkdir(parents=True, exist_ok=True)
    return out


def instance_screen(patient: PatientPlan, instance: InstancePlan) -> Screen:
    """The screen one planned instance shows, with its region written as its habit says:
    the pixels before any encoding."""
    screen = compose(
        instance.phantom,
        instance.layout,
        frames=instance.frames,
        banner=patient.banner,
        accent=patient.vendor.accent,
        delta_cm=instance.delta_cm,
    )
    return with_habit(screen, instance.region_habit, rows=instance.layout.rows)


def with_habit(screen: Screen, habit: RegionHabit, *, rows: int) -> Screen:
    """``screen`` with its tissue region (the first) written as a scanner with ``habit``
    writes it; the pixels are unchanged.

    An off-by-one declares the region down to the bottom of the screen with an exclusive
    end (``RegionLocationMaxY1 == Rows``): the rows added below the sector are black, so the
    spacing stays physically right. A negative delta flips the sign of ``PhysicalDeltaX``.
    """
    if habit is RegionHabit.NONE:
        return screen
    tissue, *others = screen.regions
    if habit in (RegionHabit.OFF_BY_ONE, RegionHabit.BOTH):
        x0, y0, x1, _ = tissue.box
        tissue = dataclasses.replace(tissue, box=(x0, y0, x1, rows))
    if habit in (RegionHabit.NEGATIVE_DELTA_X, RegionHabit.BOTH):
        tissue = dataclasses.replace(tissue, delta_x=-tissue.delta_x)
    return dataclasses.replace(screen, regions=(tissue, *others))


def _record(
    path: Path,
    patient: PatientPlan,
    instance: InstancePlan,
    regions: tuple[RegionItem, ...],
    header: Dataset,
) -> ImageRecord:
    recipe = instance.recipe
    return ImageRecord(
        path=path,
        sop_instance_uid=str(instance.sop_instance_uid),
        accession_number=patient.accession_number,
        label=patient.label,
        recipe=recipe.name,
        sop_class_uid=str(recipe.sop_class_uid),
        transfer_syntax_uid=str(instance.transfer_syntax),
        photometric=str(header.PhotometricInterpretation),  # a codec may change it
        part10=recipe.part10,
        frames=instance.frames,
        rows=instance.layout.rows,
        columns=instance.layout.columns,
        manufacturer=patient.vendor.manufacturer,
        regions=tuple(item.as_region() for item in regions),
        sector=instance.phantom.sector,
        lesion=instance.phantom.lesion,
        region_habit=instance.region_habit,
    )


def _directory_stub(data: bytes, *, part10: bool) -> Dataset:
    """The header of a written file, as :class:`~pydicom.fileset.FileSet` needs it."""
    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=not part10)
    if not part10:
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    return ds


def _dicomdir(plan: ExportPlan, stubs: list[Dataset]) -> bytes:
    """A DICOMDIR referencing every valid image, in the same ``PT/ST/SE/IM`` layout.

    pydicom's :class:`~pydicom.fileset.FileSet` names files by their order in the tree,
    exactly as :mod:`usdcm.synth.plan` does; the names are checked rather than assumed.
    """
    expected = {str(instance.sop_instance_uid): instance.path for _, _, instance in plan.instances}
    file_set = FileSet()
    file_set.ID = FILE_SET_ID
    file_set.UID = plan.file_set_uid
    for stub in stubs:
        syntax = UID(stub.file_meta.TransferSyntaxUID)
        if not syntax.is_transfer_syntax:  # JPEG XL: pydicom 3.0 cannot stage the stub in it
            stub.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian  # (it has no pixels)
        instance = file_set.add(stub)
        # the record names the file's own syntax; FileSet keeps no public handle on it
        instance.node._record.ReferencedTransferSyntaxUIDInFile = syntax
    try:
        with tempfile.TemporaryDirectory(prefix="usdcm-dicomdir-") as staging:
            file_set.write(staging)
            for instance in file_set:
                written = PurePosixPath(*Path(instance.FileID).parts)
                planned = expected[instance.SOPInstanceUID]
                if written != planned:
                    message = f"internal error: DICOMDIR names {written}, the export {planned}"
                    raise RuntimeError(message)
            return (Path(staging) / DICOMDIR_FILE).read_bytes()
    finally:
        # FileSet keeps a private staging folder until garbage collection; remove it now.
        stage = getattr(file_set, "_stage", {}).get("t")
        if isinstance(stage, tempfile.TemporaryDirectory):
            stage.cleanup()


def labels_csv(plan: ExportPlan) -> str:
    """The labels file: one row per study, ``AccessionNumber,label``."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["AccessionNumber", "label"])
    for patient in plan.patients:
        writer.writerow([patient.accession_number, patient.label])
    return buffer.getvalue()


def _write_junk(writer: _Writer, plan: ExportPlan) -> dict[str, Path]:
    """Write the files ingest must skip, each in a seeded patient's study folder."""
    rng = np.random.default_rng([plan.seed, 3])
    patients = plan.patients
    next_series = {p.index: len(p.series) for p in patients}
    next_instance = {
        (p.index, s.series_number): len(s.instances) for p in patients for s in p.series
    }

    def new_series(patient: PatientPlan) -> tuple[PurePosixPath, int]:
        number = next_series[patient.index]
        next_series[patient.index] += 1
        return patient.folder / f"SE{number:06d}" / "IM000000", number + 1

    def new_instance(patient: PatientPlan, series: SeriesPlan) -> PurePosixPath:
        key = (patient.index, series.series_number)
        number = next_instance[key]
        next_instance[key] += 1
        return patient.folder / f"SE{series.series_number - 1:06d}" / f"IM{number:06d}"

    def pick() -> PatientPlan:
        return patients[int(rng.integers(len(patients)))]

    paths: dict[str, Path] = {"text": writer.write(PurePosixPath(README_FILE), junk.readme())}
    patient = pick()
    series = patient.series[0]
    paths["truncated"] = writer.write(
        new_instance(patient, series),
        junk.truncated_image(patient, series, series.instances[0], seed=plan.seed),
    )
    for kind, make in (
        ("sr", junk.structured_report),
        ("non_us", junk.ct_image),
        ("secondary_capture", junk.screenshot),
    ):
        patient = pick()
        relative, number = new_series(patient)
        paths[kind] = writer.write(relative, make(patient, seed=plan.seed, series_number=number))
    part10 = [item for item in plan.instances if item[2].recipe.part10] or list(plan.instances)
    patient, series, instance = part10[int(rng.integers(len(part10)))]
    original = writer.root.joinpath(*instance.path.parts).read_bytes()
    paths["duplicate"] = writer.write(new_instance(patient, series), original)
    return paths
