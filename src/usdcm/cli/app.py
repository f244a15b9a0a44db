"""The ``usdcm`` typer application: registers one command per module and turns
:class:`~usdcm.errors.UsdcmError` into one line on stderr and a non-zero exit.

Imports stay light here so that ``usdcm --help`` is fast: torch and MONAI load inside commands.
"""

from __future__ import annotations

import typer

from usdcm import __version__
from usdcm.cli import (
    demo,
    evaluate,
    ingest,
    listen,
    plan,
    predict,
    pull,
    report,
    send,
    synth,
    train,
)

app = typer.Typer(
    name="usdcm",
    help="Turn a DICOM ultrasound export into a validated classifier.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # patient data can sit in local variables
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"usdcm {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Turn a DICOM ultrasound export into a validated classifier."""


app.command("synth")(synth.synth_command)
app.command("ingest")(ingest.ingest_command)
app.command("plan")(plan.plan_command)
app.command("train")(train.train_command)
app.command("evaluate")(evaluate.evaluate_command)
app.command("report")(report.report_command)
app.command("predict")(predict.predict_command)
app.command("demo")(demo.demo_command)
app.command("listen")(listen.listen_command)
app.command("pull")(pull.pull_command)
app.command("send")(send.send_command)


def main() -> None:
    """Console-script entry point."""
    app()
