"""``usdcm report``: predictions.csv -> metrics.json, report.html and report.md, no model."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

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
        command = shlex.join(["usdcm", *sys.argv[1:]])  # the CLI is the one reader of argv
        print_summary(build_report(predictions, out, options, command=command))
