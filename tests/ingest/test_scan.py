"""Tests for usdcm.ingest.scan: the header scan takes its secret explicitly (defect 6)."""

from __future__ import annotations

import errno
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.ingest.conftest import ACCESSION, PATIENT_ID, write_us
from usdcm.ingest import scan as scan_module
from usdcm.ingest.labels import join_hash
from usdcm.ingest.scan import HeaderScan, scan_file, scan_headers, walk_files
from usdcm.privacy import ProjectSecret

KEY = b"k" * 32

# Runs under ``python -O`` (asserts stripped): scans with two worker processes and in this
# process, and calls scan_file without a secret. Prints what it found as JSON.
OPTIMISED_SCRIPT = """
import json, sys
from pathlib import Path
from usdcm.ingest.scan import scan_file, scan_headers
from usdcm.privacy import ProjectSecret

assert False, "asserts must be stripped under -O"
path = Path(sys.argv[1])
secret = ProjectSecret(bytes.fromhex(sys.argv[2]))
pooled = dict(scan_headers([path, path.with_name("other")], secret, workers=2))
local = dict(scan_headers([path], secret, workers=1))
try:
    scan_file(path, None)
except TypeError as err:
    refused = str(err)
else:
    refused = ""
print(json.dumps({
    "pooled": pooled[path]["patient_key"],
    "other": pooled[path.with_name("other")]["patient_key"],
    "local": local[path]["patient_key"],
    "refused": refused,
}))
"""


@pytest.fixture
def image(tmp_path: Path) -> Path:
    write_us(tmp_path / "other", np.zeros((8, 8), np.uint8), seed=4)
    return write_us(tmp_path / "IM1", np.zeros((8, 8), np.uint8), seed=3)


def test_the_scan_uses_the_secret_it_is_given(image: Path) -> None:
    secret = ProjectSecret(KEY)
    record = scan_file(image, secret)
    assert record["patient_key"] == secret.pseudonym(PATIENT_ID)
    assert record["join"]["AccessionNumber"] == join_hash(secret, "AccessionNumber", ACCESSION)
    other = scan_file(image, ProjectSecret(b"o" * 32))
    assert other["patient_key"] != record["patient_key"]
    assert other["sop_uid"] == record["sop_uid"]


def test_there_is_no_module_secret_and_no_scan_without_one(image: Path) -> None:
    assert not hasattr(scan_module, "_SECRET")
    assert not hasattr(scan_module, "init_worker")
    with pytest.raises(TypeError, match="needs the project secret"):
        scan_file(image, KEY)  # type: ignore[arg-type]  # the raw key is not a secret
    with pytest.raises(TypeError):
        scan_file(image)  # type: ignore[call-arg]


def test_the_pool_task_carries_the_secret(image: Path) -> None:
    task = pickle.loads(pickle.dumps(HeaderScan(ProjectSecret(KEY))))
    assert task(str(image))["patient_key"] == ProjectSecret(KEY).pseudonym(PATIENT_ID)
    pooled = dict(scan_headers([image], ProjectSecret(KEY), workers=2))
    assert pooled[image]["patient_key"] == ProjectSecret(KEY).pseudonym(PATIENT_ID)


def test_the_scan_works_under_python_O_where_asserts_are_stripped(image: Path) -> None:
    found = subprocess.run(
        [sys.executable, "-O", "-c", OPTIMISED_SCRIPT, str(image), KEY.hex()],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    result = json.loads(found.stdout)
    expected = ProjectSecret(KEY).pseudonym(PATIENT_ID)
    assert result["pooled"] == result["local"] == result["other"] == expected
    assert "needs the project secret" in result["refused"]


def test_walk_leaves_out_usdcms_own_state_folder_at_the_top_only(tmp_path: Path) -> None:
    # a store filled by `usdcm listen` keeps its secret and queues in STORE/.usdcm
    (tmp_path / ".usdcm").mkdir()
    (tmp_path / ".usdcm" / "secret").write_text("key\n")
    (tmp_path / "study" / ".usdcm").mkdir(parents=True)
    (tmp_path / "study" / ".usdcm" / "IM1").write_bytes(b"x")
    (tmp_path / "study" / "IM2").write_bytes(b"y")
    found = list(walk_files(tmp_path))
    assert sorted(found) == ["study/.usdcm/IM1", "study/IM2"]


def test_walk_yields_relative_paths_files_first_then_each_folder_in_turn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ingest keeps the first of two copies of an instance in this order: it must not move
    root = tmp_path / "export"
    for name in ("zz-note", "a/x/IM3", "b/IM2", "b/IM1", "c/IM4", "out/manifest.csv", "b0/IM5"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"")
    (root / "b" / "0-link").symlink_to("../a", target_is_directory=True)  # never followed
    (root / "b" / "gone").symlink_to("nowhere")
    (root / os.fsdecode(b"caf\xe9")).write_bytes(b"")  # a name that is not UTF-8
    real_scandir = os.scandir

    def scandir(path: str) -> object:  # b0 cannot be listed, as for a normal user
        if path == str(root / "b0"):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    found = list(walk_files(root, skip=root / "out"))
    assert found == [
        "caf\udce9",
        "zz-note",
        "a/x/IM3",
        "b/0-link",
        "b/IM1",
        "b/IM2",
        "b/gone",
        "b0",
        "c/IM4",
    ]
