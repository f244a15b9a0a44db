"""``usdcm pull`` killed with SIGKILL in the middle of a transfer resumes without loss or mess.

A slow proxy in front of Orthanc sends each WADO-RS answer in two halves a second apart, so
the kill lands inside a study. What the killed pull left is only complete files; the next
pull fetches exactly what is missing.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.peers import Orthanc, PeerError, free_port, orthanc
from usdcm.cli.app import app
from usdcm.synth import ExportSummary

QUERY = "ModalitiesInStudy=US"


def _slow_proxy(target: str) -> type[BaseHTTPRequestHandler]:
    class SlowProxy(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            request = urllib.request.Request(target + self.path)
            for name in ("Accept", "Authorization"):
                if self.headers.get(name):
                    request.add_header(name, self.headers[name])
            with urllib.request.urlopen(request, timeout=30) as answer:
                body = answer.read()
                content_type = answer.headers.get("Content-Type", "")
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if "multipart" in content_type:  # WADO-RS: half now, the rest a second later
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                time.sleep(1.0)
                body = body[len(body) // 2 :]
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    return SlowProxy


@pytest.fixture
def served(tmp_path: Path, synth_mix: ExportSummary) -> Iterator[Orthanc]:
    with orthanc(tmp_path / "orthanc") as peer:
        for path in sorted(p for p in synth_mix.root.rglob("*") if p.is_file()):
            try:
                peer.upload(path)
            except PeerError:
                continue  # the export's junk
        yield peer


@pytest.fixture
def proxy(served: Orthanc) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _slow_proxy(served.http_url))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/dicom-web"
    finally:
        server.shutdown()
        server.server_close()


def digests(paths: list[Path] | list[bytes]) -> list[str]:
    blobs = [p if isinstance(p, bytes) else p.read_bytes() for p in paths]
    return sorted(hashlib.sha256(blob).hexdigest() for blob in blobs)


def orthanc_files(peer: Orthanc) -> list[bytes]:
    files = []
    for instance in peer.rest("/instances"):
        with urllib.request.urlopen(f"{peer.http_url}/instances/{instance}/file") as answer:
            files.append(answer.read())
    return files


def stored(store: Path) -> list[Path]:
    return sorted(p for p in store.rglob("*.dcm") if ".usdcm" not in p.parts)


def test_kill_9_mid_transfer_then_resume(served: Orthanc, proxy: str, tmp_path: Path) -> None:
    store = tmp_path / "export"
    everything = orthanc_files(served)
    command = [sys.executable, "-m", "usdcm", "pull", "--dicomweb", proxy, "--query", QUERY]
    process = subprocess.Popen(
        [*command, "--store", str(store)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    deadline = time.monotonic() + 60
    while not stored(store) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)  # inside the next study's answer, between its halves
    assert process.poll() is None, "the pull ended before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=10)

    left = stored(store)
    assert 0 < len(left) < len(everything), "the kill did not land mid-pull"
    assert set(digests(left)) <= set(digests(everything)), "a killed pull left a partial file"

    result = CliRunner().invoke(
        app, ["pull", "--dicomweb", served.dicomweb_url, "--query", QUERY, "--store", str(store)]
    )
    assert result.exit_code == 0, result.output
    assert f"{len(everything) - len(left)} instances fetched" in result.output
    assert digests(stored(store)) == digests(everything)
