"""Every section of the report cites the checklist items it answers, and only real items.

The expected table below was checked by hand against the published checklists:

- TRIPOD+AI: Collins GS, Moons KGM, Dhiman P, et al. TRIPOD+AI statement: updated guidance for
  reporting clinical prediction models that use regression or machine learning methods. BMJ
  2024;385:e078378. doi:10.1136/bmj-2023-078378 (27 main items; checklist at
  https://www.tripod-statement.org).
- CLAIM 2024: Tejani AS, Klontzas ME, Gatti AA, Mongan JT, Moy L, Park SH, Kahn CE Jr.
  Checklist for Artificial Intelligence in Medical Imaging (CLAIM): 2024 Update. Radiol Artif
  Intell 2024;6(4):e240300. doi:10.1148/ryai.240300 (44 items).
- STARD 2015: Bossuyt PM, Reitsma JB, Bruns DE, et al. STARD 2015: an updated list of
  essential items for reporting diagnostic accuracy studies. BMJ 2015;351:h5527.
  doi:10.1136/bmj.h5527 (30 items; 10, 12, 13 and 21 split into a and b).
"""

from __future__ import annotations

import pytest

from tests.report.conftest import build_context, build_metrics
from usdcm.report import SECTIONS, build_document
from usdcm.report.checklist import SECTION_BY_KEY, SectionSpec

TRIPOD_AI_ITEMS = frozenset(
    [
        "1",
        "2",
        "3a",
        "3b",
        "3c",
        "4",
        "5a",
        "5b",
        "6a",
        "6b",
        "6c",
        "7",
        "8a",
        "8b",
        "8c",
        "9a",
        "9b",
        "9c",
        "10",
        "11",
        "12a",
        "12b",
        "12c",
        "12d",
        "12e",
        "12f",
        "12g",
        "13",
        "14",
        "15",
        "16",
        "17",
        "18a",
        "18b",
        "18c",
        "18d",
        "18e",
        "18f",
        "19",
        "20a",
        "20b",
        "20c",
        "21",
        "22",
        "23a",
        "23b",
        "24",
        "25",
        "26",
        "27a",
        "27b",
        "27c",
    ]
)
"""TRIPOD+AI (BMJ 2024;385:e078378), every item and subitem."""

CLAIM_2024_ITEMS = frozenset(range(1, 45))
"""CLAIM 2024 (Radiol Artif Intell 2024;6(4):e240300): items 1 to 44."""

STARD_2015_ITEMS = frozenset(
    [
        "1",
        "2",
        "3",
        "4",
        "5",
        "6",
        "7",
        "8",
        "9",
        "10a",
        "10b",
        "11",
        "12a",
        "12b",
        "13a",
        "13b",
        "14",
        "15",
        "16",
        "17",
        "18",
        "19",
        "20",
        "21a",
        "21b",
        "22",
        "23",
        "24",
        "25",
        "26",
        "27",
        "28",
        "29",
        "30",
    ]
)
"""STARD 2015 (BMJ 2015;351:h5527), 30 items in 34 rows."""

