"""``usdcm predict``: a run + raw DICOM files -> probabilities per SOP instance; with
``--sr-out``, one TID 1500 SR per study, sent back with ``--send`` or ``--send-dicomweb``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from usdcm.cli._errors import EXIT_USER_ERROR, user_errors
from usdcm.cli._progress import RichProgress
from usdcm.cli.train import DeviceChoice

if TYPE_CHECKING:
    from usdcm.network.send import TlsOptions


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
    scheduler: Annotated[
        str,
        typer.Option(
            help="Where to scan and decode: 'process' (this machine's worker processes), "
            "'local' (a Dask LocalCluster of --workers processes) or a Dask scheduler "
            "address, tcp://host:8786, whose workers see SOURCE at the same path."
        ),
    ] = "process",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    sr_out: Annotated[
        Path | None,
        typer.Option(
            help="Write one DICOM SR (TID 1500 Measurement Report) per study here, in the "
            "original study, carrying its patient module; named by keyed study hashes."
        ),
    ] = None,
    send: Annotated[
        str | None,
        typer.Option(help="Send the SRs by C-STORE to AET@host:port (needs --sr-out)."),
    ] = None,
    send_dicomweb: Annotated[
        str | None,
        typer.Option(
            help="Send the SRs by STOW-RS to this DICOMweb root URL (needs --sr-out); "
            "credentials from USDCM_DICOMWEB_TOKEN or USDCM_DICOMWEB_BASIC."
        ),
    ] = None,
    outbox: Annotated[
        Path | None,
        typer.Option(
            help="Where SRs that could not be sent are kept; default SR_OUT/outbox. Send "
            "them again with usdcm send OUTBOX."
        ),
    ] = None,
    tls_ca: Annotated[
        Path | None,
        typer.Option(
            help="PEM CA certificates that signed the PACS's certificate: --send over TLS "
            "(for an https --send-dicomweb, the CA to trust instead of the system's)."
        ),
    ] = None,
    tls_cert: Annotated[
        Path | None, typer.Option(help="PEM client certificate, for a PACS that requires one.")
    ] = None,
    tls_key: Annotated[
        Path | None,
        typer.Option(help="PEM private key of --tls-cert (unencrypted); default: in its file."),
    ] = None,
    codes: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            help="JSON or TOML {class: {value, scheme, meaning}} coding the classes (e.g. "
            "SNOMED CT); default RUN/codes.json, else the class names under the private "
            "scheme 99USDCM.",
        ),
    ] = None,
) -> None:
    """Classify DICOM files that were never ingested, decoding them in memory.

    Writes one row per SOP instance (pseudonymous ids, probabilities, predicted class) and,
    beside it, OUT.excluded.csv with every file left out and why.

    With --sr-out, also writes one SR per study (PRELIMINARY, UNVERIFIED, research use)
    and, with --send or --send-dicomweb, sends them; a file that still fails after the
    retries stays in the outbox with its reason, and the command exits non-zero.

    Example: usdcm predict runs/r18 /incoming/today --out today.csv

    Example: usdcm predict runs/r18 today/ -o today.csv --sr-out sr/ --send PACS@10.0.0.5:104
    """
    with user_errors():
        from usdcm.artifacts.predictions import write_source_predictions
        from usdcm.errors import InvalidSourceError, SendError
        from usdcm.inference.model import load_trained_model
        from usdcm.inference.predict import predict_source
        from usdcm.ingest.pipeline import STATE_DIR
        from usdcm.network.results_back import default_secret_file
        from usdcm.parallel import check_scheduler
        from usdcm.privacy import ProjectSecret

        if (send or send_dicomweb) and sr_out is None:
            message = "--send and --send-dicomweb send the SRs: add --sr-out DIR."
            raise SendError(message)
        if send and send_dicomweb:
            message = "give one destination: --send or --send-dicomweb, not both."
            raise SendError(message)
        if (tls_ca or tls_cert or tls_key) and not (send or send_dicomweb):
            message = (
                "--tls-ca, --tls-cert and --tls-key secure a send: add --send or --send-dicomweb."
            )
            raise SendError(message)
        tls = _checked_destination(send, send_dicomweb, tls_ca, tls_cert, tls_key)
        if not source.exists():
            message = f"SOURCE {source} does not exist; pass a DICOM file or folder."
            raise InvalidSourceError(message)
        scheduler = check_scheduler(scheduler)
        trained = load_trained_model(run, device.value)
        if secret_file is None:
            secret_file = default_secret_file(trained, out.parent / STATE_DIR / "secret")
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
                scheduler=scheduler,
            )
        excluded_path = write_source_predictions(out, found.rows, found.excluded, trained.classes)
        typer.echo(
            f"{len(found.rows)} images classified in {out}; {len(found.excluded)} files "
            f"excluded in {excluded_path}."
        )
        if sr_out is None:
            return
        _results_back(
            found.rows,
            source,
            trained=trained,
            run=run,
            secret=secret,
            sr_out=sr_out,
            send=send,
            send_dicomweb=send_dicomweb,
            outbox=outbox or sr_out / "outbox",
            codes=codes,
            tls=tls,
        )


def _checked_destination(
    send: str | None,
    send_dicomweb: str | None,
    tls_ca: Path | None,
    tls_cert: Path | None,
    tls_key: Path | None,
) -> TlsOptions | None:
    """The TLS options, once the destination and the certificate files are checked: a
    mistake there is reported before the model runs, not after."""
    from usdcm.errors import SendError
    from usdcm.network.send import DimseDestination, TlsOptions, check_url

    if send is not None:
        DimseDestination.parse(send)
    if send_dicomweb is not None:
        url = check_url(send_dicomweb)
        if tls_ca is not None and not url.startswith("https://"):
            message = f"--tls-ca applies to an https:// DICOMweb URL, not {url}."
            raise SendError(message)
    return TlsOptions.from_options(tls_ca, tls_cert, tls_key)


def _results_back(
    rows: list[dict[str, Any]],
    source: Path,
    *,
    trained: Any,
    run: Path,
    secret: Any,
    sr_out: Path,
    send: str | None,
    send_dicomweb: str | None,
    outbox: Path,
    codes: Path | None,
    tls: TlsOptions | None = None,
) -> None:
    """Write the SRs of ``rows`` and send them; exit non-zero when some stay in the outbox."""
    from usdcm.network.results_back import (
        algorithm_of,
        codes_for,
        send_results,
        write_study_srs,
    )

    if not rows:
        typer.echo("no image classified: no SR written.")
        return
    srs = write_study_srs(
        rows,
        source,
        classes=trained.classes,
        secret=secret,
        sr_out=sr_out,
        algorithm=algorithm_of(trained, run),
        codes_by_class=codes_for(run, trained.classes, codes),
    )
    typer.echo(f"{len(srs)} study SRs written in {sr_out}.")
    sent = send_results(srs, dimse=send, dicomweb=send_dicomweb, outbox=outbox, tls=tls)
    if sent is None:
        return
    typer.echo(f"{len(sent.sent)} SRs sent to {sent.destination}.")
    if sent.failed:
        reasons = sorted(set(sent.failed.values()))
        typer.secho(
            f"error: {len(sent.failed)} SRs not sent, kept in {outbox} (send them again with "
            f"usdcm send {outbox}): {'; '.join(reasons)}",
            err=True,
            fg=typer.colors.RED,
        )
        raise typer.Exit(EXIT_USER_ERROR)
