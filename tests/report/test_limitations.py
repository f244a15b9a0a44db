"""flag_limitations: each rule fires on its input, and stays quiet just below its threshold."""

from __future__ import annotations

from typing import Any

import pytest

from tests.report.conftest import LEAKED_KEYS, MetricsFactory, build_context
from usdcm.report import ReportContext, flag_limitations
from usdcm.report.limitations import (
    MAX_AUC_CI_WIDTH,
    MAX_PREVALENCE_SHIFT,
    MIN_N,
    MIN_POSITIVES,
)


def _codes(metrics: dict[str, Any], context: ReportContext | None = None) -> list[str]:
    return [flag.code for flag in flag_limitations(metrics, context or build_context())]


def test_realistic_study_flags_nothing(make_metrics: MetricsFactory) -> None:
    assert _codes(make_metrics()) == []


def test_empty_inputs_flag_only_the_missing_reference_standard() -> None:
    assert [flag.code for flag in flag_limitations({})] == ["reference_standard_missing"]


def test_missing_reference_standard_is_a_limitation(make_metrics: MetricsFactory) -> None:
    assert _codes(make_metrics(), build_context(reference_standard="  ")) == [
        "reference_standard_missing"
    ]


def test_sample_size_below_target_names_the_numbers(make_metrics: MetricsFactory) -> None:
    size = {
        "target_width": 0.2,
        "needed_positive": 73,
        "needed_negative": 62,
        "n_positive": 40,
        "n_negative": 200,
        "below_target": True,
    }
    (flag,) = flag_limitations(make_metrics(sample_size=size), build_context())
    assert flag.code == "sample_size_below_target"
    assert "40 positive and 200 negative" in flag.message and "73 and 62" in flag.message
    assert _codes(make_metrics(sample_size={**size, "below_target": False})) == []


@pytest.mark.parametrize(
    ("n", "positives", "flagged"),
    [
        (MIN_N, MIN_POSITIVES, False),
        (MIN_N - 1, MIN_POSITIVES, True),
        (500, MIN_POSITIVES - 1, True),
        (40, 10, True),
    ],
)
def test_small_n(make_metrics: MetricsFactory, n: int, positives: int, flagged: bool) -> None:
    codes = _codes(make_metrics(n=n, n_positive=positives))
    assert ("small_n" in codes) is flagged


def test_small_n_message_names_the_numbers(make_metrics: MetricsFactory) -> None:
    (flag,) = flag_limitations(make_metrics(n=60, n_positive=12), build_context())
    assert "n = 60 (fewer than 100)" in flag.message
    assert "12 positives (fewer than 30)" in flag.message
    assert "study level" in flag.message


@pytest.mark.parametrize(
    ("ci", "flagged"),
    [
        ([0.80, 0.80 + MAX_AUC_CI_WIDTH], False),
        ([0.70, 0.95], True),
        ([None, None], False),
        (None, False),
    ],
)
def test_wide_ci(make_metrics: MetricsFactory, ci: Any, flagged: bool) -> None:
    auc = {"value": 0.85, "ci95": ci, "method": "delong"}
    assert ("wide_ci" in _codes(make_metrics(auc=auc))) is flagged


def test_undefined_auc(make_metrics: MetricsFactory) -> None:
    codes = _codes(make_metrics(auc={"value": None, "ci95": [None, None]}))
    assert "auc_undefined" in codes and "wide_ci" not in codes


@pytest.mark.parametrize(
    ("data", "flagged"),
    [
        ({"manufacturers": {"GE": 10, "Philips": 5}, "models": {"E8": 10, "EPIQ": 5}}, False),
        ({"manufacturers": {"GE": 10}, "models": {"E8": 4, "E10": 6}}, True),
        ({"manufacturers": {"GE": 10, "Philips": 5}, "models": {"E8": 15}}, True),
        ({"manufacturers": ["GE"]}, True),
    ],
)
def test_single_site_from_context(
    make_metrics: MetricsFactory, data: dict[str, Any], flagged: bool
) -> None:
    codes = _codes(make_metrics(subgroups={}), build_context(data=data))
    assert ("single_site" in codes) is flagged


def test_single_site_falls_back_to_subgroups(make_metrics: MetricsFactory) -> None:
    one = {"manufacturer": [{"group": "GE", "n": 240, "too_small": False}]}
    two = {"manufacturer": [{"group": "GE"}, {"group": "Philips"}]}
    no_data = build_context(data={})
    assert "single_site" in _codes(make_metrics(subgroups=one), no_data)
    assert "single_site" not in _codes(make_metrics(subgroups=two), no_data)
    assert "single_site" not in _codes(make_metrics(subgroups={}), no_data)


@pytest.mark.parametrize(
    ("prevalence", "flagged"),
    [
        ({"train": 0.30, "val": 0.30 + MAX_PREVALENCE_SHIFT, "test": 0.35}, False),
        ({"train": 0.30, "val": 0.31, "test": 0.45}, True),
        ({"train": 0.50, "test": None}, False),
        ({}, False),
    ],
)
def test_prevalence_shift(
    make_metrics: MetricsFactory, prevalence: dict[str, Any], flagged: bool
) -> None:
    codes = _codes(make_metrics(), build_context(prevalence_by_split=prevalence))
    assert ("prevalence_shift" in codes) is flagged


def test_prevalence_shift_message_names_the_splits(make_metrics: MetricsFactory) -> None:
    context = build_context(prevalence_by_split={"train": 0.2, "test": 0.5})
    (flag,) = flag_limitations(make_metrics(), context)
    assert "test and train differ by 0.300" in flag.message


