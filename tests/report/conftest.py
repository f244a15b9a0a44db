"""Fixtures for the report tests: a realistic metrics dict, a context, one written report.

The metrics follow the shape of ``usdcm.metrics.summarize`` and are computed with numpy from
seeded synthetic scores, so the curves look real; nothing here reads a DICOM file.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from usdcm.report import ReportContext, ReportFiles, write_report

Metrics = dict[str, Any]
MetricsFactory = Callable[..., Metrics]

FALSE_POSITIVE_ID = "st_4f2a91"
FALSE_NEGATIVE_ID = "st_77c0de"


def _proportion(k: int, n: int) -> dict[str, Any]:
    value = k / n
    half = 1.96 * float(np.sqrt(value * (1 - value) / n))
    return {
        "value": value,
        "ci95": [max(0.0, value - half), min(1.0, value + half)],
        "k": k,
        "n": n,
    }


def _curves(labels: np.ndarray, scores: np.ndarray) -> dict[str, Any]:
    order = np.argsort(-scores, kind="stable")
    hits = labels[order]
    tp = np.concatenate([[0], np.cumsum(hits)])
    fp = np.concatenate([[0], np.cumsum(1 - hits)])
    tpr, fpr = tp / hits.sum(), fp / (len(hits) - hits.sum())
    precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 1.0)
    auc = float(np.trapezoid(tpr, fpr))
    ap = float(np.sum(np.diff(tpr) * precision[1:]))
    return {
        "auc": auc,
        "roc": {"fpr": fpr.tolist(), "tpr": tpr.tolist()},
        "pr": {"precision": precision.tolist(), "recall": tpr.tolist(), "ap": ap},
    }


def build_metrics(n: int = 240, positives: int = 80, seed: int = 0) -> Metrics:
    """A study-level binary metrics dict from seeded synthetic scores."""
    rng = np.random.default_rng(seed)
    labels = np.array([1] * positives + [0] * (n - positives))
    scores = 1 / (1 + np.exp(-(rng.normal(-1.2, 1.2, n) + 2.4 * labels)))
    curves = _curves(labels, scores)
    predicted = scores >= 0.5
    tp = int(np.sum(predicted & (labels == 1)))
    fp = int(np.sum(predicted & (labels == 0)))
    fn, tn = positives - tp, (n - positives) - fp
    edges = np.linspace(0, 1, 11)
    bins = np.clip(np.digitize(scores, edges) - 1, 0, 9)
    mean_predicted, observed, count = [], [], []
    for b in range(10):
        inside = bins == b
        count.append(int(inside.sum()))
        mean_predicted.append(float(scores[inside].mean()) if inside.any() else None)
        observed.append(float(labels[inside].mean()) if inside.any() else None)
    return {
        "level": "study",
        "positive_class": "abnormal",
        "classes": ["abnormal", "normal"],
        "n": n,
        "n_positive": positives,
        "prevalence": positives / n,
        "aggregation": "A study's probability is the mean of its images' probabilities.",
        "auc": {
            "value": curves["auc"],
            "ci95": [curves["auc"] - 0.04, min(1.0, curves["auc"] + 0.03)],
            "method": "delong",
            "bootstrap_ci95": [curves["auc"] - 0.045, min(1.0, curves["auc"] + 0.03)],
        },
        "sensitivity": _proportion(tp, positives),
        "specificity": _proportion(tn, n - positives),
        "ppv": _proportion(tp, tp + fp),
        "npv": _proportion(tn, tn + fn),
        "accuracy": _proportion(tp + tn, n),
        "balanced_accuracy": {
            "value": (tp / positives + tn / (n - positives)) / 2,
            "ci95": [0.8, 0.9],
        },
        "threshold": {"value": 0.5, "rule": "youden", "chosen_on": "val", "exploratory": False},
        "confusion_matrix": {
            "labels": ["normal", "abnormal"],
            "counts": [[tn, fp], [fn, tp]],
            "normalized": [[tn / (tn + fp), fp / (tn + fp)], [fn / (fn + tp), tp / (fn + tp)]],
        },
        "roc": curves["roc"],
        "pr": curves["pr"],
        "brier": float(np.mean((scores - labels) ** 2)),
        "ece": {"value": 0.041, "bins": 10},
        "reliability": {
            "bin_edges": edges.tolist(),
            "mean_predicted": mean_predicted,
            "observed": observed,
            "count": count,
        },
        "counts": {"patients": 180, "studies": n, "series": 310, "images": 1450, "frames": 5200},
        "bootstrap": {
            "resamples": 2000,
            "seed": 0,
            "cluster": "patient_key",
            "stratified": True,
            "skipped": 0,
        },
        "subgroups": {
            "manufacturer": [
                {
                    "group": "GE",
                    "n": 150,
                    "n_positive": 50,
                    "prevalence": 1 / 3,
                    "auc": {"value": 0.93, "ci95": [0.89, 0.97]},
                    "too_small": False,
                    "reason": "",
                },
                {
                    "group": "Philips",
                    "n": 90,
                    "n_positive": 30,
                    "prevalence": 1 / 3,
                    "auc": {"value": 0.9, "ci95": [0.83, 0.96]},
                    "too_small": False,
                    "reason": "",
                },
            ]
        },
        "failures": {
            "false_positives": [
                {
                    "id": FALSE_POSITIVE_ID,
                    "prob": 0.97,
                    "label": "normal",
                    "image_ids": ["im_01", "im_02", "im_03", "im_04"],
                },
                {"id": "st_0b11aa", "prob": 0.91, "label": "normal", "image_ids": ["im_09"]},
            ],
            "false_negatives": [
                {
                    "id": FALSE_NEGATIVE_ID,
                    "prob": 0.04,
                    "label": "abnormal",
                    "image_ids": ["im_11"],
                },
            ],
        },
        "multiclass": None,
        "provenance": {"usdcm": "0.1.0", "run_id": "run-0001", "test_manifest_sha256": "ab" * 32},
    }


def build_context(**overrides: Any) -> ReportContext:
    """A filled-in context: two manufacturers, leakage check passed, small prevalence shift."""
    fields: dict[str, Any] = {
        "title": "Adnexal mass ultrasound classifier: clinical validation",
        "intended_use": (
            "Second reader for adult women with an adnexal mass on transvaginal ultrasound; "
            "flags studies likely to be abnormal for expert review. Not for screening."
        ),
        "data": {
            "sources": ["Hospital A PACS export 2019-2023"],
            "manufacturers": {"GE": 900, "Philips": 550},
            "models": {"GE Voluson E8": 900, "Philips EPIQ 7": 550},
            "exclusions": {"not_ultrasound": 12, "burned_in_annotation": 7, "decode_error": 2},
            "labels": {"abnormal": 400, "normal": 800},
        },
        "split": {
            "counts": {
                "train": {"patients": 700, "studies": 900},
                "val": {"patients": 150, "studies": 200},
                "test": {"patients": 180, "studies": 240},
            },
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
        "prevalence_by_split": {"train": 0.33, "val": 0.34, "test": 1 / 3},
    }
    fields.update(overrides)
    return ReportContext(**fields)


@pytest.fixture
def make_metrics() -> MetricsFactory:
    """``make_metrics(**overrides)``: a fresh realistic metrics dict with top-level overrides."""

    def factory(**overrides: Any) -> Metrics:
        metrics = copy.deepcopy(_BASE_METRICS)
        metrics.update(overrides)
        return metrics

    return factory


@pytest.fixture
def metrics(make_metrics: MetricsFactory) -> Metrics:
    """The realistic metrics dict (a fresh copy per test)."""
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


_BASE_METRICS = build_metrics()
