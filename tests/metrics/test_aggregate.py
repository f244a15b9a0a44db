"""Aggregation of image rows into series, study and patient cases."""

from __future__ import annotations

import pytest

from usdcm.metrics import AggregationError, Level, MetricsError, aggregate
from usdcm.metrics.aggregate import aggregation_rule

CLASSES = ["abnormal", "normal"]


def row(
    image_id: str,
    patient: str,
    study: str,
    series: str,
    label: str,
    prob: float,
    *,
    frames: str = "1",
    manufacturer: str = "GE",
    model: str = "Logiq",
) -> dict[str, str]:
    return {
        "image_id": image_id,
        "patient_key": patient,
        "study_key": study,
        "series_key": series,
        "label": label,
        "prob_abnormal": str(prob),
        "prob_normal": str(1 - prob),
        "frames": frames,
        "manufacturer": manufacturer,
        "model": model,
        "patient_name": "DOE^JANE",  # never to appear in a message
    }


ROWS = [
    row("i1", "p1", "st1", "se1", "abnormal", 0.75, frames="10"),
    row("i2", "p1", "st1", "se1", "abnormal", 0.25, frames="20"),
    row("i3", "p1", "st1", "se2", "abnormal", 0.5, model="Vivid"),
    row("i4", "p2", "st2", "se3", "normal", 0.125, manufacturer=""),
    row("i5", "p1", "st4", "se4", "abnormal", 1.0),
]


def test_image_level_keeps_one_case_per_row() -> None:
    cases = aggregate(ROWS, "image", CLASSES)
    assert [case.id for case in cases] == ["i1", "i2", "i3", "i4", "i5"]
    assert cases[0].probs == {"abnormal": 0.75, "normal": 0.25}
    assert (cases[0].n_images, cases[0].n_frames, cases[0].image_ids) == (1, 10, ("i1",))
    # the rows have no sex or age_band column (a predictions file from before them)
    assert cases[3].subgroups == {
        "manufacturer": "unknown",
        "model": "Logiq",
        "sex": "unknown",
        "age_band": "unknown",
    }


def test_series_level_means_probabilities_and_sums_frames() -> None:
    cases = aggregate(ROWS, Level.SERIES, CLASSES)
    assert [case.id for case in cases] == ["se1", "se2", "se3", "se4"]
    first = cases[0]
    assert first.probs == {"abnormal": 0.5, "normal": 0.5}
    assert (first.n_images, first.n_frames, first.image_ids) == (2, 30, ("i1", "i2"))
    assert (first.label, first.patient_key) == ("abnormal", "p1")


def test_study_level_marks_disagreeing_subgroups_as_mixed() -> None:
    cases = aggregate(ROWS, "study", CLASSES)
    assert [case.id for case in cases] == ["st1", "st2", "st4"]
    study = cases[0]
    assert study.probs["abnormal"] == pytest.approx(0.5)
    assert study.n_frames == 31
    assert study.subgroups == {
        "manufacturer": "GE",
        "model": "mixed",
        "sex": "unknown",
        "age_band": "unknown",
    }


def test_sex_and_age_band_are_default_subgroups() -> None:
    rows = [
        {**row("i1", "p1", "st1", "se1", "abnormal", 0.75), "sex": "F", "age_band": "40-49"},
        {**row("i2", "p1", "st1", "se1", "abnormal", 0.25), "sex": "F", "age_band": "40-49"},
        {**row("i3", "p2", "st2", "se2", "normal", 0.5), "sex": "", "age_band": "90+"},
        {**row("i4", "p3", "st3", "se3", "normal", 0.5), "sex": "M", "age_band": ""},
        {**row("i5", "p3", "st3", "se3", "normal", 0.5), "sex": "M", "age_band": "50-59"},
    ]
    cases = aggregate(rows, "study", CLASSES)
    assert [(case.subgroups["sex"], case.subgroups["age_band"]) for case in cases] == [
        ("F", "40-49"),
        ("unknown", "90+"),
        ("M", "mixed"),
    ]


