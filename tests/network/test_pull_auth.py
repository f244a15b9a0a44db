"""DICOMweb credentials: a bearer token or user:password from the environment or a file.

Against real HTTP on loopback: Orthanc with basic authentication turned on, and a small
stub server that demands a bearer token (Orthanc 1.10 has no bearer tokens without a plugin).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.peers import free_port, orthanc
from usdcm.cli.app import app
from usdcm.errors import CredentialsError, PullError
from usdcm.network.auth import BASIC_ENV, TOKEN_ENV, connect, read_credentials
from usdcm.synth import ExportSummary

TOKEN = "tok-3f9a1c"
QUERY = ["--query", "ModalitiesInStudy=US"]


@pytest.fixture(autouse=True)
def no_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    monkeypatch.delenv(BASIC_ENV, raising=False)


def run_pull(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["pull", *args])
    return result.exit_code, result.output


# --- reading credentials --------------------------------------------------------------------


def test_no_credentials() -> None:
    assert read_credentials().kind == "none"


def test_token_from_env_and_file_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, " from-env \n")
    found = read_credentials()
    assert (found.kind, found.secret, found.source) == ("bearer", "from-env", f"${TOKEN_ENV}")
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    assert read_credentials(token_file=token_file).secret == "from-file"


def test_basic_from_env_and_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BASIC_ENV, "alice:pw")
    assert read_credentials().kind == "basic"
    basic_file = tmp_path / "basic"
    basic_file.write_text("bob:pw2\n")
    assert read_credentials(basic_file=basic_file).secret == "bob:pw2"


def test_credentials_never_show_in_repr_or_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    assert TOKEN not in repr(read_credentials())
    monkeypatch.setenv(BASIC_ENV, "alice:secret-pw")
    with pytest.raises(CredentialsError, match="keep only one") as err:
        read_credentials()
    assert TOKEN not in str(err.value) and "secret-pw" not in str(err.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [("", "is empty"), ("abc\ndef", "several lines")],
)
def test_bad_token_file(tmp_path: Path, content: str, message: str) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(content)
    with pytest.raises(CredentialsError, match=message):
        read_credentials(token_file=token_file)


def test_basic_needs_a_colon(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BASIC_ENV, "alice")
    with pytest.raises(CredentialsError, match="user:password"):
        read_credentials()


def test_unreadable_token_file(tmp_path: Path) -> None:
    with pytest.raises(CredentialsError, match="cannot be read"):
        read_credentials(token_file=tmp_path / "missing")


def test_connect_sets_the_session_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    bearer = connect("http://127.0.0.1:9/dicom-web/")
    assert bearer.session.headers["Authorization"] == f"Bearer {TOKEN}"
    assert bearer.url == "http://127.0.0.1:9/dicom-web"
    monkeypatch.delenv(TOKEN_ENV)
    monkeypatch.setenv(BASIC_ENV, "alice:pw")
    assert connect("http://127.0.0.1:9/dicom-web").session.auth == ("alice", "pw")


def test_plain_http_to_another_host_warns_without_the_secret(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    with caplog.at_level(logging.WARNING, logger="usdcm.network.auth"):
        connect("http://pacs.example.org/dicom-web")
        connect("https://pacs.example.org/dicom-web")
        connect("http://localhost:8042/dicom-web")
    assert len(caplog.records) == 1
    assert "plain http" in caplog.text and TOKEN not in caplog.text


@pytest.mark.parametrize("url", ["ftp://pacs/dicom-web", "pacs:8042", "http://"])
def test_bad_url(url: str) -> None:
    with pytest.raises(PullError, match="http:// or https://"):
        connect(url)


def test_no_credential_option_on_the_command_line(tmp_path: Path) -> None:
    code, output = run_pull(
        "--dicomweb", "http://127.0.0.1:9/dicom-web", "--token", TOKEN, *QUERY,
        "--store", str(tmp_path),
    )  # fmt: skip
    assert code == 2 and "No such option" in output


# --- bearer token against a stub server -----------------------------------------------------


class _BearerOnly(BaseHTTPRequestHandler):
    seen: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        auth = self.headers.get("Authorization", "")
        type(self).seen.append(auth)
        if auth != f"Bearer {TOKEN}":
            self.send_response(401)
            self.send_header("WWW-Authenticate", "Bearer")
            self.end_headers()
            return
        body = json.dumps([]).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/dicom+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def bearer_server() -> Iterator[str]:
    _BearerOnly.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _BearerOnly)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/dicom-web"
    finally:
        server.shutdown()
        server.server_close()


def test_bearer_token_from_env_reaches_the_server(
    bearer_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    code, output = run_pull("--dicomweb", bearer_server, *QUERY, "--store", str(tmp_path / "s"))
    assert code == 0, output
    assert "0 studies" in output
    assert _BearerOnly.seen == [f"Bearer {TOKEN}"]


def test_bearer_token_from_file(bearer_server: str, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    code, output = run_pull(
        "--dicomweb", bearer_server, *QUERY, "--token-file", str(token_file),
        "--store", str(tmp_path / "s"),
    )  # fmt: skip
    assert code == 0, output
    assert _BearerOnly.seen == [f"Bearer {TOKEN}"]


def test_wrong_token_is_one_line_without_it(
    bearer_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TOKEN_ENV, "wrong-token-77")
    code, output = run_pull("--dicomweb", bearer_server, *QUERY, "--store", str(tmp_path / "s"))
    assert code == 2
    assert "HTTP 401" in output and "check the credentials" in output
    assert "wrong-token-77" not in output and "Traceback" not in output


# --- basic auth against Orthanc -------------------------------------------------------------


def test_basic_auth_from_env_pulls_from_orthanc(
    tmp_path: Path, synth_mix: ExportSummary, monkeypatch: pytest.MonkeyPatch
) -> None:
    with orthanc(tmp_path / "orthanc", users={"alice": "s3cret-pw"}) as peer:
        accepted = [path for path in synth_mix.image_paths[:3] if peer.upload(path)]
        store = tmp_path / "export"

        code, output = run_pull("--dicomweb", peer.dicomweb_url, *QUERY, "--store", str(store))
        assert code == 2 and "HTTP 401" in output, "Orthanc let an anonymous pull in"

        monkeypatch.setenv(BASIC_ENV, "alice:wrong-pw")
        code, output = run_pull("--dicomweb", peer.dicomweb_url, *QUERY, "--store", str(store))
        assert code == 2 and "HTTP 401" in output and "wrong-pw" not in output

        monkeypatch.setenv(BASIC_ENV, "alice:s3cret-pw")
        code, output = run_pull("--dicomweb", peer.dicomweb_url, *QUERY, "--store", str(store))
        assert code == 0, output
        assert "s3cret-pw" not in output
        stored = [p for p in store.rglob("*.dcm") if ".usdcm" not in p.parts]
        assert len(stored) == len(accepted)
