"""Draw the whole synthetic export from a seed: patients, fake PHI, studies, series, instances.

Owns every random choice above the pixel level and every UID, so that one seed gives one
export. The plan is plain frozen data; ``export`` renders and writes it. Never touches the
file system.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from enum import StrEnum
from pathlib import PurePosixPath

import numpy as np
from pydicom.uid import UID, generate_uid

from usdcm.dicom.codecs import JPEG_XL_SYNTAXES, jpegxl_available
from usdcm.errors import SynthOptionError
from usdcm.synth.catalog import (
    CINE_CODECS,
    CODEC_SLOTS_PER_ROUND,
    FAMILY_NAMES,
    GIVEN_NAMES,
    IMAGE_CODECS,
    INSTITUTION,
    RECIPES,
    REFERRING_NAMES,
    STUDY_DESCRIPTIONS,
    VENDORS,
    WHITE,
    Recipe,
    Vendor,
)
from usdcm.synth.phantom import Phantom, draw_phantom
from usdcm.synth.screen import RGB, Layout, plan_layout
from usdcm.synth.sector import ProbeKind

MAX_PATIENTS = 100_000
MAX_FRAMES = 64
UID_SALT = "usdcm-synth-v1"
"""Part of every UID's entropy: change it when the export's content changes meaning."""
STUDY_EPOCH = dt.date(2024, 1, 8)
"""The first study date; later patients are scanned on later days. No wall clock is read."""
BIRTH_EPOCH = dt.date(1940, 1, 1)
"""The earliest birth date; birth dates spread over the following 63 years."""


class RegionHabit(StrEnum):
    """How a scanner writes the tissue region: correctly, or with a habit of real vendors
    that ingest tolerates (see :mod:`usdcm.dicom.regions`)."""

    NONE = "none"
    OFF_BY_ONE = "off_by_one"
    """The region is declared down to the bottom of the screen with an exclusive end:
    ``RegionLocationMaxY1`` equals ``Rows``, one pixel past the image (as Philips and others
    do with ``MaxX1`` and ``Columns``). Only on screens without an ECG strip below."""
    NEGATIVE_DELTA_X = "negative_delta_x"
    """``PhysicalDeltaX`` is written negative: the x axis runs the other way (as ACUSON)."""
    BOTH = "both"
    """Both habits in one region."""


HABIT_WEIGHTS: tuple[tuple[RegionHabit, float], ...] = (
    (RegionHabit.NONE, 0.55),
    (RegionHabit.OFF_BY_ONE, 0.2),
    (RegionHabit.NEGATIVE_DELTA_X, 0.15),
    (RegionHabit.BOTH, 0.1),
)
"""How often each habit is drawn per image."""


@dataclass(frozen=True)
class InstancePlan:
    """One SOP instance: how it is stored, what its pixels show, where it goes."""

    path: PurePosixPath
    """Path relative to the export root, e.g. ``PT000003/ST000000/SE000001/IM000002``."""
    sop_instance_uid: UID
    instance_number: int
    recipe: Recipe
    frames: int
    layout: Layout
    phantom: Phantom
    delta_cm: float
    content_seconds: int
    """Seconds after the study time at which the instance was acquired."""
    region_habit: RegionHabit = RegionHabit.NONE
    """How the tissue region is written (the pixels are the same either way)."""
    codec: UID | None = None
    """The JPEG XL or video transfer syntax the instance is re-encoded in, from the recipe's
    pixels before any compression; ``None`` stores it as its recipe says."""

    @property
    def transfer_syntax(self) -> UID:
        """The transfer syntax of the file written."""
        return self.codec or self.recipe.transfer_syntax


@dataclass(frozen=True)
class SeriesPlan:
    """One series of image instances."""

    series_instance_uid: UID
    series_number: int
    description: str
    instances: tuple[InstancePlan, ...]


@dataclass(frozen=True)
class PatientPlan:
    """One patient with their single study, and the fake PHI that goes with it."""

    index: int
    family_name: str
    given_name: str
    patient_id: str
    birth_date: dt.date
    sex: str
    accession_number: str
    study_instance_uid: UID
    study_id: str
    study_date: dt.date
    study_time: dt.time
    study_description: str
    referring_physician: str
    abnormal: bool
    vendor: Vendor
    series: tuple[SeriesPlan, ...]
    writes_age: bool = False
    """Whether the headers carry PatientAge as well as PatientBirthDate (about half the
    patients), so that ingest reads the age both ways."""

    @property
    def age_years(self) -> int:
        """Completed years at the study date."""
        born, on = self.birth_date, self.study_date
        return on.year - born.year - ((on.month, on.day) < (born.month, born.day))

    @property
    def patient_age(self) -> str:
        """PatientAge (AS) at the study, such as ``045Y``."""
        return f"{self.age_years:03d}Y"

    @property
    def patient_name(self) -> str:
        """The name in DICOM Person Name form, ``FAMILY^GIVEN``."""
        return f"{self.family_name}^{self.given_name}"

    @property
    def folder(self) -> PurePosixPath:
        return PurePosixPath(f"PT{self.index:06d}", "ST000000")

    @property
    def label(self) -> str:
        return "abnormal" if self.abnormal else "normal"

    @property
    def displayed_name(self) -> str:
        """The name as this patient's scanner shows it in the banner."""
        style = self.vendor.name_style
        if style == "comma":
            return f"{self.family_name}, {self.given_name}"
        if style == "given-first":
            return f"{self.given_name} {self.family_name}"
        return self.patient_name

    @property
    def displayed_birth_date(self) -> str:
        return self.birth_date.strftime(self.vendor.date_format)

    @property
    def banner(self) -> tuple[tuple[str, RGB], ...]:
        """The two lines the scanner burns into the top of every image: name, then ID and
        birth date in the vendor's accent colour."""
        return (
            (self.displayed_name, WHITE),
            (f"{self.patient_id}  {self.displayed_birth_date}", self.vendor.accent),
        )

    @property
    def phi(self) -> frozenset[str]:
        """Every identifying string of this patient, as written in headers and pixels."""
        referring = self.referring_physician.split("^")
        return frozenset(
            {
                self.patient_name,
                self.family_name,
                self.given_name,
                self.displayed_name,
                self.patient_id,
                self.birth_date.strftime("%Y%m%d"),
                self.displayed_birth_date,
                self.accession_number,
                self.referring_physician,
                *referring,
                INSTITUTION,
            }
        )


