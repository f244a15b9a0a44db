"""Real DICOM peers for the network tests, started by the tests on loopback only.

``orthanc()`` starts Debian's Orthanc (packages ``orthanc`` and ``orthanc-dicomweb``) as the
current user from a minimal JSON config in a temporary folder, on free loopback ports, with the
DICOMweb plugin, and stops it on exit. No system daemon, no root service, nothing written
outside the temporary folder. ``require()`` skips a test whose binary is missing, naming the
Debian package, except that under ``CI=true`` it fails: ``.ci/run`` installs them.

Example (a test)::

    with orthanc(tmp_path) as peer:
        peer.upload(path)
        assert peer.rest("/statistics")["CountInstances"] == 1
        peer.add_modality("usdcm", aet="USDCM", port=listen_port)
        peer.store_to("usdcm", study_id)
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ORTHANC = "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
START_TIMEOUT_S = 20.0
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
"""Loopback peers are reached directly, whatever http_proxy says."""


def on_ci() -> bool:
    """Whether the CI rule applies: a missing peer fails instead of skipping."""
    return os.environ.get("CI", "").lower() in {"true", "1"}


def require(binary: str, package: str) -> str:
    """The path of ``binary``; skip with one line naming ``package`` without it (fail under CI).

    ``binary`` is a name looked up on PATH or an absolute path.
    """
    found = binary if os.path.isabs(binary) and os.access(binary, os.X_OK) else None
    found = found or shutil.which(binary)
    if found is None:
        message = f"{binary} is not installed (apt-get install {package})"
        if on_ci():
            pytest.fail(f"CI=true and {message}: .ci/run installs it")
        pytest.skip(message)
    return found


def require_orthanc() -> str:
    """Orthanc with its DICOMweb plugin; skip (fail under CI) naming the packages."""
    found = require(ORTHANC, "orthanc orthanc-dicomweb")
    if not Path(DICOMWEB_PLUGIN).is_file():
        message = f"the Orthanc DICOMweb plugin {DICOMWEB_PLUGIN} is missing"
        if on_ci():
            pytest.fail(f"CI=true and {message}: .ci/run installs orthanc-dicomweb")
        pytest.skip(f"{message} (apt-get install orthanc-dicomweb)")
    return found


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the OS's pick; a small race with other processes)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PeerError(RuntimeError):
    """A test peer failed to start or answered an HTTP error."""


@dataclass(frozen=True)
class Orthanc:
    """A running Orthanc: its URLs, its DICOM port and AE title, and REST helpers."""

    http_url: str
    dicom_port: int
    aet: str
    root: Path
    log: Path
    user: tuple[str, str] | None = None
    """The (user, password) its REST API requires, when started with ``users``."""

    @property
    def dicomweb_url(self) -> str:
        """The DICOMweb root (QIDO-RS, WADO-RS, STOW-RS)."""
        return f"{self.http_url}/dicom-web"

    @property
    def dicom_host(self) -> str:
        return "127.0.0.1"

    def request(
        self, method: str, path: str, body: bytes | None = None, content_type: str = ""
    ) -> Any:
        """One REST call; the decoded JSON answer (or None for an empty body)."""
        request = urllib.request.Request(self.http_url + path, data=body, method=method)
        if content_type:
            request.add_header("Content-Type", content_type)
        if self.user is not None:
            token = base64.b64encode(":".join(self.user).encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        try:
            with _DIRECT.open(request, timeout=60) as answer:
                payload = answer.read()
        except urllib.error.HTTPError as err:
            detail = err.read().decode("utf-8", "replace")[:500]
            raise PeerError(f"Orthanc {method} {path}: HTTP {err.code} {detail}") from err
        return json.loads(payload) if payload.strip() else None

    def rest(self, path: str) -> Any:
        """GET ``path`` (for example ``/studies`` or ``/statistics``) as JSON."""
        return self.request("GET", path)

    def upload(self, path: Path) -> dict[str, Any]:
        """POST one DICOM file to ``/instances``; Orthanc's answer (``ID``, ``ParentStudy``...)."""
        answer = self.request("POST", "/instances", Path(path).read_bytes(), "application/dicom")
        if not isinstance(answer, dict):
            raise PeerError(f"Orthanc did not accept {Path(path).name}: {answer!r}")
        return answer

    def upload_tree(self, root: Path) -> list[dict[str, Any]]:
        """Upload every file under ``root`` that Orthanc accepts; the answers of those."""
        answers = []
        for path in sorted(p for p in Path(root).rglob("*") if p.is_file()):
            with contextlib.suppress(PeerError):  # junk files, DICOMDIR, non-DICOM
                answers.append(self.upload(path))
        return answers

    def add_modality(self, name: str, *, aet: str, port: int, host: str = "127.0.0.1") -> None:
        """Register a DICOM peer as ``name`` (``PUT /modalities/<name>``)."""
        body = json.dumps({"AET": aet, "Host": host, "Port": port}).encode()
        self.request("PUT", f"/modalities/{name}", body, "application/json")

    def store_to(self, name: str, *resources: str) -> Any:
        """C-STORE Orthanc resources (study, series or instance ids) to modality ``name``."""
        body = json.dumps({"Resources": list(resources), "Synchronous": True}).encode()
        return self.request("POST", f"/modalities/{name}/store", body, "application/json")

    def studies(self) -> list[dict[str, Any]]:
        """Every study Orthanc holds, expanded (``MainDicomTags``, ``Series``...)."""
        answer = self.rest("/studies?expand")
        return list(answer)


