"""``usdcm predict``: a run + raw DICOM files -> probabilities per SOP instance."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from usdcm.cli._errors import user_errors
from usdcm.cli._progress import RichProgress
from usdcm.cli.train import DeviceChoice


def predict_command(
    run: Annotated[Path, typer.Argument(help="Run folder written by `usdcm train`.")],
    source: Annotated[Path, typer.Argument(help="A DICOM file, or a folder of them.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="CSV of predictions to write.")],
    secret_file: Annotated[
        Path | None,
        typer.Option(
            help="HMAC secret for the pseudonymous ids; default: the secret of the ingest "
            "the run was trained on, so ids match its manifest."
        ),
    ] = None,
    modality: Annotated[
        list[str] | None, typer.Option(help="Modality to select; repeat. Default: US.")
    ] = None,
    device: Annotated[DeviceChoice, typer.Option(help="Where to run the model.")] = (
        DeviceChoice.auto
    ),
    workers: Annotated[
        int, typer.Option(min=0, help="Processes that scan and decode; 0 means one per core.")
    ] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Classify DICOM files that were never ingested, decoding them in memory.

    Writes one row per SOP instance (pseudonymous ids, probabilities, predicted class) and,
    beside it, OUT.excluded.csv with every file left out and why.

    Example: usdcm predict runs/r18 /incoming/today --out today.csv
    """
    with user_errors():
        from usdcm.artifacts.predictions import write_source_predictions
        from usdcm.errors import InvalidSourceError
        from usdcm.inference.model import load_trained_model
        from usdcm.inference.predict import predict_source
        from usdcm.ingest.pipeline import STATE_DIR
        from usdcm.privacy import ProjectSecret

        if not source.exists():
            message = f"SOURCE {source} does not exist; pass a DICOM file or folder."
            raise InvalidSourceError(message)
        trained = load_trained_model(run, device.value)
        if secret_file is None:
            trained_on = trained.manifest_path
            ingest_secret = trained_on.parent / STATE_DIR / "secret" if trained_on else None
            if ingest_secret is not None and ingest_secret.is_file():
                secret_file = ingest_secret
            else:
                secret_file = out.parent / STATE_DIR / "secret"
        secret = ProjectSecret.load_or_create(secret_file)
        files = 1 if source.is_file() else sum(1 for p in source.rglob("*") if p.is_file())
        with RichProgress(disable=quiet) as progress:
            progress.phase("predict", files)
            found = predict_source(
                trained,
                source,
                secret=secret,
                modalities=frozenset(m.upper() for m in (modality or ["US"])),
                workers=workers,
                on_file=progress.advance,
            )
        excluded_path = write_source_predictions(out, found.rows, found.excluded, trained.classes)
        typer.echo(
            f"{len(found.rows)} images classified in {out}; {len(found.excluded)} files "
            f"excluded in {excluded_path}."
        )
