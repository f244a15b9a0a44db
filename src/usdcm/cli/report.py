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
    dicom_pdf: Annotated[
        bool,
        typer.Option(
            "--dicom-pdf",
            help="Also write report.pdf.dcm: the PDF as a DICOM Encapsulated PDF for a PACS, "
            "in a study of its own, referencing the evaluated studies (needs --pdf).",
        ),
    ] = False,
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
        if dicom_pdf and not pdf:
            message = "--dicom-pdf encapsulates the PDF report: add --pdf."
            raise ReportError(message)
        command = shlex.join(["usdcm", *sys.argv[1:]])  # the CLI is the one reader of argv
        built = build_report(predictions, out, options, command=command)
        print_summary(built)
        if dicom_pdf:
            written = write_dicom_pdf(built.files.get("pdf"), predictions, built.metrics)
            typer.echo(f"Encapsulated PDF: {written}")


def write_dicom_pdf(pdf: Path | None, predictions: Path, metrics: dict[str, Any]) -> Path:
    """Write ``report.pdf.dcm`` beside ``pdf``: the Encapsulated PDF referencing the images
    of the evaluated split through the manifest that evaluation.json names."""
    from usdcm import __version__
    from usdcm.artifacts.evaluation import EVALUATION_JSON, EvaluationContext
    from usdcm.artifacts.manifest import read_manifest
    from usdcm.artifacts.predictions import Predictions
    from usdcm.atomic import atomic_write_bytes
    from usdcm.results.pdf import encapsulated_pdf, evaluated_images
    from usdcm.results.sr import dataset_bytes

    if pdf is None or not pdf.is_file():
        message = "--dicom-pdf: no PDF was written (see the --pdf message above)."
        raise ReportError(message)
    split = str(metrics.get("provenance", {}).get("evaluated_split", "all rows"))
    rows = Predictions.read(predictions).rows
    ids = [row["image_id"] for row in rows if split == "all rows" or row.get("split") == split]
    context = predictions.parent / EVALUATION_JSON
    manifest = Path(EvaluationContext.read(context).manifest) if context.is_file() else None
    if manifest is None or not manifest.is_file():
        message = (
            f"--dicom-pdf: the manifest of the evaluated images ({manifest or 'evaluation.json'}) "
            "is missing, so the studies cannot be referenced."
        )
        raise ReportError(message)
    images = evaluated_images(ids, read_manifest(manifest))
    dataset = encapsulated_pdf(
        pdf.read_bytes(),
        title="usdcm validation report",
        images=images,
        software_version=__version__,
    )
    path = pdf.with_name(pdf.name + ".dcm")
    atomic_write_bytes(path, dataset_bytes(dataset))
    return path
