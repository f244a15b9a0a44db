"""The report's sections, in order, and the reporting-checklist items each one answers.

Owns the one table that ties a section to TRIPOD+AI, CLAIM 2024 and STARD 2015 item
numbers; never renders anything. The numbers were checked item by item against the
published checklists:

- TRIPOD+AI: Collins GS, Moons KGM, Dhiman P, et al. TRIPOD+AI statement: updated guidance
  for reporting clinical prediction models that use regression or machine learning methods.
  BMJ 2024;385:e078378 (doi:10.1136/bmj-2023-078378), 27 main items; checklist at
  https://www.tripod-statement.org. Item 14 is fairness (cited only where the report shows
  sociodemographic groups, sex and age band, never for scanner subgroups); item 21 is the
  number of participants and outcome events in each analysis (the per-split counts).
- CLAIM 2024: Tejani AS, Klontzas ME, Gatti AA, et al. Checklist for Artificial Intelligence
  in Medical Imaging (CLAIM): 2024 Update. Radiol Artif Intell 2024;6(4):e240300
  (doi:10.1148/ryai.240300), 44 items. It supersedes CLAIM 2020 (Mongan et al.), whose
  numbers differ from item 11 on (de-identification is 11, missing data 12, acquisition 13,
  partitions 19-20, test set size 21, internal/external testing 32/33, flow 35,
  demographics 36, performance 37, accuracy estimates 38, failure analysis with the
  confusion matrix 39, limitations 40, implications 41, protocol 42, availability 43).
- STARD 2015: Bossuyt PM, Reitsma JB, Bruns DE, et al. STARD 2015: an updated list of
  essential items for reporting diagnostic accuracy studies. BMJ 2015;351:h5527
  (doi:10.1136/bmj.h5527), 30 items (10, 12, 13 and 21 split into a and b); item 19 is the
  participant flow diagram.

A section cites an item only when it holds what the item asks for; tests/report/
test_checklist.py holds the expected table with the same sources.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

CLAIM_INTERNAL_TESTING = 32
"""CLAIM 2024 item 32: evaluation on internal data (a held-out test split of the same source)."""

CLAIM_EXTERNAL_TESTING = 33
"""CLAIM 2024 item 33: evaluation on external data (``usdcm evaluate --manifest``)."""


@dataclass(frozen=True)
class SectionSpec:
    """One section of the report: its anchor, its heading and the checklist items it answers.

    Parameters
    ----------
    key : str
        Anchor and CSS class of the section (``[a-z-]+``).
    title : str
        The heading, identical in the HTML and the Markdown report.
    tripod_ai : tuple of str
        TRIPOD+AI item numbers, e.g. ``("23a",)``; empty when none applies.
    claim : tuple of int
        CLAIM 2024 item numbers; empty when none applies.
    stard : tuple of str
        STARD 2015 item numbers, e.g. ``("12a", "24")``; empty when none applies.
    """

    key: str
    title: str
    tripod_ai: tuple[str, ...]
    claim: tuple[int, ...]
    stard: tuple[str, ...] = ()

    @property
    def checklist(self) -> str:
        """The items as one line, e.g. ``"TRIPOD+AI 26; CLAIM 40; STARD 26"``.

        >>> SectionSpec("limitations", "Limitations", ("26",), (40,), ("26",)).checklist
        'TRIPOD+AI 26; CLAIM 40; STARD 26'
        >>> SectionSpec("x", "X", (), (39,)).checklist
        'CLAIM 39'
        """
        parts = []
        if self.tripod_ai:
            parts.append("TRIPOD+AI " + ", ".join(self.tripod_ai))
        if self.claim:
            parts.append("CLAIM " + ", ".join(str(item) for item in self.claim))
        if self.stard:
            parts.append("STARD " + ", ".join(self.stard))
        return "; ".join(parts)

    def tested_on(self, external: bool) -> SectionSpec:
        """This section with CLAIM 32 (internal testing) swapped for 33 when ``external``.

        >>> spec = SectionSpec("results", "Results", (), (28, 32))
        >>> spec.tested_on(external=True).claim, spec.tested_on(external=False).claim
        ((28, 33), (28, 32))
        """
        if not external or CLAIM_INTERNAL_TESTING not in self.claim:
            return self
        claim = tuple(
            CLAIM_EXTERNAL_TESTING if item == CLAIM_INTERNAL_TESTING else item
            for item in self.claim
        )
        return replace(self, claim=claim)


SECTIONS: tuple[SectionSpec, ...] = (
    # the result first
    SectionSpec("summary", "Summary", ("2", "23a"), (2, 38), ("2", "24")),
    SectionSpec("intended-use", "Intended use", ("3b",), (3, 41), ("3", "27")),
    SectionSpec(
        "results",
        "Results",
        ("12e", "15", "23a"),
        (28, 29, CLAIM_INTERNAL_TESTING, 37, 38, 39),
        ("12a", "14", "23", "24"),
    ),
    SectionSpec("subgroups", "Subgroups by scanner", ("23a",), (30,), ("17",)),
    SectionSpec("fairness", "Fairness: sex and age band", ("14", "23a"), (36, 37), ("17", "20")),
    SectionSpec("calibration", "Calibration and recalibration", ("12e", "12f", "23a", "24"), (28,)),
    SectionSpec("clinical-utility", "Clinical utility (decision curve)", ("12e", "23a"), (28,)),
    SectionSpec("failures", "Failure cases", (), (39,)),
    # then the data
    SectionSpec(
        "data",
        "Data",
        ("5a", "5b", "6a", "6b", "20a", "20b"),
        (7, 8, 11, 13, 35, 36),
        ("6", "8", "19", "20"),
    ),
    SectionSpec(
        "reference-standard",
        "Reference standard",
        ("8a", "8b", "8c"),
        (14, 15, 16, 17, 18),
        ("10b", "11"),
    ),
    SectionSpec(
        "missing-data", "Missing data and indeterminate results", ("11",), (12,), ("15", "16")
    ),
    SectionSpec("split", "Split and leakage check", ("12a", "21"), (19, 20), ("12a",)),
    SectionSpec("sample-size", "Sample size and precision", ("10",), (21,), ("18",)),
    # then the method in plain words
    SectionSpec("model", "Method", ("12c", "12e"), (22, 25, 26, 29), ("10a", "14")),
    # then the limitations, and the full record last
    SectionSpec("limitations", "Limitations", ("26",), (40,), ("26",)),
    SectionSpec(
        "reproducibility",
        "Appendix: configuration, versions and hashes",
        ("12g", "18f"),
        (23, 42, 43),
    ),
)
"""Every section of the report, in the order it appears."""

SECTION_BY_KEY: dict[str, SectionSpec] = {spec.key: spec for spec in SECTIONS}
""":data:`SECTIONS` by ``key``."""