def _config(
    root: Path, http_port: int, dicom_port: int, aet: str, users: dict[str, str] | None
) -> dict[str, Any]:
    storage = root / "db"
    return {
        "Name": "usdcm-test",
        "StorageDirectory": str(storage),
        "IndexDirectory": str(storage),
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "DicomAet": aet,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": bool(users),
        "RegisteredUsers": dict(users or {}),
        "DicomCheckCalledAet": False,
        "UnknownSopClassAccepted": False,
        "StableAge": 1,
        "Plugins": [DICOMWEB_PLUGIN],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        "DicomModalities": {},
    }


def _answers(url: str) -> bool:
    """Whether Orthanc's HTTP server is up (a 401 of an authenticated one counts)."""
    try:
        with _DIRECT.open(url, timeout=1) as answer:
            return int(answer.status) == 200
    except urllib.error.HTTPError as err:
        return err.code == 401
    except OSError:
        return False


@contextlib.contextmanager
def orthanc(
    workdir: Path | None = None, *, aet: str = "ORTHANC", users: dict[str, str] | None = None
) -> Iterator[Orthanc]:
    """Start Orthanc on free loopback ports; yield it once HTTP answers; stop it on exit.

    Its storage, config and log live in ``workdir`` (a new temporary folder by default).
    ``users`` (name -> password) turns on HTTP basic authentication for REST and DICOMweb;
    the helper methods then log in as the first user. Skips the test without Orthanc (fails
    under ``CI=true``).
    """
    binary = require_orthanc()
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="orthanc-")))
        root = Path(workdir)
        root.mkdir(parents=True, exist_ok=True)
        log = root / "orthanc.log"
        for _attempt in range(3):  # a port taken between free_port() and the bind: retry
            http_port, dicom_port = free_port(), free_port()
            if http_port == dicom_port:
                continue
            config = root / "orthanc.json"
            settings = _config(root, http_port, dicom_port, aet, users)
            config.write_text(json.dumps(settings, indent=2))
            with log.open("wb") as sink:
                process = subprocess.Popen(
                    [binary, str(config)], stdout=sink, stderr=subprocess.STDOUT, cwd=root
                )
            stack.callback(_stop, process)
            user = next(iter(users.items())) if users else None
            peer = Orthanc(f"http://127.0.0.1:{http_port}", dicom_port, aet, root, log, user)
            deadline = time.monotonic() + START_TIMEOUT_S
            while process.poll() is None and time.monotonic() < deadline:
                if _answers(peer.http_url + "/system"):
                    yield peer
                    return
                time.sleep(0.02)
            _stop(process)
        tail = log.read_text(errors="replace")[-2000:]
        raise PeerError(f"Orthanc did not start (log {log}):\n{tail}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