def test_patient_level_groups_every_study_of_a_patient() -> None:
    cases = aggregate(ROWS, "patient", CLASSES, subgroup_columns=["model"])
    assert [case.id for case in cases] == ["p1", "p2"]
    patient = cases[0]
    assert patient.probs["abnormal"] == pytest.approx((0.75 + 0.25 + 0.5 + 1.0) / 4)
    assert patient.n_images == 4
    assert patient.subgroups == {"model": "mixed"}
    assert cases[1].probs == {"abnormal": 0.125, "normal": 0.875}


def test_a_group_with_two_labels_is_an_error_naming_only_its_key() -> None:
    rows = [*ROWS, row("i6", "p2", "st2", "se5", "abnormal", 0.9)]
    with pytest.raises(AggregationError, match=r"study 'st2' has images labelled") as caught:
        aggregate(rows, "study", CLASSES)
    assert "DOE" not in str(caught.value)
    assert "p2" not in str(caught.value)
    # image level has no such group
    assert len(aggregate(rows, "image", CLASSES)) == 6


def test_a_series_spanning_two_patients_is_an_error() -> None:
    rows = [*ROWS, row("i6", "p3", "st9", "se1", "abnormal", 0.9)]
    with pytest.raises(AggregationError, match=r"series 'se1' holds images of 2 patients"):
        aggregate(rows, "series", CLASSES)


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"image_id": ""}, "row 1 has no image_id"),
        ({"patient_key": " "}, "image 'i1' has no patient_key"),
        ({"study_key": ""}, "image 'i1' has no study_key"),
        ({"prob_abnormal": "high"}, "prob_abnormal='high'"),
        ({"prob_normal": "1.5"}, "prob_normal='1.5'"),
        ({"frames": "0"}, "frames='0'"),
        ({"frames": "2.5"}, "frames='2.5'"),
        ({"label": "unsure"}, "labelled 'unsure', not one of the classes"),
        ({"label": ""}, "labelled '', not one of the classes"),
    ],
)
def test_bad_rows_are_rejected_with_the_image_id(change: dict[str, str], fragment: str) -> None:
    rows = [{**ROWS[0], **change}, *ROWS[1:]]
    with pytest.raises(AggregationError, match=fragment) as caught:
        aggregate(rows, "study", CLASSES)
    assert "DOE" not in str(caught.value)


def test_missing_probability_column_is_rejected() -> None:
    rows = [{key: value for key, value in ROWS[0].items() if key != "prob_normal"}]
    with pytest.raises(AggregationError, match="prob_normal=''"):
        aggregate(rows, "image", CLASSES)


def test_duplicate_image_ids_are_rejected() -> None:
    with pytest.raises(AggregationError, match="image_id 'i1' occurs twice"):
        aggregate([ROWS[0], ROWS[0]], "image", CLASSES)


def test_empty_frames_count_as_one_frame() -> None:
    (case,) = aggregate([row("i1", "p1", "s", "r", "normal", 0.1, frames="")], "image", CLASSES)
    assert case.n_frames == 1


@pytest.mark.parametrize(
    ("level", "classes", "fragment"),
    [
        ("exam", CLASSES, "level 'exam' is not known"),
        ("study", [], "expected a list of class names"),
        ("study", "abnormal", "expected a list of class names"),
        ("study", ["a", "a"], "repeat a name"),
    ],
)
def test_bad_options_are_rejected(level: str, classes: list[str], fragment: str) -> None:
    with pytest.raises(MetricsError, match=fragment):
        aggregate(ROWS, level, classes)


def test_aggregation_rule_names_the_key_column() -> None:
    assert aggregation_rule("patient") == (
        "mean of image probabilities per patient (grouped by patient_key)"
    )
    assert aggregation_rule("series").endswith("(grouped by series_key)")
