"""C-STORE over TLS against real TLS peers on loopback: ``usdcm listen --tls-cert/--tls-key``
and DCMTK's ``storescp +tls`` requiring a client certificate; a wrong CA, a peer that does
not speak TLS, and certificate files that do not load each fail with one clear reason."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest

from tests.network.test_listen import listening
from tests.network.test_send import _wait_for_port, srs, storescp
from tests.peers import free_port, require
from usdcm.errors import SendError
from usdcm.network.send import REASON_SUFFIX, TlsOptions, send_files

__all__ = ["srs", "storescp"]  # fixtures shared from test_send


@dataclass(frozen=True)
class Certificates:
    """A test CA, a server certificate it signed (for 127.0.0.1 and localhost), a client
    certificate it signed, and an unrelated CA."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path
    folder: Path


def _openssl(*args: str) -> None:
    openssl = require("openssl", "openssl")
    done = subprocess.run([openssl, *args], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def _signed(folder: Path, name: str, ca: Path, ca_key: Path, extensions: str) -> None:
    key, csr, cert = folder / f"{name}.key", folder / f"{name}.csr", folder / f"{name}.pem"
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN=usdcm-{name}",
        "-keyout", str(key), "-out", str(csr),
    )  # fmt: skip
    ext = folder / f"{name}.ext"
    ext.write_text(extensions)
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
        "-CAcreateserial", "-days", "2", "-out", str(cert), "-extfile", str(ext),
    )  # fmt: skip


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    folder = tmp_path_factory.mktemp("tls")
    for authority in ("ca", "other-ca"):
        _openssl(
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", f"/CN=usdcm test {authority}",
            "-keyout", str(folder / f"{authority}.key"), "-out", str(folder / f"{authority}.pem"),
        )  # fmt: skip
    ca, ca_key = folder / "ca.pem", folder / "ca.key"
    _signed(folder, "server", ca, ca_key, "subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _signed(folder, "client", ca, ca_key, "extendedKeyUsage=clientAuth\n")
    return Certificates(
        ca=ca,
        server_cert=folder / "server.pem",
        server_key=folder / "server.key",
        client_cert=folder / "client.pem",
        client_key=folder / "client.key",
        other_ca=folder / "other-ca.pem",
        folder=folder,
    )


def _reasons(outbox: Path) -> list[dict[str, object]]:
    return [json.loads(p.read_text()) for p in sorted(outbox.glob("*" + REASON_SUFFIX))]


def test_c_store_over_tls_to_usdcm_listen(
    srs: list[Path], certs: Certificates, tmp_path: Path
) -> None:
    tls_args = ("--tls-cert", str(certs.server_cert), "--tls-key", str(certs.server_key))
    with listening(tmp_path, *tls_args, "--modality", "SR") as peer:
        destination = f"USDCM@127.0.0.1:{peer.port}"
        result = send_files(
            srs, dimse=destination, outbox=tmp_path / "ok", tls=TlsOptions(certs.ca)
        )
        assert result.ok, result.failed
        # the wrong CA: the handshake fails, fast, and every SR waits in the outbox
        wrong = send_files(
            srs, dimse=destination, outbox=tmp_path / "wrong", tls=TlsOptions(certs.other_ca)
        )
        # no TLS at all, to a peer that accepts TLS only
        plain = send_files(srs[:1], dimse=destination, outbox=tmp_path / "plain", retries=0)
        stored = sorted(peer.store.glob("*/*/*.dcm"))
    arrived = {ds.SOPInstanceUID: ds for ds in map(pydicom.dcmread, stored)}
    assert len(arrived) == len(srs)
    for path in srs:
        sent = pydicom.dcmread(path)
        assert arrived[sent.SOPInstanceUID] == sent  # every element, as written
    assert "TLS, " in peer.log_text()
    assert not wrong.sent and len(wrong.failed) == len(srs)
    for record in _reasons(tmp_path / "wrong"):
        assert str(record["reason"]).startswith(f"TLS handshake with {destination} failed:")
        assert "is --tls-ca the CA that signed its certificate?" in str(record["reason"])
        assert record["tls"] is True and record["attempts"] == 1  # not retried
    assert not plain.sent
    [record] = _reasons(tmp_path / "plain")
    assert "association aborted" in str(record["reason"]) and record["tls"] is False


def test_a_client_certificate_for_a_peer_that_requires_one(
    srs: list[Path], certs: Certificates, tmp_path: Path
) -> None:
    binary = require("storescp", "dcmtk")
    port, received = free_port(), tmp_path / "received"
    received.mkdir()
    command = [binary, "--aetitle", "STORESCP", "--output-directory", str(received), "+xa"]
    command += ["+tls", str(certs.server_key), str(certs.server_cert), "+cf", str(certs.ca)]
    command += ["--require-peer-cert", "-ta", "5", str(port)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_port(port)
        destination = f"STORESCP@127.0.0.1:{port}"
        with_cert = TlsOptions(certs.ca, certs.client_cert, certs.client_key)
        result = send_files(srs[:1], dimse=destination, outbox=tmp_path / "a", tls=with_cert)
        without = send_files(
            srs[1:2], dimse=destination, outbox=tmp_path / "b", tls=TlsOptions(certs.ca), retries=0
        )
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert result.ok, result.failed
    [arrived] = [pydicom.dcmread(p) for p in received.iterdir()]
    assert arrived == pydicom.dcmread(srs[0])
    assert not without.sent
    [reason] = without.failed.values()
    assert reason.startswith(f"TLS handshake with {destination} failed:")
    assert "the peer requires a client certificate: add --tls-cert and --tls-key" in reason


def test_certificate_files_that_do_not_load_are_one_clear_error(
    certs: Certificates, tmp_path: Path
) -> None:
    missing = tmp_path / "nope.pem"
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("not a certificate\n")
    encrypted = tmp_path / "encrypted.key"
    _openssl("genrsa", "-aes256", "-passout", "pass:secret", "-out", str(encrypted), "2048")
    cases = [
        ((missing, None, None), f"--tls-ca {missing} does not exist"),
        ((not_pem, None, None), f"--tls-ca {not_pem} does not load as PEM CA certificates"),
        ((certs.ca, certs.client_cert, certs.server_key), "do not load as a client certificate"),
        ((certs.ca, certs.client_cert, None), "(no --tls-key) do not load"),
        ((certs.ca, certs.client_cert, encrypted), "is encrypted; usdcm does not prompt"),
        ((certs.ca, None, certs.client_key), "needs --tls-cert, the certificate it belongs to"),
        ((None, certs.client_cert, certs.client_key), "TLS is turned on by --tls-ca"),
    ]
    for (ca, cert, key), message in cases:
        with pytest.raises(SendError) as caught:
            TlsOptions.from_options(ca, cert, key)
        assert message in str(caught.value)
        assert "\n" not in str(caught.value)
    assert TlsOptions.from_options(None, None, None) is None
    combined = tmp_path / "client-and-key.pem"  # one PEM with both is enough
    combined.write_bytes(certs.client_cert.read_bytes() + certs.client_key.read_bytes())
    assert TlsOptions.from_options(certs.ca, combined) == TlsOptions(certs.ca, combined)


def test_a_plain_peer_fails_the_handshake_fast(
    srs: list[Path], storescp: tuple[str, Path], certs: Certificates, tmp_path: Path
) -> None:
    destination, received = storescp
    result = send_files(srs, dimse=destination, outbox=tmp_path / "out", tls=TlsOptions(certs.ca))
    assert not result.sent and not list(received.iterdir())
    reasons = set(result.failed.values())
    assert len(reasons) == 1 and next(iter(reasons)).startswith("TLS handshake with")


def test_stow_over_https_trusts_the_given_ca(
    srs: list[Path], certs: Certificates, tmp_path: Path
) -> None:
    from tests.network.test_send import StowService

    with StowService("stored", tls=(certs.server_cert, certs.server_key)) as service:
        ok = send_files(
            srs[:1], dicomweb=service.url, outbox=tmp_path / "a", tls=TlsOptions(certs.ca)
        )
        wrong = send_files(
            srs, dicomweb=service.url, outbox=tmp_path / "b", tls=TlsOptions(certs.other_ca)
        )
    assert ok.ok, ok.failed
    assert service.parts == [srs[0].read_bytes()]
    assert not wrong.sent
    [reason] = set(wrong.failed.values())
    assert reason.startswith(f"TLS handshake with {service.url} failed: ")
    assert "unable to get local issuer certificate" in reason
    with pytest.raises(SendError, match="https:// DICOMweb URL"):
        send_files(srs, dicomweb="http://127.0.0.1:1/dw", outbox=tmp_path, tls=TlsOptions(certs.ca))