@dataclass(frozen=True)
class ExportPlan:
    """The whole export: patients in folder order, plus the UID of its DICOMDIR."""

    seed: int
    difficulty: float
    patients: tuple[PatientPlan, ...]
    file_set_uid: UID

    @property
    def instances(self) -> tuple[tuple[PatientPlan, SeriesPlan, InstancePlan], ...]:
        return tuple(
            (patient, series, instance)
            for patient in self.patients
            for series in patient.series
            for instance in series.instances
        )


def make_uid(seed: int, *parts: object) -> UID:
    """A UID that depends only on ``seed`` and ``parts`` (hashed with pydicom's prefix).

    Examples
    --------
    >>> make_uid(0, "study", 1) == make_uid(0, "study", 1) != make_uid(1, "study", 1)
    True
    """
    return generate_uid(entropy_srcs=[UID_SALT, str(seed), *(str(part) for part in parts)])


def validate_options(
    *, patients: int, seed: int, abnormal_fraction: float, difficulty: float, frames: int
) -> None:
    """Check the export options once, where they come in; raise :class:`SynthOptionError`.

    Examples
    --------
    >>> validate_options(patients=0, seed=0, abnormal_fraction=0.5, difficulty=0.3, frames=8)
    Traceback (most recent call last):
    ...
    usdcm.errors.SynthOptionError: --patients must be between 1 and 100000, found 0.
    """
    if seed < 0:
        message = f"--seed must be 0 or a positive integer, found {seed}."
        raise SynthOptionError(message)
    if not 1 <= patients <= MAX_PATIENTS:
        message = f"--patients must be between 1 and {MAX_PATIENTS}, found {patients}."
        raise SynthOptionError(message)
    if not (math.isfinite(abnormal_fraction) and 0.0 <= abnormal_fraction <= 1.0):
        message = (
            f"--abnormal-fraction must be between 0 and 1 (a fraction of studies), "
            f"found {abnormal_fraction}."
        )
        raise SynthOptionError(message)
    if not (math.isfinite(difficulty) and 0.0 <= difficulty <= 1.0):
        message = (
            f"--difficulty must be between 0 (obvious lesions) and 1 (faint lesions), "
            f"found {difficulty}."
        )
        raise SynthOptionError(message)
    if not 2 <= frames <= MAX_FRAMES:
        message = f"--frames (cine length) must be between 2 and {MAX_FRAMES}, found {frames}."
        raise SynthOptionError(message)


