"""``usdcm demo``: synth -> ingest -> train -> evaluate on built-in synthetic data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from usdcm.cli._errors import user_errors
from usdcm.cli._progress import RichProgress


def demo_command(
    out: Annotated[Path, typer.Argument(help="Folder for the export, data, run and report.")] = (
        Path("demo")
    ),
    patients: Annotated[int, typer.Option(min=6, help="Synthetic patients.")] = 60,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic export.")] = 0,
    epochs: Annotated[
        int | None, typer.Option(min=1, help="Overrides the demo config's epochs.")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Run the whole job on synthetic data and print where the report is.

    Writes OUT/pacs (a synthetic PACS export with junk and fake PHI), OUT/data (manifest and
    NIfTI images), OUT/run (checkpoints, metrics) and OUT/run/eval (the validation report).

    Example: usdcm demo demo/
    """
    with user_errors():
        from rich.console import Console
        from rich.table import Table

        from usdcm.cli._train_report import print_summary as print_training
        from usdcm.demo import run_demo
        from usdcm.evaluation.reporting import BuiltReport
        from usdcm.evaluation.reporting import print_summary as print_evaluation

        console = Console()
        with RichProgress(disable=quiet) as progress:
            result = run_demo(
                out,
                patients=patients,
                seed=seed,
                epochs=epochs,
                progress=None if quiet else progress,
                on_step=console.print,
            )
        print_training(result.train_result, console)
        report = BuiltReport(out=out / "run" / "eval", metrics=result.metrics)
        if result.report_html is not None:
            report.files["html"] = result.report_html
        print_evaluation(report, console)
        table = Table(title="usdcm demo: time per step")
        table.add_column("step")
        table.add_column("seconds", justify="right")
        for step, seconds in result.seconds.items():
            table.add_row(step, f"{seconds:.1f}")
        table.add_row("total", f"{sum(result.seconds.values()):.1f}")
        console.print(table)
        console.print(f"Open the report: {result.report_html}")
