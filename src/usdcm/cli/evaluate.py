"""``usdcm evaluate``: a run + a split (or external manifest) -> predictions and the report."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from usdcm.cli._errors import user_errors
from usdcm.cli._progress import RichProgress
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
from usdcm.cli.train import DeviceChoice


def evaluate_command(
    run: Annotated[Path, typer.Argument(help="Run folder written by `usdcm train`.")],
    out: OutOption,
    manifest: Annotated[
        Path | None,
        typer.Option(help="Evaluate on every labelled image of this manifest (external)."),
    ] = None,
    split: Annotated[str, typer.Option(help="Split of the run to evaluate.")] = "test",
    level: LevelOption = None,
    threshold: ThresholdOption = "youden",
    positive_class: PositiveOption = None,
    subgroup: SubgroupOption = None,
    bootstrap: BootstrapOption = 2000,
    seed: SeedOption = 0,
    device: Annotated[DeviceChoice, typer.Option(help="Where to run the model.")] = (
        DeviceChoice.auto
    ),
    pdf: PdfOption = False,
    intended_use: IntendedUseOption = None,
    reference_standard: Annotated[
        str | None,
        typer.Option(
            help="How the labels were established and by whom (e.g. 'biopsy histopathology'); "
            "default: the run config's reference_standard."
        ),
    ] = None,
    allow_changed_manifest: Annotated[
        bool,
        typer.Option(
            "--allow-changed-manifest",
            help="Evaluate even if the run's manifest changed since training (recorded).",
        ),
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Run the best checkpoint on the test split (or --manifest), then write the report.

    The threshold is chosen on the validation split and frozen before the evaluated split
    is looked at. Writes predictions.csv, metrics.json, report.html and report.md.

    Example: usdcm evaluate runs/r18 --out runs/r18/eval
    """
    with user_errors():
        from usdcm.evaluation.evaluate import evaluate_run
        from usdcm.evaluation.reporting import build_report, print_summary

        command = shlex.join(["usdcm", *sys.argv[1:]])  # the CLI is the one reader of argv
        with RichProgress(disable=quiet) as progress:
            predictions, context = evaluate_run(
                run,
                out,
                manifest=manifest,
                split=split,
                device=device.value,
                on_start=lambda total: progress.phase("predict", total),
                on_image=progress.advance,
                allow_changed_manifest=allow_changed_manifest,
                command=command,
                reference_standard=reference_standard,
            )
        flow = context.get("flow") or {}
        if flow.get("unscored"):
            reasons = "; ".join(f"{why}: {n}" for why, n in flow["unscored"].items())
            typer.echo(
                f"{sum(flow['unscored'].values())} of {flow['evaluated_images']} evaluated "
                f"images could not be scored ({reasons}); the report counts them."
            )
        if flow.get("threshold_unscored"):
            reasons = "; ".join(f"{why}: {n}" for why, n in flow["threshold_unscored"].items())
            typer.echo(
                f"{sum(flow['threshold_unscored'].values())} images of the "
                f"{flow.get('threshold_split') or 'val'} split, where the threshold is chosen, "
                f"could not be scored ({reasons})."
            )
        options = report_options(
            level=level,
            threshold=threshold,
            positive_class=positive_class,
            subgroup=subgroup,
            bootstrap=bootstrap,
            seed=seed,
            pdf=pdf,
            intended_use=intended_use,
        )
        report = build_report(predictions, out, options, command=command)
        print_summary(report)
