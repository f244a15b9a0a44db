"""The report's sections, in order, and the reporting-checklist items each one answers.

Owns the one table that ties a section to TRIPOD+AI and CLAIM item numbers; never renders
anything. Item numbers follow TRIPOD+AI (Collins et al., BMJ 2024;385:e078378) and CLAIM
(Mongan et al., Radiol Artif Intell 2020, as updated by Tejani et al., 2024); check them
against the published checklists before a submission cites them.
"""

from __future__ import annotations

from dataclasses import dataclass


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
        CLAIM item numbers; empty when none applies.
    """

    key: str
    title: str
    tripod_ai: tuple[str, ...]
    claim: tuple[int, ...]

    @property
    def checklist(self) -> str:
        """The items as one line, e.g. ``"TRIPOD+AI 26; CLAIM 38"``.

        >>> SectionSpec("limitations", "Limitations", ("26",), (38,)).checklist
        'TRIPOD+AI 26; CLAIM 38'
        >>> SectionSpec("x", "X", (), (37,)).checklist
        'CLAIM 37'
        """
        parts = []
        if self.tripod_ai:
            parts.append("TRIPOD+AI " + ", ".join(self.tripod_ai))
        if self.claim:
            parts.append("CLAIM " + ", ".join(str(item) for item in self.claim))
        return "; ".join(parts)


SECTIONS: tuple[SectionSpec, ...] = (
    SectionSpec("summary", "Summary", ("2", "23a"), (2, 36)),
    SectionSpec("intended-use", "Intended use", ("3b",), (3, 39)),
    SectionSpec("data", "Data", ("5a", "6a", "6b", "20a", "20b"), (7, 8, 12, 33, 34)),
    SectionSpec("split", "Split and leakage check", ("12a",), (20, 21)),
    SectionSpec("model", "Model and training", ("12c", "22"), (22, 23, 25, 26)),
    SectionSpec("results", "Results", ("12e", "15", "23a"), (28, 29, 35, 36)),
    SectionSpec("subgroups", "Subgroups", ("14", "23a", "23b"), (30,)),
    SectionSpec("calibration", "Calibration", ("12e", "23a"), (28,)),
    SectionSpec("failures", "Failure cases", (), (37,)),
    SectionSpec("limitations", "Limitations", ("26",), (38,)),
    SectionSpec("reproducibility", "Reproducibility", ("12g", "18f"), (23, 25)),
)
"""Every section of the report, in the order it appears."""

SECTION_BY_KEY: dict[str, SectionSpec] = {spec.key: spec for spec in SECTIONS}
""":data:`SECTIONS` by ``key``."""
