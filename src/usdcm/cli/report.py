"""``usdcm report``: predictions.csv -> metrics.json, report.html and report.md, no model."""

from __future__ import annotations

import dataclasses
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from usdcm.cli._errors import user_errors
from usdcm.cli._report_options import (
    BootstrapOption,
    IntendedUseOption,
    LevelOption,
    OutOption,
    PdfOption,
    PositiveOption,
    SeedOption,
    SubgroupOption,
    ThresholdOption,
    report_options,
)
from usdcm.errors import ReportError

if TYPE_CHECKING:
    from usdcm.evaluation.reporting import ReportOptions

ReferenceStandardOption = Annotated[
    str | None,
    typer.Option(
        help="How the labels were established and by whom (STARD 10b, CLAIM 14-18); "
        "default: evaluation.json's, from the training config's reference_standard."
    ),
]


def with_reference_standard(options: ReportOptions, text: str | None) -> ReportOptions:
    """``options`` with ``--reference-standard``'s text, which overrides evaluation.json's."""
    if text is None or not text.strip():
        return options
    if "reference_standard" not in {field.name for field in dataclasses.fields(options)}:
        message = "--reference-standard: this build's report options have no reference standard."
        raise ReportError(message)
    changes: dict[str, Any] = {"reference_standard": text.strip()}
    return dataclasses.replace(options, **changes)


def report_command(
    predictions: Annotated[
        Path, typer.Argument(help="predictions.csv written by `usdcm evaluate`.")
    ],
    out: OutOption,
    split: Annotated[
        str | None,
        typer.Option(help="Rows to evaluate; default test, else external, else all."),
    ] = None,
    level: LevelOption = None,
    threshold: ThresholdOption = "youden",
    positive_class: PositiveOption = None,
    subgroup: SubgroupOption = None,
    bootstrap: BootstrapOption = 2000,
    seed: SeedOption = 0,
    pdf: PdfOption = False,
    intended_use: IntendedUseOption = None,
    reference_standard: ReferenceStandardOption = None,
) -> None:
    """Recompute every metric and the report from a predictions file alone.

    With youden or sens:X, the threshold is chosen on the file's val rows; without them it
    is chosen on the evaluated rows themselves and the report is labelled exploratory.

    Example: usdcm report runs/r18/eval/predictions.csv --out audit/ --level patient
    """
    with user_errors():
        from usdcm.evaluation.reporting import build_report, print_summary

        options = report_options(
            level=level,
            threshold=threshold,
            positive_class=positive_class,
            subgroup=subgroup,
            bootstrap=bootstrap,
            seed=seed,
            pdf=pdf,
            intended_use=intended_use,
            split=split,
        )
        options = with_reference_standard(options, reference_standard)
        command = shlex.join(["usdcm", *sys.argv[1:]])  # the CLI is the one reader of argv
        print_summary(build_report(predictions, out, options, command=command))
