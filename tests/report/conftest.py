"""Fixtures for the report tests: metrics from the real metrics code, a context, one report.

The metrics dict is the output of :func:`usdcm.metrics.summarize` on seeded, generated
image-level prediction rows (train, val and test), with the threshold chosen on the val rows
the way :func:`usdcm.evaluation.reporting.build_report` chooses it. A key renamed in
``usdcm.metrics`` therefore reaches these tests. Studies and series are named by keyed
pseudonyms (``study_key``, ``series_key``) of generated DICOM UIDs; nothing here reads a
DICOM file.
"""

from __future__ import annotations

import copy
import functools
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from usdcm.metrics import aggregate, choose_threshold, parse_threshold_rule, summarize
from usdcm.privacy import ProjectSecret
from usdcm.report import ReportContext, ReportFiles, write_report

Metrics = dict[str, Any]
MetricsFactory = Callable[..., Metrics]
Row = dict[str, str]

SECRET = ProjectSecret(b"usdcm report tests, not a secret")
"""The pseudonym key of the generated rows (fixed, so the rows are the same every run)."""

UID_ROOT = "1.2.826.0.1.3680043.8.498"
"""Root of the generated DICOM UIDs (the pydicom example root)."""

CLASSES = ["abnormal", "normal"]
POSITIVE = "abnormal"
LEVEL = "study"
THRESHOLD_RULE = "youden"
N_BOOTSTRAP = 2000
SEED = 0

TEST_STUDIES, TEST_POSITIVES = 240, 80
"""The evaluated (test) split at the study level: 240 studies, 80 abnormal."""

VAL_STUDIES, VAL_POSITIVES = 200, 68
TRAIN_STUDIES, TRAIN_POSITIVES = 300, 99

SCANNERS = (("GE", "GE Voluson E8"), ("Philips", "Philips EPIQ 7"))


def study_uid(split: str, index: int) -> str:
    """The generated StudyInstanceUID of study ``index`` of ``split`` (never in a report)."""
    return f"{UID_ROOT}.{1 + ('train', 'val', 'test').index(split)}.{index}"


def series_uid(split: str, study: int, series: int) -> str:
    """The generated SeriesInstanceUID of ``series`` of ``study`` (never in a report)."""
    return f"{study_uid(split, study)}.{series + 1}"


def study_key(split: str, index: int) -> str:
    """The keyed pseudonym of :func:`study_uid`, as ingest writes it into ``study_key``."""
    return SECRET.pseudonym(study_uid(split, index), namespace="study")


FALSE_POSITIVE_STUDY = 200
"""Index of the test study planted as the most confident false positive (four images)."""

FALSE_NEGATIVE_STUDY = 1
"""Index of the test study planted as the most confident false negative (one image)."""

FALSE_POSITIVE_ID = study_key("test", FALSE_POSITIVE_STUDY)
FALSE_NEGATIVE_ID = study_key("test", FALSE_NEGATIVE_STUDY)


def _sigmoid(value: float) -> float:
    return 1 / (1 + math.exp(-value))


def generate_rows(split: str, n_studies: int, n_positive: int, seed: int) -> list[Row]:
    """Image-level prediction rows of one split, as ``predictions.csv`` holds them.

    Studies ``0 .. n_positive - 1`` are abnormal. A study has one or two series of one to
    four images; every third patient has two studies. The score of an image is a noisy
    logistic of its study's latent score, so study-level AUC is about 0.9. In the test
    split two studies are planted as confident errors (see :data:`FALSE_POSITIVE_ID`).
    Like ``predictions.csv``, the rows carry keyed ``study_key``/``series_key``, no UID.
    """
    rng = np.random.default_rng(seed)
    rows: list[Row] = []
    patient = 0
    for study in range(n_studies):
        if study % 3 != 2:  # every third study belongs to the previous study's patient
            patient += 1
        label = POSITIVE if study < n_positive else "normal"
        manufacturer, model = SCANNERS[int(rng.random() < 0.4)]
        latent = float(rng.normal(-1.2, 1.2)) + (2.4 if label == POSITIVE else 0.0)
        planted: float | None = None
        n_series, n_images = int(rng.integers(1, 3)), int(rng.integers(1, 5))
        if split == "test" and study == FALSE_POSITIVE_STUDY:
            label, planted, n_series, n_images = "normal", 0.995, 1, 4
        elif split == "test" and study == FALSE_NEGATIVE_STUDY:
            label, planted, n_series, n_images = POSITIVE, 0.004, 1, 1
        key = SECRET.pseudonym(study_uid(split, study), namespace="study")
        patient_key = SECRET.pseudonym(f"{split}-PAT{patient:04d}")
        for series in range(n_series):
            series_key = SECRET.pseudonym(series_uid(split, study, series), namespace="series")
            for image in range(n_images if series == 0 else int(rng.integers(1, 5))):
                noise = float(rng.normal(0, 0.4))
                prob = planted if planted is not None else _sigmoid(latent + noise)
                rows.append(
                    {
                        "image_id": SECRET.pseudonym(
                            f"{series_uid(split, study, series)}.{image}", namespace="image"
                        ),
                        "split": split,
                        "label": label,
                        "prob_abnormal": f"{prob:.8f}",
                        "prob_normal": f"{1 - prob:.8f}",
                        "patient_key": patient_key,
                        "study_key": key,
                        "series_key": series_key,
                        "manufacturer": manufacturer,
                        "model": model,
                        "frames": str(int(rng.integers(1, 8))),
                    }
                )
    return rows


