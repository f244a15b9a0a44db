"""``usdcm send``: send again what an outbox holds (or a folder of DICOM files) to a PACS.

Owns the command's options, its one-line summary and its exit codes; the sending is
:func:`usdcm.network.send.resend`, the credentials :mod:`usdcm.network.auth` (environment or
file, never an option's value). Prints counts, the destination and the outbox's path, never a
UID.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from usdcm.cli._auth_options import BasicFileOption, TokenFileOption
from usdcm.cli._errors import user_errors

EXIT_FILES_LEFT = 1
"""Files are still in the outbox after the send (the usage-error exit is 2)."""


def send_command(
    path: Annotated[
        Path,
        typer.Argument(
            help="An outbox folder (what predict or listen left after the retries: files with "
            "<name>.reason.json), one entry of it, any other folder of DICOM files (not its "
            "subfolders), or one DICOM file.",
        ),
    ],
    to: Annotated[
        str | None,
        typer.Option(
            "--to",
            help="C-STORE to AET@host:port. Default: where each outbox entry was going, as "
            "its reason file records it.",
        ),
    ] = None,
    dicomweb: Annotated[
        str | None,
        typer.Option(
            "--dicomweb",
            help="STOW-RS to this DICOMweb root URL (credentials from $USDCM_DICOMWEB_TOKEN "
            "or $USDCM_DICOMWEB_BASIC, or --token-file / --basic-file; never in the URL).",
        ),
    ] = None,
    outbox: Annotated[
        Path | None,
        typer.Option(
            file_okay=False,
            help="Where files still failing are kept; default PATH when it is an outbox, "
            "else PATH/outbox (beside a single file).",
        ),
    ] = None,
    tls_ca: Annotated[
        Path | None,
        typer.Option(
            help="PEM CA certificates that signed the peer's certificate: C-STORE over TLS "
            "(for https STOW-RS, the CA to trust instead of the system's).",
        ),
    ] = None,
    tls_cert: Annotated[
        Path | None, typer.Option(help="PEM client certificate, for a peer that requires one.")
    ] = None,
    tls_key: Annotated[
        Path | None,
        typer.Option(help="PEM private key of --tls-cert (unencrypted); default: in its file."),
    ] = None,
    token_file: TokenFileOption = None,
    basic_file: BasicFileOption = None,
    retries: Annotated[
        int, typer.Option(min=0, help="Further tries for files the peer refused.")
    ] = 2,
    backoff: Annotated[
        float, typer.Option(min=0.0, help="Seconds before the first retry; doubles each time.")
    ] = 1.0,
) -> None:
    """Send the files an outbox holds again; each leaves it once the peer confirmed it.

    Each file is sent as it is, by C-STORE (a success or warning status confirms it) or
    STOW-RS (an answer listing no failed instance confirms it); a confirmed file and its
    reason leave the outbox, a failing one stays with its reason updated (attempts, last
    error, time). Files outside an outbox are never removed. Without --to or --dicomweb each
    entry goes where its reason file says it was going, over TLS if it was (add --tls-ca).

    Exit code 0 when the outbox is empty afterwards, 1 when files remain in it, 2 for a
    usage error.

    Example: usdcm send sr/outbox

    Example: usdcm send sr/outbox --to PACS@10.0.0.5:104 --tls-ca hospital-ca.pem
    """
    with user_errors():
        from usdcm.network.send import TlsOptions, resend

        tls = TlsOptions.from_options(tls_ca, tls_cert, tls_key)
        result = resend(
            path,
            dimse=to,
            dicomweb=dicomweb,
            outbox=outbox,
            tls=tls,
            retries=retries,
            backoff_s=backoff,
            token_file=token_file,
            basic_file=basic_file,
        )
        typer.echo(result.summary())
    if result.failed:
        reasons = "; ".join(sorted(set(result.failed.values())))
        typer.secho(
            f"error: {_files(len(result.failed))} still failing, kept in {result.outbox}: "
            f"{reasons}",
            err=True,
            fg=typer.colors.RED,
        )
    elif result.remaining:
        typer.secho(
            f"error: {_files(result.remaining)} from earlier sends wait in {result.outbox}; "
            f"send them with: usdcm send {result.outbox}",
            err=True,
            fg=typer.colors.RED,
        )
    if result.remaining or result.failed:
        raise typer.Exit(EXIT_FILES_LEFT)


def _files(count: int) -> str:
    return f"{count} file" if count == 1 else f"{count} files"
