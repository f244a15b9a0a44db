"""Options shared by ``usdcm evaluate`` and ``usdcm report``, declared once."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from usdcm.artifacts.metrics import Level

if TYPE_CHECKING:
    from usdcm.evaluation.reporting import ReportOptions


LevelOption = Annotated[
    Level | None,
    typer.Option(help="Unit of analysis; default: the level the labels were given at."),
]
ThresholdOption = Annotated[
    str,
    typer.Option(
        help="youden (default), sens:0.9 (highest threshold reaching that sensitivity) or a "
        "number; youden/sens are chosen on the validation split."
    ),
]
PositiveOption = Annotated[
    str | None, typer.Option(help="The positive class; default: the one not named normal.")
]
SubgroupOption = Annotated[
    list[str] | None,
    typer.Option(
        help="Column to report subgroups of; repeat. Default: manufacturer, model, sex, age_band."
    ),
]
BootstrapOption = Annotated[
    int, typer.Option(min=1, help="Resamples of the patient-clustered bootstrap.")
]
SeedOption = Annotated[int, typer.Option(help="Seed of the bootstrap.")]
PdfOption = Annotated[
    bool, typer.Option("--pdf", help="Also write report.pdf (needs chromium on PATH).")
]
OutOption = Annotated[Path, typer.Option("--out", "-o", help="Output folder.")]
IntendedUseOption = Annotated[
    str | None,
    typer.Option(help="Intended use stated in the report; default: the config's intended_use."),
]


def report_options(
    *,
    level: Level | None,
    threshold: str,
    positive_class: str | None,
    subgroup: list[str] | None,
    bootstrap: int,
    seed: int,
    pdf: bool,
    intended_use: str | None,
    split: str | None = None,
) -> ReportOptions:
    """The options above as :class:`usdcm.evaluation.reporting.ReportOptions`."""
    from usdcm.evaluation.reporting import SUBGROUP_COLUMNS, ReportOptions

    return ReportOptions(
        level=level,
        threshold=threshold,
        positive_class=positive_class,
        subgroups=tuple(subgroup) if subgroup else SUBGROUP_COLUMNS,
        n_bootstrap=bootstrap,
        seed=seed,
        pdf=pdf,
        split=split,
        intended_use=intended_use,
    )
