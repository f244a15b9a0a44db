"""The Orthanc peer of tests/peers.py: starts fast on loopback, takes uploads, stops."""

from __future__ import annotations

import socket
import time
import urllib.request
from pathlib import Path

import pytest

from tests import peers
from tests.peers import Orthanc, PeerError, free_port, orthanc, require
from usdcm.synth import ExportSummary


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_require_skips_naming_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install no-such-package"):
        require("usdcm-no-such-binary", "no-such-package")


def test_require_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="no-such-package"):
        require("usdcm-no-such-binary", "no-such-package")


def test_orthanc_starts_fast_takes_uploads_and_stops(
    tmp_path: Path, synth_mix: ExportSummary
) -> None:
    started = time.monotonic()
    with orthanc(tmp_path / "orthanc") as peer:
        elapsed = time.monotonic() - started
        assert elapsed < 5.0, f"Orthanc took {elapsed:.1f}s to answer HTTP"
        assert peer.rest("/system")["DicomPort"] == peer.dicom_port
        answers = peer.upload_tree(synth_mix.root)
        assert answers, "Orthanc accepted none of the synth export"
        assert peer.rest("/statistics")["CountInstances"] == len({a["ID"] for a in answers})
        assert peer.studies()
        peer.add_modality("usdcm", aet="USDCM", port=free_port())
        assert "usdcm" in peer.rest("/modalities")
        with pytest.raises(PeerError, match="HTTP 404"):
            peer.rest("/studies/no-such-study")
        url = peer.http_url
    assert isinstance(peer, Orthanc)
    with pytest.raises(OSError):
        urllib.request.urlopen(url + "/system", timeout=1)


def test_missing_orthanc_skips_naming_the_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(peers, "ORTHANC", "/nonexistent/Orthanc")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install orthanc orthanc-dicomweb"):
        peers.require_orthanc()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"\.ci/run installs it"):
        peers.require_orthanc()


def test_missing_dicomweb_plugin_skips_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(peers, "DICOMWEB_PLUGIN", "/nonexistent/libOrthancDicomWeb.so")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install orthanc-dicomweb"):
        peers.require_orthanc()
