"""flag_limitations: each rule fires on its input, and stays quiet just below its threshold."""

from __future__ import annotations

from typing import Any

import pytest

from tests.report.conftest import MetricsFactory, build_context
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


def test_empty_inputs_flag_nothing() -> None:
    assert flag_limitations({}) == []


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
    ("status", "flagged"),
    [("passed", False), ("Passed ", False), ("not run", True), ("failed", True)],
)
def test_leakage_not_checked(make_metrics: MetricsFactory, status: str, flagged: bool) -> None:
    split = {"leakage_check": status, "split_source": "manifest column"}
    codes = _codes(make_metrics(), build_context(split=split))
    assert ("leakage_not_checked" in codes) is flagged


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
        prevalence_by_split={"train": 0.1, "test": 0.2 + MAX_PREVALENCE_SHIFT},
    )
    assert _codes(metrics, context) == [
        "small_n",
        "wide_ci",
        "single_site",
        "prevalence_shift",
        "exploratory_threshold",
        "small_subgroups",
        "leakage_not_checked",
    ]