@functools.cache
def _all_rows() -> tuple[Row, ...]:
    return (
        *generate_rows("train", TRAIN_STUDIES, TRAIN_POSITIVES, seed=1),
        *generate_rows("val", VAL_STUDIES, VAL_POSITIVES, seed=2),
        *generate_rows("test", TEST_STUDIES, TEST_POSITIVES, seed=3),
    )


def prediction_rows() -> list[Row]:
    """Every generated prediction row (train, val, test), fresh copies."""
    return [dict(row) for row in _all_rows()]


def choose_threshold_on_val(rows: Sequence[Row], rule: str = THRESHOLD_RULE) -> float:
    """The threshold ``rule`` picks on the val rows at :data:`LEVEL`, as ``build_report`` does."""
    cases = aggregate([row for row in rows if row["split"] == "val"], LEVEL, CLASSES)
    labels = [int(case.label == POSITIVE) for case in cases]
    scores = [float(case.probs[POSITIVE]) for case in cases]
    return choose_threshold(labels, scores, parse_threshold_rule(rule))


def summarize_rows(rows: Sequence[Row], **overrides: Any) -> Metrics:
    """:func:`usdcm.metrics.summarize` of the test rows, threshold chosen on the val rows."""
    rule = parse_threshold_rule(THRESHOLD_RULE)
    options: dict[str, Any] = {
        "level": LEVEL,
        "classes": CLASSES,
        "positive_class": POSITIVE,
        "threshold": choose_threshold_on_val(rows),
        "threshold_rule": str(rule),
        "threshold_chosen_on": "val",
        "exploratory": False,
        "subgroup_columns": ("manufacturer", "model"),
        "n_bootstrap": N_BOOTSTRAP,
        "seed": SEED,
        "provenance": {"usdcm": "0.1.0", "run_id": "run-0001", "evaluated_split": "test"},
    }
    options.update(overrides)
    return summarize([row for row in rows if row["split"] == "test"], **options)


@functools.cache
def _base_metrics() -> Metrics:
    return summarize_rows(prediction_rows())


def build_metrics() -> Metrics:
    """The study-level binary metrics of the generated rows (a fresh deep copy)."""
    return copy.deepcopy(_base_metrics())


def _count(rows: Sequence[Row], column: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row[column]] = counts.get(row[column], 0) + 1
    return dict(sorted(counts.items()))


def split_counts(rows: Sequence[Row]) -> dict[str, dict[str, int]]:
    """Distinct patients and studies per split of ``rows``."""
    return {
        split: {
            "patients": len({row["patient_key"] for row in rows if row["split"] == split}),
            "studies": len({row["study_key"] for row in rows if row["split"] == split}),
        }
        for split in ("train", "val", "test")
    }


def prevalence_by_split(rows: Sequence[Row]) -> dict[str, float]:
    """Image-level prevalence of the positive class per split, as ``build_report`` gives it."""
    shares: dict[str, float] = {}
    for split in ("train", "val", "test"):
        labels = [row["label"] == POSITIVE for row in rows if row["split"] == split]
        shares[split] = sum(labels) / len(labels)
    return shares


EXCLUSIONS = {"not_ultrasound": 12, "burned_in_annotation": 7, "decode_error": 2}
UNLABELLED_IMAGES = 5
REFERENCE_STANDARD = (
    "Histopathology after surgery, or two years of imaging follow-up without change; labels "
    "assigned by two gynaecological sonographers, disagreements resolved by a third."
)


def build_flow(rows: Sequence[Row] | None = None) -> dict[str, Any]:
    """The STARD flow counts ``evaluate`` records for the generated rows (they add up)."""
    rows = _all_rows() if rows is None else rows
    by_split = _count(rows, "split")
    labelled = sum(by_split.values())
    images = labelled + UNLABELLED_IMAGES
    return {
        "files_in_export": images + sum(EXCLUSIONS.values()),
        "excluded": dict(EXCLUSIONS),
        "images": images,
        "unlabelled": UNLABELLED_IMAGES,
        "labelled": labelled,
        "by_split": {split: by_split[split] for split in ("train", "val", "test")},
        "evaluated_split": "test",
        "evaluated_images": by_split["test"],
        "scored_images": by_split["test"],
        "unscored": {},
    }


DEIDENTIFICATION = {
    "pseudonyms": (
        "Patients, studies, series and images are named by HMAC-SHA256 pseudonyms keyed with "
        "the project secret; only the secret's fingerprint is recorded."
    ),
    "region_crop": {"images": 1000, "cropped": 990, "without_region": 10},
    "uids_in_outputs": False,
    "done": ["Keyed pseudonyms replace every identifier.", "Only study years are kept."],
    "not_done": ["Burned-in text inside the ultrasound region is not detected or removed."],
}