# section: (TRIPOD+AI, CLAIM 2024, STARD 2015), with what each item asks for
EXPECTED: dict[str, tuple[tuple[str, ...], tuple[int, ...], tuple[str, ...]]] = {
    # TRIPOD+AI 2 abstract, 23a performance with CIs; CLAIM 2 structured summary, 38 accuracy
    # estimates with 95% CIs; STARD 2 structured summary, 24 accuracy estimates and precision
    "summary": (("2", "23a"), (2, 38), ("2", "24")),
    # TRIPOD+AI 3b target population, intended purpose and users; CLAIM 3 background and
    # intended use, 41 implications for practice; STARD 3 intended use, 27 implications
    "intended-use": (("3b",), (3, 41), ("3", "27")),
    # TRIPOD+AI 12e performance measures, 15 model output and threshold, 23a performance;
    # CLAIM 28 metrics, 29 uncertainty, 32 internal testing (33 for an external set), 37
    # performance, 38 accuracy estimates, 39 failure analysis with the confusion matrix;
    # STARD 12a index test cut-off, pre-specified or exploratory, 14 methods for accuracy,
    # 23 cross tabulation (the confusion matrix), 24 estimates with precision
    "results": (("12e", "15", "23a"), (28, 29, 32, 37, 38, 39), ("12a", "14", "23", "24")),
    # scanner subgroups: performance in key subgroups (23a), robustness (CLAIM 30), analyses
    # of variability (STARD 17); not TRIPOD+AI 14, which is sociodemographic fairness
    "subgroups": (("23a",), (30,), ("17",)),
    # TRIPOD+AI 14 fairness, 23a subgroups; CLAIM 36 demographics, 37 performance across
    # subgroups; STARD 17 variability, 20 baseline demographics
    "fairness": (("14", "23a"), (36, 37), ("17", "20")),
    # TRIPOD+AI 12f model updating (recalibration), 24 its results
    "calibration": (("12e", "12f", "23a", "24"), (28,), ()),
    # TRIPOD+AI 12e lists clinical utility among the measures and plots
    "clinical-utility": (("12e", "23a"), (28,), ()),
    # CLAIM 39 failure analysis
    "failures": ((), (39,), ()),
    # TRIPOD+AI 5a sources, 5b dates, 6a setting, 6b eligibility, 20a flow, 20b
    # characteristics; CLAIM 7 sources, 8 eligibility, 11 de-identification, 13 acquisition
    # (scanners), 35 numbers included and excluded, 36 characteristics; STARD 6 eligibility,
    # 8 setting and dates, 19 flow diagram, 20 characteristics
    "data": (
        ("5a", "5b", "6a", "6b", "20a", "20b"),
        (7, 8, 11, 13, 35, 36),
        ("6", "8", "19", "20"),
    ),
    # TRIPOD+AI 8a-c outcome definition, assessors, blinding; CLAIM 14-18 reference standard,
    # rationale, annotators, annotation procedures, variability; STARD 10b, 11
    "reference-standard": (("8a", "8b", "8c"), (14, 15, 16, 17, 18), ("10b", "11")),
    # TRIPOD+AI 11 missing data; CLAIM 12 missing data; STARD 15 indeterminate, 16 missing
    "missing-data": (("11",), (12,), ("15", "16")),
    # TRIPOD+AI 12a data use and partitions, 21 participants and events in each analysis;
    # CLAIM 19 partition assignment, 20 level of disjointness; STARD 12a (threshold on val)
    "split": (("12a", "21"), (19, 20), ("12a",)),
    # TRIPOD+AI 10 sample size; CLAIM 21 test set size; STARD 18 intended sample size
    "sample-size": (("10",), (21,), ("18",)),
    # TRIPOD+AI 12c model and building steps, 12e measures; CLAIM 22 architecture, 25
    # training, 26 model selection, 29 statistical methods; STARD 10a index test, 14 methods
    "model": (("12c", "12e"), (22, 25, 26, 29), ("10a", "14")),
    # TRIPOD+AI 26, CLAIM 40, STARD 26: limitations
    "limitations": (("26",), (40,), ("26",)),
    # TRIPOD+AI 12g how predictions were made, 18f code; CLAIM 23 software and versions, 42
    # protocol and technical details, 43 availability of software and model
    "reproducibility": (("12g", "18f"), (23, 42, 43), ()),
}


def test_every_section_is_in_the_expected_table() -> None:
    assert [spec.key for spec in SECTIONS] == list(EXPECTED)


@pytest.mark.parametrize("key", list(EXPECTED))
def test_section_cites_exactly_its_items(key: str) -> None:
    spec = SECTION_BY_KEY[key]
    assert (spec.tripod_ai, spec.claim, spec.stard) == EXPECTED[key]


@pytest.mark.parametrize("spec", SECTIONS, ids=lambda spec: spec.key)
def test_every_cited_item_exists_in_the_published_list(spec: SectionSpec) -> None:
    assert set(spec.tripod_ai) <= TRIPOD_AI_ITEMS
    assert set(spec.claim) <= CLAIM_2024_ITEMS
    assert set(spec.stard) <= STARD_2015_ITEMS


def test_tripod_ai_14_fairness_is_cited_only_for_sex_and_age() -> None:
    assert [spec.key for spec in SECTIONS if "14" in spec.tripod_ai] == ["fairness"]


def test_stard_19_flow_diagram_is_in_the_data_section() -> None:
    assert [spec.key for spec in SECTIONS if "19" in spec.stard] == ["data"]


@pytest.mark.parametrize(("split", "item"), [("test", "32"), ("external", "33")])
def test_results_cite_internal_or_external_testing(split: str, item: str) -> None:
    context = build_context(flow={**build_context().flow, "evaluated_split": split})
    document = build_document(build_metrics(), context, figures={})
    (results,) = [section for section in document.sections if section.key == "results"]
    assert results.checklist == (
        f"TRIPOD+AI 12e, 15, 23a; CLAIM 28, 29, {item}, 37, 38, 39; STARD 12a, 14, 23, 24"
    )
