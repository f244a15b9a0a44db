"""DICOMweb clients with credentials from the environment or a file, never from the command line.

Owns how usdcm authenticates to a DICOMweb server (QIDO-RS, WADO-RS, STOW-RS): a bearer
token or HTTP basic ``user:password``, each read from an environment variable or a file.
A command-line argument would sit in the shell history and in ``ps`` output, so there is
none. Never logs or repeats a credential, not even in an error message.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from usdcm.errors import CredentialsError, PullError

if TYPE_CHECKING:
    import requests
    from dicomweb_client import DICOMwebClient

log = logging.getLogger(__name__)

TOKEN_ENV = "USDCM_DICOMWEB_TOKEN"
BASIC_ENV = "USDCM_DICOMWEB_BASIC"
DEFAULT_TIMEOUT_S = 60.0
RETRY_ATTEMPTS = 3
_LOOPBACK = {"localhost", "127.0.0.1", "::1"}


@dataclass(frozen=True)
class Credentials:
    """One credential: ``kind`` is ``"bearer"``, ``"basic"`` or ``"none"``; ``source`` names
    where it came from (an environment variable or a file), never its value."""

    kind: str
    source: str
    secret: str = ""

    def __repr__(self) -> str:
        return f"Credentials(kind={self.kind!r}, source={self.source!r})"


def _read_file(path: Path, what: str) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as err:
        message = f"The {what} file {path} cannot be read ({type(err).__name__})."
        raise CredentialsError(message) from err
    if not text:
        raise CredentialsError(f"The {what} file {path} is empty.")
    return text


def _checked(value: str, kind: str, source: str) -> Credentials:
    if any(char in value for char in "\r\n\x00"):
        message = f"The {kind} credential from {source} spans several lines; keep it on one."
        raise CredentialsError(message)
    if kind == "basic" and ":" not in value:
        message = f"The basic credential from {source} must read user:password."
        raise CredentialsError(message)
    return Credentials(kind, source, value)


def read_credentials(
    *,
    token_env: str = TOKEN_ENV,
    token_file: Path | None = None,
    basic_env: str = BASIC_ENV,
    basic_file: Path | None = None,
) -> Credentials:
    """The credential to use: a bearer token or ``user:password``, from a file or the environment.

    A file named explicitly wins over its environment variable. A bearer token and a basic
    credential both set is an error, rather than a silent pick.

    Examples
    --------
    >>> read_credentials(token_env="USDCM_NO_SUCH_VAR", basic_env="USDCM_NO_SUCH_VAR")
    Credentials(kind='none', source='')
    """
    token = (
        _checked(_read_file(token_file, "token"), "bearer", str(token_file))
        if token_file is not None
        else None
    )
    if token is None and os.environ.get(token_env, "").strip():
        token = _checked(os.environ[token_env].strip(), "bearer", f"${token_env}")
    basic = (
        _checked(_read_file(basic_file, "basic credential"), "basic", str(basic_file))
        if basic_file is not None
        else None
    )
    if basic is None and os.environ.get(basic_env, "").strip():
        basic = _checked(os.environ[basic_env].strip(), "basic", f"${basic_env}")
    if token is not None and basic is not None:
        message = (
            f"Both a bearer token ({token.source}) and a basic credential ({basic.source}) "
            "are set; keep only one."
        )
        raise CredentialsError(message)
    return token or basic or Credentials("none", "")


@dataclass(frozen=True)
class DicomwebConnection:
    """An authenticated HTTP session to one DICOMweb root, and a ``DICOMwebClient`` on it.

    ``session`` serves the requests the client has no raw form for (WADO-RS parts kept as
    the bytes the server sent); it carries the same credentials.
    """

    url: str
    session: requests.Session
    timeout_s: float
    client: DICOMwebClient


def connect(
    url: str,
    *,
    token_env: str = TOKEN_ENV,
    token_file: Path | None = None,
    basic_env: str = BASIC_ENV,
    basic_file: Path | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> DicomwebConnection:
    """A :class:`DicomwebConnection` to ``url``, authenticated per :func:`read_credentials`.

    ``url`` is the DICOMweb root (for Orthanc, ``http://host:8042/dicom-web``). Credentials
    sent over plain ``http://`` to a host other than loopback are allowed (some hospital
    networks terminate TLS in front of the PACS) but logged as a warning.
    """
    import requests
    from dicomweb_client import DICOMwebClient

    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        message = f"The DICOMweb URL must start with http:// or https:// and name a host: {url!r}"
        raise PullError(message)
    credentials = read_credentials(
        token_env=token_env, token_file=token_file, basic_env=basic_env, basic_file=basic_file
    )
    session = requests.Session()
    if credentials.kind == "bearer":
        session.headers["Authorization"] = f"Bearer {credentials.secret}"
    elif credentials.kind == "basic":
        user, _, password = credentials.secret.partition(":")
        session.auth = (user, password)
    if credentials.kind != "none" and parts.scheme == "http" and parts.hostname not in _LOOPBACK:
        log.warning(
            "sending %s credentials from %s over plain http to %s",
            credentials.kind,
            credentials.source,
            parts.hostname,
        )
    root = url.rstrip("/")
    try:
        client = DICOMwebClient(root, session=session, timeout=timeout_s)
    except ValueError as err:
        raise PullError(f"The DICOMweb URL is malformed: {url!r}") from err
    # Retry 429/408/503/504 and dropped connections a little, then fail: the default (5 tries,
    # up to 8 s apart) makes a dead server take 15 s to report.
    client.set_http_retry_params(max_attempts=RETRY_ATTEMPTS, wait_exponential_multiplier=250)
    # The retry library logs each failed try with the request's URL, which holds UIDs.
    logging.getLogger("retrying").setLevel(logging.ERROR)
    return DicomwebConnection(root, session, timeout_s, client)


def dicomweb_client(
    url: str,
    *,
    token_env: str = TOKEN_ENV,
    token_file: Path | None = None,
    basic_env: str = BASIC_ENV,
    basic_file: Path | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> DICOMwebClient:
    """A ``dicomweb_client.DICOMwebClient`` for ``url``, authenticated per :func:`read_credentials`
    (see :func:`connect`)."""
    return connect(
        url,
        token_env=token_env,
        token_file=token_file,
        basic_env=basic_env,
        basic_file=basic_file,
        timeout_s=timeout_s,
    ).client