def _recipe_order(rng: np.random.Generator, count: int) -> list[Recipe]:
    """``count`` recipes: whole shuffled rounds of :data:`RECIPES`, so each appears early."""
    order: list[Recipe] = []
    while len(order) < count:
        order.extend(RECIPES[int(i)] for i in rng.permutation(len(RECIPES)))
    return order[:count]


def _codec_order(recipes: list[Recipe], *, jpegxl: bool) -> list[UID | None]:
    """The codec of each instance, given the recipes in instance order.

    No draw: the first round of :data:`RECIPES` keeps its storage; in each later round the
    first :data:`CODEC_SLOTS_PER_ROUND` Part 10 instances take the next codec of their kind
    (:data:`CINE_CODECS` or :data:`IMAGE_CODECS`). Without JPEG XL (``jpegxl=False``) its
    slots go to the next video codec, or keep the recipe's storage on a single frame.

    Examples
    --------
    >>> recipes = [RECIPES[1]] * (len(RECIPES) + 3)
    >>> [str(uid).rsplit(".", 1)[-1] for uid in _codec_order(recipes, jpegxl=True)[-4:]]
    ['None', '102', '110', '107']
    """
    cine = [uid for uid in CINE_CODECS if jpegxl or uid not in JPEG_XL_SYNTAXES]
    image = [uid for uid in IMAGE_CODECS if jpegxl or uid not in JPEG_XL_SYNTAXES]
    turns = {True: 0, False: 0}
    codecs: list[UID | None] = []
    slots = 0
    for position, recipe in enumerate(recipes):
        if position % len(RECIPES) == 0:
            slots = CODEC_SLOTS_PER_ROUND if position else 0
        cycle = cine if recipe.cine else image
        if not (slots and recipe.part10 and cycle):
            codecs.append(None)
            continue
        codecs.append(cycle[turns[recipe.cine] % len(cycle)])
        turns[recipe.cine] += 1
        slots -= 1
    return codecs


def _names(rng: np.random.Generator, count: int) -> list[tuple[str, str]]:
    """Distinct (family, given) pairs while they last, then repeats."""
    pairs = [(family, given) for family in FAMILY_NAMES for given in GIVEN_NAMES]
    order = [pairs[int(i)] for i in rng.permutation(len(pairs))]
    return [order[i % len(order)] for i in range(count)]


def _distinct_numbers(rng: np.random.Generator, count: int, low: int, high: int) -> list[int]:
    """``count`` distinct integers in ``[low, high)``."""
    return [int(n) + low for n in rng.choice(high - low, size=count, replace=False)]


