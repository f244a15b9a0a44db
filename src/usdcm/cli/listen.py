"""``usdcm listen``: receive studies over DICOM (C-STORE SCP) into an export folder.

Owns the command's options, the duration syntax (``30s``, ``2m``), SIGTERM/SIGINT handling and
the status line; the listener is :mod:`usdcm.network.listen`. Prints and logs counts, calling AE
titles and keyed study hashes only.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer

from usdcm.cli._errors import user_errors
from usdcm.errors import ListenError

if TYPE_CHECKING:
    from usdcm.network.send import TlsOptions

STATUS_LOG_EVERY_S = 10.0


def parse_duration(text: str, option: str) -> float:
    """Seconds in ``30s``, ``500ms``, ``2m``, ``1h`` or a bare number of seconds.

    Examples
    --------
    >>> parse_duration("30s", "--quiet"), parse_duration("2m", "--quiet")
    (30.0, 120.0)
    >>> parse_duration("0.5", "--quiet"), parse_duration("250ms", "--quiet")
    (0.5, 0.25)
    >>> parse_duration("soon", "--quiet")
    Traceback (most recent call last):
    ...
    usdcm.errors.ListenError: --quiet is 'soon'; write a duration such as 30s, 500ms or 2m.
    """
    from usdcm.durations import seconds_in

    seconds = seconds_in(text, bare_seconds=True)
    if seconds is None:
        message = f"{option} is {text!r}; write a duration such as 30s, 500ms or 2m."
        raise ListenError(message)
    return seconds


def _names(values: list[str] | None) -> tuple[str, ...]:
    """``["A,B", "C"]`` -> ``("A", "B", "C")``."""
    return tuple(
        part.strip() for value in values or () for part in value.split(",") if part.strip()
    )


def listen_command(
    store: Annotated[
        Path,
        typer.Option(
            "--store",
            help="EXPORT_DIR: received instances go to <study>/<series>/<sop>.dcm (keyed hashes).",
            file_okay=False,
            dir_okay=True,
            writable=True,
        ),
    ],
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port to listen on.")] = 11112,
    ae_title: Annotated[str, typer.Option("--ae-title", help="This node's AE title.")] = "USDCM",
    host: Annotated[
        str, typer.Option(help="Address to bind; 0.0.0.0 to accept from other machines.")
    ] = "127.0.0.1",
    allow_ae: Annotated[
        list[str] | None,
        typer.Option("--allow-ae", help="Calling AE titles accepted (A,B or repeat); default any."),
    ] = None,
    modality: Annotated[
        list[str] | None,
        typer.Option(
            help="Also store these storage classes in EXPORT_DIR: CR, DX, MG, CT, MR, XA, NM, PT, "
            "SC, SR, DOC or ALL (repeat or A,B). Ultrasound images always are; instances of "
            "other classes are acknowledged and set aside in EXPORT_DIR/.usdcm/other."
        ),
    ] = None,
    quiet: Annotated[
        str, typer.Option(help="A study is complete after this long without a new instance.")
    ] = "30s",
    ingest: Annotated[
        Path | None,
        typer.Option(
            "--ingest",
            help="DATA_DIR: run incremental `usdcm ingest` of the store into it per study.",
            file_okay=False,
        ),
    ] = None,
    predict: Annotated[
        Path | None,
        typer.Option(
            "--predict",
            help="RUN: classify each complete study and send the SR back (--send...).",
            exists=True,
            file_okay=False,
        ),
    ] = None,
    send: Annotated[
        str | None, typer.Option(help="With --predict: C-STORE results to aet@host:port.")
    ] = None,
    send_dicomweb: Annotated[
        str | None, typer.Option(help="With --predict: STOW-RS results to this DICOMweb URL.")
    ] = None,
    sr_out: Annotated[
        Path | None,
        typer.Option(help="With --predict: where SRs are written; default EXPORT_DIR/.usdcm/sr."),
    ] = None,
    outbox: Annotated[
        Path | None,
        typer.Option(help="Results that could not be sent; default EXPORT_DIR/.usdcm/outbox."),
    ] = None,
    send_tls_ca: Annotated[
        Path | None,
        typer.Option(
            help="With --send: TLS to the PACS, whose certificate this PEM CA must have signed."
        ),
    ] = None,
    send_tls_cert: Annotated[
        Path | None,
        typer.Option(help="With --send-tls-ca: a client certificate (PEM) for the PACS."),
    ] = None,
    send_tls_key: Annotated[
        Path | None,
        typer.Option(help="PEM private key of --send-tls-cert (unencrypted); default: in it."),
    ] = None,
    retries: Annotated[
        int,
        typer.Option(
            min=0,
            help="Try a study whose ingest or predict failed again this many times, with "
            "backoff; then record it in EXPORT_DIR/.usdcm/failed.jsonl.",
        ),
    ] = 3,
    max_associations: Annotated[
        int, typer.Option(min=1, help="Associations open at once; more are refused.")
    ] = 10,
    network_timeout: Annotated[str, typer.Option(help="Idle network timeout.")] = "60s",
    acse_timeout: Annotated[str, typer.Option(help="Association negotiation timeout.")] = "30s",
    dimse_timeout: Annotated[str, typer.Option(help="Timeout for one DIMSE message.")] = "60s",
    tls_cert: Annotated[
        Path | None,
        typer.Option(help="PEM certificate: accept TLS associations only.", exists=True),
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option(help="PEM private key of --tls-cert.", exists=True)
    ] = None,
    tls_ca: Annotated[
        Path | None,
        typer.Option(
            help="PEM CA certificates: require a client certificate they sign.", exists=True
        ),
    ] = None,
    grace: Annotated[
        str, typer.Option(help="At SIGTERM, how long open associations may take to finish.")
    ] = "30s",
    status: Annotated[
        bool, typer.Option(help="Show the status line (a live line on a terminal, else logs).")
    ] = True,
) -> None:
    """Receive studies over DICOM (C-STORE SCP) into EXPORT_DIR, then ingest and classify them.

    Accepts every storage class in every transfer syntax usdcm decodes, plus C-ECHO.
    Ultrasound images (and the --modality classes) go into EXPORT_DIR; other instances of a
    study (an SR, a CT) are set aside in EXPORT_DIR/.usdcm/other, so the sender never fails.
    Each instance is on disk before it is acknowledged. SIGTERM stops accepting, lets open
    associations finish and exits 0.
    """
    with user_errors():
        from usdcm.network.listen import Listener, ListenOptions

        if (send or send_dicomweb) and predict is None:
            raise ListenError("--send and --send-dicomweb need --predict RUN.")
        send_tls = _send_tls(send, send_dicomweb, send_tls_ca, send_tls_cert, send_tls_key)
        options = ListenOptions(
            store=store,
            port=port,
            host=host,
            ae_title=ae_title,
            allow_ae=_names(allow_ae),
            modalities=("US", *_names(modality)),
            quiet_s=parse_duration(quiet, "--quiet"),
            ingest_into=ingest,
            predict_run=predict,
            send_dimse=send,
            send_dicomweb=send_dicomweb,
            send_tls=send_tls,
            sr_out=sr_out,
            outbox=outbox,
            max_associations=max_associations,
            network_timeout_s=parse_duration(network_timeout, "--network-timeout"),
            acse_timeout_s=parse_duration(acse_timeout, "--acse-timeout"),
            dimse_timeout_s=parse_duration(dimse_timeout, "--dimse-timeout"),
            tls_cert=tls_cert,
            tls_key=tls_key,
            tls_ca=tls_ca,
            grace_s=parse_duration(grace, "--grace"),
            retries=retries,
        )
        _configure_logging()
        stop = threading.Event()

        def on_signal(signum: int, _frame: FrameType | None) -> None:
            logging.getLogger("usdcm.network.listen").info(
                "%s: stopping", signal.Signals(signum).name
            )
            stop.set()

        listener = Listener(options)
        listener.start()
        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            _run_until(stop, listener, show=status)
        finally:
            listener.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        typer.echo(listener.status().line())


def _send_tls(
    send: str | None,
    send_dicomweb: str | None,
    ca: Path | None,
    cert: Path | None,
    key: Path | None,
) -> TlsOptions | None:
    """The TLS options of the results' send, their files checked before listening starts."""
    from usdcm.network.send import TlsOptions

    if (ca or cert or key) and not (send or send_dicomweb):
        message = (
            "--send-tls-ca, --send-tls-cert and --send-tls-key secure the results' send: "
            "add --send or --send-dicomweb."
        )
        raise ListenError(message)
    if ca is not None and send_dicomweb and not send_dicomweb.startswith("https://"):
        raise ListenError(
            f"--send-tls-ca applies to an https:// DICOMweb URL, not {send_dicomweb}."
        )
    return TlsOptions.from_options(ca, cert, key)


def _configure_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger = logging.getLogger("usdcm.network")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def _run_until(stop: threading.Event, listener: object, *, show: bool) -> None:
    from rich.console import Console

    from usdcm.network.listen import Listener

    assert isinstance(listener, Listener)
    console = Console(stderr=True)
    if show and console.is_terminal:
        with console.status(listener.status().line()) as live:
            while not stop.wait(0.5):
                live.update(listener.status().line())
        return
    logger = logging.getLogger("usdcm.network.listen")
    last, last_time = "", 0.0
    while not stop.wait(0.5):
        line = listener.status().line()
        if show and line != last and time.monotonic() - last_time >= STATUS_LOG_EVERY_S:
            logger.info("status: %s", line)
            last, last_time = line, time.monotonic()