@pytest.mark.parametrize(("exploratory", "flagged"), [(True, True), (False, False), (None, False)])
def test_exploratory_threshold(
    make_metrics: MetricsFactory, exploratory: bool | None, flagged: bool
) -> None:
    threshold = {"value": 0.5, "rule": "youden", "chosen_on": "test", "exploratory": exploratory}
    assert ("exploratory_threshold" in _codes(make_metrics(threshold=threshold))) is flagged


def test_small_subgroups(make_metrics: MetricsFactory) -> None:
    subgroups = {
        "manufacturer": [
            {"group": "GE", "n": 200, "too_small": False},
            {"group": "Philips", "n": 40, "too_small": False},
        ],
        "model": [{"group": "Voluson S6", "n": 7, "too_small": True, "reason": "n < 30"}],
    }
    flags = flag_limitations(make_metrics(subgroups=subgroups), build_context())
    assert [flag.code for flag in flags] == ["small_subgroups"]
    assert "model=Voluson S6 (n=7)" in flags[0].message
    assert "GE" not in flags[0].message


@pytest.mark.parametrize(
    ("status", "code"),
    [
        ("passed", None),
        ("Passed ", None),
        ("not run", "leakage_not_checked"),
        ("failed", "leakage_failed"),
        ("not checkable", "leakage_not_checkable"),
    ],
)
def test_leakage_as_a_plain_string(
    make_metrics: MetricsFactory, status: str, code: str | None
) -> None:
    """Older evaluation.json files hold the status as a string: it is read as the status."""
    split = {"leakage_check": status, "split_source": "manifest column"}
    codes = _codes(make_metrics(), build_context(split=split))
    leakage = [code for code in codes if code.startswith("leakage_")]
    assert leakage == ([] if code is None else [code])


def _leakage(status: str, detail: str, patients: int, studies: int) -> dict[str, Any]:
    return {
        "status": status,
        "detail": detail,
        "shared_patients": patients,
        "shared_studies": studies,
    }


def test_failed_leakage_flags_counts_and_detail(make_metrics: MetricsFactory) -> None:
    detail = "3 patients and 2 studies of the run's splits.csv have images in more than one split."
    leakage = {**_leakage("failed", detail, 3, 2), "patient_keys": list(LEAKED_KEYS)}
    flags = flag_limitations(make_metrics(), build_context(split={"leakage_check": leakage}))
    assert [flag.code for flag in flags] == ["leakage_failed"]
    message = flags[0].message
    assert message.startswith("Leakage check failed: 3 patients and 2 studies of the evaluated")
    assert detail in message
    assert not any(key in message for key in LEAKED_KEYS)


def test_one_shared_study_reads_singular(make_metrics: MetricsFactory) -> None:
    split = {"leakage_check": _leakage("failed", "", 0, 1)}
    (flag,) = flag_limitations(make_metrics(), build_context(split=split))
    assert "0 patients and 1 study of the evaluated data" in flag.message


def test_not_checkable_leakage_flags_counts_and_detail(make_metrics: MetricsFactory) -> None:
    detail = (
        "Not checkable: the external manifest was ingested with another pseudonym secret; "
        "re-ingest it with `usdcm ingest --secret-file` to make it checkable."
    )
    split = {"leakage_check": _leakage("not checkable", detail, 0, 0)}
    flags = flag_limitations(make_metrics(), build_context(split=split))
    assert [flag.code for flag in flags] == ["leakage_not_checkable"]
    assert detail in flags[0].message and "--secret-file" in flags[0].message
    assert "0 patients and 0 studies" in flags[0].message


def test_passed_leakage_object_flags_nothing(make_metrics: MetricsFactory) -> None:
    split = {"leakage_check": _leakage("passed", "No patient is in two splits.", 0, 0)}
    assert _codes(make_metrics(), build_context(split=split)) == []


def test_changed_manifest_is_a_limitation_with_both_hashes(make_metrics: MetricsFactory) -> None:
    expected, actual = "ab" * 32, "cd" * 32
    base = dict(build_context().model)
    changed = {"status": "changed", "expected_sha256": expected, "actual_sha256": actual}
    matched = {"status": "matched", "expected_sha256": expected, "actual_sha256": expected}
    flags = flag_limitations(
        make_metrics(), build_context(model={**base, "manifest_check": changed})
    )
    assert [flag.code for flag in flags] == ["manifest_changed"]
    assert expected in flags[0].message and actual in flags[0].message
    assert "--allow-changed-manifest" in flags[0].message
    assert _codes(make_metrics(), build_context(model={**base, "manifest_check": matched})) == []
    assert _codes(make_metrics(), build_context(model={**base, "manifest_check": None})) == []


def test_flags_come_in_a_fixed_order(make_metrics: MetricsFactory) -> None:
    metrics = make_metrics(
        n=50,
        n_positive=10,
        auc={"value": 0.8, "ci95": [0.6, 0.95]},
        threshold={"value": 0.5, "rule": "youden", "chosen_on": "test", "exploratory": True},
        subgroups={"manufacturer": [{"group": "GE", "n": 50, "too_small": True}]},
    )
    context = build_context(
        data={},
        split={"leakage_check": "not run"},
        model={
            "manifest_check": {"status": "changed", "expected_sha256": "a", "actual_sha256": "b"}
        },
        prevalence_by_split={"train": 0.1, "test": 0.2 + MAX_PREVALENCE_SHIFT},
        reference_standard="",
    )
    metrics["sample_size"] = {"below_target": True}
    assert _codes(metrics, context) == [
        "small_n",
        "wide_ci",
        "single_site",
        "prevalence_shift",
        "exploratory_threshold",
        "small_subgroups",
        "leakage_not_checked",
        "manifest_changed",
        "reference_standard_missing",
        "sample_size_below_target",
    ]