def draw_plan(
    *,
    patients: int,
    seed: int,
    abnormal_fraction: float,
    difficulty: float,
    frames: int,
) -> ExportPlan:
    """Draw the export: who the patients are, which studies are abnormal, and every image.

    Exactly ``round(abnormal_fraction * patients)`` studies are abnormal. Each patient has
    one study of 1-2 series with 1-3 instances each. After the first round of recipes, some
    instances are re-encoded in JPEG XL or video (see :func:`_codec_order`); that choice
    draws nothing, so every other draw is the same as without it.

    Examples
    --------
    >>> plan = draw_plan(patients=3, seed=0, abnormal_fraction=0.5, difficulty=0.3, frames=8)
    >>> [p.patient_id.startswith("SYN") for p in plan.patients]
    [True, True, True]
    >>> sum(p.abnormal for p in plan.patients)
    2
    """
    validate_options(
        patients=patients,
        seed=seed,
        abnormal_fraction=abnormal_fraction,
        difficulty=difficulty,
        frames=frames,
    )
    rng = np.random.default_rng([seed, 0])
    n_abnormal = math.floor(abnormal_fraction * patients + 0.5)
    abnormal = {int(i) for i in rng.permutation(patients)[:n_abnormal]}
    names = _names(rng, patients)
    ids = _distinct_numbers(rng, patients, 100_000, 1_000_000)
    accessions = _distinct_numbers(rng, patients, 1_000_000, 10_000_000)
    shape = [
        [int(rng.integers(1, 4)) for _ in range(int(rng.integers(1, 3)))] for _ in range(patients)
    ]
    order = _recipe_order(rng, sum(sum(series) for series in shape))
    recipes = iter(zip(order, _codec_order(order, jpegxl=jpegxl_available()), strict=True))
    plans = []
    for index in range(patients):
        patient_rng = np.random.default_rng([seed, 1, index])
        family, given = names[index]
        vendor = VENDORS[int(patient_rng.integers(len(VENDORS)))]
        is_abnormal = index in abnormal
        study_uid = make_uid(seed, "study", index)
        series_plans = []
        for series_index, n_instances in enumerate(shape[index]):
            folder = PurePosixPath(f"PT{index:06d}", "ST000000", f"SE{series_index:06d}")
            instances = []
            for instance_index in range(n_instances):
                recipe, codec = next(recipes)
                instances.append(
                    _draw_instance(
                        np.random.default_rng([seed, 2, index, series_index, instance_index]),
                        path=folder / f"IM{instance_index:06d}",
                        uid=make_uid(seed, "instance", index, series_index, instance_index),
                        number=instance_index + 1,
                        recipe=recipe,
                        vendor=vendor,
                        lesion=is_abnormal,
                        difficulty=difficulty,
                        frames=frames,
                        codec=codec,
                    )
                )
            series_plans.append(
                SeriesPlan(
                    series_instance_uid=make_uid(seed, "series", index, series_index),
                    series_number=series_index + 1,
                    description=f"B-MODE {series_index + 1}",
                    instances=tuple(instances),
                )
            )
        plans.append(
            PatientPlan(
                index=index,
                family_name=family,
                given_name=given,
                patient_id=f"SYN{ids[index]:06d}",
                birth_date=BIRTH_EPOCH + dt.timedelta(days=int(patient_rng.integers(23_000))),
                sex="F" if patient_rng.random() < 0.5 else "M",
                accession_number=f"ACC{accessions[index]:07d}",
                study_instance_uid=study_uid,
                study_id=f"{index + 1:04d}",
                study_date=STUDY_EPOCH + dt.timedelta(days=index),
                study_time=dt.time(
                    8 + int(patient_rng.integers(10)), 5 * int(patient_rng.integers(12))
                ),
                study_description=STUDY_DESCRIPTIONS[int(patient_rng.integers(3))],
                referring_physician=REFERRING_NAMES[int(patient_rng.integers(4))],
                writes_age=bool(patient_rng.random() < 0.5),  # drawn last: the rest unchanged
                abnormal=is_abnormal,
                vendor=vendor,
                series=tuple(series_plans),
            )
        )
    return ExportPlan(
        seed=seed,
        difficulty=difficulty,
        patients=tuple(plans),
        file_set_uid=make_uid(seed, "fileset"),
    )


def _draw_instance(
    rng: np.random.Generator,
    *,
    path: PurePosixPath,
    uid: UID,
    number: int,
    recipe: Recipe,
    vendor: Vendor,
    lesion: bool,
    difficulty: float,
    frames: int,
    codec: UID | None = None,
) -> InstancePlan:
    """Draw one image: its cine length, probe, screen layout, phantom and pixel size."""
    n_frames = int(rng.integers(max(2, frames - 2), frames + 3)) if recipe.cine else 1
    kind = ProbeKind.CURVILINEAR if rng.random() < 0.6 else ProbeKind.LINEAR
    layout = plan_layout(vendor.rows, vendor.columns, recipe.extra)
    phantom = draw_phantom(
        rng,
        rows=vendor.rows,
        columns=vendor.columns,
        box=layout.tissue_box,
        kind=kind,
        lesion=lesion,
        difficulty=difficulty,
        moving=recipe.cine,
    )
    return InstancePlan(
        path=path,
        sop_instance_uid=uid,
        instance_number=number,
        recipe=recipe,
        frames=n_frames,
        layout=layout,
        phantom=phantom,
        delta_cm=round(float(rng.uniform(0.02, 0.05)), 4),
        content_seconds=int(rng.integers(30, 900)),
        region_habit=_draw_habit(rng, layout),  # drawn last: the other draws unchanged
        codec=codec,
    )


def _draw_habit(rng: np.random.Generator, layout: Layout) -> RegionHabit:
    """Draw how the tissue region is written; an off-by-one needs the screen's bottom edge
    below the tissue (no ECG strip there), else the habit falls back to the delta's sign."""
    habits = [habit for habit, _ in HABIT_WEIGHTS]
    weights = np.array([weight for _, weight in HABIT_WEIGHTS])
    habit = habits[int(rng.choice(len(habits), p=weights / weights.sum()))]
    if layout.strip is not None or layout.tissue_box[3] >= layout.rows - 1:
        if habit is RegionHabit.OFF_BY_ONE:
            return RegionHabit.NONE
        if habit is RegionHabit.BOTH:
            return RegionHabit.NEGATIVE_DELTA_X
    return habit