def build_context(**overrides: Any) -> ReportContext:
    """A filled-in context from the generated rows: two manufacturers, leakage check passed."""
    rows = _all_rows()
    fields: dict[str, Any] = {
        "title": "Adnexal mass ultrasound classifier: clinical validation",
        "intended_use": (
            "Second reader for adult women with an adnexal mass on transvaginal ultrasound; "
            "flags studies likely to be abnormal for expert review. Not for screening."
        ),
        "data": {
            "sources": ["Hospital A PACS export 2019-2023"],
            "manufacturers": _count(rows, "manufacturer"),
            "models": _count(rows, "model"),
            "exclusions": dict(EXCLUSIONS),
            "labels": _count(rows, "label"),
        },
        "split": {
            "counts": split_counts(rows),
            "leakage_check": "passed",
            "split_source": "grouped by patient_key, stratified by label",
        },
        "model": {
            "architecture": "resnet18 (ImageNet init), 224x224 grayscale",
            "config": {"epochs": 30, "optim": {"name": "adamw", "lr": 3e-4}, "batch_size": 32},
            "checkpoint_sha256": "c0ffee" * 10 + "abcd",
            "versions": {"usdcm": "0.1.0", "torch": "2.13.0", "monai": "1.4.0"},
            "best_epoch": 17,
            "val_auc": 0.931,
        },
        "commands": [
            "usdcm ingest /data/export out/ --labels labels.csv",
            "usdcm train out/ --seed 0",
            "usdcm evaluate out/run-0001 --level study",
        ],
        "prevalence_by_split": prevalence_by_split(rows),
        "reference_standard": REFERENCE_STANDARD,
        "flow": build_flow(rows),
        "deidentification": DEIDENTIFICATION,
        "study_years": {"2019": 300, "2020": 420, "(unknown)": 12},
    }
    fields.update(overrides)
    return ReportContext(**fields)


@pytest.fixture
def make_metrics() -> MetricsFactory:
    """``make_metrics(**overrides)``: a fresh copy of the real metrics, top-level keys replaced."""

    def factory(**overrides: Any) -> Metrics:
        metrics = build_metrics()
        metrics.update(overrides)
        return metrics

    return factory


@pytest.fixture
def metrics(make_metrics: MetricsFactory) -> Metrics:
    """The real metrics dict (a fresh copy per test)."""
    return make_metrics()


@pytest.fixture
def context() -> ReportContext:
    """The filled-in context."""
    return build_context()


@pytest.fixture
def make_context() -> Callable[..., ReportContext]:
    """``make_context(**overrides)``: the filled-in context with some fields replaced."""
    return build_context


@dataclass(frozen=True)
class Written:
    """A report written once: its files and the text of the HTML and the Markdown."""

    files: ReportFiles
    html: str
    markdown: str


def tiny_png(color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    """A 16x16 PNG of one colour, as a failure thumbnail."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), color).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="session")
def written(tmp_path_factory: pytest.TempPathFactory) -> Written:
    """The realistic report, with one failure thumbnail, written once per session (read-only)."""
    out: Path = tmp_path_factory.mktemp("report")
    context = build_context(failure_thumbnails={FALSE_POSITIVE_ID: tiny_png()})
    files = write_report(out, build_metrics(), context)
    return Written(
        files=files,
        html=files.html.read_text(encoding="utf-8"),
        markdown=files.markdown.read_text(encoding="utf-8"),
    )


_DATA_URI = re.compile(r"data:image/png;base64,[A-Za-z0-9+/=]*")


def html_section(html: str, key: str) -> str:
    """The HTML of section ``key`` (``summary``, ``results``...), embedded PNGs removed."""
    section = html.split(f'<section id="{key}"', 1)[1].split("</section>", 1)[0]
    return _DATA_URI.sub("data:", section)


def markdown_section(markdown: str, title: str) -> str:
    """The Markdown of the section headed ``## {title}``, up to the next ``## `` heading."""
    return markdown.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


LEAKED_KEYS = ("3f9a0c1d2e4b5a6978877665", "a1b2c3d4e5f60718293a4b5c")
"""Keys a careless evaluate could add to the leakage object; the report must never show them."""

LEAKAGE_DETAIL = (
    "3 patients and 2 studies of the run's splits.csv have images in more than one split; "
    "retrain so that usdcm assigns grouped splits."
)


def failed_leakage() -> dict[str, Any]:
    """A failed leakage check as ``evaluate`` writes it, plus stray keys it must not show."""
    return {
        "status": "failed",
        "detail": LEAKAGE_DETAIL,
        "shared_patients": 3,
        "shared_studies": 2,
        "patient_keys": list(LEAKED_KEYS),
    }


def failed_leakage_context(**overrides: Any) -> ReportContext:
    """The filled-in context whose leakage check failed."""
    split = {**build_context().split, "leakage_check": failed_leakage()}
    return build_context(split=split, **overrides)
