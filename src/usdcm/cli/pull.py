"""``usdcm pull``: studies from a DICOMweb server (QIDO-RS, WADO-RS) into an export folder.

Owns the command's options and its progress lines; the pull is :mod:`usdcm.network.pull` and
the credentials :mod:`usdcm.network.auth` (environment or file, never an option's value).
Prints counts and keyed study hashes only, never a UID.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from usdcm.cli._auth_options import BasicFileOption, TokenFileOption
from usdcm.cli._errors import user_errors

EXIT_STUDIES_FAILED = 1


def pull_command(
    dicomweb: Annotated[
        str,
        typer.Option(
            "--dicomweb",
            help="DICOMweb root URL, e.g. http://pacs:8042/dicom-web (Orthanc). Credentials "
            "come from $USDCM_DICOMWEB_TOKEN (bearer) or $USDCM_DICOMWEB_BASIC (user:password), "
            "or --token-file / --basic-file.",
        ),
    ],
    store: Annotated[
        Path,
        typer.Option(
            "--store",
            file_okay=False,
            help="Export folder (created); instances go to <study>/<series>/<sop>.dcm, "
            "named by keyed hashes, as usdcm listen writes them.",
        ),
    ],
    study: Annotated[
        list[str] | None,
        typer.Option("--study", help="StudyInstanceUID to pull; repeat for several."),
    ] = None,
    query: Annotated[
        str | None,
        typer.Option(
            "--query",
            help="QIDO-RS study search, e.g. 'ModalitiesInStudy=US&StudyDate=20240101-20241231'.",
        ),
    ] = None,
    ingest_into: Annotated[
        Path | None,
        typer.Option(
            "--ingest",
            file_okay=False,
            help="Then run usdcm ingest on the store into this folder (incremental).",
        ),
    ] = None,
    token_file: TokenFileOption = None,
    basic_file: BasicFileOption = None,
    timeout: Annotated[
        float, typer.Option(min=1.0, help="Seconds to wait for each HTTP answer.")
    ] = 60.0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No per-study lines.")] = False,
) -> None:
    """Search a DICOMweb server and retrieve each matching study into an export folder.

    A study already stored completely is skipped; a pull stopped at any point resumes by
    fetching only what is missing. Exit code 1 when some studies failed (the others are kept).

    Example: USDCM_DICOMWEB_TOKEN=... usdcm pull --dicomweb https://pacs/dicom-web
    --query 'ModalitiesInStudy=US&StudyDate=20240101-20241231' --store export/ --ingest data/
    """
    with user_errors():
        from usdcm.network.auth import connect
        from usdcm.network.pull import StudyPulled, parse_query, pull

        filters = parse_query(query) if query is not None else None
        connection = connect(
            dicomweb, token_file=token_file, basic_file=basic_file, timeout_s=timeout
        )

        def progress(pulled: StudyPulled) -> None:
            if not quiet or pulled.error:
                typer.echo(pulled.line(), err=bool(pulled.error))

        result = pull(connection, store, studies=study or (), query=filters, on_study=progress)
        typer.echo(result.summary())
        if ingest_into is not None and result.studies:
            from usdcm.ingest import IngestOptions, ingest

            ingested = ingest(store, ingest_into, IngestOptions())
            typer.echo(
                f"ingest: {ingested.n_images} images in {ingested.manifest_path} "
                f"({ingested.n_converted} converted, {ingested.n_reused} reused, "
                f"{ingested.n_excluded} excluded)"
            )
    if result.failed:
        typer.secho(
            f"error: {len(result.failed)} of {len(result.studies)} studies failed; "
            "run the same command again to retry them.",
            err=True,
            fg=typer.colors.RED,
        )
        raise typer.Exit(EXIT_STUDIES_FAILED)
